//! The simulator on zenoh: publishes joint states, object poses and camera frames of a
//! [`reachy_sim::world::World`], applies joint commands, and answers the `reset`, `step`,
//! `pause`, `resume` and `info` queryables. Keys and messages are in [`reachy_api::schema`].
//!
//! One thread owns the world. Zenoh callbacks only decode and forward into its channel, so a
//! malformed message is counted and dropped without ever touching the simulation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use reachy_sim::world::{CameraImage, World};
use zenoh::Wait;

use reachy_api::schema::{self, keys, SIM_SCHEMA_VERSION as V};
use reachy_api::worker::Worker;
use reachy_api::ApiError;

/// How the bridge runs.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Robot name: the `<robot>` segment of every key.
    pub robot: String,
    /// Control / publication rate (Hz), 1..=1000.
    pub rate_hz: f64,
    /// Lock-step: simulated time advances only on `step` queries.
    pub lockstep: bool,
    /// Camera frames per second of simulated time.
    pub camera_fps: f64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            robot: "reachy".into(),
            rate_hz: 100.0,
            lockstep: false,
            camera_fps: 30.0,
        }
    }
}

/// Counters shared with the bridge thread.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Joint commands applied.
    pub accepted: AtomicU64,
    /// Messages rejected as malformed.
    pub rejected: AtomicU64,
    /// Control periods simulated.
    pub ticks: AtomicU64,
    /// Real-time periods that started late by more than one period.
    pub overruns: AtomicU64,
}

enum QueryKind {
    Reset,
    Step,
    Pause,
    Resume,
    Info,
}

enum Msg {
    Command(schema::JointCommand),
    Query(QueryKind, zenoh::query::Query),
}

/// A running bridge; dropping it stops the thread and undeclares everything.
pub struct SimBridge {
    /// Keeps the session open as long as this runs (dropping its last handle closes it).
    _session: zenoh::Session,
    worker: Worker<anyhow::Error>,
    /// Counters.
    pub stats: Arc<BridgeStats>,
}

impl SimBridge {
    /// Put `world` on zenoh under `reachy/<robot>/sim/**` and start its thread.
    pub fn spawn(session: zenoh::Session, world: World, cfg: BridgeConfig) -> anyhow::Result<Self> {
        Self::spawn_observed(session, world, cfg, None)
    }

    /// [`Self::spawn`], calling `observer` with the world after every control period (from the
    /// sim thread: keep it short), e.g. to record it.
    pub fn spawn_observed(
        session: zenoh::Session,
        world: World,
        cfg: BridgeConfig,
        observer: Option<Observer>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.rate_hz >= 1.0 && cfg.rate_hz <= 1000.0,
            "rate must be within 1..=1000 Hz, got {}",
            cfg.rate_hz
        );
        anyhow::ensure!(cfg.camera_fps > 0.0, "camera fps must be positive");
        let stats = Arc::new(BridgeStats::default());
        let (tx, rx) = mpsc::channel::<Msg>();
        let robot = cfg.robot.clone();

        let sub = {
            let tx = tx.clone();
            let stats = stats.clone();
            session
                .declare_subscriber(keys::sim_joint_command(&robot))
                .callback(move |sample| {
                    let bytes = sample.payload().to_bytes();
                    match schema::decode_sim::<schema::JointCommand>(&bytes) {
                        Ok(c) => {
                            let _ = tx.send(Msg::Command(c));
                        }
                        Err(e) => reject(&stats, &format!("joint command: {e}")),
                    }
                })
                .wait()
                .map_err(ApiError::zenoh("subscribing to the joint commands"))?
        };
        let mut queryables = Vec::new();
        for (name, kind) in [
            ("reset", 0u8),
            ("step", 1),
            ("pause", 2),
            ("resume", 3),
            ("info", 4),
        ] {
            let tx = tx.clone();
            let q = session
                .declare_queryable(keys::sim_query(&robot, name))
                .callback(move |query| {
                    let kind = match kind {
                        0 => QueryKind::Reset,
                        1 => QueryKind::Step,
                        2 => QueryKind::Pause,
                        3 => QueryKind::Resume,
                        _ => QueryKind::Info,
                    };
                    let _ = tx.send(Msg::Query(kind, query));
                })
                .wait()
                .map_err(ApiError::zenoh(format!("declaring the `{name}` queryable")))?;
            queryables.push(q);
        }
        drop(tx);
        let state_pub = session
            .declare_publisher(keys::sim_joint_state(&robot))
            .wait()
            .map_err(ApiError::zenoh("declaring the joint-state publisher"))?;
        let objects_pub = session
            .declare_publisher(keys::sim_objects(&robot))
            .wait()
            .map_err(ApiError::zenoh("declaring the object-pose publisher"))?;
        let mut camera_pubs = Vec::new();
        for c in world.cameras() {
            camera_pubs.push(
                session
                    .declare_publisher(keys::sim_camera(&robot, &c.name))
                    .wait()
                    .map_err(ApiError::zenoh("declaring a camera publisher"))?,
            );
        }
        let worker = {
            let stats = stats.clone();
            Worker::spawn("sim-bridge", move |stop| {
                let mut runner = Runner {
                    world,
                    cfg,
                    stats,
                    seq: 0,
                    frame_seq: 0,
                    next_frame_t: 0.0,
                    paused: false,
                    state_pub,
                    objects_pub,
                    camera_pubs,
                    observer,
                };
                let r = runner.run(&rx, stop);
                drop(sub);
                drop(queryables);
                r
            })
            .context("spawning the sim thread")?
        };
        Ok(Self {
            _session: session,
            worker,
            stats,
        })
    }

    /// Stop the thread and wait for it; returns its error if it failed.
    pub fn stop(self) -> anyhow::Result<()> {
        self.worker.stop()
    }

    /// Whether the thread has ended (an error or a stop).
    pub fn is_finished(&self) -> bool {
        self.worker.is_finished()
    }
}

fn reject(stats: &BridgeStats, why: &str) {
    let n = stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
    // log the first ones and then every 1000th: a flood must not flood the log too
    if n <= 10 || n.is_multiple_of(1000) {
        tracing::warn!("rejected malformed message #{n}: {why}");
    }
}

struct Runner {
    world: World,
    cfg: BridgeConfig,
    stats: Arc<BridgeStats>,
    seq: u64,
    frame_seq: u64,
    next_frame_t: f64,
    paused: bool,
    state_pub: zenoh::pubsub::Publisher<'static>,
    objects_pub: zenoh::pubsub::Publisher<'static>,
    camera_pubs: Vec<zenoh::pubsub::Publisher<'static>>,
    observer: Option<Observer>,
}

/// A callback on the world after each control period.
pub type Observer = Box<dyn FnMut(&mut World) + Send>;

impl Runner {
    fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.cfg.rate_hz)
    }

    fn run(&mut self, rx: &mpsc::Receiver<Msg>, stop: &AtomicBool) -> anyhow::Result<()> {
        let period = self.period();
        let mut next = Instant::now() + period;
        // publish the initial state (and frames) so subscribers see the robot before any step
        self.publish()?;
        while !stop.load(Ordering::SeqCst) {
            let running = !self.cfg.lockstep && !self.paused;
            let wait = if running {
                next.saturating_duration_since(Instant::now())
            } else {
                Duration::from_millis(20)
            };
            match rx.recv_timeout(wait) {
                Ok(m) => self.handle(m)?,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !self.cfg.lockstep && !self.paused {
                let now = Instant::now();
                if now >= next {
                    self.tick()?;
                    next += period;
                    if now > next + period {
                        // more than a period behind: count it and resynchronise
                        self.stats.overruns.fetch_add(1, Ordering::Relaxed);
                        next = now + period;
                    }
                }
            } else {
                next = Instant::now() + period;
            }
        }
        Ok(())
    }

    fn tick(&mut self) -> anyhow::Result<()> {
        self.world.advance(1.0 / self.cfg.rate_hz);
        self.seq += 1;
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &mut self.observer {
            o(&mut self.world);
        }
        self.publish()
    }

    fn joint_state(&mut self) -> schema::JointState {
        let p = self.world.physics_mut();
        let effort = p.efforts();
        schema::JointState {
            v: V,
            seq: self.seq,
            t: p.time(),
            names: self.world.joint_names().to_vec(),
            position: self.world.physics().positions(),
            velocity: self.world.physics().velocities().to_vec(),
            effort,
        }
    }

    fn publish(&mut self) -> anyhow::Result<()> {
        let state = self.joint_state();
        let t = state.t;
        put(&self.state_pub, schema::encode(&state))?;
        let objects = schema::ObjectPoses {
            v: V,
            seq: self.seq,
            t,
            objects: self
                .world
                .physics()
                .objects()
                .iter()
                .zip(self.world.physics().object_poses())
                .map(|(o, (name, p, q))| schema::ObjectPose {
                    name,
                    pose: schema::PoseMsg {
                        position: p,
                        orientation: q,
                    },
                    half_size: o.half,
                })
                .collect(),
        };
        put(&self.objects_pub, schema::encode(&objects))?;
        if !self.camera_pubs.is_empty() && t + 1e-9 >= self.next_frame_t {
            // on the camera's own schedule, not from this period's time: restarting it at `t`
            // would round every frame up to the next control period (25 fps for 30 at 100 Hz)
            self.next_frame_t = (self.next_frame_t + 1.0 / self.cfg.camera_fps).max(t);
            let images = self.world.render()?;
            for (img, publ) in images.into_iter().zip(&self.camera_pubs) {
                let frame = camera_frame(&self.world, img, self.frame_seq, t);
                put(publ, schema::encode(&frame))?;
            }
            self.frame_seq += 1;
        }
        Ok(())
    }

    fn handle(&mut self, m: Msg) -> anyhow::Result<()> {
        match m {
            Msg::Command(c) => match c.validate(self.world.joint_names()) {
                Ok(idx) => match self.world.set_targets_at(&idx, &c.position).map(|_| {
                    if let Some(on) = c.torque {
                        self.world.physics_mut().set_compliant(!on);
                    }
                }) {
                    Ok(()) => {
                        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => reject(&self.stats, &format!("joint command: {e}")),
                },
                Err(e) => reject(&self.stats, &format!("joint command: {e}")),
            },
            Msg::Query(kind, q) => self.answer(kind, &q)?,
        }
        Ok(())
    }

    fn answer(&mut self, kind: QueryKind, q: &zenoh::query::Query) -> anyhow::Result<()> {
        let payload = q.payload().map(|p| p.to_bytes().into_owned());
        let result: Result<Vec<u8>, String> = match kind {
            QueryKind::Info => Ok(schema::encode(&self.info())),
            QueryKind::Pause => {
                self.paused = true;
                Ok(schema::encode(&self.reply()))
            }
            QueryKind::Resume => {
                self.paused = false;
                Ok(schema::encode(&self.reply()))
            }
            QueryKind::Reset => {
                let req = match payload.as_deref() {
                    None | Some([]) => Ok(schema::ResetRequest { v: V, seed: None }),
                    Some(b) => schema::decode_sim::<schema::ResetRequest>(b),
                };
                match req {
                    Ok(r) => {
                        let seed = r.seed.unwrap_or(self.world.seed());
                        self.world.reset(seed)?;
                        self.seq = 0;
                        self.frame_seq = 0;
                        self.next_frame_t = 0.0;
                        self.publish()?;
                        Ok(schema::encode(&self.reply()))
                    }
                    Err(e) => Err(format!("reset: {e}")),
                }
            }
            QueryKind::Step => {
                let req = match payload.as_deref() {
                    None | Some([]) => Ok(schema::StepRequest { v: V, n: 1 }),
                    Some(b) => schema::decode_sim::<schema::StepRequest>(b),
                };
                match req {
                    Ok(r) if !self.cfg.lockstep => {
                        let _ = r;
                        Err("step: the sim runs in real time (start it with --lockstep)".into())
                    }
                    Ok(r) if r.n > 100_000 => Err(format!("step: n = {} is over 100000", r.n)),
                    Ok(r) => {
                        for _ in 0..r.n {
                            self.tick()?;
                        }
                        Ok(schema::encode(&self.reply()))
                    }
                    Err(e) => Err(format!("step: {e}")),
                }
            }
        };
        let reply = match result {
            Ok(bytes) => q.reply(q.key_expr().clone(), bytes).wait(),
            Err(e) => {
                reject(&self.stats, &e);
                q.reply_err(schema::encode(&schema::ErrorReply { v: V, error: e }))
                    .wait()
            }
        };
        if let Err(e) = reply {
            tracing::warn!("could not reply to a query: {e}");
        }
        Ok(())
    }

    fn reply(&mut self) -> schema::SimReply {
        let state = self.joint_state();
        schema::SimReply {
            v: V,
            t: state.t,
            paused: self.paused,
            state,
        }
    }

    fn info(&self) -> schema::SimInfo {
        let p = self.world.physics();
        let (lower, upper) = p.limits();
        schema::SimInfo {
            v: V,
            robot: self.cfg.robot.clone(),
            joints: self
                .world
                .joint_names()
                .iter()
                .enumerate()
                .map(|(i, n)| schema::JointInfo {
                    name: n.clone(),
                    lower: lower[i],
                    upper: upper[i],
                })
                .collect(),
            cameras: self
                .world
                .cameras()
                .iter()
                .map(|c| schema::CameraInfo {
                    name: c.name.clone(),
                    width: c.width,
                    height: c.height,
                    fps: self.cfg.camera_fps as f32,
                    intrinsics: intrinsics(c),
                })
                .collect(),
            objects: p.objects().iter().map(|o| o.name.clone()).collect(),
            physics_dt: self.world.config().physics_dt as f64,
            rate_hz: self.cfg.rate_hz,
            lockstep: self.cfg.lockstep,
            paused: self.paused,
            seed: self.world.seed(),
            t: p.time(),
            commands_accepted: self.stats.accepted.load(Ordering::Relaxed),
            commands_rejected: self.stats.rejected.load(Ordering::Relaxed),
        }
    }
}

fn intrinsics(c: &reachy_sim::camera::CameraSpec) -> schema::Intrinsics {
    let [fx, fy, cx, cy] = c.intrinsics();
    schema::Intrinsics { fx, fy, cx, cy }
}

fn camera_frame(world: &World, img: CameraImage, seq: u64, t: f64) -> schema::CameraFrame {
    let spec = world.cameras().iter().find(|c| c.name == img.name);
    let r = img.pose.rotation;
    let p = img.pose.translation;
    schema::CameraFrame {
        v: V,
        camera: img.name,
        seq,
        t,
        width: img.width,
        height: img.height,
        encoding: "rgb8".into(),
        data: img.rgb,
        intrinsics: spec.map(intrinsics).unwrap_or(schema::Intrinsics {
            fx: 0.0,
            fy: 0.0,
            cx: 0.0,
            cy: 0.0,
        }),
        pose: schema::PoseMsg {
            position: [p.x, p.y, p.z],
            orientation: [r.x, r.y, r.z, r.w],
        },
    }
}

fn put(p: &zenoh::pubsub::Publisher<'static>, bytes: Vec<u8>) -> anyhow::Result<()> {
    p.put(bytes)
        .wait()
        .map_err(ApiError::zenoh(format!("putting on {}", p.key_expr())))?;
    Ok(())
}
