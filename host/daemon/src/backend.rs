//! Where the joints really are and where the targets go: the [`Backend`] trait and its two
//! implementations, the simulator over zenoh ([`SimBackend`]) and the firmware over its host
//! link ([`SerialBackend`]).

use std::time::{Duration, Instant};

use reachy_api::net::Latest;
use reachy_api::schema::{self, keys, ROBOT_SCHEMA_VERSION as V};
use reachy_api::ApiError;
use reachy_kinematics::model::RobotModel;
use zenoh::Wait;

use crate::core::JointLimit;
use crate::DaemonError;

/// Measured joint state from a backend.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Positions.
    pub position: Vec<f32>,
    /// Velocities.
    pub velocity: Vec<f32>,
    /// Efforts.
    pub effort: Vec<f32>,
    /// Per joint: `None` when its servo is healthy, else what is wrong.
    pub faults: Vec<Option<String>>,
    /// The backend latched an e-stop of its own (the firmware's, after an `EStop` or its own
    /// safety): the daemon latches too.
    pub estop: bool,
    /// When it was received.
    pub at: Instant,
}

/// Where the joints really are and where the targets go: the simulator or the firmware.
pub trait Backend: Send {
    /// `sim` or `serial`.
    fn name(&self) -> &'static str;
    /// Joints, in the order of every vector.
    fn joint_names(&self) -> Vec<String>;
    /// The latest measured state, if any arrived.
    fn read(&mut self) -> Option<Measured>;
    /// Send targets; `torque == false` makes the joints compliant.
    fn write(&mut self, targets: &[f32], torque: bool) -> Result<(), DaemonError>;
    /// Cameras whose frames the daemon re-publishes under `reachy/<robot>/camera/<name>`.
    fn cameras(&self) -> Vec<schema::CameraInfo> {
        Vec::new()
    }
    /// Engage (torque off everywhere, latched where the backend can latch) or clear the
    /// backend's own e-stop. The daemon latches it too and writes no torque meanwhile.
    fn estop(&mut self, engage: bool) -> Result<(), DaemonError>;
    /// The daemon's joint limits, in the order of [`Self::joint_names`], for a backend that
    /// enforces limits of its own (the firmware does, on board).
    fn set_limits(&mut self, limits: &[JointLimit]) -> Result<(), DaemonError> {
        let _ = limits;
        Ok(())
    }
}

/// The simulator (`reachy sim`, or an in-process bridge) as a backend, over zenoh.
pub struct SimBackend {
    names: Vec<String>,
    cameras: Vec<schema::CameraInfo>,
    latest: Latest<Measured>,
    publisher: zenoh::pubsub::Publisher<'static>,
    /// The last targets written (an e-stop makes them limp).
    last: Vec<f32>,
    _subs: Vec<zenoh::pubsub::Subscriber<()>>,
}

impl SimBackend {
    /// Find the sim of `robot` on `session` (waiting up to `timeout` for its `info`).
    pub fn connect(
        session: &zenoh::Session,
        robot: &str,
        timeout: Duration,
    ) -> Result<Self, DaemonError> {
        let key = keys::sim_query(robot, "info");
        let info: schema::SimInfo = reachy_api::net::retry(
            timeout,
            || format!("no sim answers on {key} (start `reachy sim`, or pass --connect)"),
            || {
                reachy_api::net::get(
                    session,
                    &key,
                    None,
                    Duration::from_secs(1),
                    schema::decode_sim,
                )
            },
        )?;
        let names: Vec<String> = info.joints.iter().map(|j| j.name.clone()).collect();
        let expected = names.len();
        let (latest, sub) =
            reachy_api::net::subscribe_latest(session, &keys::sim_joint_state(robot), move |b| {
                let js = schema::decode_sim::<schema::JointState>(b).ok()?;
                // a state of other joints, or of other lengths, is some other peer's: dropped
                let n = expected;
                if [js.position.len(), js.velocity.len(), js.effort.len()] != [n, n, n]
                    || js.position.iter().any(|p| !p.is_finite())
                {
                    tracing::warn!(
                        "dropped a sim joint state of {} positions for {n} joints",
                        js.position.len()
                    );
                    return None;
                }
                Some(Measured {
                    faults: vec![None; js.position.len()],
                    position: js.position,
                    velocity: js.velocity,
                    effort: js.effort,
                    estop: false,
                    at: Instant::now(),
                })
            })?;
        let publisher = session
            .declare_publisher(keys::sim_joint_command(robot))
            .wait()
            .map_err(ApiError::zenoh(
                "declaring the sim's joint-command publisher",
            ))?;
        let mut subs = vec![sub];
        if !info.cameras.is_empty() {
            subs.push(republish_cameras(session, robot)?);
        }
        Ok(Self {
            names,
            cameras: info.cameras,
            latest,
            publisher,
            last: Vec::new(),
            _subs: subs,
        })
    }
}

/// Re-publish the sim's camera frames under the daemon's keys (`reachy/<robot>/camera/<name>`,
/// robot schema version), so clients use the daemon's API only, whatever the backend.
fn republish_cameras(
    session: &zenoh::Session,
    robot: &str,
) -> Result<zenoh::pubsub::Subscriber<()>, ApiError> {
    let s = session.clone();
    let robot = robot.to_string();
    session
        .declare_subscriber(keys::sim_camera(&robot, "*"))
        .callback(move |sample| {
            let Ok(mut frame) =
                schema::decode_sim::<schema::CameraFrame>(&sample.payload().to_bytes())
            else {
                tracing::warn!("malformed camera frame on {}", sample.key_expr());
                return;
            };
            if frame.camera.is_empty() || frame.camera.contains(['/', '*', '$', '?', '#']) {
                return;
            }
            frame.v = V;
            if let Err(e) = s
                .put(keys::camera(&robot, &frame.camera), schema::encode(&frame))
                .wait()
            {
                tracing::warn!("re-publishing camera {}: {e}", frame.camera);
            }
        })
        .wait()
        .map_err(ApiError::zenoh("subscribing to the sim's cameras"))
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }
    fn cameras(&self) -> Vec<schema::CameraInfo> {
        self.cameras.clone()
    }
    fn joint_names(&self) -> Vec<String> {
        self.names.clone()
    }
    fn read(&mut self) -> Option<Measured> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }
    fn estop(&mut self, engage: bool) -> Result<(), DaemonError> {
        match (engage, self.last.is_empty()) {
            // the sim has no latch of its own: limp now; the daemon writes no torque meanwhile
            (true, false) => {
                let last = self.last.clone();
                self.write(&last, false)
            }
            _ => Ok(()),
        }
    }
    fn write(&mut self, targets: &[f32], torque: bool) -> Result<(), DaemonError> {
        self.last = targets.to_vec();
        let cmd = schema::JointCommand {
            v: schema::SIM_SCHEMA_VERSION,
            names: self.names.clone(),
            position: targets.to_vec(),
            torque: Some(torque),
        };
        self.publisher
            .put(schema::encode(&cmd))
            .wait()
            .map_err(ApiError::zenoh("sending joint commands to the sim"))?;
        Ok(())
    }
}

/// The firmware (`reachy firmware run`, or the Cortex-M board) as a backend, over its host
/// link: the joints of one servo bus (a chain), in the URDF servo map's order, as the firmware
/// numbers them with `--bus CHAIN=PORT`. Efforts are the servos' present currents (A).
///
/// A link that fails, or says nothing for [`LINK_SILENT`], is reopened at its path every
/// [`LINK_SILENT`] (a firmware process that restarts creates its pty there again): meanwhile
/// the state goes stale and the daemon holds; once telemetry flows again the torque state and
/// the joint limits are sent afresh.
pub struct SerialBackend {
    link: crate::firmware_link::FirmwareLink,
    path: String,
    baud: u32,
    names: Vec<String>,
    /// (direction, offset) per joint: joint = direction * servo + offset.
    mounts: Vec<(f32, f32)>,
    latest: Option<Measured>,
    torque: Option<bool>,
    /// The limits last sent, for a reopened link.
    limits: Option<Vec<(u8, f32, f32, f32)>>,
    /// When the link last gave telemetry, or was (re)opened.
    heard: Instant,
    /// The link failed: a warning was logged.
    lost: bool,
    /// The goals last sent, and when.
    goals_sent: Option<(Instant, Vec<(u8, f32)>)>,
    /// Goal frames whose write timed out, and when that was last said.
    slow_writes: u64,
    slow_said: Option<Instant>,
}

/// How often the serial backend re-sends goals that have not changed (a keep-alive well inside
/// the firmware's watchdog hold time, 100 ms by default).
pub const GOAL_KEEPALIVE: Duration = Duration::from_millis(40);

/// Silence on the firmware link after which it is reopened (and the period of the attempts).
pub const LINK_SILENT: Duration = Duration::from_millis(500);

impl SerialBackend {
    /// Open the firmware link at `path` for the joints of `bus` (e.g. `r_arm`), servos mounted
    /// as `mounts` says (joints not listed: direction 1, offset 0).
    pub fn open(
        path: &str,
        baud: u32,
        model: &RobotModel,
        bus: &str,
        mounts: &std::collections::BTreeMap<String, crate::config::ServoMount>,
    ) -> Result<Self, DaemonError> {
        let names: Vec<String> = model
            .servo_map()
            .into_iter()
            .filter(|a| a.bus == bus)
            .map(|a| a.joint)
            .collect();
        if names.is_empty() {
            return Err(DaemonError::Backend(format!(
                "no servo bus `{bus}` in the model (r_arm, l_arm, head)"
            )));
        }
        let link = crate::firmware_link::FirmwareLink::open(path, baud)?;
        let mounts = names
            .iter()
            .map(|n| {
                mounts
                    .get(n)
                    .map_or((1.0, 0.0), |m| (m.direction as f32, m.offset))
            })
            .collect();
        Ok(Self {
            link,
            path: path.to_string(),
            baud,
            mounts,
            names,
            latest: None,
            torque: None,
            limits: None,
            heard: Instant::now(),
            lost: false,
            goals_sent: None,
            slow_writes: 0,
            slow_said: None,
        })
    }

    /// The link failed or fell silent: open it again at its path.
    fn reopen(&mut self) {
        self.heard = Instant::now();
        match crate::firmware_link::FirmwareLink::open(&self.path, self.baud) {
            Ok(l) => {
                self.link = l;
                // the firmware that answers may be a new one: torque, goals and limits afresh
                self.torque = None;
                self.goals_sent = None;
                if let Some(lim) = &self.limits {
                    if let Err(e) = self.link.send_joint_limits(lim) {
                        tracing::warn!("firmware link {}: sending the limits: {e}", self.path);
                    }
                }
            }
            Err(e) => tracing::debug!("firmware link {}: reopening: {e}", self.path),
        }
    }
}

impl Backend for SerialBackend {
    fn name(&self) -> &'static str {
        "serial"
    }
    fn estop(&mut self, engage: bool) -> Result<(), DaemonError> {
        use reachy_firmware::link::Command;
        // the firmware's own latch: torque off on every servo until cleared, whatever the host
        // sends meanwhile
        self.link.send(if engage {
            &Command::EStop
        } else {
            &Command::ClearEStop
        })?;
        // after a clear the firmware keeps torque off until asked: the next write asks
        self.torque = None;
        Ok(())
    }
    fn set_limits(&mut self, limits: &[JointLimit]) -> Result<(), DaemonError> {
        // in the servos' frame: joint = direction * servo + offset
        let servo: Vec<(u8, f32, f32, f32)> = limits
            .iter()
            .zip(&self.mounts)
            .enumerate()
            .map(|(i, (l, &(d, o)))| {
                let (a, b) = ((l.lower - o) * d, (l.upper - o) * d);
                (i as u8, a.min(b), a.max(b), l.velocity)
            })
            .collect();
        self.link.send_joint_limits(&servo)?;
        self.limits = Some(servo);
        Ok(())
    }
    fn joint_names(&self) -> Vec<String> {
        self.names.clone()
    }
    fn read(&mut self) -> Option<Measured> {
        if self.heard.elapsed() >= LINK_SILENT {
            if !self.lost {
                tracing::warn!(
                    "firmware link {}: no telemetry for {} ms; reopening it every {} ms",
                    self.path,
                    LINK_SILENT.as_millis(),
                    LINK_SILENT.as_millis()
                );
                self.lost = true;
            }
            self.reopen();
        }
        match self.link.poll() {
            Ok(ts) => {
                if !ts.is_empty() {
                    self.heard = Instant::now();
                    if std::mem::take(&mut self.lost) {
                        tracing::info!("firmware link {}: telemetry again", self.path);
                    }
                }
                for t in ts {
                    if let reachy_firmware::link::Telemetry::State { joints, flags, .. } = t {
                        if joints.len() == self.names.len() {
                            self.latest = Some(Measured {
                                position: joints
                                    .iter()
                                    .zip(&self.mounts)
                                    .map(|(j, (d, o))| d * j.position + o)
                                    .collect(),
                                velocity: joints
                                    .iter()
                                    .zip(&self.mounts)
                                    .map(|(j, (d, _))| d * j.velocity)
                                    .collect(),
                                effort: joints.iter().map(|j| j.current).collect(),
                                faults: joints.iter().map(servo_fault).collect(),
                                estop: flags & reachy_firmware::link::state_flags::ESTOP != 0,
                                at: Instant::now(),
                            });
                        }
                    }
                }
            }
            Err(e) => {
                if !self.lost {
                    tracing::warn!("firmware link {}: {e}; reopening it", self.path);
                    self.lost = true;
                }
                // reopened on the next read after the silence bound
            }
        }
        self.latest.clone()
    }
    fn write(&mut self, targets: &[f32], torque: bool) -> Result<(), DaemonError> {
        // a failing link never stops the daemon's loop: the state goes stale (the daemon holds
        // and says so) and the read side reopens the link
        if let Err(e) = self.send_targets(targets, torque) {
            if write_timed_out(&e) {
                // the link takes the goals slower than they come (an emulated board's UART, a
                // low baud rate): this frame is lost, the next supersedes it; said every 5 s
                self.slow_writes += 1;
                if self
                    .slow_said
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                {
                    tracing::warn!(
                        "firmware link {}: slower than the goal stream ({} goal frames timed out \
                         so far)",
                        self.path,
                        self.slow_writes
                    );
                    self.slow_said = Some(Instant::now());
                }
                return Ok(());
            }
            if !self.lost {
                tracing::warn!("firmware link {}: {e}; reopening it", self.path);
                self.lost = true;
            }
        }
        Ok(())
    }
}

impl SerialBackend {
    fn send_targets(&mut self, targets: &[f32], torque: bool) -> Result<(), DaemonError> {
        if self.torque != Some(torque) {
            let mask = if self.names.len() >= 32 {
                u32::MAX
            } else {
                (1u32 << self.names.len()) - 1
            };
            self.link
                .send(&reachy_firmware::link::Command::Torque { mask, on: torque })?;
            self.torque = Some(torque);
            self.goals_sent = None;
        }
        let goals: Vec<(u8, f32)> = targets
            .iter()
            .enumerate()
            .zip(&self.mounts)
            .map(|((i, &q), (d, o))| (i as u8, (q - o) * d))
            .collect();
        // unchanged goals (a limb holding still) go out only every GOAL_KEEPALIVE: the
        // firmware's watchdog still hears the host, and a slow link carries the limbs that move
        let fresh = self
            .goals_sent
            .as_ref()
            .is_some_and(|(at, g)| *g == goals && at.elapsed() < GOAL_KEEPALIVE);
        if !fresh {
            self.goals_sent = None;
            self.link.send_goals(&goals)?;
            self.goals_sent = Some((Instant::now(), goals));
        }
        Ok(())
    }
}

/// Whether `e` is a write to the link that timed out (the link busy, not gone).
fn write_timed_out(e: &DaemonError) -> bool {
    matches!(
        e,
        DaemonError::Link(crate::firmware_link::FirmwareLinkError::Io(io))
            if io.kind() == std::io::ErrorKind::TimedOut
    )
}

/// What is wrong with a servo, from the firmware's telemetry (`None`: healthy).
pub fn servo_fault(j: &reachy_firmware::link::JointState) -> Option<String> {
    use reachy_firmware::link::joint_flags as f;
    let mut why = Vec::new();
    if j.flags & f::NO_REPLY != 0 {
        why.push("not answering".to_string());
    }
    if j.flags & f::SHUTDOWN != 0 {
        why.push(format!(
            "shut down (hardware error 0x{:02x}, {} °C)",
            j.hardware_error, j.temperature
        ));
    } else if j.hardware_error != 0 {
        why.push(format!("hardware error 0x{:02x}", j.hardware_error));
    }
    if j.flags & f::TORQUE_ON == 0 {
        why.push("torque off".to_string());
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Several backends as one, each with its own joints (a board or an adapter per limb): the
/// robot's joints are theirs end to end, targets and limits go to the one that has the joint,
/// an e-stop to all. A state is given once every part has sent one, as old as the oldest part's
/// (one stalled bus makes the whole state stale, and the daemon holds the robot).
pub struct MultiBackend {
    parts: Vec<Box<dyn Backend>>,
    /// Where each part's joints start in the joint vector.
    starts: Vec<usize>,
    latest: Vec<Option<Measured>>,
}

impl MultiBackend {
    /// Join `parts` (no joint in two of them).
    pub fn new(parts: Vec<Box<dyn Backend>>) -> Result<Self, DaemonError> {
        let mut starts = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for p in &parts {
            starts.push(names.len());
            for n in p.joint_names() {
                if names.contains(&n) {
                    return Err(DaemonError::Backend(format!("joint {n} is on two buses")));
                }
                names.push(n);
            }
        }
        let latest = parts.iter().map(|_| None).collect();
        Ok(Self {
            parts,
            starts,
            latest,
        })
    }

    fn range(&self, k: usize) -> std::ops::Range<usize> {
        let end = self
            .starts
            .get(k + 1)
            .copied()
            .unwrap_or_else(|| self.starts[k] + self.parts[k].joint_names().len());
        self.starts[k]..end
    }
}

impl Backend for MultiBackend {
    fn name(&self) -> &'static str {
        self.parts.first().map_or("none", |p| p.name())
    }

    fn joint_names(&self) -> Vec<String> {
        self.parts.iter().flat_map(|p| p.joint_names()).collect()
    }

    fn read(&mut self) -> Option<Measured> {
        let mut fresh = false;
        for (p, l) in self.parts.iter_mut().zip(&mut self.latest) {
            if let Some(m) = p.read() {
                *l = Some(m);
                fresh = true;
            }
        }
        if !fresh || self.latest.iter().any(Option::is_none) {
            return None;
        }
        let all = self.latest.iter().flatten();
        Some(Measured {
            position: all.clone().flat_map(|m| m.position.clone()).collect(),
            velocity: all.clone().flat_map(|m| m.velocity.clone()).collect(),
            effort: all.clone().flat_map(|m| m.effort.clone()).collect(),
            faults: all.clone().flat_map(|m| m.faults.clone()).collect(),
            estop: all.clone().any(|m| m.estop),
            at: all.map(|m| m.at).min()?,
        })
    }

    fn write(&mut self, targets: &[f32], torque: bool) -> Result<(), DaemonError> {
        for k in 0..self.parts.len() {
            let r = self.range(k);
            self.parts[k].write(&targets[r], torque)?;
        }
        Ok(())
    }

    fn estop(&mut self, engage: bool) -> Result<(), DaemonError> {
        // every part, even when one fails: the others still stop
        let mut first = Ok(());
        for p in &mut self.parts {
            if let Err(e) = p.estop(engage) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn set_limits(&mut self, limits: &[JointLimit]) -> Result<(), DaemonError> {
        for k in 0..self.parts.len() {
            let r = self.range(k);
            self.parts[k].set_limits(&limits[r])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A backend that remembers what it was sent and gives back what the test puts in.
    struct Fake {
        names: Vec<String>,
        measured: Arc<Mutex<Option<Measured>>>,
        written: Arc<Mutex<Vec<Vec<f32>>>>,
        estops: Arc<Mutex<u32>>,
    }

    impl Backend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn joint_names(&self) -> Vec<String> {
            self.names.clone()
        }
        fn read(&mut self) -> Option<Measured> {
            self.measured.lock().unwrap().take()
        }
        fn write(&mut self, targets: &[f32], _torque: bool) -> Result<(), DaemonError> {
            self.written.lock().unwrap().push(targets.to_vec());
            Ok(())
        }
        fn estop(&mut self, _engage: bool) -> Result<(), DaemonError> {
            *self.estops.lock().unwrap() += 1;
            Ok(())
        }
    }

    type Handles = (
        Arc<Mutex<Option<Measured>>>,
        Arc<Mutex<Vec<Vec<f32>>>>,
        Arc<Mutex<u32>>,
    );

    fn fake(names: &[&str]) -> (Box<dyn Backend>, Handles) {
        let h: Handles = Default::default();
        let b = Fake {
            names: names.iter().map(|s| s.to_string()).collect(),
            measured: h.0.clone(),
            written: h.1.clone(),
            estops: h.2.clone(),
        };
        (Box::new(b), h)
    }

    fn m(pos: &[f32], at: Instant, estop: bool) -> Measured {
        Measured {
            position: pos.to_vec(),
            velocity: vec![0.0; pos.len()],
            effort: vec![0.0; pos.len()],
            faults: vec![None; pos.len()],
            estop,
            at,
        }
    }

    #[test]
    fn several_backends_act_as_one() {
        let (a, ha) = fake(&["a1", "a2"]);
        let (b, hb) = fake(&["b1"]);
        let mut multi = MultiBackend::new(vec![a, b]).unwrap();
        assert_eq!(multi.joint_names(), ["a1", "a2", "b1"]);
        // targets split by joint
        multi.write(&[1.0, 2.0, 3.0], true).unwrap();
        assert_eq!(ha.1.lock().unwrap().last().unwrap(), &[1.0, 2.0]);
        assert_eq!(hb.1.lock().unwrap().last().unwrap(), &[3.0]);
        // no state until every part has sent one; then as old as the oldest, e-stop if any
        let t0 = Instant::now();
        *ha.0.lock().unwrap() = Some(m(&[0.1, 0.2], t0 + Duration::from_millis(5), false));
        assert!(multi.read().is_none(), "one part still silent");
        *hb.0.lock().unwrap() = Some(m(&[0.3], t0, true));
        let s = multi.read().unwrap();
        assert_eq!(s.position, [0.1, 0.2, 0.3]);
        assert_eq!(s.at, t0);
        assert!(s.estop);
        // nothing new from anyone: nothing new out
        assert!(multi.read().is_none());
        // a new state from one part comes out with the other's last
        *hb.0.lock().unwrap() = Some(m(&[0.4], t0 + Duration::from_millis(9), false));
        let s = multi.read().unwrap();
        assert_eq!(s.position, [0.1, 0.2, 0.4]);
        assert!(!s.estop);
        multi.estop(true).unwrap();
        assert_eq!((*ha.2.lock().unwrap(), *hb.2.lock().unwrap()), (1, 1));
        // a joint on two buses is refused
        let (c, _) = fake(&["a1"]);
        let (d, _) = fake(&["a1"]);
        assert!(MultiBackend::new(vec![c, d]).is_err());
    }
}
