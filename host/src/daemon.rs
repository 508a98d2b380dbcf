//! `reachy daemon`: the robot behind one zenoh API (`reachy/<robot>/…`, see
//! `docs/zenoh-api.md`), whatever the backend.
//!
//! A tokio task ticks at the control rate: it reads the backend, moves the targets towards what
//! the lease holder asked (streaming joint targets or a minimum-jerk `goto`) within the joint
//! position and velocity limits, writes them, and publishes [`schema::RobotState`] with the TCP
//! poses. Zenoh callbacks only decode and forward into the task's channel: malformed or
//! non-finite commands, and commands without the lease, are rejected and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use zenoh::Wait;

use crate::kinematics::{JointVec, MAX_DOF};
use crate::model::RobotModel;
use crate::schema::{self, keys, ROBOT_SCHEMA_VERSION as V};

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
    fn write(&mut self, targets: &[f32], torque: bool) -> anyhow::Result<()>;
    /// Cameras whose frames the daemon re-publishes under `reachy/<robot>/camera/<name>`.
    fn cameras(&self) -> Vec<schema::CameraInfo> {
        Vec::new()
    }
}

/// The simulator (`reachy sim`, or an in-process bridge) as a backend, over zenoh.
pub struct SimBackend {
    names: Vec<String>,
    cameras: Vec<schema::CameraInfo>,
    latest: crate::net::Latest<Measured>,
    publisher: zenoh::pubsub::Publisher<'static>,
    _subs: Vec<zenoh::pubsub::Subscriber<()>>,
}

impl SimBackend {
    /// Find the sim of `robot` on `session` (waiting up to `timeout` for its `info`).
    pub fn connect(
        session: &zenoh::Session,
        robot: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let t0 = Instant::now();
        let info: schema::SimInfo = loop {
            let replies = session
                .get(keys::sim_query(robot, "info"))
                .timeout(Duration::from_secs(1))
                .wait()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let got = replies
                .recv()
                .ok()
                .and_then(|r| r.result().ok().map(|s| s.payload().to_bytes().into_owned()));
            if let Some(b) = got {
                break schema::decode_sim(&b).context("the sim's info")?;
            }
            anyhow::ensure!(
                t0.elapsed() < timeout,
                "no sim answers on {} (start `reachy sim`, or pass --connect)",
                keys::sim_query(robot, "info")
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let names: Vec<String> = info.joints.iter().map(|j| j.name.clone()).collect();
        let (latest, sub) =
            crate::net::subscribe_latest(session, &keys::sim_joint_state(robot), |b| {
                let js = schema::decode_sim::<schema::JointState>(b).ok()?;
                Some(Measured {
                    faults: vec![None; js.position.len()],
                    position: js.position,
                    velocity: js.velocity,
                    effort: js.effort,
                    at: Instant::now(),
                })
            })?;
        let publisher = session
            .declare_publisher(keys::sim_joint_command(robot))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut subs = vec![sub];
        if !info.cameras.is_empty() {
            subs.push(republish_cameras(session, robot)?);
        }
        Ok(Self {
            names,
            cameras: info.cameras,
            latest,
            publisher,
            _subs: subs,
        })
    }
}

/// Re-publish the sim's camera frames under the daemon's keys (`reachy/<robot>/camera/<name>`,
/// robot schema version), so clients use the daemon's API only, whatever the backend.
fn republish_cameras(
    session: &zenoh::Session,
    robot: &str,
) -> anyhow::Result<zenoh::pubsub::Subscriber<()>> {
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
        .map_err(|e| anyhow::anyhow!("{e}"))
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
    fn write(&mut self, targets: &[f32], torque: bool) -> anyhow::Result<()> {
        let cmd = schema::JointCommand {
            v: schema::SIM_SCHEMA_VERSION,
            names: self.names.clone(),
            position: targets.to_vec(),
            torque: Some(torque),
        };
        self.publisher
            .put(schema::encode(&cmd))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// The firmware (`reachy firmware run`, or the Cortex-M board) as a backend, over its host
/// link: the joints of one servo bus (a chain), in the URDF servo map's order, as the firmware
/// numbers them with `--bus CHAIN=PORT`. Efforts are the servos' present currents (A).
pub struct SerialBackend {
    link: crate::firmware_link::FirmwareLink,
    names: Vec<String>,
    /// (direction, offset) per joint: joint = direction * servo + offset.
    mounts: Vec<(f32, f32)>,
    latest: Option<Measured>,
    torque: Option<bool>,
}

impl SerialBackend {
    /// Open the firmware link at `path` for the joints of `bus` (e.g. `r_arm`), servos mounted
    /// as `mounts` says (joints not listed: direction 1, offset 0).
    pub fn open(
        path: &str,
        baud: u32,
        model: &RobotModel,
        bus: &str,
        mounts: &std::collections::BTreeMap<String, crate::config::ServoMount>,
    ) -> anyhow::Result<Self> {
        let names: Vec<String> = model
            .servo_map()
            .into_iter()
            .filter(|a| a.bus == bus)
            .map(|a| a.joint)
            .collect();
        anyhow::ensure!(
            !names.is_empty(),
            "no servo bus `{bus}` in the model (r_arm, l_arm, head)"
        );
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
            mounts,
            names,
            latest: None,
            torque: None,
        })
    }
}

impl Backend for SerialBackend {
    fn name(&self) -> &'static str {
        "serial"
    }
    fn joint_names(&self) -> Vec<String> {
        self.names.clone()
    }
    fn read(&mut self) -> Option<Measured> {
        match self.link.poll() {
            Ok(ts) => {
                for t in ts {
                    if let reachy_firmware::link::Telemetry::State { joints, .. } = t {
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
                                at: Instant::now(),
                            });
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("firmware link: {e}"),
        }
        self.latest.clone()
    }
    fn write(&mut self, targets: &[f32], torque: bool) -> anyhow::Result<()> {
        if self.torque != Some(torque) {
            let mask = if self.names.len() >= 32 {
                u32::MAX
            } else {
                (1u32 << self.names.len()) - 1
            };
            self.link
                .send(&reachy_firmware::link::Command::Torque { mask, on: torque })?;
            self.torque = Some(torque);
        }
        let goals: Vec<(u8, f32)> = targets
            .iter()
            .enumerate()
            .zip(&self.mounts)
            .map(|((i, &q), (d, o))| (i as u8, (q - o) * d))
            .collect();
        self.link.send_goals(&goals)?;
        Ok(())
    }
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

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Robot name (key segment).
    pub robot: String,
    /// Control rate (Hz).
    pub rate_hz: f64,
    /// Streaming targets older than this hold the robot where it is (s).
    pub stream_timeout: f64,
    /// A lease without commands for this long lapses (s).
    pub lease_timeout: f64,
    /// Per-joint limits tighter than the URDF's.
    pub limits: std::collections::BTreeMap<String, crate::config::LimitOverride>,
    /// Acceleration limit of every joint (rad/s²), unless `limits` sets one; None: none.
    pub max_acceleration: Option<f32>,
}

impl DaemonConfig {
    /// From the TOML configuration.
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            robot: c.robot.clone(),
            rate_hz: c.rate_hz,
            stream_timeout: c.stream_timeout_s,
            lease_timeout: c.lease_timeout_s,
            limits: c.limits.clone(),
            max_acceleration: c.max_acceleration,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            robot: "reachy".into(),
            rate_hz: 100.0,
            stream_timeout: 0.5,
            lease_timeout: 2.0,
            limits: Default::default(),
            max_acceleration: None,
        }
    }
}

enum Msg {
    Targets(schema::JointTargets),
    Cartesian(schema::CartesianTarget),
    Query(&'static str, zenoh::query::Query),
}

struct Lease {
    client: String,
    rank: u8,
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
    query: zenoh::query::Query,
}

/// A running daemon; dropping it stops it.
pub struct Daemon {
    /// Keeps the session open as long as this runs (dropping its last handle closes it).
    _session: zenoh::Session,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    /// Rejected commands so far.
    pub rejected: Arc<AtomicU64>,
}

impl Daemon {
    /// Serve `backend` under `reachy/<robot>/…` on `session`.
    pub fn spawn(
        session: zenoh::Session,
        model: RobotModel,
        backend: Box<dyn Backend>,
        cfg: DaemonConfig,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.rate_hz >= 1.0 && cfg.rate_hz <= 1000.0,
            "rate must be within 1..=1000 Hz"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let rejected = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
        let robot = cfg.robot.clone();
        // streaming commands: decoded on arrival, malformed ones counted
        let subs = vec![
            command_subscriber(
                &session,
                keys::joint_targets(&robot),
                "joint targets",
                &tx,
                &rejected,
                Msg::Targets,
            )?,
            command_subscriber(
                &session,
                keys::cartesian_targets(&robot),
                "cartesian target",
                &tx,
                &rejected,
                Msg::Cartesian,
            )?,
        ];
        let mut queryables = Vec::new();
        for name in [
            "lease",
            "goto",
            "cartesian",
            "look_at",
            "gripper",
            "torque",
            "cancel",
            "estop",
            "info",
        ] {
            let tx = tx.clone();
            queryables.push(
                session
                    .declare_queryable(keys::daemon_query(&robot, name))
                    .callback(move |q| {
                        let _ = tx.send(Msg::Query(name, q));
                    })
                    .wait()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
        drop(tx);
        let state_pub = session
            .declare_publisher(keys::state(&robot))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let names = backend.joint_names();
        let limits: Vec<(f32, f32, f32)> = names
            .iter()
            .map(|n| {
                model
                    .joints
                    .iter()
                    .find(|j| &j.name == n)
                    .map(|j| (j.lower as f32, j.upper as f32, j.velocity as f32))
                    .map(|(lo, hi, v)| match cfg.limits.get(n) {
                        // the tighter of the URDF and the configuration
                        Some(o) => (
                            o.lower.map_or(lo, |x| x.max(lo)),
                            o.upper.map_or(hi, |x| x.min(hi)),
                            o.velocity.map_or(v, |x| x.min(v)),
                        ),
                        None => (lo, hi, v),
                    })
                    .unwrap_or((f32::NEG_INFINITY, f32::INFINITY, 1.0))
            })
            .collect();
        let accel: Vec<f32> = names
            .iter()
            .map(|n| {
                cfg.limits
                    .get(n)
                    .and_then(|o| o.acceleration)
                    .or(cfg.max_acceleration)
                    .unwrap_or(f32::INFINITY)
            })
            .collect();
        let thread = {
            let stop = stop.clone();
            let rejected = rejected.clone();
            std::thread::Builder::new()
                .name("daemon".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .context("tokio runtime")?;
                    let mut d = Loop {
                        cfg,
                        model,
                        backend,
                        names,
                        limits,
                        accel,
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
                        rejected,
                        seq: 0,
                        t0: Instant::now(),
                        next_token: 0x5eed_0000 ^ (std::process::id() as u64) << 20,
                        state_pub,
                    };
                    let r = rt.block_on(d.run(rx, &stop));
                    drop(subs);
                    drop(queryables);
                    r
                })
                .context("spawning the daemon thread")?
        };
        Ok(Self {
            _session: session,
            stop,
            thread: Some(thread),
            rejected,
        })
    }

    /// Stop and wait.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("daemon panicked"))?,
            None => Ok(()),
        }
    }

    /// Whether the daemon's thread ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A subscriber that decodes each message on `key` as a `T` and hands it to the loop as
/// `wrap(T)`; what does not decode is counted as rejected.
fn command_subscriber<T: serde::de::DeserializeOwned + schema::Versioned + 'static>(
    session: &zenoh::Session,
    key: String,
    what: &'static str,
    tx: &tokio::sync::mpsc::UnboundedSender<Msg>,
    rejected: &Arc<AtomicU64>,
    wrap: fn(T) -> Msg,
) -> anyhow::Result<zenoh::pubsub::Subscriber<()>> {
    let tx = tx.clone();
    let rejected = rejected.clone();
    session
        .declare_subscriber(key)
        .callback(
            move |s| match schema::decode_robot::<T>(&s.payload().to_bytes()) {
                Ok(t) => {
                    let _ = tx.send(wrap(t));
                }
                Err(e) => reject(&rejected, &format!("{what}: {e}")),
            },
        )
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn reject(counter: &AtomicU64, why: &str) {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 10 || n.is_multiple_of(1000) {
        tracing::warn!("rejected command #{n}: {why}");
    }
}

fn rank(priority: &str) -> Option<u8> {
    match priority {
        "script" => Some(0),
        "policy" => Some(1),
        "teleop" => Some(2),
        _ => None,
    }
}

struct Loop {
    cfg: DaemonConfig,
    model: RobotModel,
    backend: Box<dyn Backend>,
    names: Vec<String>,
    limits: Vec<(f32, f32, f32)>,
    /// Acceleration limit per joint (rad/s²; infinite: none).
    accel: Vec<f32>,
    sent: Vec<f32>,
    /// Velocity of the sent targets over the last write (rad/s).
    sent_vel: Vec<f32>,
    desired: Vec<f32>,
    goto: Option<Goto>,
    lease: Option<Lease>,
    estop: bool,
    torque: bool,
    last_stream: Option<Instant>,
    /// When targets last went to the backend: the velocity limit applies over real time, so a
    /// command applied between two ticks moves no faster than one applied on a tick.
    last_write: Option<Instant>,
    /// Outcome of the last streaming TCP target per arm.
    cartesian: Vec<schema::CartesianStatus>,
    rejected: Arc<AtomicU64>,
    seq: u64,
    t0: Instant,
    next_token: u64,
    state_pub: zenoh::pubsub::Publisher<'static>,
}

fn min_jerk(s: f64) -> f64 {
    let s = s.clamp(0.0, 1.0);
    s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)
}

impl Loop {
    async fn run(
        &mut self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.cfg.rate_hz));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::SeqCst) {
            tokio::select! {
                _ = tick.tick() => self.tick()?,
                m = rx.recv() => match m {
                    Some(m) => self.handle(m),
                    None => break,
                },
            }
        }
        Ok(())
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
                self.names
                    .iter()
                    .position(|k| k == n)
                    .ok_or_else(|| format!("unknown joint `{n}`"))
            })
            .collect()
    }

    fn check_lease(&mut self, token: u64) -> Result<(), String> {
        match &mut self.lease {
            Some(l) if l.token == token => {
                l.last = Instant::now();
                Ok(())
            }
            Some(l) => Err(format!("the lease is held by {}", l.client)),
            None => Err("no lease: ask `lease` first".into()),
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Targets(t) => {
                let r = self
                    .check_lease(t.lease)
                    .and_then(|_| self.index(&t.names, &t.position));
                match r {
                    Ok(idx) if !self.desired.is_empty() && !self.estop => {
                        self.stream(&idx, &t.position)
                    }
                    Ok(_) => reject(
                        &self.rejected,
                        "joint targets while e-stopped or before the first state",
                    ),
                    Err(e) => reject(&self.rejected, &format!("joint targets: {e}")),
                }
            }
            Msg::Cartesian(t) => self.stream_cartesian(t),
            Msg::Query(name, q) => self.answer(name, q),
        }
    }

    /// Streaming targets for the joints at `idx` (checked): clamped into the limits, applied now.
    fn stream(&mut self, idx: &[usize], values: &[f32]) {
        for (&i, &v) in idx.iter().zip(values) {
            let (lo, hi, _) = self.limits[i];
            self.desired[i] = v.clamp(lo, hi);
        }
        // streaming takes over from a goto on the same joints
        if let Some(g) = &self.goto {
            if g.idx.iter().any(|i| idx.contains(i)) {
                let g = self.goto.take().expect("checked");
                reply(&g.query, "cancelled", Some("streaming targets took over"));
            }
        }
        self.last_stream = Some(Instant::now());
        // event-driven: the targets go to the backend now, not at the next tick, and the state
        // that acknowledges them is published at once
        if let Err(e) = self.tick() {
            tracing::warn!("applying streaming targets: {e:#}");
        }
    }

    /// A streaming TCP target: IK from the arm's current target, then like joint targets.
    fn stream_cartesian(&mut self, t: schema::CartesianTarget) {
        if let Err(e) = self.check_lease(t.lease) {
            return reject(&self.rejected, &format!("cartesian target: {e}"));
        }
        if self.desired.is_empty() || self.estop {
            return reject(
                &self.rejected,
                "cartesian target while e-stopped or before the first state",
            );
        }
        let finite = t.position.iter().all(|v| v.is_finite())
            && t.orientation
                .is_none_or(|o| o.iter().all(|v| v.is_finite()))
            && t.gripper.is_none_or(f32::is_finite);
        if !finite {
            return reject(&self.rejected, "cartesian target: a value is not finite");
        }
        // seed the IK with where the arm is going, so a stream stays on one branch
        let sent = std::mem::replace(&mut self.sent, self.desired.clone());
        let solved = self.solve_cartesian(&schema::CartesianRequest {
            v: V,
            lease: t.lease,
            arm: t.arm.clone(),
            position: t.position,
            orientation: t.orientation,
            duration: None,
        });
        self.sent = sent;
        let (status, reason, apply) = match solved {
            Err(e) => return reject(&self.rejected, &format!("cartesian target: {e}")),
            Ok(Err(why)) => ("unreachable", Some(why), None),
            Ok(Ok((mut idx, mut goals, clamped))) => {
                let gripper = format!("{}_gripper", t.arm.trim_end_matches("_arm"));
                if let (Some(g), Some(i)) =
                    (t.gripper, self.names.iter().position(|n| *n == gripper))
                {
                    let (lo, hi, _) = self.limits[i];
                    idx.push(i);
                    goals.push(lo + g.clamp(0.0, 1.0) * (hi - lo));
                }
                let status = if clamped.is_some() { "clamped" } else { "ok" };
                (status, clamped, Some((idx, goals)))
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
            arm: t.arm,
            status: status.into(),
            reason,
            count,
        });
        match apply {
            Some((idx, goals)) => self.stream(&idx, &goals),
            // nothing moves (the arm holds its target): publish the verdict now all the same
            None => {
                if let Some(m) = self.backend.read() {
                    let stale = m.at.elapsed() > Duration::from_millis(200);
                    self.seq += 1;
                    if let Err(e) = self.publish(&m, stale) {
                        tracing::warn!("publishing the state: {e:#}");
                    }
                }
            }
        }
    }

    fn answer(&mut self, name: &str, q: zenoh::query::Query) {
        let payload = q
            .payload()
            .map(|p| p.to_bytes().into_owned())
            .unwrap_or_default();
        match name {
            "info" => {
                let info = schema::DaemonInfo {
                    v: V,
                    robot: self.cfg.robot.clone(),
                    backend: self.backend.name().into(),
                    rate_hz: self.cfg.rate_hz,
                    joints: self
                        .names
                        .iter()
                        .zip(&self.limits)
                        .map(|(n, l)| schema::JointInfo {
                            name: n.clone(),
                            lower: l.0,
                            upper: l.1,
                        })
                        .collect(),
                    chains: self
                        .model
                        .chains
                        .iter()
                        .map(|c| (c.name().to_string(), c.joint_names().to_vec()))
                        .collect(),
                    cameras: self.backend.cameras(),
                };
                let _ = q.reply(q.key_expr().clone(), schema::encode(&info)).wait();
            }
            "lease" => {
                let r = match schema::decode_robot::<schema::LeaseRequest>(&payload) {
                    Ok(r) => self.lease_request(r),
                    Err(e) => {
                        reject(&self.rejected, &format!("lease: {e}"));
                        schema::LeaseReply {
                            v: V,
                            granted: false,
                            token: 0,
                            holder: self.lease.as_ref().map(|l| l.client.clone()),
                            reason: Some(e.to_string()),
                        }
                    }
                };
                let _ = q.reply(q.key_expr().clone(), schema::encode(&r)).wait();
            }
            "estop" => match schema::decode_robot::<schema::EstopRequest>(&payload) {
                Ok(r) => {
                    self.estop = r.engage;
                    if let Some(g) = self.goto.take() {
                        reply(&g.query, "cancelled", Some("e-stop"));
                    }
                    if !r.engage {
                        // clear: hold where the robot is
                        self.desired = self.sent.clone();
                    }
                    reply(&q, "ok", None);
                }
                Err(e) => {
                    reject(&self.rejected, &format!("estop: {e}"));
                    reply(&q, "rejected", Some(&e.to_string()));
                }
            },
            "torque" => {
                let r = schema::decode_robot::<schema::TorqueRequest>(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|t| self.check_lease(t.lease).map(|_| t));
                match r {
                    Ok(t) => {
                        self.torque = t.on;
                        if let Some(g) = self.goto.take() {
                            reply(&g.query, "cancelled", Some("torque changed"));
                        }
                        // either way, hold (or follow) where the robot is: no jump when torque
                        // comes back
                        if let Some(m) = self.backend.read() {
                            self.sent = m.position.clone();
                            self.desired = m.position;
                        }
                        self.last_stream = None;
                        reply(&q, "ok", None);
                    }
                    Err(e) => {
                        reject(&self.rejected, &format!("torque: {e}"));
                        reply(&q, "rejected", Some(&e));
                    }
                }
            }
            "cancel" => {
                if let Some(g) = self.goto.take() {
                    self.desired = self.sent.clone();
                    reply(&g.query, "cancelled", Some("cancelled by a client"));
                    reply(&q, "ok", None);
                } else {
                    reply(&q, "ok", Some("nothing to cancel"));
                }
            }
            "goto" => {
                let r = schema::decode_robot::<schema::GotoRequest>(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|g| {
                        self.admit(g.lease, g.duration)?;
                        let idx = self.index(&g.names, &g.position)?;
                        Ok((g, idx))
                    });
                match r {
                    Ok((g, idx)) => self.start_goto(q, idx, g.position, g.duration, None),
                    Err(e) => {
                        reject(&self.rejected, &format!("goto: {e}"));
                        reply(&q, "rejected", Some(&e));
                    }
                }
            }
            "cartesian" => {
                let r = schema::decode_robot::<schema::CartesianRequest>(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        let d = c.duration.unwrap_or(1.0);
                        self.admit(c.lease, d)?;
                        if c.position
                            .iter()
                            .chain(c.orientation.iter().flatten())
                            .any(|x| !x.is_finite())
                        {
                            return Err("non-finite pose".into());
                        }
                        Ok((c, d))
                    });
                let solved = r.and_then(|(c, d)| self.solve_cartesian(&c).map(|s| (s, d)));
                self.solved_motion(q, "cartesian", solved);
            }
            "look_at" => {
                let r = schema::decode_robot::<schema::LookAtRequest>(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|l| {
                        let d = l.duration.unwrap_or(0.5);
                        self.admit(l.lease, d)?;
                        if l.point.iter().any(|x| !x.is_finite()) {
                            return Err("non-finite point".into());
                        }
                        Ok((l, d))
                    });
                let solved = r.and_then(|(l, d)| self.solve_look_at(&l).map(|s| (s, d)));
                self.solved_motion(q, "look_at", solved);
            }
            "gripper" => {
                let r = schema::decode_robot::<schema::GripperRequest>(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|g| {
                        let d = g.duration.unwrap_or(0.5);
                        self.admit(g.lease, d)?;
                        if !(0.0..=1.0).contains(&g.opening) {
                            return Err(format!("opening {} is not within 0..=1", g.opening));
                        }
                        let name = match g.side.as_str() {
                            "r" | "right" | "r_gripper" => "r_gripper",
                            "l" | "left" | "l_gripper" => "l_gripper",
                            other => return Err(format!("side `{other}`: r or l")),
                        };
                        let i = self
                            .names
                            .iter()
                            .position(|n| n == name)
                            .ok_or_else(|| format!("no joint {name}"))?;
                        let (lo, hi, _) = self.limits[i];
                        Ok((i, lo + g.opening * (hi - lo), d))
                    });
                match r {
                    Ok((i, goal, d)) => self.start_goto(q, vec![i], vec![goal], d, None),
                    Err(e) => {
                        reject(&self.rejected, &format!("gripper: {e}"));
                        reply(&q, "rejected", Some(&e));
                    }
                }
            }
            _ => {}
        }
    }

    /// Start a solved motion, or answer why not.
    #[allow(clippy::type_complexity)]
    fn solved_motion(
        &mut self,
        q: zenoh::query::Query,
        what: &str,
        solved: Result<(Result<(Vec<usize>, Vec<f32>, Option<String>), String>, f32), String>,
    ) {
        match solved {
            Ok((Ok((idx, goals, note)), d)) => self.start_goto(q, idx, goals, d, note),
            Ok((Err(why), _)) => reply(&q, "unreachable", Some(&why)),
            Err(e) => {
                reject(&self.rejected, &format!("{what}: {e}"));
                reply(&q, "rejected", Some(&e));
            }
        }
    }

    /// Lease, e-stop and duration checks shared by every motion request.
    fn admit(&mut self, lease: u64, duration: f32) -> Result<(), String> {
        self.check_lease(lease)?;
        if self.estop {
            return Err("e-stop latched".into());
        }
        if !(0.05..=60.0).contains(&duration) {
            return Err(format!("duration {duration} s is not within 0.05..=60"));
        }
        if self.sent.is_empty() {
            return Err("no state from the backend yet".into());
        }
        Ok(())
    }

    /// Start a minimum-jerk motion of the joints `idx` to `goals` (clamped into the limits); the
    /// query is answered when it ends.
    fn start_goto(
        &mut self,
        q: zenoh::query::Query,
        idx: Vec<usize>,
        goals: Vec<f32>,
        duration: f32,
        mut note: Option<String>,
    ) {
        let to: Vec<f32> = idx
            .iter()
            .zip(&goals)
            .map(|(&i, &v)| {
                let (lo, hi, _) = self.limits[i];
                let c = v.clamp(lo, hi);
                if c != v && note.is_none() {
                    note = Some(format!("{} moved into its joint limits", self.names[i]));
                }
                c
            })
            .collect();
        if let Some(old) = self.goto.take() {
            reply(&old.query, "cancelled", Some("a new motion took over"));
        }
        self.goto = Some(Goto {
            from: idx.iter().map(|&i| self.sent[i]).collect(),
            idx,
            to,
            start: Instant::now(),
            duration: duration as f64,
            clamped: note,
            query: q,
        });
    }

    /// The chain's joints as indices into the backend's joints, and the current targets.
    fn chain_state(
        &self,
        chain: &crate::kinematics::Chain,
    ) -> Result<(Vec<usize>, JointVec), String> {
        let mut seed: JointVec = [0.0; MAX_DOF];
        let mut idx = Vec::new();
        for (k, n) in chain.joint_names().iter().enumerate() {
            let i = self
                .names
                .iter()
                .position(|x| x == n)
                .ok_or_else(|| format!("the backend has no joint {n}"))?;
            seed[k] = self.sent[i] as f64;
            idx.push(i);
        }
        Ok((idx, seed))
    }

    /// IK for a TCP target: Ok(Ok(goal)), Ok(Err(why unreachable)), Err(why rejected).
    #[allow(clippy::type_complexity)]
    fn solve_cartesian(
        &self,
        c: &schema::CartesianRequest,
    ) -> Result<Result<(Vec<usize>, Vec<f32>, Option<String>), String>, String> {
        let chain = self
            .model
            .chain(&c.arm)
            .map_err(|_| format!("arm `{}`: r_arm or l_arm", c.arm))?;
        let (idx, seed) = self.chain_state(chain)?;
        let t = nalgebra::Vector3::new(
            c.position[0] as f64,
            c.position[1] as f64,
            c.position[2] as f64,
        );
        let target = match c.orientation {
            Some(o) => crate::kinematics::IkTarget::Pose(crate::kinematics::Frame::from_t_quat(
                [t.x, t.y, t.z],
                o.map(|x| x as f64),
            )),
            None => crate::kinematics::IkTarget::Position(t),
        };
        let sol = crate::kinematics::solve(
            chain,
            &target,
            &seed,
            &crate::kinematics::IkOptions::default(),
        );
        let goals: Vec<f32> = (0..chain.dof()).map(|k| sol.q[k] as f32).collect();
        if sol.ok {
            return Ok(Ok((idx, goals, None)));
        }
        if sol.pos_err < 0.02 && sol.rot_err < 0.1 {
            // close: a joint limit stops the arm just short; go there and say so
            return Ok(Ok((
                idx,
                goals,
                Some(format!(
                    "joint limit: the TCP stops {:.1} mm / {:.3} rad from the target",
                    sol.pos_err * 1000.0,
                    sol.rot_err
                )),
            )));
        }
        Ok(Err(format!(
            "out of reach: the closest the {} gets is {:.0} mm / {:.2} rad away",
            c.arm,
            sol.pos_err * 1000.0,
            sol.rot_err
        )))
    }

    /// Head look-at.
    #[allow(clippy::type_complexity)]
    fn solve_look_at(
        &self,
        l: &schema::LookAtRequest,
    ) -> Result<Result<(Vec<usize>, Vec<f32>, Option<String>), String>, String> {
        let chain = self.model.chain("head").map_err(|e| e.to_string())?;
        let (idx, seed) = self.chain_state(chain)?;
        let p = nalgebra::Vector3::new(l.point[0] as f64, l.point[1] as f64, l.point[2] as f64);
        let sol = crate::kinematics::look_at(chain, &p, &seed, 1e-3);
        let goals: Vec<f32> = (0..chain.dof()).map(|k| sol.q[k] as f32).collect();
        if sol.ok {
            Ok(Ok((idx, goals, None)))
        } else if sol.angle_err < 0.35 {
            Ok(Ok((
                idx,
                goals,
                Some(format!(
                    "neck limit: the camera points {:.2} rad away from the point",
                    sol.angle_err
                )),
            )))
        } else {
            Ok(Err(format!(
                "out of the neck's range: {:.2} rad away at best",
                sol.angle_err
            )))
        }
    }

    fn lease_request(&mut self, r: schema::LeaseRequest) -> schema::LeaseReply {
        let holder = |l: &Option<Lease>| l.as_ref().map(|l| l.client.clone());
        if let Some(token) = r.release {
            if self.lease.as_ref().is_some_and(|l| l.token == token) {
                self.lease = None;
                return schema::LeaseReply {
                    v: V,
                    granted: true,
                    token,
                    holder: None,
                    reason: None,
                };
            }
            return schema::LeaseReply {
                v: V,
                granted: false,
                token,
                holder: holder(&self.lease),
                reason: Some("not the holder's token".into()),
            };
        }
        let Some(rank) = rank(&r.priority) else {
            reject(&self.rejected, "lease: unknown priority");
            return schema::LeaseReply {
                v: V,
                granted: false,
                token: 0,
                holder: holder(&self.lease),
                reason: Some(format!(
                    "priority `{}`: use teleop, policy or script",
                    r.priority
                )),
            };
        };
        let free = match &self.lease {
            None => true,
            Some(l) => {
                l.last.elapsed().as_secs_f64() > self.cfg.lease_timeout
                    || rank > l.rank
                    || l.client == r.client
            }
        };
        if !free {
            return schema::LeaseReply {
                v: V,
                granted: false,
                token: 0,
                holder: holder(&self.lease),
                reason: Some("held by a client of equal or higher priority".into()),
            };
        }
        self.next_token = self
            .next_token
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let token = self.next_token;
        self.lease = Some(Lease {
            client: r.client.clone(),
            rank,
            token,
            last: Instant::now(),
        });
        schema::LeaseReply {
            v: V,
            granted: true,
            token,
            holder: Some(r.client),
            reason: None,
        }
    }

    fn tick(&mut self) -> anyhow::Result<()> {
        let period = 1.0 / self.cfg.rate_hz as f32;
        let Some(m) = self.backend.read() else {
            return Ok(());
        };
        let dt = self
            .last_write
            .map_or(period, |t| t.elapsed().as_secs_f32().min(2.0 * period));
        let stale = m.at.elapsed() > Duration::from_millis(200);
        if self.sent.is_empty() {
            self.sent = m.position.clone();
            self.desired = m.position.clone();
        }
        // goto: minimum-jerk from where it started
        if let Some(g) = &self.goto {
            let s = g.start.elapsed().as_secs_f64() / g.duration;
            let k = min_jerk(s) as f32;
            for (j, &i) in g.idx.iter().enumerate() {
                self.desired[i] = g.from[j] + (g.to[j] - g.from[j]) * k;
            }
            if s >= 1.0 {
                let g = self.goto.take().expect("checked");
                match &g.clamped {
                    Some(why) => reply(&g.query, "clamped", Some(why)),
                    None => reply(&g.query, "ok", None),
                }
            }
        }
        // a stream that stopped holds the robot where it is
        if let Some(t) = self.last_stream {
            if t.elapsed().as_secs_f64() > self.cfg.stream_timeout {
                self.desired = self.sent.clone();
                self.last_stream = None;
            }
        }
        if self.estop || !self.torque {
            // limp: the targets follow the measured joints, so torque comes back without a jump
            self.desired = m.position.clone();
        }
        if self.sent_vel.len() != self.sent.len() {
            self.sent_vel = vec![0.0; self.sent.len()];
        }
        for i in 0..self.sent.len() {
            let (lo, hi, vmax) = self.limits[i];
            let err = self.desired[i] - self.sent[i];
            let mut v = if dt > 0.0 { err / dt } else { 0.0 }.clamp(-vmax, vmax);
            let amax = self.accel[i];
            if amax.is_finite() && dt > 0.0 {
                // no faster than it can brake before the target, no faster change than amax
                let vstop = (2.0 * amax * err.abs()).sqrt();
                v = v.clamp(-vstop, vstop);
                let vp = self.sent_vel[i];
                v = v.clamp(vp - amax * dt, vp + amax * dt);
            }
            let before = self.sent[i];
            self.sent[i] = (self.sent[i] + v * dt).clamp(lo, hi);
            self.sent_vel[i] = if dt > 0.0 {
                (self.sent[i] - before) / dt
            } else {
                0.0
            };
        }
        if self.estop || !self.torque {
            self.sent = m.position.clone();
            self.sent_vel.iter_mut().for_each(|v| *v = 0.0);
        }
        self.backend.write(&self.sent, self.torque && !self.estop)?;
        self.last_write = Some(Instant::now());
        self.seq += 1;
        self.publish(&m, stale)
    }

    fn publish(&mut self, m: &Measured, stale: bool) -> anyhow::Result<()> {
        let mut tcp = Vec::new();
        for c in &self.model.chains {
            if !c.name().ends_with("_arm") {
                continue;
            }
            let mut q: JointVec = [0.0; MAX_DOF];
            let mut ok = true;
            for (k, n) in c.joint_names().iter().enumerate() {
                match self.names.iter().position(|x| x == n) {
                    Some(i) => q[k] = m.position[i] as f64,
                    None => ok = false,
                }
            }
            if ok {
                let f = c.fk(&q);
                let qq = f.quat_xyzw();
                tcp.push(schema::NamedPose {
                    name: c.name().into(),
                    pose: schema::PoseMsg {
                        position: [f.t.x as f32, f.t.y as f32, f.t.z as f32],
                        orientation: qq.map(|x| x as f32),
                    },
                });
            }
        }
        let gaze = self.model.chain("head").ok().and_then(|c| {
            let mut q: JointVec = [0.0; MAX_DOF];
            for (k, n) in c.joint_names().iter().enumerate() {
                q[k] = m.position[self.names.iter().position(|x| x == n)?] as f64;
            }
            let f = c.fk(&q);
            Some(schema::PoseMsg {
                position: [f.t.x as f32, f.t.y as f32, f.t.z as f32],
                orientation: f.quat_xyzw().map(|x| x as f32),
            })
        });
        let gripper = ["r_gripper", "l_gripper"]
            .iter()
            .filter_map(|g| {
                let i = self.names.iter().position(|n| n == g)?;
                let (lo, hi, _) = self.limits[i];
                // 0 closed (lower limit) … 1 open (upper limit)
                Some(((m.position[i] - lo) / (hi - lo)).clamp(0.0, 1.0))
            })
            .collect();
        let st = schema::RobotState {
            v: V,
            seq: self.seq,
            t: self.t0.elapsed().as_secs_f64(),
            backend: self.backend.name().into(),
            names: self.names.clone(),
            position: m.position.clone(),
            velocity: m.velocity.clone(),
            effort: m.effort.clone(),
            target: self.sent.clone(),
            tcp,
            gripper,
            torque: self.torque && !self.estop,
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
                    let on_purpose = (self.estop || !self.torque) && f == "torque off";
                    (!on_purpose).then(|| schema::JointFault {
                        joint: n.clone(),
                        fault: f.clone(),
                    })
                })
                .collect(),
            stale,
            rejected: self.rejected.load(Ordering::Relaxed),
            cartesian: self.cartesian.clone(),
            gaze,
        };
        self.state_pub
            .put(schema::encode(&st))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn reply(q: &zenoh::query::Query, status: &str, reason: Option<&str>) {
    let r = schema::CommandReply {
        v: V,
        status: status.into(),
        reason: reason.map(|s| s.to_string()),
    };
    if let Err(e) = q.reply(q.key_expr().clone(), schema::encode(&r)).wait() {
        tracing::warn!("could not reply: {e}");
    }
}
