//! The daemon's control core: leases, limits, ramps, gotos, streaming targets, the e-stop and
//! compliant mode, as a state machine with inputs in and targets and replies out. It has no
//! transport, no runtime and no clock of its own: every input carries the time it happened, so it
//! is driven the same way by the zenoh server ([`crate::server`]) and by tests (no sleeps).
//!
//! Inputs: [`Core::joint_targets`], [`Core::cartesian_target`], [`Core::request`] (the motion
//! and mode queryables), [`Core::lease`], [`Core::tick`] (a measured state: it returns the
//! targets to write). Outputs other than return values collect in the [`Outbox`]
//! ([`Core::take_outbox`]): replies to requests answered later (a goto that ends or is
//! superseded), rejected inputs with their reasons, and whether the targets should go out now
//! rather than at the next tick.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngCore;

use reachy_api::schema::{self, ROBOT_SCHEMA_VERSION as V};
use reachy_kinematics::model::RobotModel;
use reachy_kinematics::{Chain, JointVec, MAX_DOF};

use crate::backend::Measured;
use crate::config::LimitOverride;

/// A measured state older than this makes the robot's state `stale`: the core holds, writes
/// nothing and refuses new motion until fresh states come back.
pub const STALE_AFTER: Duration = Duration::from_millis(200);

/// A goto is `ok` when every joint ends within this of its goal (rad).
pub const GOAL_TOLERANCE: f32 = 0.02;

/// How long a goto waits after its profile ends for the joints to settle within
/// [`GOAL_TOLERANCE`] before it answers `missed` (s).
pub const SETTLE_TIME: f64 = 0.5;

/// Identifies a request whose reply comes later (a goto), chosen by the caller.
pub type RequestId = u64;

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Robot name (reported in `info`).
    pub robot: String,
    /// Control rate (Hz): the nominal period between ticks.
    pub rate_hz: f64,
    /// Streaming targets older than this hold the robot where it is (s).
    pub stream_timeout: f64,
    /// A lease without commands for this long lapses (s).
    pub lease_timeout: f64,
    /// Per-joint limits tighter than the URDF's.
    pub limits: BTreeMap<String, LimitOverride>,
    /// Acceleration limit of every joint (rad/s²), unless `limits` sets one; None: none.
    pub max_acceleration: Option<f32>,
}

/// The limits one joint moves within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointLimit {
    /// Lower position limit (rad).
    pub lower: f32,
    /// Upper position limit (rad).
    pub upper: f32,
    /// Velocity limit (rad/s).
    pub velocity: f32,
    /// Acceleration limit (rad/s²; infinite: none).
    pub acceleration: f32,
    /// Effort limit in the backend's unit (infinite: none; the configuration's only, since the
    /// URDF's efforts are the servos' stall ratings, not a safe bound).
    pub effort: f32,
}

impl JointLimit {
    /// The tighter of the URDF's limits for `name` and the configuration's; a joint the URDF
    /// does not know is unbounded at 1 rad/s. [`Core::new`] checks the result.
    pub fn resolve(model: &RobotModel, name: &str, cfg: &CoreConfig) -> Self {
        let o = cfg.limits.get(name);
        let acceleration = o
            .and_then(|o| o.acceleration)
            .or(cfg.max_acceleration)
            .unwrap_or(f32::INFINITY);
        let effort = o.and_then(|o| o.effort).unwrap_or(f32::INFINITY);
        let Some(j) = model.joints.iter().find(|j| j.name == name) else {
            return Self {
                lower: f32::NEG_INFINITY,
                upper: f32::INFINITY,
                velocity: 1.0,
                acceleration,
                effort,
            };
        };
        let (lo, hi, v) = (j.lower as f32, j.upper as f32, j.velocity as f32);
        match o {
            Some(o) => Self {
                lower: o.lower.map_or(lo, |x| x.max(lo)),
                upper: o.upper.map_or(hi, |x| x.min(hi)),
                velocity: o.velocity.map_or(v, |x| x.min(v)),
                acceleration,
                effort,
            },
            None => Self {
                lower: lo,
                upper: hi,
                velocity: v,
                acceleration,
                effort,
            },
        }
    }

    /// `v` moved into the position limits.
    pub fn clamp(&self, v: f32) -> f32 {
        v.clamp(self.lower, self.upper)
    }

    /// The position at `opening` (0 lower … 1 upper).
    pub fn at_fraction(&self, opening: f32) -> f32 {
        self.lower + opening * (self.upper - self.lower)
    }
}

/// Who may pre-empt whom: teleop over policy over script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A script (lowest).
    Script,
    /// A learned policy.
    Policy,
    /// A human operator (highest).
    Teleop,
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "script" => Ok(Self::Script),
            "policy" => Ok(Self::Policy),
            "teleop" => Ok(Self::Teleop),
            other => Err(format!("priority `{other}`: use teleop, policy or script")),
        }
    }
}

/// The outcome of a command, as the `status` of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done as asked.
    Ok,
    /// Done, with the goal moved into the limits (or a limit stopped the TCP / gaze short).
    Clamped,
    /// Nothing moves: no joint configuration reaches the target.
    Unreachable,
    /// The profile ended but the joints stopped short of the goal (the reason says by how much).
    Missed,
    /// Superseded, or stopped by the e-stop, a torque change or a client.
    Cancelled,
    /// Refused (lease, e-stop, malformed, out of range).
    Rejected,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Clamped => "clamped",
            Self::Unreachable => "unreachable",
            Self::Missed => "missed",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }
}

/// A reply to a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Outcome.
    pub status: Status,
    /// Why, when not `ok`.
    pub reason: Option<String>,
}

impl Reply {
    /// `status` with an optional reason.
    pub fn new(status: Status, reason: Option<&str>) -> Self {
        Self {
            status,
            reason: reason.map(str::to_string),
        }
    }

    /// The message on the wire.
    pub fn to_msg(&self) -> schema::CommandReply {
        schema::CommandReply {
            v: V,
            status: self.status.as_str().into(),
            reason: self.reason.clone(),
        }
    }
}

/// A request of a motion or mode queryable, decoded.
#[derive(Debug, Clone)]
pub enum Request {
    /// Joint goto.
    Goto(schema::GotoRequest),
    /// TCP goto through the IK.
    Cartesian(schema::CartesianRequest),
    /// Head look-at.
    LookAt(schema::LookAtRequest),
    /// Gripper opening.
    Gripper(schema::GripperRequest),
    /// Torque on (stiff) or off (compliant).
    Torque(schema::TorqueRequest),
    /// Cancel the running goto.
    Cancel(schema::CancelRequest),
    /// Engage or clear the e-stop.
    Estop(schema::EstopRequest),
}

impl Request {
    /// The queryables whose payload decodes into a request.
    pub const NAMES: [&'static str; 7] = [
        "goto",
        "cartesian",
        "look_at",
        "gripper",
        "torque",
        "cancel",
        "estop",
    ];

    /// Decode the payload of the queryable `name` (`goto`, `cartesian`, `look_at`, `gripper`,
    /// `torque`, `cancel`, `estop`).
    pub fn decode(name: &str, payload: &[u8]) -> Result<Self, String> {
        let d = |e: schema::SchemaError| e.to_string();
        Ok(match name {
            "goto" => Self::Goto(schema::decode_robot(payload).map_err(d)?),
            "cartesian" => Self::Cartesian(schema::decode_robot(payload).map_err(d)?),
            "look_at" => Self::LookAt(schema::decode_robot(payload).map_err(d)?),
            "gripper" => Self::Gripper(schema::decode_robot(payload).map_err(d)?),
            "torque" => Self::Torque(schema::decode_robot(payload).map_err(d)?),
            "estop" => Self::Estop(schema::decode_robot(payload).map_err(d)?),
            "cancel" => Self::Cancel(schema::decode_robot(payload).map_err(d)?),
            other => return Err(format!("no queryable `{other}`")),
        })
    }

    /// The queryable's name (for logs and rejection reasons).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Goto(_) => "goto",
            Self::Cartesian(_) => "cartesian",
            Self::LookAt(_) => "look_at",
            Self::Gripper(_) => "gripper",
            Self::Torque(_) => "torque",
            Self::Cancel(_) => "cancel",
            Self::Estop(_) => "estop",
        }
    }
}

/// The verdict on an IK solution: `ok`; `clamped` with the reason when a joint limit stops the
/// TCP close to the target (2 cm / 0.1 rad: the arm goes there); `unreachable` with the closest
/// distance otherwise.
fn ik_verdict(arm: &str, sol: &reachy_kinematics::IkSolution) -> (Status, Option<String>) {
    if sol.ok {
        (Status::Ok, None)
    } else if sol.pos_err < 0.02 && sol.rot_err < 0.1 {
        (
            Status::Clamped,
            Some(format!(
                "joint limit: the TCP stops {:.1} mm / {:.3} rad from the target",
                sol.pos_err * 1000.0,
                sol.rot_err
            )),
        )
    } else {
        (
            Status::Unreachable,
            Some(format!(
                "out of reach: the closest the {arm} gets is {:.0} mm / {:.2} rad away",
                sol.pos_err * 1000.0,
                sol.rot_err
            )),
        )
    }
}

/// What the core asks of its server besides return values; see [`Core::take_outbox`].
#[derive(Debug, Default)]
pub struct Outbox {
    /// Replies to requests that were answered [`Answer::Later`].
    pub replies: Vec<(RequestId, Reply)>,
    /// Inputs rejected, with why (count them, log a few).
    pub rejected: Vec<String>,
    /// New targets: run a tick now (event-driven streaming) instead of at the next period.
    pub tick_now: bool,
    /// Nothing moves but the state changed (a Cartesian verdict): publish a state now.
    pub publish_now: bool,
}

/// When a request is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Now, with this reply.
    Now(Reply),
    /// When the motion it started ends or is superseded (through the outbox).
    Later,
}

/// A motion solved into joint goals.
struct Solved {
    idx: Vec<usize>,
    goals: Vec<f32>,
    /// Why the goal is not exactly what was asked.
    note: Option<String>,
}

/// IK outcome: a motion, or why the target is out of reach (nothing moves).
type Solution = Result<Solved, String>;

struct Lease {
    client: String,
    priority: Priority,
    token: u64,
    last: Instant,
}

struct Goto {
    idx: Vec<usize>,
    from: Vec<f32>,
    to: Vec<f32>,
    start: Instant,
    duration: f64,
    /// Why the goal is not exactly what was asked (the reply says `clamped`).
    clamped: Option<String>,
    id: RequestId,
}

/// Why the core cannot run with a configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LimitsError(pub String);

/// What to send to the backend after a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// Position targets, in the backend's joint order.
    pub position: Vec<f32>,
    /// Torque on (false: compliant or e-stopped).
    pub torque: bool,
}

/// The control core of one robot.
pub struct Core {
    cfg: CoreConfig,
    backend: String,
    model: RobotModel,
    names: Vec<String>,
    limits: Vec<JointLimit>,
    sent: Vec<f32>,
    /// Velocity of the sent targets over the last write (rad/s).
    sent_vel: Vec<f32>,
    desired: Vec<f32>,
    goto: Option<Goto>,
    lease: Option<Lease>,
    estop: bool,
    torque: bool,
    last_stream: Option<Instant>,
    /// When targets last went out: the velocity limit applies over real time, so a command
    /// applied between two ticks moves no faster than one applied on a tick.
    last_write: Option<Instant>,
    /// Outcome of the last streaming TCP target per arm.
    cartesian: Vec<schema::CartesianStatus>,
    seq: u64,
    t0: Instant,
    tokens: StdRng,
    /// When the last measured state was taken (the backend's stale check).
    last_measured: Option<Instant>,
    /// The backend's own e-stop flag in its last state.
    backend_estop: bool,
    /// The last tick found the backend stale.
    was_stale: bool,
    /// Per joint: since when its effort has been above its limit.
    effort_over: Vec<Option<Instant>>,
    /// Per joint: the (signed) effort that tripped its limit; the joint yields where it is
    /// until a command pulls it back the other way or a goto is started on it.
    effort_hold: Vec<Option<f32>>,
    outbox: Outbox,
}

/// How long a joint may push beyond its effort limit before it yields (s).
pub const EFFORT_TRIP: f64 = 0.05;

fn min_jerk(s: f64) -> f64 {
    let s = s.clamp(0.0, 1.0);
    s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)
}

impl Core {
    /// A core for the joints `names` of the backend called `backend` (`sim`, `serial`), started
    /// at `t0`; lease tokens are drawn from `tokens` (the server seeds it from the OS). Refuses
    /// limits that name a joint the model does not have, or that leave a joint no range
    /// (lower above upper, after the URDF's).
    pub fn new(
        model: RobotModel,
        backend: &str,
        names: Vec<String>,
        cfg: CoreConfig,
        t0: Instant,
        tokens: StdRng,
    ) -> Result<Self, LimitsError> {
        for j in cfg.limits.keys() {
            if !model.joints.iter().any(|m| &m.name == j) {
                return Err(LimitsError(format!(
                    "limits.{j}: the robot has no joint `{j}` (joints: {})",
                    model
                        .joints
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let limits: Vec<JointLimit> = names
            .iter()
            .map(|n| JointLimit::resolve(&model, n, &cfg))
            .collect();
        let n_joints = names.len();
        for (n, l) in names.iter().zip(&limits) {
            let usable =
                l.lower <= l.upper && l.velocity > 0.0 && l.acceleration > 0.0 && l.effort > 0.0;
            if !usable {
                return Err(LimitsError(format!(
                    "limits.{n}: lower {} / upper {} / velocity {} / acceleration {} (with the \
                     URDF's) leave the joint no range to move in",
                    l.lower, l.upper, l.velocity, l.acceleration
                )));
            }
        }
        Ok(Self {
            cfg,
            backend: backend.into(),
            model,
            names,
            limits,
            sent: Vec::new(),
            sent_vel: Vec::new(),
            desired: Vec::new(),
            goto: None,
            lease: None,
            estop: false,
            torque: true,
            last_stream: None,
            last_write: None,
            cartesian: Vec::new(),
            seq: 0,
            t0,
            tokens,
            last_measured: None,
            effort_over: vec![None; n_joints],
            effort_hold: vec![None; n_joints],
            backend_estop: false,
            was_stale: false,
            outbox: Outbox::default(),
        })
    }

    /// The joints, in the order of every vector.
    pub fn joint_names(&self) -> &[String] {
        &self.names
    }

    /// The limits of each joint.
    pub fn limits(&self) -> &[JointLimit] {
        &self.limits
    }

    /// Whether the e-stop is latched.
    pub fn estopped(&self) -> bool {
        self.estop
    }

    /// What happened since the last call besides return values.
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.outbox)
    }

    fn reject(&mut self, why: String) {
        self.outbox.rejected.push(why);
    }

    fn reply_later(&mut self, id: RequestId, status: Status, reason: Option<&str>) {
        self.outbox.replies.push((id, Reply::new(status, reason)));
    }

    /// Cancel the running goto (if any), its reply saying `why`.
    fn cancel_goto(&mut self, why: &str) -> bool {
        match self.goto.take() {
            Some(g) => {
                self.reply_later(g.id, Status::Cancelled, Some(why));
                true
            }
            None => false,
        }
    }

    fn index(&self, names: &[String], values: &[f32]) -> Result<Vec<usize>, String> {
        if names.len() != values.len() {
            return Err(format!("{} names, {} values", names.len(), values.len()));
        }
        names
            .iter()
            .zip(values)
            .map(|(n, v)| {
                if !v.is_finite() {
                    return Err(format!("{n}: {v} is not finite"));
                }
                self.joint(n).ok_or_else(|| format!("unknown joint `{n}`"))
            })
            .collect()
    }

    fn joint(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|k| k == name)
    }

    /// The backend's latest state was taken at `at`, which may be newer than the last tick's
    /// (ticks wait while a long request is served): staleness goes by the freshest state known.
    pub fn saw(&mut self, at: Instant) {
        if self.last_measured.is_none_or(|t| at > t) {
            self.last_measured = Some(at);
        }
    }

    /// Why new motion is refused while the backend's states are stale, if they are.
    fn stale(&self, now: Instant) -> Option<String> {
        let at = self.last_measured?;
        let age = now.saturating_duration_since(at);
        (age > STALE_AFTER).then(|| {
            format!(
                "the backend's last state is {} ms old: holding, no new motion until it answers",
                age.as_millis()
            )
        })
    }

    fn check_lease(&mut self, token: u64, now: Instant) -> Result<(), String> {
        match &mut self.lease {
            Some(l) if l.token == token => {
                l.last = now;
                Ok(())
            }
            Some(l) => Err(format!("the lease is held by {}", l.client)),
            None => Err("no lease: ask `lease` first".into()),
        }
    }

    /// Streaming joint targets of the lease holder.
    pub fn joint_targets(&mut self, t: &schema::JointTargets, now: Instant) {
        let r = self
            .check_lease(t.lease, now)
            .and_then(|_| self.stale(now).map_or(Ok(()), Err))
            .and_then(|_| self.index(&t.names, &t.position));
        match r {
            Ok(idx) if !self.desired.is_empty() && !self.estop => {
                self.stream(&idx, &t.position, now)
            }
            Ok(_) => self.reject("joint targets while e-stopped or before the first state".into()),
            Err(e) => self.reject(format!("joint targets: {e}")),
        }
    }

    /// Streaming targets for the joints at `idx` (checked): clamped into the limits, applied now.
    fn stream(&mut self, idx: &[usize], values: &[f32], now: Instant) {
        for (&i, &v) in idx.iter().zip(values) {
            let v = self.limits[i].clamp(v);
            if let Some(e) = self.effort_hold[i] {
                // still pushing the way that tripped the effort limit: it keeps yielding
                if (v - self.sent[i]) * e > 0.0 {
                    continue;
                }
                self.effort_hold[i] = None;
                self.effort_over[i] = None;
            }
            self.desired[i] = v;
        }
        // streaming takes over from a goto on the same joints
        if self
            .goto
            .as_ref()
            .is_some_and(|g| g.idx.iter().any(|i| idx.contains(i)))
        {
            self.cancel_goto("streaming targets took over");
        }
        self.last_stream = Some(now);
        // event-driven: the targets go to the backend now, not at the next tick, and the state
        // that acknowledges them is published at once
        self.outbox.tick_now = true;
    }

    /// A streaming TCP target: IK from the arm's current target, then like joint targets; the
    /// verdict goes into the state's `cartesian`.
    pub fn cartesian_target(&mut self, t: &schema::CartesianTarget, now: Instant) {
        if let Err(e) = self.check_lease(t.lease, now) {
            return self.reject(format!("cartesian target: {e}"));
        }
        if self.desired.is_empty() || self.estop {
            return self
                .reject("cartesian target while e-stopped or before the first state".into());
        }
        if let Some(why) = self.stale(now) {
            return self.reject(format!("cartesian target: {why}"));
        }
        let finite = t.position.iter().all(|v| v.is_finite())
            && t.orientation
                .is_none_or(|o| o.iter().all(|v| v.is_finite()))
            && t.gripper.is_none_or(f32::is_finite);
        if !finite {
            return self.reject("cartesian target: a value is not finite".into());
        }
        // seed the IK with where the arm is going, so a stream stays on one branch
        let sent = std::mem::replace(&mut self.sent, self.desired.clone());
        let solved = self.solve_cartesian(&t.arm, t.position, t.orientation);
        self.sent = sent;
        let (status, reason, apply) = match solved {
            Err(e) => return self.reject(format!("cartesian target: {e}")),
            Ok(Err(why)) => (Status::Unreachable, Some(why), None),
            Ok(Ok(mut s)) => {
                let gripper = format!("{}_gripper", t.arm.trim_end_matches("_arm"));
                if let (Some(g), Some(i)) = (t.gripper, self.joint(&gripper)) {
                    s.idx.push(i);
                    s.goals.push(self.limits[i].at_fraction(g.clamp(0.0, 1.0)));
                }
                let status = if s.note.is_some() {
                    Status::Clamped
                } else {
                    Status::Ok
                };
                (status, s.note.take(), Some((s.idx, s.goals)))
            }
        };
        let count = self
            .cartesian
            .iter()
            .find(|c| c.arm == t.arm)
            .map_or(0, |c| c.count)
            + 1;
        self.cartesian.retain(|c| c.arm != t.arm);
        self.cartesian.push(schema::CartesianStatus {
            arm: t.arm.clone(),
            status: status.as_str().into(),
            reason,
            count,
        });
        match apply {
            Some((idx, goals)) => self.stream(&idx, &goals, now),
            // nothing moves (the arm holds its target): publish the verdict now all the same
            None => self.outbox.publish_now = true,
        }
    }

    /// A motion or mode request `id`, with the latest measured state if any.
    pub fn request(
        &mut self,
        id: RequestId,
        req: Request,
        measured: Option<&Measured>,
        now: Instant,
    ) -> Answer {
        if let Some(m) = measured {
            self.saw(m.at);
        }
        let what = req.name();
        let motion = match req {
            Request::Estop(r) if r.engage => return Answer::Now(self.estop(true)),
            Request::Estop(r) => {
                // anyone may stop the robot; only the lease holder may let it move again
                return match self.check_lease(r.lease.unwrap_or(0), now) {
                    Ok(()) => Answer::Now(self.estop(false)),
                    Err(e) => self.rejected("estop clear", e),
                };
            }
            Request::Cancel(c) => {
                return match self.check_lease(c.lease, now) {
                    Ok(()) => Answer::Now(self.cancel()),
                    Err(e) => self.rejected(what, e),
                };
            }
            Request::Torque(t) => {
                return match self.torque_request(&t, measured, now) {
                    Ok(()) => Answer::Now(Reply::new(Status::Ok, None)),
                    Err(e) => self.rejected(what, e),
                }
            }
            Request::Goto(g) => self
                .admit(g.lease, g.duration, now)
                .and_then(|_| self.index(&g.names, &g.position))
                .map(|idx| {
                    Ok(Solved {
                        idx,
                        goals: g.position,
                        note: None,
                    })
                })
                .map(|s| (s, g.duration)),
            Request::Cartesian(c) => {
                let d = c.duration.unwrap_or(1.0);
                self.admit(c.lease, d, now)
                    .and_then(|_| {
                        let finite = c
                            .position
                            .iter()
                            .chain(c.orientation.iter().flatten())
                            .all(|x| x.is_finite());
                        finite.then_some(()).ok_or("non-finite pose".to_string())
                    })
                    .and_then(|_| self.solve_cartesian(&c.arm, c.position, c.orientation))
                    .map(|s| (s, d))
            }
            Request::LookAt(l) => {
                let d = l.duration.unwrap_or(0.5);
                self.admit(l.lease, d, now)
                    .and_then(|_| {
                        let finite = l.point.iter().all(|x| x.is_finite());
                        finite.then_some(()).ok_or("non-finite point".to_string())
                    })
                    .and_then(|_| self.solve_look_at(l.point))
                    .map(|s| (s, d))
            }
            Request::Gripper(g) => {
                let d = g.duration.unwrap_or(0.5);
                self.admit(g.lease, d, now)
                    .and_then(|_| self.gripper_goal(&g))
                    .map(|s| (Ok(s), d))
            }
        };
        match motion {
            Ok((Ok(s), duration)) => {
                self.start_goto(id, s, duration, now);
                Answer::Later
            }
            Ok((Err(why), _)) => Answer::Now(Reply::new(Status::Unreachable, Some(&why))),
            Err(e) => self.rejected(what, e),
        }
    }

    fn rejected(&mut self, what: &str, why: String) -> Answer {
        let reply = Reply::new(Status::Rejected, Some(&why));
        self.reject(format!("{what}: {why}"));
        Answer::Now(reply)
    }

    fn estop(&mut self, engage: bool) -> Reply {
        self.estop = engage;
        self.cancel_goto("e-stop");
        if !engage {
            // clear: hold where the robot is
            self.desired = self.sent.clone();
            // the backend's flag lags its clear: until it reads false once, a set flag is that
            // lag, not a new latch of the backend's own
            self.backend_estop = true;
        }
        Reply::new(Status::Ok, None)
    }

    fn cancel(&mut self) -> Reply {
        if self.cancel_goto("cancelled by a client") {
            self.desired = self.sent.clone();
            Reply::new(Status::Ok, None)
        } else {
            Reply::new(Status::Ok, Some("nothing to cancel"))
        }
    }

    /// Torque on (stiff) or off (compliant), for the lease holder.
    fn torque_request(
        &mut self,
        t: &schema::TorqueRequest,
        measured: Option<&Measured>,
        now: Instant,
    ) -> Result<(), String> {
        self.check_lease(t.lease, now)?;
        self.torque = t.on;
        self.cancel_goto("torque changed");
        // either way, hold (or follow) where the robot is: no jump when torque comes back
        if let Some(m) = measured {
            self.sent = m.position.clone();
            self.desired = m.position.clone();
        }
        self.last_stream = None;
        Ok(())
    }

    fn gripper_goal(&self, g: &schema::GripperRequest) -> Result<Solved, String> {
        if !(0.0..=1.0).contains(&g.opening) {
            return Err(format!("opening {} is not within 0..=1", g.opening));
        }
        let name = match g.side.as_str() {
            "r" | "right" | "r_gripper" => "r_gripper",
            "l" | "left" | "l_gripper" => "l_gripper",
            other => return Err(format!("side `{other}`: r or l")),
        };
        let i = self.joint(name).ok_or_else(|| format!("no joint {name}"))?;
        Ok(Solved {
            idx: vec![i],
            goals: vec![self.limits[i].at_fraction(g.opening)],
            note: None,
        })
    }

    /// Lease, e-stop and duration checks shared by every motion request.
    fn admit(&mut self, lease: u64, duration: f32, now: Instant) -> Result<(), String> {
        self.check_lease(lease, now)?;
        if self.estop {
            return Err("e-stop latched".into());
        }
        if !(0.05..=60.0).contains(&duration) {
            return Err(format!("duration {duration} s is not within 0.05..=60"));
        }
        if self.sent.is_empty() {
            return Err("no state from the backend yet".into());
        }
        if let Some(why) = self.stale(now) {
            return Err(why);
        }
        Ok(())
    }

    /// Start a minimum-jerk motion to the solved goals (clamped into the limits); its reply
    /// comes when it ends.
    fn start_goto(&mut self, id: RequestId, s: Solved, duration: f32, now: Instant) {
        let mut note = s.note;
        let to: Vec<f32> = s
            .idx
            .iter()
            .zip(&s.goals)
            .map(|(&i, &v)| {
                let c = self.limits[i].clamp(v);
                if c != v && note.is_none() {
                    note = Some(format!("{} moved into its joint limits", self.names[i]));
                }
                c
            })
            .collect();
        self.cancel_goto("a new motion took over");
        // a goto is deliberate: it may try again where the effort limit stopped a joint (and
        // is cancelled with the reason if it pushes too hard again)
        for &i in &s.idx {
            self.effort_hold[i] = None;
            self.effort_over[i] = None;
        }
        self.goto = Some(Goto {
            from: s.idx.iter().map(|&i| self.sent[i]).collect(),
            idx: s.idx,
            to,
            start: now,
            duration: duration as f64,
            clamped: note,
            id,
        });
        // the state that says `moving` goes out now, not at the next period
        self.outbox.publish_now = true;
    }

    /// The chain's joints as indices into the backend's joints, and the current targets.
    fn chain_state(&self, chain: &Chain) -> Result<(Vec<usize>, JointVec), String> {
        let mut seed: JointVec = [0.0; MAX_DOF];
        let mut idx = Vec::new();
        for (k, n) in chain.joint_names().iter().enumerate() {
            let i = self
                .joint(n)
                .ok_or_else(|| format!("the backend has no joint {n}"))?;
            seed[k] = self.sent[i] as f64;
            idx.push(i);
        }
        Ok((idx, seed))
    }

    /// The `kinematics` query: forward kinematics of the given joints, or inverse kinematics of
    /// a TCP target from a seed (the given joints, or the chain's current targets). Moves
    /// nothing and needs no lease.
    pub fn kinematics(&self, r: &schema::KinematicsRequest) -> schema::KinematicsReply {
        let reply =
            |status: Status, reason: Option<String>, q: Vec<f32>, pose| schema::KinematicsReply {
                v: schema::ROBOT_SCHEMA_VERSION,
                status: status.as_str().into(),
                reason,
                q,
                pose,
            };
        let rejected = |why: String| reply(Status::Rejected, Some(why), Vec::new(), None);
        let Ok(chain) = self.model.chain(&r.arm) else {
            let names: Vec<&str> = self.model.chains.iter().map(|c| c.name()).collect();
            return rejected(format!(
                "no chain `{}` (the robot has {})",
                r.arm,
                names.join(", ")
            ));
        };
        let finite =
            r.q.iter()
                .flatten()
                .chain(r.position.iter().flatten())
                .chain(r.orientation.iter().flatten())
                .all(|x| x.is_finite());
        if !finite {
            return rejected("non-finite values".into());
        }
        let mut seed = match self.chain_state(chain) {
            Ok((_, s)) => s,
            Err(e) => return rejected(e),
        };
        if let Some(q) = &r.q {
            if q.len() != chain.dof() {
                return rejected(format!(
                    "{} has {} joints, not {}",
                    r.arm,
                    chain.dof(),
                    q.len()
                ));
            }
            for (k, v) in q.iter().enumerate() {
                seed[k] = *v as f64;
            }
        }
        let pose_of = |q: &JointVec| {
            let f = chain.fk(q);
            schema::PoseMsg {
                position: [f.t.x as f32, f.t.y as f32, f.t.z as f32],
                orientation: f.quat_xyzw().map(|x| x as f32),
            }
        };
        let joints = |q: &JointVec| (0..chain.dof()).map(|k| q[k] as f32).collect::<Vec<_>>();
        let Some(p) = r.position else {
            if r.q.is_none() {
                return rejected("give q (forward kinematics) or a position (inverse)".into());
            }
            return reply(Status::Ok, None, joints(&seed), Some(pose_of(&seed)));
        };
        let t = [p[0] as f64, p[1] as f64, p[2] as f64];
        let target = match r.orientation {
            Some(o) => reachy_kinematics::IkTarget::Pose(reachy_kinematics::Frame::from_t_quat(
                t,
                o.map(|x| x as f64),
            )),
            None => reachy_kinematics::IkTarget::Position(nalgebra::Vector3::from(t)),
        };
        let sol = reachy_kinematics::solve(
            chain,
            &target,
            &seed,
            &reachy_kinematics::IkOptions::default(),
        );
        let (status, reason) = ik_verdict(&r.arm, &sol);
        reply(status, reason, joints(&sol.q), Some(pose_of(&sol.q)))
    }

    /// IK for a TCP target: Ok(Ok(goal)), Ok(Err(why unreachable)), Err(why rejected).
    fn solve_cartesian(
        &self,
        arm: &str,
        position: [f32; 3],
        orientation: Option<[f32; 4]>,
    ) -> Result<Solution, String> {
        let chain = self
            .model
            .chain(arm)
            .map_err(|_| format!("arm `{arm}`: r_arm or l_arm"))?;
        let (idx, seed) = self.chain_state(chain)?;
        let t = nalgebra::Vector3::new(position[0] as f64, position[1] as f64, position[2] as f64);
        let target = match orientation {
            Some(o) => reachy_kinematics::IkTarget::Pose(reachy_kinematics::Frame::from_t_quat(
                [t.x, t.y, t.z],
                o.map(|x| x as f64),
            )),
            None => reachy_kinematics::IkTarget::Position(t),
        };
        let sol = reachy_kinematics::solve(
            chain,
            &target,
            &seed,
            &reachy_kinematics::IkOptions::default(),
        );
        let goals: Vec<f32> = (0..chain.dof()).map(|k| sol.q[k] as f32).collect();
        match ik_verdict(arm, &sol) {
            (Status::Unreachable, why) => Ok(Err(why.unwrap_or_default())),
            (_, note) => Ok(Ok(Solved { idx, goals, note })),
        }
    }

    /// Head look-at.
    fn solve_look_at(&self, point: [f32; 3]) -> Result<Solution, String> {
        let chain = self.model.chain("head").map_err(|e| e.to_string())?;
        let (idx, seed) = self.chain_state(chain)?;
        let p = nalgebra::Vector3::new(point[0] as f64, point[1] as f64, point[2] as f64);
        let sol = reachy_kinematics::look_at(chain, &p, &seed, 1e-3);
        let goals: Vec<f32> = (0..chain.dof()).map(|k| sol.q[k] as f32).collect();
        if sol.ok {
            Ok(Ok(Solved {
                idx,
                goals,
                note: None,
            }))
        } else if sol.angle_err < 0.35 {
            Ok(Ok(Solved {
                idx,
                goals,
                note: Some(format!(
                    "neck limit: the camera points {:.2} rad away from the point",
                    sol.angle_err
                )),
            }))
        } else {
            Ok(Err(format!(
                "out of the neck's range: {:.2} rad away at best",
                sol.angle_err
            )))
        }
    }

    fn lease_reply(&self, granted: bool, token: u64, reason: Option<String>) -> schema::LeaseReply {
        schema::LeaseReply {
            v: V,
            granted,
            token,
            holder: self.lease.as_ref().map(|l| l.client.clone()),
            reason,
        }
    }

    /// A lease request that did not decode: refused, with the holder named.
    pub fn lease_malformed(&mut self, why: &str) -> schema::LeaseReply {
        self.reject(format!("lease: {why}"));
        self.lease_reply(false, 0, Some(why.into()))
    }

    /// Take, renew or release the lease.
    pub fn lease(&mut self, r: &schema::LeaseRequest, now: Instant) -> schema::LeaseReply {
        if let Some(token) = r.release {
            if self.lease.as_ref().is_some_and(|l| l.token == token) {
                self.lease = None;
                return self.lease_reply(true, token, None);
            }
            return self.lease_reply(false, token, Some("not the holder's token".into()));
        }
        let priority = match r.priority.parse::<Priority>() {
            Ok(p) => p,
            Err(why) => {
                self.reject("lease: unknown priority".into());
                return self.lease_reply(false, 0, Some(why));
            }
        };
        if let Some(token) = r.renew {
            return match &mut self.lease {
                Some(l) if l.token == token => {
                    l.last = now;
                    self.lease_reply(true, token, None)
                }
                _ => self.lease_reply(false, 0, Some("not the holder's token".into())),
            };
        }
        // the holder's name is public (every state carries it): asking under it takes nothing
        let free = self.lease.as_ref().is_none_or(|l| {
            now.saturating_duration_since(l.last).as_secs_f64() > self.cfg.lease_timeout
                || priority > l.priority
        });
        if !free {
            return self.lease_reply(
                false,
                0,
                Some("held by a client of equal or higher priority".into()),
            );
        }
        // 64 bits from a generator seeded by the OS: unguessable, never published
        let token = match self.tokens.next_u64() {
            0 => 1, // 0 stands for "no token" on the wire
            t => t,
        };
        self.lease = Some(Lease {
            client: r.client.clone(),
            priority,
            token,
            last: now,
        });
        self.lease_reply(true, token, None)
    }

    /// The `info` reply.
    pub fn info(&self, cameras: Vec<schema::CameraInfo>) -> schema::DaemonInfo {
        schema::DaemonInfo {
            v: V,
            robot: self.cfg.robot.clone(),
            backend: self.backend.clone(),
            rate_hz: self.cfg.rate_hz,
            joints: self
                .names
                .iter()
                .zip(&self.limits)
                .map(|(n, l)| schema::JointInfo {
                    name: n.clone(),
                    lower: l.lower,
                    upper: l.upper,
                })
                .collect(),
            chains: self
                .model
                .chains
                .iter()
                .map(|c| (c.name().to_string(), c.joint_names().to_vec()))
                .collect(),
            cameras,
        }
    }

    /// Why a measured state cannot be used, if it cannot: vectors of other lengths than the
    /// joints, or positions that are not finite.
    pub fn check_measured(&self, m: &Measured) -> Result<(), String> {
        let n = self.names.len();
        let lens = [
            m.position.len(),
            m.velocity.len(),
            m.effort.len(),
            m.faults.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(format!(
                "backend state: {lens:?} positions / velocities / efforts / faults for {n} joints"
            ));
        }
        if let Some(i) = m.position.iter().position(|p| !p.is_finite()) {
            return Err(format!(
                "backend state: {} at {}",
                m.position[i], self.names[i]
            ));
        }
        Ok(())
    }

    /// One control step on the measured state `m` at `now`: gotos advance, a stream that
    /// stopped holds, the targets move towards what was asked within the position, velocity
    /// and acceleration limits. Returns what to write to the backend; nothing when the state is
    /// unusable (rejected with the reason) or stale (the robot holds: the goto is cancelled, no
    /// target goes to a backend that does not answer, so its own watchdog takes over).
    pub fn tick(&mut self, m: &Measured, now: Instant) -> Option<Targets> {
        if let Err(why) = self.check_measured(m) {
            self.reject(why);
            return None;
        }
        self.saw(m.at);
        if m.estop && !self.backend_estop && !self.estop {
            // the backend latched an e-stop of its own (its safety, a button): so does the
            // daemon, and clearing it takes the lease holder, as for any e-stop. On the edge
            // only (see `estop`: after a clear the backend's flag lags).
            self.estop(true);
        }
        self.backend_estop = m.estop;
        if let Some(why) = self.stale(now) {
            if self.cancel_goto(&why) || self.last_stream.is_some() {
                self.desired = self.sent.clone();
                self.last_stream = None;
            }
            self.was_stale = true;
            return None;
        }
        if std::mem::take(&mut self.was_stale) {
            // back after a silence (a backend that restarted may stand anywhere): take up
            // where the joints are, as when torque comes back, instead of pulling them to the
            // targets from before
            self.sent = m.position.clone();
            self.desired = m.position.clone();
            self.sent_vel.iter_mut().for_each(|v| *v = 0.0);
        }
        let period = 1.0 / self.cfg.rate_hz as f32;
        let dt = self.last_write.map_or(period, |t| {
            now.saturating_duration_since(t)
                .as_secs_f32()
                .min(2.0 * period)
        });
        if self.sent.is_empty() {
            self.sent = m.position.clone();
            self.desired = m.position.clone();
        }
        self.advance_goto(m, now);
        // a stream that stopped holds the robot where it is
        if let Some(t) = self.last_stream {
            if now.saturating_duration_since(t).as_secs_f64() > self.cfg.stream_timeout {
                self.desired = self.sent.clone();
                self.last_stream = None;
            }
        }
        self.guard_effort(m, now);
        let limp = self.estop || !self.torque;
        if limp {
            // limp: the targets follow the measured joints, so torque comes back without a jump
            self.desired = m.position.clone();
        }
        self.ramp(dt);
        if limp {
            self.sent = m.position.clone();
            self.sent_vel.iter_mut().for_each(|v| *v = 0.0);
        }
        self.last_write = Some(now);
        Some(Targets {
            position: self.sent.clone(),
            torque: !limp,
        })
    }

    /// Effort limits: a joint whose measured effort stays beyond its limit for [`EFFORT_TRIP`]
    /// stops pushing — its target becomes where it is, a goto moving it is cancelled with the
    /// reason — and stays there until commanded back the other way.
    fn guard_effort(&mut self, m: &Measured, now: Instant) {
        for i in 0..self.names.len() {
            let limit = self.limits[i].effort;
            if !limit.is_finite() {
                continue;
            }
            let e = m.effort[i];
            if e.abs() > limit {
                let since = *self.effort_over[i].get_or_insert(now);
                let tripped = now.saturating_duration_since(since).as_secs_f64() >= EFFORT_TRIP;
                if tripped && self.effort_hold[i].is_none() {
                    self.effort_hold[i] = Some(e);
                    let why = format!(
                        "{} pushed with effort {:.2} beyond its limit {limit}: it yields where it is",
                        self.names[i],
                        e.abs()
                    );
                    if self.goto.as_ref().is_some_and(|g| g.idx.contains(&i)) {
                        self.cancel_goto(&why);
                    }
                }
            } else {
                self.effort_over[i] = None;
            }
            if self.effort_hold[i].is_some() {
                self.desired[i] = m.position[i];
            }
        }
    }

    /// The goto's minimum-jerk profile at `now`. When the profile has ended, the reply comes
    /// once the measured joints `m` are within [`GOAL_TOLERANCE`] of the goal, or after
    /// [`SETTLE_TIME`] more with `missed` and the joint furthest from it.
    fn advance_goto(&mut self, m: &Measured, now: Instant) {
        let Some(g) = &self.goto else { return };
        let elapsed = now.saturating_duration_since(g.start).as_secs_f64();
        let k = min_jerk(elapsed / g.duration) as f32;
        for (j, &i) in g.idx.iter().enumerate() {
            self.desired[i] = g.from[j] + (g.to[j] - g.from[j]) * k;
        }
        if elapsed < g.duration {
            return;
        }
        let (worst, miss) = g
            .idx
            .iter()
            .zip(&g.to)
            .map(|(&i, &to)| (i, (m.position[i] - to).abs()))
            .fold((0, 0.0f32), |a, b| if b.1 > a.1 { b } else { a });
        if miss > GOAL_TOLERANCE && elapsed < g.duration + SETTLE_TIME {
            return;
        }
        let g = self.goto.take().expect("checked");
        let (status, why) = if miss > GOAL_TOLERANCE {
            let why = format!(
                "{} stopped {:.3} rad from its goal ({:.1} s after the motion ended)",
                self.names[worst], miss, SETTLE_TIME
            );
            (Status::Missed, Some(why))
        } else {
            match g.clamped {
                Some(why) => (Status::Clamped, Some(why)),
                None => (Status::Ok, None),
            }
        };
        self.reply_later(g.id, status, why.as_deref());
    }

    /// Move the sent targets towards the desired ones over `dt` within the limits: no faster
    /// than the velocity limit, no faster than it can brake before the target, and no faster
    /// change of velocity than the acceleration limit.
    fn ramp(&mut self, dt: f32) {
        if self.sent_vel.len() != self.sent.len() {
            self.sent_vel = vec![0.0; self.sent.len()];
        }
        for i in 0..self.sent.len() {
            let l = self.limits[i];
            let err = self.desired[i] - self.sent[i];
            let mut v = if dt > 0.0 { err / dt } else { 0.0 }.clamp(-l.velocity, l.velocity);
            let amax = l.acceleration;
            if amax.is_finite() && dt > 0.0 {
                let vstop = (2.0 * amax * err.abs()).sqrt();
                v = v.clamp(-vstop, vstop);
                let vp = self.sent_vel[i];
                v = v.clamp(vp - amax * dt, vp + amax * dt);
            }
            let before = self.sent[i];
            self.sent[i] = l.clamp(self.sent[i] + v * dt);
            self.sent_vel[i] = if dt > 0.0 {
                (self.sent[i] - before) / dt
            } else {
                0.0
            };
        }
    }

    /// The state message for the measured state `m` at `now` (the next sequence number);
    /// `rejected` is the count of rejected inputs so far.
    pub fn state(&mut self, m: &Measured, now: Instant, rejected: u64) -> schema::RobotState {
        self.seq += 1;
        let position_of = |c: &Chain| -> Option<JointVec> {
            let mut q: JointVec = [0.0; MAX_DOF];
            for (k, n) in c.joint_names().iter().enumerate() {
                q[k] = *m.position.get(self.joint(n)?)? as f64;
            }
            Some(q)
        };
        let pose = |c: &Chain, q: &JointVec| {
            let f = c.fk(q);
            schema::PoseMsg {
                position: [f.t.x as f32, f.t.y as f32, f.t.z as f32],
                orientation: f.quat_xyzw().map(|x| x as f32),
            }
        };
        let tcp = self
            .model
            .chains
            .iter()
            .filter(|c| c.name().ends_with("_arm"))
            .filter_map(|c| {
                Some(schema::NamedPose {
                    name: c.name().into(),
                    pose: pose(c, &position_of(c)?),
                })
            })
            .collect();
        let gaze = self
            .model
            .chain("head")
            .ok()
            .and_then(|c| Some(pose(c, &position_of(c)?)));
        let gripper = ["r_gripper", "l_gripper"]
            .iter()
            .filter_map(|g| {
                let l = self.limits[self.joint(g)?];
                // 0 closed (lower limit) … 1 open (upper limit)
                let q = *m.position.get(self.joint(g)?)?;
                Some(((q - l.lower) / (l.upper - l.lower)).clamp(0.0, 1.0))
            })
            .collect();
        let limp = self.estop || !self.torque;
        schema::RobotState {
            v: V,
            seq: self.seq,
            t: now.saturating_duration_since(self.t0).as_secs_f64(),
            backend: self.backend.clone(),
            names: self.names.clone(),
            position: m.position.clone(),
            velocity: m.velocity.clone(),
            effort: m.effort.clone(),
            target: self.sent.clone(),
            tcp,
            gripper,
            torque: !limp,
            estop: self.estop,
            lease: self.lease.as_ref().map(|l| l.client.clone()),
            moving: self.goto.is_some(),
            // a servo that is off while torque is meant to be on is a fault; off on purpose is not
            faults: self
                .names
                .iter()
                .zip(&m.faults)
                .filter_map(|(n, f)| {
                    let f = f.as_ref()?;
                    let on_purpose = limp && f == "torque off";
                    (!on_purpose).then(|| schema::JointFault {
                        joint: n.clone(),
                        fault: f.clone(),
                    })
                })
                .chain(self.effort_hold.iter().enumerate().filter_map(|(i, e)| {
                    e.map(|e| schema::JointFault {
                        joint: self.names[i].clone(),
                        fault: format!(
                            "effort limit: pushed with {:.2} (limit {}), yielding until commanded \
                             back",
                            e.abs(),
                            self.limits[i].effort
                        ),
                    })
                }))
                .collect(),
            stale: now.saturating_duration_since(m.at) > STALE_AFTER,
            rejected,
            cartesian: self.cartesian.clone(),
            gaze,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The core driven by hand: time is an input, the "servos" follow the targets exactly, so
    //! every test is deterministic and sleeps nowhere.
    use super::*;

    const DT: Duration = Duration::from_millis(10);

    struct Rig {
        core: Core,
        t: Instant,
        q: Vec<f32>,
        token: u64,
    }

    /// Reachy's model, parsed once (a fuzz run builds a million cores), and its actuated joints.
    pub(super) fn model() -> (RobotModel, Vec<String>) {
        static MODEL: std::sync::OnceLock<RobotModel> = std::sync::OnceLock::new();
        let model = MODEL.get_or_init(|| RobotModel::reachy().unwrap()).clone();
        let names = model.joints.iter().map(|j| j.name.clone()).collect();
        (model, names)
    }

    /// 100 Hz, the default timeouts, no limits beyond the URDF's.
    pub(super) fn config() -> CoreConfig {
        CoreConfig {
            robot: "reachy".into(),
            rate_hz: 100.0,
            stream_timeout: 0.5,
            lease_timeout: 2.0,
            limits: BTreeMap::new(),
            max_acceleration: None,
        }
    }

    /// A healthy measured state at positions `q`, taken at `at`.
    pub(super) fn measured(q: &[f32], at: Instant) -> Measured {
        Measured {
            position: q.to_vec(),
            velocity: vec![0.0; q.len()],
            effort: vec![0.0; q.len()],
            faults: vec![None; q.len()],
            estop: false,
            at,
        }
    }

    impl Rig {
        /// A core on every actuated joint of Reachy, at 100 Hz, the robot at zero, the lease
        /// taken by `script`.
        fn new(cfg: impl FnOnce(&mut CoreConfig)) -> Self {
            let (model, names) = model();
            let mut c = config();
            cfg(&mut c);
            let t = Instant::now();
            let n = names.len();
            let mut core = Core::new(
                model,
                "test",
                names,
                c,
                t,
                rand::SeedableRng::seed_from_u64(7),
            )
            .expect("limits");
            // zero is inside every joint's limits except where it is not: start at the middle
            let q: Vec<f32> = core
                .limits()
                .iter()
                .map(|l| {
                    if l.lower <= 0.0 && l.upper >= 0.0 {
                        0.0
                    } else {
                        (l.lower + l.upper) / 2.0
                    }
                })
                .collect();
            assert_eq!(q.len(), n);
            let r = core.lease(&lease_req("script", "script"), t);
            assert!(r.granted, "{r:?}");
            let mut rig = Self {
                core,
                t,
                q,
                token: r.token,
            };
            rig.tick();
            rig
        }

        fn measured(&self) -> Measured {
            measured(&self.q, self.t)
        }

        /// One period: the core's targets become the measured positions.
        fn tick(&mut self) -> Targets {
            self.t += DT;
            let m = self.measured();
            let out = self
                .core
                .tick(&m, self.t)
                .expect("a fresh, well-formed state");
            self.q = out.position.clone();
            out
        }

        fn idx(&self, name: &str) -> usize {
            self.core.joint(name).unwrap()
        }

        fn goto(&mut self, names: &[&str], position: &[f32], duration: f32) -> Answer {
            let req = Request::Goto(schema::GotoRequest {
                v: V,
                lease: self.token,
                names: names.iter().map(|s| s.to_string()).collect(),
                position: position.to_vec(),
                duration,
            });
            let m = self.measured();
            self.core.request(1, req, Some(&m), self.t)
        }

        fn stream(&mut self, names: &[&str], position: &[f32]) {
            let t = schema::JointTargets {
                v: V,
                lease: self.token,
                names: names.iter().map(|s| s.to_string()).collect(),
                position: position.to_vec(),
            };
            self.core.joint_targets(&t, self.t);
        }
    }

    pub(super) fn lease_req(client: &str, priority: &str) -> schema::LeaseRequest {
        schema::LeaseRequest {
            v: V,
            client: client.into(),
            priority: priority.into(),
            release: None,
            renew: None,
        }
    }

    #[test]
    fn kinematics_answers_fk_and_ik_without_the_lease_and_moves_nothing() {
        let r = Rig::new(|_| {});
        let req = |q: Option<Vec<f32>>, p: Option<[f32; 3]>, o: Option<[f32; 4]>| {
            schema::KinematicsRequest {
                v: schema::ROBOT_SCHEMA_VERSION,
                arm: "r_arm".into(),
                q,
                position: p,
                orientation: o,
            }
        };
        let q = vec![0.1, -0.4, 0.2, -1.3, 0.1, 0.2, -0.3];
        let fk = r.core.kinematics(&req(Some(q.clone()), None, None));
        assert_eq!(fk.status, "ok", "{fk:?}");
        assert_eq!(fk.q, q);
        let pose = fk.pose.unwrap();
        // IK of that pose from the current targets finds a solution with the same pose
        let ik = r
            .core
            .kinematics(&req(None, Some(pose.position), Some(pose.orientation)));
        assert_eq!(ik.status, "ok", "{ik:?}");
        let back = r.core.kinematics(&req(Some(ik.q.clone()), None, None));
        let p = back.pose.unwrap().position;
        let err = (0..3)
            .map(|k| (p[k] - pose.position[k]).abs())
            .fold(0.0, f32::max);
        assert!(err < 2e-3, "{err}");
        // out of reach: the reason, and nothing moved
        let far = r.core.kinematics(&req(None, Some([2.0, 0.0, 0.5]), None));
        assert_eq!(far.status, "unreachable");
        assert!(far.reason.unwrap().contains("out of reach"));
        // bad input: the reason
        let bad = r.core.kinematics(&req(Some(vec![0.0; 3]), None, None));
        assert_eq!(bad.status, "rejected");
        assert!(bad.reason.unwrap().contains("7 joints"));
        let nan = r
            .core
            .kinematics(&req(None, Some([f32::NAN, 0.0, 0.0]), None));
        assert_eq!(nan.status, "rejected");
        let mut unknown = req(None, None, None);
        unknown.arm = "tail".into();
        assert!(r
            .core
            .kinematics(&unknown)
            .reason
            .unwrap()
            .contains("r_arm"));
        assert!(r.core.kinematics(&req(None, None, None)).reason.is_some());
    }

    #[test]
    fn a_goto_follows_minimum_jerk_and_answers_when_it_ends() {
        let mut r = Rig::new(|_| {});
        let e = r.idx("r_elbow_pitch");
        let goal = -1.0;
        assert_eq!(r.goto(&["r_elbow_pitch"], &[goal], 1.0), Answer::Later);
        let mut reply = None;
        for k in 0..120 {
            r.tick();
            let out = r.core.take_outbox();
            if let Some((id, rep)) = out.replies.into_iter().next() {
                assert_eq!(id, 1);
                reply = Some((k, rep));
                break;
            }
        }
        let (k, rep) = reply.expect("the goto answered");
        assert_eq!(rep.status, Status::Ok);
        // 1 s at 100 Hz: it ends on the 100th period
        assert_eq!(k, 99);
        assert!((r.q[e] - goal).abs() < 1e-4, "{}", r.q[e]);
        assert!(!r.core.state(&r.measured(), r.t, 0).moving);
    }

    #[test]
    fn targets_respect_the_velocity_limit_and_goals_the_position_limits() {
        let mut r = Rig::new(|_| {});
        let e = r.idx("r_elbow_pitch");
        let l = r.core.limits()[e];
        // far beyond the limit: clamped, and the reply says so
        r.goto(&["r_elbow_pitch"], &[l.lower - 5.0], 0.1);
        let mut status = None;
        for _ in 0..1000 {
            let before = r.q[e];
            r.tick();
            assert!((r.q[e] - before).abs() <= l.velocity * DT.as_secs_f32() + 1e-5);
            assert!(r.q[e] >= l.lower);
            if let Some((_, rep)) = r.core.take_outbox().replies.pop() {
                status = Some(rep);
            }
            if (r.q[e] - l.lower).abs() < 1e-5 {
                break;
            }
        }
        assert!((r.q[e] - l.lower).abs() < 1e-5, "{} vs {}", r.q[e], l.lower);
        // 0.1 s was too short at the velocity limit: the goal was not there in time
        let rep = status.expect("answered");
        assert_eq!(rep.status, Status::Missed, "{rep:?}");
        assert!(rep.reason.unwrap().contains("r_elbow_pitch stopped"));
        // from there, a goal beyond the limit is reached as far as the limit allows: clamped
        r.goto(&["r_elbow_pitch"], &[l.lower - 5.0], 0.5);
        let rep = (0..100)
            .find_map(|_| {
                r.tick();
                r.core.take_outbox().replies.pop()
            })
            .expect("answered")
            .1;
        assert_eq!(rep.status, Status::Clamped, "{rep:?}");
        assert!(rep.reason.unwrap().contains("joint limits"));
    }

    #[test]
    fn the_acceleration_limit_ramps_speed_up_and_down() {
        let mut r = Rig::new(|c| c.max_acceleration = Some(10.0));
        let e = r.idx("r_elbow_pitch");
        let goal = r.core.limits()[e].lower + 0.1;
        let mut v_prev = 0.0f32;
        for _ in 0..300 {
            r.stream(&["r_elbow_pitch"], &[goal]);
            let before = r.q[e];
            r.tick();
            let v = (r.q[e] - before) / DT.as_secs_f32();
            assert!(
                (v - v_prev).abs() <= 10.0 * DT.as_secs_f32() + 1e-3,
                "{v} after {v_prev}"
            );
            v_prev = v;
        }
        assert!((r.q[e] - goal).abs() < 1e-3, "{} vs {goal}", r.q[e]);
    }

    #[test]
    fn streaming_takes_over_a_goto_is_clamped_and_holds_when_it_stops() {
        let mut r = Rig::new(|_| {});
        let e = r.idx("r_elbow_pitch");
        let l = r.core.limits()[e];
        r.goto(&["r_elbow_pitch"], &[-1.0], 2.0);
        r.tick();
        r.core.take_outbox();
        r.stream(&["r_elbow_pitch"], &[l.lower - 1.0]);
        let out = r.core.take_outbox();
        assert!(out.tick_now);
        assert_eq!(out.replies.len(), 1);
        assert_eq!(out.replies[0].1.status, Status::Cancelled);
        assert_eq!(
            out.replies[0].1.reason.as_deref(),
            Some("streaming targets took over")
        );
        // the stream stops: after the timeout the robot holds where it is
        for _ in 0..60 {
            r.tick();
        }
        let held = r.q[e];
        assert!(
            held > l.lower,
            "it was still moving when the stream stopped"
        );
        for _ in 0..50 {
            r.tick();
        }
        assert_eq!(r.q[e], held);
    }

    #[test]
    fn bad_commands_are_rejected_with_a_reason() {
        let mut r = Rig::new(|_| {});
        r.stream(&["nope"], &[0.0]);
        r.stream(&["r_elbow_pitch"], &[f32::NAN]);
        r.stream(&["r_elbow_pitch", "r_wrist_roll"], &[0.0]);
        r.token ^= 1;
        r.stream(&["r_elbow_pitch"], &[0.0]);
        let why = r.core.take_outbox().rejected;
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].contains("unknown joint `nope`"));
        assert!(why[1].contains("not finite"));
        assert!(why[2].contains("2 names, 1 values"));
        assert!(why[3].contains("the lease is held by script"));
        let a = r.goto(&["r_elbow_pitch"], &[0.0], 1.0);
        assert!(matches!(
            a,
            Answer::Now(Reply {
                status: Status::Rejected,
                ..
            })
        ));
        r.token ^= 1;
        let a = r.goto(&["r_elbow_pitch"], &[0.0], 100.0);
        let Answer::Now(rep) = a else { panic!("{a:?}") };
        assert!(rep.reason.unwrap().contains("not within 0.05..=60"));
    }

    #[test]
    fn leases_follow_priority_lapse_and_need_their_token() {
        let mut r = Rig::new(|_| {});
        // equal priority: refused; higher: granted and the old token is void
        assert!(!r.core.lease(&lease_req("other", "script"), r.t).granted);
        let bad = r.core.lease(&lease_req("x", "boss"), r.t);
        assert!(!bad.granted && bad.reason.unwrap().contains("priority `boss`"));
        assert_eq!(r.core.take_outbox().rejected, ["lease: unknown priority"]);
        let t = r.core.lease(&lease_req("op", "teleop"), r.t);
        assert!(t.granted && t.token != r.token);
        assert_eq!(
            r.core.state(&r.measured(), r.t, 0).lease.as_deref(),
            Some("op")
        );
        r.stream(&["r_elbow_pitch"], &[0.1]);
        assert_eq!(r.core.take_outbox().rejected.len(), 1);
        // a policy cannot pre-empt teleop until its lease lapses (2 s without commands)
        assert!(!r.core.lease(&lease_req("pol", "policy"), r.t).granted);
        for _ in 0..201 {
            r.tick();
        }
        assert!(r.core.lease(&lease_req("pol", "policy"), r.t).granted);
        // release needs the holder's token
        let mut rel = lease_req("op", "teleop");
        rel.release = Some(t.token);
        assert!(!r.core.lease(&rel, r.t).granted);
    }

    #[test]
    fn the_estop_cancels_holds_limp_and_refuses_motion_until_cleared() {
        let mut r = Rig::new(|_| {});
        let e = r.idx("r_elbow_pitch");
        r.goto(&["r_elbow_pitch"], &[-1.0], 1.0);
        for _ in 0..30 {
            r.tick();
        }
        let est = |engage, lease| {
            Request::Estop(schema::EstopRequest {
                v: V,
                engage,
                lease,
            })
        };
        // anyone may engage it: no lease
        let a = r.core.request(2, est(true, None), None, r.t);
        assert_eq!(a, Answer::Now(Reply::new(Status::Ok, None)));
        let out = r.core.take_outbox();
        assert_eq!(out.replies[0].1.reason.as_deref(), Some("e-stop"));
        // limp: the targets follow the measured joints, torque is off
        r.q[e] = -0.3;
        let t = r.tick();
        assert!(!t.torque);
        assert_eq!(t.position[e], -0.3);
        assert!(r.core.state(&r.measured(), r.t, 0).estop);
        assert!(matches!(
            r.goto(&["r_elbow_pitch"], &[0.0], 1.0),
            Answer::Now(Reply {
                status: Status::Rejected,
                ..
            })
        ));
        r.stream(&["r_elbow_pitch"], &[0.0]);
        assert_eq!(r.core.take_outbox().rejected.len(), 2);
        // clearing needs the lease
        let a = r.core.request(3, est(false, None), None, r.t);
        assert!(matches!(
            a,
            Answer::Now(Reply {
                status: Status::Rejected,
                ..
            })
        ));
        let a = r.core.request(3, est(false, Some(r.token ^ 1)), None, r.t);
        assert!(matches!(
            a,
            Answer::Now(Reply {
                status: Status::Rejected,
                ..
            })
        ));
        assert!(r.core.estopped());
        // cleared: holds where it is, torque back on without a jump
        let a = r.core.request(3, est(false, Some(r.token)), None, r.t);
        assert_eq!(a, Answer::Now(Reply::new(Status::Ok, None)));
        let t = r.tick();
        assert!(t.torque);
        assert_eq!(t.position[e], -0.3);
    }

    #[test]
    fn compliant_mode_follows_the_joints_and_stiffens_without_a_jump() {
        let mut r = Rig::new(|_| {});
        let e = r.idx("r_elbow_pitch");
        let torque = |on, lease| Request::Torque(schema::TorqueRequest { v: V, lease, on });
        let m = r.measured();
        let a = r.core.request(1, torque(false, r.token), Some(&m), r.t);
        assert_eq!(a, Answer::Now(Reply::new(Status::Ok, None)));
        r.q[e] = -0.5; // pushed by hand
        let t = r.tick();
        assert!(!t.torque && t.position[e] == -0.5);
        let state = r.core.state(&r.measured(), r.t, 0);
        assert!(!state.torque && !state.estop);
        let m = r.measured();
        r.core.request(2, torque(true, r.token), Some(&m), r.t);
        let t = r.tick();
        assert!(t.torque);
        assert_eq!(t.position[e], -0.5);
        // torque needs the lease
        let a = r.core.request(3, torque(false, r.token ^ 1), Some(&m), r.t);
        assert!(matches!(
            a,
            Answer::Now(Reply {
                status: Status::Rejected,
                ..
            })
        ));
    }

    #[test]
    fn cartesian_requests_say_ok_unreachable_or_clamped() {
        let mut r = Rig::new(|_| {});
        let cart = |lease, position| {
            Request::Cartesian(schema::CartesianRequest {
                v: V,
                lease,
                arm: "r_arm".into(),
                position,
                orientation: None,
                duration: Some(1.0),
            })
        };
        let m = r.measured();
        // 3 m away: nothing moves
        let a = r
            .core
            .request(1, cart(r.token, [3.0, 0.0, 1.0]), Some(&m), r.t);
        let Answer::Now(rep) = a else { panic!("{a:?}") };
        assert_eq!(rep.status, Status::Unreachable);
        assert!(rep.reason.unwrap().contains("out of reach"));
        // where the arm's TCP is now: reachable
        let tcp = r.core.state(&m, r.t, 0).tcp[0].pose.position;
        let a = r.core.request(2, cart(r.token, tcp), Some(&m), r.t);
        assert_eq!(a, Answer::Later);
        let a = r
            .core
            .request(3, cart(r.token, [f32::NAN, 0.0, 0.0]), Some(&m), r.t);
        assert!(matches!(
            a,
            Answer::Now(Reply {
                status: Status::Rejected,
                ..
            })
        ));
        // a streaming target out of reach leaves a verdict in the state and publishes it
        let t = schema::CartesianTarget {
            v: V,
            lease: r.token,
            arm: "r_arm".into(),
            position: [3.0, 0.0, 1.0],
            orientation: None,
            gripper: None,
        };
        r.core.take_outbox();
        r.core.cartesian_target(&t, r.t);
        let out = r.core.take_outbox();
        assert!(out.publish_now && !out.tick_now);
        let s = r.core.state(&m, r.t, 0);
        assert_eq!(s.cartesian[0].status, "unreachable");
        assert_eq!(s.cartesian[0].count, 1);
    }

    #[test]
    fn a_joint_pushing_beyond_its_effort_limit_yields_until_commanded_back() {
        let mut r = Rig::new(|c| {
            c.limits.insert(
                "r_elbow_pitch".into(),
                LimitOverride {
                    lower: None,
                    upper: None,
                    velocity: None,
                    acceleration: None,
                    effort: Some(2.0),
                },
            );
        });
        let e = r.idx("r_elbow_pitch");
        assert_eq!(r.goto(&["r_elbow_pitch"], &[-1.0], 1.0), Answer::Later);
        for _ in 0..20 {
            r.tick();
        }
        // an obstacle: the joint stops where it is and the motor pushes with 5 (limit 2)
        let blocked = r.q[e];
        let push = |r: &mut Rig, effort: f32| {
            r.t += DT;
            let mut m = r.measured();
            m.effort[e] = effort;
            let out = r.core.tick(&m, r.t).expect("a fresh state");
            for (i, v) in out.position.iter().enumerate() {
                if i != e {
                    r.q[i] = *v;
                }
            }
            out
        };
        // 40 ms beyond it: still pushing, no verdict yet
        for _ in 0..4 {
            push(&mut r, -5.0);
        }
        assert!(r.core.take_outbox().replies.is_empty());
        let mut reply = None;
        let mut out = None;
        for _ in 0..3 {
            out = Some(push(&mut r, -5.0));
            reply = reply.or(r.core.take_outbox().replies.pop());
        }
        let (_, rep) = reply.expect("the goto was cancelled");
        assert_eq!(rep.status, Status::Cancelled, "{rep:?}");
        assert!(rep.reason.unwrap().contains("effort"));
        // it yields where it is, and the state says why
        assert_eq!(out.unwrap().position[e], blocked);
        let st = r.core.state(&r.measured(), r.t, 0);
        assert!(
            st.faults
                .iter()
                .any(|f| f.joint == "r_elbow_pitch" && f.fault.contains("effort limit")),
            "{:?}",
            st.faults
        );
        // streaming further into the obstacle moves nothing
        r.stream(&["r_elbow_pitch"], &[blocked - 0.3]);
        assert_eq!(push(&mut r, 0.0).position[e], blocked);
        // commanded back the other way: it follows again, and the fault is gone
        r.stream(&["r_elbow_pitch"], &[blocked + 0.2]);
        let back = push(&mut r, 0.0).position[e];
        assert!(back > blocked, "{back} vs {blocked}");
        let st = r.core.state(&r.measured(), r.t, 0);
        assert!(st.faults.iter().all(|f| !f.fault.contains("effort")));
    }

    #[test]
    fn a_configured_limit_tightens_the_urdf_and_reaches_info() {
        let mut lim = BTreeMap::new();
        lim.insert(
            "r_elbow_pitch".to_string(),
            LimitOverride {
                lower: Some(-0.5),
                upper: Some(100.0),
                velocity: Some(0.1),
                acceleration: None,
                effort: None,
            },
        );
        let r = Rig::new(|c| c.limits = lim);
        let e = r.idx("r_elbow_pitch");
        let l = r.core.limits()[e];
        assert_eq!(l.lower, -0.5);
        assert!(l.upper < 100.0, "the URDF's upper limit stays");
        assert_eq!(l.velocity, 0.1);
        let info = r.core.info(Vec::new());
        assert_eq!(info.joints[e].lower, -0.5);
        assert_eq!(info.backend, "test");
    }

    #[test]
    fn a_state_older_than_the_bound_is_stale() {
        let mut r = Rig::new(|_| {});
        let m = r.measured();
        assert!(!r.core.state(&m, r.t, 0).stale);
        assert!(r.core.state(&m, r.t + STALE_AFTER + DT, 0).stale);
        let s1 = r.core.state(&m, r.t, 5);
        assert_eq!(s1.rejected, 5);
        let s2 = r.core.state(&m, r.t, 5);
        assert_eq!(s2.seq, s1.seq + 1);
        r.tick();
    }
}

#[cfg(test)]
mod attack {
    //! Inputs as a hostile peer or a bad day would send them.
    use super::tests::{config, lease_req, measured, model};
    use super::*;
    use proptest::prelude::*;

    fn core() -> (Core, Instant, Vec<f32>) {
        let (model, names) = model();
        let t = Instant::now();
        let seed = rand::SeedableRng::seed_from_u64(1);
        let core = Core::new(model, "test", names, config(), t, seed).unwrap();
        let q = core.limits().iter().map(|l| l.clamp(0.0)).collect();
        (core, t, q)
    }

    fn lease(core: &mut Core, client: &str, priority: &str, t: Instant) -> schema::LeaseReply {
        core.lease(&lease_req(client, priority), t)
    }

    /// `neck_yaw` to 0.3 rad in `duration` s.
    fn neck_goto(lease: u64, duration: f32) -> Request {
        Request::Goto(schema::GotoRequest {
            v: V,
            lease,
            names: vec!["neck_yaw".into()],
            position: vec![0.3],
            duration,
        })
    }

    #[test]
    fn the_holders_public_name_takes_nothing_and_renewal_needs_the_token() {
        let (mut c, t, _) = core();
        let owner = lease(&mut c, "op", "teleop", t);
        assert!(owner.granted);
        // the name is in every state; asking under it is refused while the lease lives
        let thief = lease(&mut c, "op", "teleop", t);
        assert!(!thief.granted, "{thief:?}");
        assert_eq!(thief.token, 0);
        let mut renew = lease_req("op", "teleop");
        renew.renew = Some(owner.token ^ 0x55);
        assert!(!c.lease(&renew, t).granted);
        renew.renew = Some(owner.token);
        let r = c.lease(&renew, t + Duration::from_secs(1));
        assert!(r.granted && r.token == owner.token);
        // renewed at 1 s: still held at 2.5 s
        assert!(!lease(&mut c, "op", "teleop", t + Duration::from_millis(2500)).granted);
        // tokens are not a sequence
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..100u64 {
            let r = lease(
                &mut c,
                &format!("c{k}"),
                "teleop",
                t + Duration::from_secs(10 + 3 * k),
            );
            assert!(r.granted && r.token != 0);
            assert!(seen.insert(r.token));
        }
    }

    #[test]
    fn cancel_needs_the_lease() {
        let (mut c, t, q) = core();
        let l = lease(&mut c, "s", "script", t);
        c.tick(&measured(&q, t), t);
        let goto = neck_goto(l.token, 1.0);
        assert_eq!(c.request(1, goto, None, t), Answer::Later);
        let cancel = |lease| Request::Cancel(schema::CancelRequest { v: V, lease });
        let a = c.request(2, cancel(l.token ^ 1), None, t);
        assert!(matches!(
            a,
            Answer::Now(Reply {
                status: Status::Rejected,
                ..
            })
        ));
        assert!(c.take_outbox().replies.is_empty(), "the goto runs on");
        assert_eq!(
            c.request(3, cancel(l.token), None, t),
            Answer::Now(Reply::new(Status::Ok, None))
        );
        assert_eq!(c.take_outbox().replies[0].1.status, Status::Cancelled);
    }

    #[test]
    fn a_stale_backend_holds_gets_no_targets_and_refuses_motion() {
        let (mut c, t, q) = core();
        let l = lease(&mut c, "s", "script", t);
        let dt = Duration::from_millis(10);
        assert!(c.tick(&measured(&q, t), t).is_some());
        let goto = neck_goto(l.token, 1.0);
        assert_eq!(c.request(1, goto.clone(), None, t), Answer::Later);
        // the backend stops answering: its last state ages
        let old = measured(&q, t);
        let late = t + STALE_AFTER + dt;
        assert_eq!(
            c.tick(&old, late),
            None,
            "no target for a backend that does not answer"
        );
        let out = c.take_outbox();
        assert_eq!(out.replies[0].1.status, Status::Cancelled);
        assert!(out.replies[0].1.reason.as_ref().unwrap().contains("ms old"));
        let Answer::Now(r) = c.request(2, goto.clone(), None, late) else {
            panic!("answered later")
        };
        assert_eq!(r.status, Status::Rejected);
        assert!(r.reason.unwrap().contains("holding"));
        assert!(c.state(&old, late, 0).stale);
        // it answers again, standing elsewhere (it restarted): the targets take up from there,
        // no jump back, and motion is accepted
        let fresh = late + dt;
        let mut moved = q.clone();
        let yaw = c.joint("neck_yaw").unwrap();
        moved[yaw] = -0.25;
        let out = c.tick(&measured(&moved, fresh), fresh).expect("fresh");
        assert_eq!(out.position[yaw], -0.25);
        assert_eq!(c.request(3, goto, None, fresh), Answer::Later);
    }

    #[test]
    fn staleness_goes_by_the_freshest_state_not_the_last_tick() {
        let (mut c, t, q) = core();
        let l = lease(&mut c, "s", "script", t);
        assert!(c.tick(&measured(&q, t), t).is_some());
        // no tick for 300 ms (the loop served a long request), but the backend kept answering
        let now = t + Duration::from_millis(300);
        let fresh = measured(&q, now - Duration::from_millis(10));
        let a = c.request(1, neck_goto(l.token, 0.5), Some(&fresh), now);
        assert_eq!(a, Answer::Later);
        c.saw(fresh.at);
        c.joint_targets(
            &schema::JointTargets {
                v: V,
                lease: l.token,
                names: vec!["neck_yaw".into()],
                position: vec![0.1],
            },
            now,
        );
        assert!(c.take_outbox().rejected.is_empty());
    }

    #[test]
    fn a_goto_that_does_not_arrive_says_by_how_much_it_missed() {
        let (mut c, t, q) = core();
        let l = lease(&mut c, "s", "script", t);
        c.tick(&measured(&q, t), t);
        let goto = neck_goto(l.token, 0.5);
        assert_eq!(c.request(1, goto, None, t), Answer::Later);
        // the joint is blocked: it never moves
        let mut reply = None;
        for k in 1..=150u32 {
            let now = t + Duration::from_millis(10) * k;
            c.tick(&measured(&q, now), now);
            if let Some((_, r)) = c.take_outbox().replies.pop() {
                reply = Some((k, r));
                break;
            }
        }
        let (k, r) = reply.expect("answered");
        assert_eq!(r.status, Status::Missed);
        assert!(
            r.reason
                .as_ref()
                .unwrap()
                .contains("neck_yaw stopped 0.300 rad"),
            "{r:?}"
        );
        // not before the motion's end plus the settle time
        assert!(k >= 100, "answered after {k} periods");
    }

    #[test]
    fn limits_that_leave_no_range_or_name_no_joint_are_refused() {
        let (model, names) = model();
        let mut cfg = config();
        let over = |lower, upper| LimitOverride {
            lower,
            upper,
            velocity: None,
            acceleration: None,
            effort: None,
        };
        let new = |cfg: &CoreConfig| {
            Core::new(
                model.clone(),
                "t",
                names.clone(),
                cfg.clone(),
                Instant::now(),
                rand::SeedableRng::seed_from_u64(0),
            )
            .err()
        };
        cfg.limits
            .insert("r_elbow_pitch".into(), over(Some(0.5), Some(-0.5)));
        let e = new(&cfg).expect("refused");
        assert!(
            e.0.contains("limits.r_elbow_pitch") && e.0.contains("no range"),
            "{e}"
        );
        // above the URDF's upper limit: no range left either
        cfg.limits
            .insert("r_elbow_pitch".into(), over(Some(50.0), None));
        assert!(new(&cfg).is_some());
        cfg.limits.clear();
        cfg.limits
            .insert("r_elbw_pitch".into(), over(None, Some(0.1)));
        let e = new(&cfg).expect("refused");
        assert!(e.0.contains("no joint `r_elbw_pitch`"), "{e}");
    }

    #[test]
    fn a_malformed_backend_state_is_rejected_not_indexed() {
        let (mut c, t, q) = core();
        let short = measured(&q[..3], t);
        assert_eq!(c.tick(&short, t), None);
        let mut nan = measured(&q, t);
        nan.position[2] = f32::NAN;
        assert_eq!(c.tick(&nan, t), None);
        let why = c.take_outbox().rejected;
        assert_eq!(why.len(), 2);
        assert!(why[0].contains("positions / velocities / efforts / faults"));
        assert!(why[1].contains("NaN"));
        assert!(c.tick(&measured(&q, t), t).is_some());
    }

    /// A decoded request with hostile values: any name, non-finite numbers, huge durations.
    fn hostile_request() -> impl Strategy<Value = Request> {
        let f = prop_oneof![
            any::<f32>(),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(-1e30f32),
            -4.0f32..4.0
        ];
        let name = prop_oneof![
            Just("neck_yaw".to_string()),
            Just("r_gripper".to_string()),
            "[a-z_]{0,12}"
        ];
        let token = prop_oneof![Just(0u64), any::<u64>()];
        (
            0usize..7,
            token,
            proptest::collection::vec(name, 0..4),
            proptest::collection::vec(f.clone(), 0..4),
            f.clone(),
            proptest::array::uniform3(f.clone()),
            proptest::option::of(proptest::array::uniform4(f)),
            any::<bool>(),
            "[a-z_]{0,8}",
        )
            .prop_map(|(k, lease, names, position, d, p, o, b, side)| match k {
                0 => Request::Goto(schema::GotoRequest {
                    v: V,
                    lease,
                    names,
                    position,
                    duration: d,
                }),
                1 => Request::Cartesian(schema::CartesianRequest {
                    v: V,
                    lease,
                    arm: side,
                    position: p,
                    orientation: o,
                    duration: Some(d),
                }),
                2 => Request::LookAt(schema::LookAtRequest {
                    v: V,
                    lease,
                    point: p,
                    duration: Some(d),
                }),
                3 => Request::Gripper(schema::GripperRequest {
                    v: V,
                    lease,
                    side,
                    opening: d,
                    duration: None,
                }),
                4 => Request::Torque(schema::TorqueRequest { v: V, lease, on: b }),
                5 => Request::Cancel(schema::CancelRequest { v: V, lease }),
                _ => Request::Estop(schema::EstopRequest {
                    v: V,
                    engage: b,
                    lease: Some(lease),
                }),
            })
    }

    proptest! {
        // 256 cases each by default; a fuzz run:
        // `PROPTEST_CASES=1000000 cargo test --release -p reachy-daemon attack`

        /// Random and mutated bytes on every queryable: decoded or refused, never a panic; what
        /// decodes goes through the core, which answers it.
        #[test]
        fn any_bytes_on_any_queryable(k in 0..Request::NAMES.len(), bytes in proptest::collection::vec(any::<u8>(), 0..96),
                                      flip in any::<(usize, u8)>()) {
            let (mut c, t, q) = core();
            let l = lease(&mut c, "s", "script", t);
            c.tick(&measured(&q, t), t);
            // a valid request of that kind, then mutated
            let valid = schema::encode(&schema::GotoRequest {
                v: V, lease: l.token, names: vec!["neck_yaw".into()], position: vec![0.2], duration: 0.5,
            });
            for payload in [bytes.clone(), {
                let mut m = valid.clone();
                let i = flip.0 % m.len();
                m[i] ^= flip.1;
                m
            }] {
                if let Ok(req) = Request::decode(Request::NAMES[k], &payload) {
                    let _ = c.request(1, req, Some(&measured(&q, t)), t);
                }
            }
            prop_assert!(c.tick(&measured(&q, t + Duration::from_millis(10)), t + Duration::from_millis(10)).is_some());
        }

        /// Hostile requests, streaming targets and backend states in any order: the core never
        /// panics, and its targets stay finite and within the joint limits.
        #[test]
        fn hostile_sequences_keep_targets_finite_and_in_limits(
            reqs in proptest::collection::vec(hostile_request(), 1..12),
            streams in proptest::collection::vec((proptest::collection::vec(any::<f32>(), 0..4), any::<bool>()), 0..6),
        ) {
            let (mut c, t, q) = core();
            let l = lease(&mut c, "s", "script", t);
            let mut now = t;
            c.tick(&measured(&q, now), now);
            for (i, r) in reqs.into_iter().enumerate() {
                // half of them with the real token
                let r = match r {
                    Request::Goto(mut g) if i % 2 == 0 => { g.lease = l.token; Request::Goto(g) }
                    Request::Cartesian(mut g) if i % 2 == 0 => { g.lease = l.token; Request::Cartesian(g) }
                    Request::Gripper(mut g) if i % 2 == 0 => { g.lease = l.token; Request::Gripper(g) }
                    other => other,
                };
                let _ = c.request(i as u64, r, Some(&measured(&q, now)), now);
                for (values, mine) in &streams {
                    let t = schema::JointTargets {
                        v: V,
                        lease: if *mine { l.token } else { 7 },
                        names: ["neck_yaw", "r_elbow_pitch", "bogus", "neck_yaw"][..values.len()]
                            .iter().map(|s| s.to_string()).collect(),
                        position: values.clone(),
                    };
                    c.joint_targets(&t, now);
                }
                now += Duration::from_millis(10);
                if let Some(out) = c.tick(&measured(&q, now), now) {
                    for (v, l) in out.position.iter().zip(c.limits()) {
                        prop_assert!(v.is_finite() && *v >= l.lower && *v <= l.upper, "{v} outside {l:?}");
                    }
                }
            }
        }
    }
}
