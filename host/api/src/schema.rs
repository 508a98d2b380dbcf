//! The one schema of the zenoh API: key expressions and message types, shared by the sim bridge,
//! the daemon and every client. Messages are CBOR maps with named fields (serde + ciborium), so a
//! stock Python `cbor2` client decodes them into dicts. Every message carries `v`, the schema
//! version of its family; a decoder rejects another version instead of misreading it.
//!
//! Keys live under `reachy/<robot>/…`, so two robots on one network never see each other's
//! traffic. The full list, with every field, is in `docs/zenoh-api.md`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the sim message family (`reachy/<robot>/sim/**`).
pub const SIM_SCHEMA_VERSION: u32 = 1;

/// Version of the daemon message family (`reachy/<robot>/*` outside `sim/`).
pub const ROBOT_SCHEMA_VERSION: u32 = 1;

/// Version of the policy-server family (`reachy_policy/<server>/**`).
pub const POLICY_SCHEMA_VERSION: u32 = 1;

/// Key expressions.
pub mod keys {
    /// Policy server: inference queryable ([`super::PolicyRequest`] → [`super::PolicyChunk`]).
    /// Servers are shared by robots, so they live outside any robot's prefix.
    pub fn policy_infer(server: &str) -> String {
        format!("reachy_policy/{server}/infer")
    }
    /// Policy server: `info` queryable ([`super::PolicyServerInfo`]).
    pub fn policy_info(server: &str) -> String {
        format!("reachy_policy/{server}/info")
    }
    /// Prefix of every key of a robot: `reachy/<robot>`.
    pub fn robot(robot: &str) -> String {
        format!("reachy/{robot}")
    }
    /// Sim: joint states, published at the control rate ([`super::JointState`]).
    pub fn sim_joint_state(robot: &str) -> String {
        format!("reachy/{robot}/sim/joint_state")
    }
    /// Sim: joint position targets, subscribed ([`super::JointCommand`]).
    pub fn sim_joint_command(robot: &str) -> String {
        format!("reachy/{robot}/sim/joint_command")
    }
    /// Sim: ground-truth object poses ([`super::ObjectPoses`]).
    pub fn sim_objects(robot: &str) -> String {
        format!("reachy/{robot}/sim/objects")
    }
    /// Sim: camera frames, one key per camera ([`super::CameraFrame`]).
    pub fn sim_camera(robot: &str, camera: &str) -> String {
        format!("reachy/{robot}/sim/camera/{camera}")
    }
    /// Sim queryables: `reset`, `step`, `pause`, `resume`, `info`.
    pub fn sim_query(robot: &str, name: &str) -> String {
        format!("reachy/{robot}/sim/{name}")
    }
    /// Daemon: the robot's state at the control rate ([`super::RobotState`]).
    pub fn state(robot: &str) -> String {
        format!("reachy/{robot}/state")
    }
    /// Daemon: a camera's frames re-published with its intrinsics ([`super::CameraFrame`]).
    pub fn camera(robot: &str, camera: &str) -> String {
        format!("reachy/{robot}/camera/{camera}")
    }
    /// Daemon: streaming joint targets ([`super::JointTargets`]).
    pub fn joint_targets(robot: &str) -> String {
        format!("reachy/{robot}/command/joints")
    }
    /// Daemon: streaming TCP targets, solved by the IK on arrival ([`super::CartesianTarget`]).
    pub fn cartesian_targets(robot: &str) -> String {
        format!("reachy/{robot}/command/cartesian")
    }
    /// Daemon queryables: `lease`, `goto`, `cancel`, `estop`, `info`.
    pub fn daemon_query(robot: &str, name: &str) -> String {
        format!("reachy/{robot}/{name}")
    }
}

/// Errors decoding a message.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Not CBOR of the expected shape.
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    /// Schema version not understood.
    #[error("schema version {got}, expected {expected}")]
    Version {
        /// What the message says.
        got: u32,
        /// What this build speaks.
        expected: u32,
    },
    /// Decoded, but the values are not acceptable.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Encode a message as CBOR.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    ciborium::into_writer(msg, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// Decode a CBOR message (any bytes: errors, never panics).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SchemaError> {
    ciborium::from_reader(bytes).map_err(|e| SchemaError::Cbor(e.to_string()))
}

/// Decode a sim-family message and check its version.
pub fn decode_sim<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, SchemaError> {
    let m: T = decode(bytes)?;
    if m.version() != SIM_SCHEMA_VERSION {
        return Err(SchemaError::Version {
            got: m.version(),
            expected: SIM_SCHEMA_VERSION,
        });
    }
    Ok(m)
}

/// A message that carries its schema version.
pub trait Versioned {
    /// The `v` field.
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> u32 {
                self.v
            }
        }
    )*};
}

/// Joint states of the whole robot at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    /// Schema version.
    pub v: u32,
    /// Sequence number, +1 per message since start or reset.
    pub seq: u64,
    /// Simulated time (s) since start or reset.
    pub t: f64,
    /// Joint names, from the URDF (actuated joints, mimic joints excluded).
    pub names: Vec<String>,
    /// Positions (rad, or m for prismatic joints).
    pub position: Vec<f32>,
    /// Velocities (rad/s or m/s).
    pub velocity: Vec<f32>,
    /// Efforts (N·m or N).
    pub effort: Vec<f32>,
}

/// Position targets for some or all joints; joints not named keep their target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointCommand {
    /// Schema version.
    pub v: u32,
    /// Joint names.
    pub names: Vec<String>,
    /// Targets, same length and order as `names`.
    pub position: Vec<f32>,
    /// Torque: false makes every joint compliant (motors off), true holds again; absent keeps
    /// the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torque: Option<bool>,
}

impl JointCommand {
    /// Check lengths, finiteness and names against `known` joints; returns each target's index
    /// in `known`.
    pub fn validate(&self, known: &[String]) -> Result<Vec<usize>, SchemaError> {
        if self.names.len() != self.position.len() {
            return Err(SchemaError::Invalid(format!(
                "{} names but {} positions",
                self.names.len(),
                self.position.len()
            )));
        }
        let mut idx = Vec::with_capacity(self.names.len());
        for (n, p) in self.names.iter().zip(&self.position) {
            if !p.is_finite() {
                return Err(SchemaError::Invalid(format!(
                    "{n}: target {p} is not finite"
                )));
            }
            let i = known
                .iter()
                .position(|k| k == n)
                .ok_or_else(|| SchemaError::Invalid(format!("unknown joint `{n}`")))?;
            idx.push(i);
        }
        Ok(idx)
    }
}

/// Pose of a frame: position (m) and orientation quaternion (x, y, z, w).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoseMsg {
    /// Position (m).
    pub position: [f32; 3],
    /// Orientation quaternion x, y, z, w.
    pub orientation: [f32; 4],
}

/// Ground-truth pose of a scene object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectPose {
    /// Object name, e.g. `red_cube`.
    pub name: String,
    /// Its pose in the robot's base frame.
    pub pose: PoseMsg,
    /// Half edge of the cube (m).
    pub half_size: f32,
}

/// Ground-truth poses of every scene object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectPoses {
    /// Schema version.
    pub v: u32,
    /// Sequence number (same as the joint state published with it).
    pub seq: u64,
    /// Simulated time (s).
    pub t: f64,
    /// The objects.
    pub objects: Vec<ObjectPose>,
}

/// Pinhole intrinsics (pixels), no distortion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Intrinsics {
    /// Focal length x.
    pub fx: f32,
    /// Focal length y.
    pub fy: f32,
    /// Principal point x.
    pub cx: f32,
    /// Principal point y.
    pub cy: f32,
}

/// One camera image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraFrame {
    /// Schema version.
    pub v: u32,
    /// Camera name (its URDF link), e.g. `head_camera`.
    pub camera: String,
    /// Frame counter of this camera.
    pub seq: u64,
    /// Simulated time (s) of the exposure.
    pub t: f64,
    /// Width (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
    /// Pixel encoding: `rgb8` (row-major, 3 bytes per pixel, no padding).
    pub encoding: String,
    /// Pixels.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Intrinsics.
    pub intrinsics: Intrinsics,
    /// Pose of the optical frame (+z forward, +x right, +y down) in the robot's base frame.
    pub pose: PoseMsg,
}

impl CameraFrame {
    /// Whether the pixels are what the header says: `rgb8`, width × height × 3 bytes, not empty.
    pub fn is_rgb8(&self) -> bool {
        self.encoding == "rgb8"
            && self.width > 0
            && self.height > 0
            && self.data.len() as u64 == self.width as u64 * self.height as u64 * 3
    }
}

/// Request of the `reset` queryable: rebuild the scene (objects placed from `seed`; the current
/// seed when absent) with the robot at home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetRequest {
    /// Schema version.
    pub v: u32,
    /// Scene seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Request of the `step` queryable (lock-step mode): advance `n` control periods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRequest {
    /// Schema version.
    pub v: u32,
    /// Control periods to advance (each `1 / rate` s, several physics steps).
    pub n: u32,
}

/// Reply of `reset`, `step`, `pause` and `resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReply {
    /// Schema version.
    pub v: u32,
    /// Simulated time (s) after the request.
    pub t: f64,
    /// Whether the sim is paused now.
    pub paused: bool,
    /// The joint state after the request.
    pub state: JointState,
}

/// One joint as the sim reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointInfo {
    /// URDF name.
    pub name: String,
    /// Lower limit.
    pub lower: f32,
    /// Upper limit.
    pub upper: f32,
}

/// One camera as the sim reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraInfo {
    /// Name (URDF link), also the last segment of its key.
    pub name: String,
    /// Width (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
    /// Frames per second (simulated time).
    pub fps: f32,
    /// Intrinsics.
    pub intrinsics: Intrinsics,
}

/// Reply of `info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimInfo {
    /// Schema version.
    pub v: u32,
    /// Robot name (the `<robot>` key segment).
    pub robot: String,
    /// Actuated joints.
    pub joints: Vec<JointInfo>,
    /// Cameras (empty without `--cameras`).
    pub cameras: Vec<CameraInfo>,
    /// Scene objects.
    pub objects: Vec<String>,
    /// Physics step (s).
    pub physics_dt: f64,
    /// Control / publication rate (Hz).
    pub rate_hz: f64,
    /// Lock-step mode: time advances only on `step`.
    pub lockstep: bool,
    /// Paused (real-time mode).
    pub paused: bool,
    /// Current scene seed.
    pub seed: u64,
    /// Simulated time (s).
    pub t: f64,
    /// Joint commands applied.
    pub commands_accepted: u64,
    /// Joint commands and queries rejected as malformed (bad CBOR, wrong version, unknown
    /// joint, length mismatch, non-finite value).
    pub commands_rejected: u64,
}

/// Error reply of any queryable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Schema version.
    pub v: u32,
    /// What was wrong.
    pub error: String,
}

/// Decode a policy-server message and check its version.
pub fn decode_policy<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, SchemaError> {
    let m: T = decode(bytes)?;
    if m.version() != POLICY_SCHEMA_VERSION {
        return Err(SchemaError::Version {
            got: m.version(),
            expected: POLICY_SCHEMA_VERSION,
        });
    }
    Ok(m)
}

/// Decode a daemon-family message and check its version.
pub fn decode_robot<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, SchemaError> {
    let m: T = decode(bytes)?;
    if m.version() != ROBOT_SCHEMA_VERSION {
        return Err(SchemaError::Version {
            got: m.version(),
            expected: ROBOT_SCHEMA_VERSION,
        });
    }
    Ok(m)
}

/// A named pose (a TCP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedPose {
    /// Name, e.g. `r_arm`.
    pub name: String,
    /// Pose in the base frame.
    pub pose: PoseMsg,
}

/// The robot as the daemon sees it, every control period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobotState {
    /// Schema version.
    pub v: u32,
    /// +1 per control period.
    pub seq: u64,
    /// Seconds since the daemon started.
    pub t: f64,
    /// Backend: `sim` or `serial`.
    pub backend: String,
    /// Actuated joints, URDF order.
    pub names: Vec<String>,
    /// Measured positions.
    pub position: Vec<f32>,
    /// Measured velocities.
    pub velocity: Vec<f32>,
    /// Measured efforts.
    pub effort: Vec<f32>,
    /// Targets sent to the backend this period (after the safety limits).
    pub target: Vec<f32>,
    /// Tool centre points of the arms (forward kinematics of the measured joints).
    pub tcp: Vec<NamedPose>,
    /// Gripper openings in [0, 1] (0 closed), `r_gripper` then `l_gripper`.
    pub gripper: Vec<f32>,
    /// Torque on.
    pub torque: bool,
    /// E-stop latched.
    pub estop: bool,
    /// Client holding the lease, if any.
    pub lease: Option<String>,
    /// A goto is running.
    pub moving: bool,
    /// Servos that are not healthy (not answering, hardware error, shut down, torque dropped):
    /// empty when all are well.
    pub faults: Vec<JointFault>,
    /// Backend state older than 0.2 s (the sim or the firmware stopped answering).
    pub stale: bool,
    /// Commands rejected since start (malformed, non-finite, no lease).
    pub rejected: u64,
    /// Outcome of the last streaming TCP target of each arm that received one.
    #[serde(default)]
    pub cartesian: Vec<CartesianStatus>,
    /// Head gaze: the pose of the head chain's tip (the head camera's optical frame looks along
    /// its +z) from the measured joints.
    #[serde(default)]
    pub gaze: Option<PoseMsg>,
}

/// A servo fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointFault {
    /// Joint.
    pub joint: String,
    /// What is wrong, e.g. `not answering`.
    pub fault: String,
}

/// Streaming joint targets; joints not named keep their target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointTargets {
    /// Schema version.
    pub v: u32,
    /// Lease token from the `lease` queryable.
    pub lease: u64,
    /// Joint names.
    pub names: Vec<String>,
    /// Targets.
    pub position: Vec<f32>,
}

/// Request of the `lease` queryable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Schema version.
    pub v: u32,
    /// Who asks, e.g. `teleop@laptop`.
    pub client: String,
    /// `teleop` (pre-empts `policy`) or `policy` (pre-empts `script`) or `script`.
    pub priority: String,
    /// Give the lease back instead (the token).
    #[serde(default)]
    pub release: Option<u64>,
    /// Renew the lease held with this token (a lease is also renewed by every command made with
    /// it). Without it, a request of the holder's name is a new request like any other: it is
    /// granted only by priority or when the lease lapsed.
    #[serde(default)]
    pub renew: Option<u64>,
}

/// Reply of the `lease` queryable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseReply {
    /// Schema version.
    pub v: u32,
    /// Granted (or released).
    pub granted: bool,
    /// The token to put in commands.
    pub token: u64,
    /// Who holds the lease now.
    pub holder: Option<String>,
    /// Why not, when not granted.
    pub reason: Option<String>,
}

/// Request of the `goto` queryable: joint goals reached in `duration` s with a minimum-jerk
/// profile; the reply comes when the motion ends (or is cancelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GotoRequest {
    /// Schema version.
    pub v: u32,
    /// Lease token.
    pub lease: u64,
    /// Joint names.
    pub names: Vec<String>,
    /// Goals.
    pub position: Vec<f32>,
    /// Duration (s), 0.05..=60.
    pub duration: f32,
}

/// Request of the `cartesian` queryable: move an arm's TCP to a pose (or a position, the
/// orientation free) in `duration` s; the IK solves it and the reply says `ok`, `clamped`
/// (a joint limit stops it short), `unreachable` (nothing moves) or `rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartesianRequest {
    /// Schema version.
    pub v: u32,
    /// Lease token.
    pub lease: u64,
    /// `r_arm` or `l_arm`.
    pub arm: String,
    /// TCP position (m, base frame).
    pub position: [f32; 3],
    /// TCP orientation (x, y, z, w); absent: free.
    #[serde(default)]
    pub orientation: Option<[f32; 4]>,
    /// Duration (s), default 1.
    #[serde(default)]
    pub duration: Option<f32>,
}

/// A streaming TCP target (teleoperation: a VR controller, a space mouse, a script): the daemon
/// solves the IK from the arm's current target at once and streams the result like joint
/// targets; the outcome is in the state's `cartesian`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartesianTarget {
    /// Schema version.
    pub v: u32,
    /// Lease token.
    pub lease: u64,
    /// `r_arm` or `l_arm`.
    pub arm: String,
    /// TCP position (m, base frame).
    pub position: [f32; 3],
    /// TCP orientation (x, y, z, w); absent: free.
    #[serde(default)]
    pub orientation: Option<[f32; 4]>,
    /// Gripper opening in [0, 1] (0 closed); absent: unchanged.
    #[serde(default)]
    pub gripper: Option<f32>,
}

/// Outcome of the last streaming TCP target of an arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartesianStatus {
    /// `r_arm` or `l_arm`.
    pub arm: String,
    /// `ok`, `clamped` (a joint limit stops the TCP short; it goes as close as it can) or
    /// `unreachable` (the arm holds its last target).
    pub status: String,
    /// Why, when not `ok`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Targets of this arm received so far.
    pub count: u64,
}

/// Request of the `look_at` queryable: point the head camera at a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookAtRequest {
    /// Schema version.
    pub v: u32,
    /// Lease token.
    pub lease: u64,
    /// Point (m, base frame).
    pub point: [f32; 3],
    /// Duration (s), default 0.5.
    #[serde(default)]
    pub duration: Option<f32>,
}

/// Request of the `gripper` queryable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GripperRequest {
    /// Schema version.
    pub v: u32,
    /// Lease token.
    pub lease: u64,
    /// `r` or `l`.
    pub side: String,
    /// Opening in [0, 1]: 0 closed, 1 open.
    pub opening: f32,
    /// Duration (s), default 0.5.
    #[serde(default)]
    pub duration: Option<f32>,
}

/// Query of `kinematics` (no lease, nothing moves): forward kinematics of `q`, or, with a
/// `position` (and an `orientation`), inverse kinematics from the seed `q` (default: the arm's
/// current targets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KinematicsRequest {
    /// Schema version.
    pub v: u32,
    /// `r_arm` or `l_arm` (or any chain of the robot).
    pub arm: String,
    /// Joint positions (rad): what forward kinematics poses, or inverse kinematics' seed.
    #[serde(default)]
    pub q: Option<Vec<f32>>,
    /// The TCP's target position (m): asks for inverse kinematics.
    #[serde(default)]
    pub position: Option<[f32; 3]>,
    /// The TCP's target orientation, quaternion x, y, z, w (position only without).
    #[serde(default)]
    pub orientation: Option<[f32; 4]>,
}

/// Reply of `kinematics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KinematicsReply {
    /// Schema version.
    pub v: u32,
    /// `ok`, `clamped` (inverse kinematics stopped by a joint limit close to the target),
    /// `unreachable` or `rejected`.
    pub status: String,
    /// Why, when not `ok`.
    pub reason: Option<String>,
    /// The chain's joints (rad): the query's, or the solution.
    pub q: Vec<f32>,
    /// The TCP's pose at `q`.
    pub pose: Option<PoseMsg>,
}

/// Reply of `goto`, `cartesian`, `look_at`, `gripper`, `cancel` and `estop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    /// Schema version.
    pub v: u32,
    /// `ok`, `clamped` (goals moved into the joint limits, or a limit stops the TCP / gaze
    /// short), `unreachable` (nothing moves), `cancelled`, `rejected`.
    pub status: String,
    /// Why, when not `ok`.
    pub reason: Option<String>,
}

/// Request of the `estop` queryable: anyone may engage it (a safety function); clearing it needs
/// the lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstopRequest {
    /// Schema version.
    pub v: u32,
    /// true: stop (torque off, latched); false: clear (hold where the robot is, torque on).
    pub engage: bool,
    /// Lease token: needed to clear.
    #[serde(default)]
    pub lease: Option<u64>,
}

/// Request of the `cancel` queryable: stop the running goto where it is. Needs the lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Schema version.
    pub v: u32,
    /// Lease token.
    pub lease: u64,
}

/// Request of the `torque` queryable: compliant mode (the joints go limp and can be moved by
/// hand, e.g. to teach a pose) or torque back on (holding where the robot is). Needs the lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorqueRequest {
    /// Schema version.
    pub v: u32,
    /// Lease token.
    pub lease: u64,
    /// true: torque on; false: compliant.
    pub on: bool,
}

/// Reply of the daemon's `info` queryable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Schema version.
    pub v: u32,
    /// Robot name.
    pub robot: String,
    /// Backend.
    pub backend: String,
    /// Control rate (Hz).
    pub rate_hz: f64,
    /// Joints with limits.
    pub joints: Vec<JointInfo>,
    /// Chains: (name, joints).
    pub chains: Vec<(String, Vec<String>)>,
    /// Cameras re-published under `reachy/<robot>/camera/<name>` (empty when the backend has
    /// none).
    #[serde(default)]
    pub cameras: Vec<CameraInfo>,
}

versioned!(
    RobotState,
    JointTargets,
    CartesianTarget,
    TorqueRequest,
    LeaseRequest,
    LeaseReply,
    GotoRequest,
    CartesianRequest,
    LookAtRequest,
    GripperRequest,
    CommandReply,
    EstopRequest,
    CancelRequest,
    KinematicsRequest,
    KinematicsReply,
    DaemonInfo
);

/// An RGB image of an observation (`rgb8`, row-major, already at the policy's input size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMsg {
    /// The policy's feature name, e.g. `observation.images.head`.
    pub key: String,
    /// Width (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
    /// Pixels, 3 bytes each.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// An observation sent to a policy server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRequest {
    /// Schema version.
    pub v: u32,
    /// The client's session (one per robot): a newer request of a session supersedes its queued
    /// older ones.
    pub session: String,
    /// Request counter of the session.
    pub seq: u64,
    /// Time of the observation on the client's clock (s); echoed in the chunk.
    pub t_obs: f64,
    /// `observation.state` in the policy's feature order (robot units).
    pub state: Vec<f32>,
    /// Camera images.
    pub images: Vec<ImageMsg>,
    /// Language instruction, for policies that take one.
    #[serde(default)]
    pub task: Option<String>,
}

/// A policy server's answer: an action chunk, timestamped with the observation it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyChunk {
    /// Schema version.
    pub v: u32,
    /// Session of the request.
    pub session: String,
    /// `seq` of the request.
    pub seq: u64,
    /// `t_obs` of the request.
    pub t_obs: f64,
    /// Actions (chunk × action dim), robot units, action `i` meant for `t_obs + i / fps`.
    pub actions: Vec<Vec<f32>>,
    /// Inference time (ms).
    pub infer_ms: f64,
    /// Time the request waited in the server's queue (ms).
    pub queue_ms: f64,
    /// Requests queued behind this one when it was taken.
    pub queue_depth: u32,
}

/// Per-session counters of a policy server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySessionStats {
    /// Session name.
    pub session: String,
    /// Chunks served.
    pub served: u64,
    /// Requests dropped because a newer one of the same session superseded them.
    pub dropped: u64,
    /// Requests that failed (bad input).
    pub errors: u64,
    /// Median inference + queue time (ms).
    pub p50_ms: f64,
    /// 99th percentile of inference + queue time (ms).
    pub p99_ms: f64,
}

/// Reply of a policy server's `info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyServerInfo {
    /// Schema version.
    pub v: u32,
    /// Server name (the key segment).
    pub name: String,
    /// Policy type, e.g. `act`.
    pub policy: String,
    /// Device the policy runs on.
    pub device: String,
    /// `observation.state` size.
    pub state_dim: usize,
    /// Action size.
    pub action_dim: usize,
    /// Image features: (key, [channels, height, width]).
    pub images: Vec<(String, [usize; 3])>,
    /// Actions per chunk.
    pub chunk_size: usize,
    /// Actions of a chunk the checkpoint executes (`n_action_steps`).
    pub n_action_steps: usize,
    /// Requests waiting now.
    pub queue_depth: u32,
    /// Per-session counters.
    pub sessions: Vec<PolicySessionStats>,
}

versioned!(PolicyRequest, PolicyChunk, PolicyServerInfo);

versioned!(
    JointState,
    JointCommand,
    ObjectPoses,
    CameraFrame,
    ResetRequest,
    StepRequest,
    SimReply,
    SimInfo,
    ErrorReply
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> JointState {
        JointState {
            v: SIM_SCHEMA_VERSION,
            seq: 7,
            t: 0.07,
            names: vec!["a".into(), "b".into()],
            position: vec![0.1, -0.2],
            velocity: vec![0.0, 1.0],
            effort: vec![0.5, 0.0],
        }
    }

    #[test]
    fn round_trip_and_version_check() {
        let s = state();
        let back: JointState = decode_sim(&encode(&s)).unwrap();
        assert_eq!(back, s);
        let mut old = s.clone();
        old.v = 99;
        assert!(matches!(
            decode_sim::<JointState>(&encode(&old)),
            Err(SchemaError::Version { got: 99, .. })
        ));
    }

    #[test]
    fn command_validation() {
        let known = vec!["a".to_string(), "b".to_string()];
        let c = |names: &[&str], pos: &[f32]| JointCommand {
            v: 1,
            names: names.iter().map(|s| s.to_string()).collect(),
            position: pos.to_vec(),
            torque: None,
        };
        assert_eq!(c(&["b"], &[0.3]).validate(&known).unwrap(), vec![1]);
        assert!(c(&["b", "a"], &[0.3]).validate(&known).is_err());
        assert!(c(&["z"], &[0.3]).validate(&known).is_err());
        assert!(c(&["a"], &[f32::NAN]).validate(&known).is_err());
        assert!(c(&["a"], &[f32::INFINITY]).validate(&known).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_foreign_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_sim::<JointCommand>(&bytes);
            let _ = decode_sim::<JointState>(&bytes);
            let _ = decode_sim::<StepRequest>(&bytes);
            let _ = decode_sim::<ResetRequest>(&bytes);
            let _ = decode_robot::<JointTargets>(&bytes);
            let _ = decode_robot::<CartesianTarget>(&bytes);
            let _ = decode_robot::<GotoRequest>(&bytes);
            let _ = decode_robot::<LeaseRequest>(&bytes);
            let _ = decode_robot::<CameraFrame>(&bytes);
            let _ = decode_policy::<PolicyRequest>(&bytes);
            let _ = decode_policy::<PolicyChunk>(&bytes);
            let _ = decode_policy::<PolicyServerInfo>(&bytes);
        }

        #[test]
        fn policy_requests_survive_mutation_without_panic(
            flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
        ) {
            let req = PolicyRequest {
                v: POLICY_SCHEMA_VERSION,
                session: "r".into(),
                seq: 3,
                t_obs: 0.5,
                state: vec![0.1, 0.2],
                images: vec![ImageMsg {
                    key: "observation.images.head".into(),
                    width: 4,
                    height: 2,
                    data: vec![7; 24],
                }],
                task: Some("pick".into()),
            };
            let mut b = encode(&req);
            prop_assert_eq!(decode_policy::<PolicyRequest>(&b).unwrap(), req);
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            let _ = decode_policy::<PolicyRequest>(&b);
            let _ = decode_robot::<CartesianTarget>(&b);
        }

        #[test]
        fn decoders_never_panic_on_mutated_messages(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..8)) {
            let mut b = encode(&state());
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            let _ = decode_sim::<JointState>(&b);
            let _ = decode_sim::<JointCommand>(&b);
        }
    }
}
