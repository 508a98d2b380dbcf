//! `reachy daemon`: the robot behind one zenoh API (`reachy/<robot>/…`, see
//! `docs/zenoh-api.md`), whatever the backend.
//!
//! A thread runs a tokio timer at the control rate: it reads the backend, lets the control core
//! ([`crate::core`]) move the targets towards what the lease holder asked, writes them, and
//! publishes [`schema::RobotState`] with the TCP poses. Zenoh callbacks only decode and forward
//! into the thread's channel: malformed commands are rejected and counted there, and the core
//! rejects (and the server counts) non-finite commands and commands without the lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reachy_api::schema::{self, keys};
use reachy_api::worker::Worker;
use reachy_api::ApiError;
use reachy_kinematics::model::RobotModel;
use zenoh::Wait;

use crate::backend::{Backend, Measured};
use crate::core::{Answer, Core, CoreConfig, Outbox, Reply, Request, RequestId};
use crate::DaemonError;

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

    fn core(&self) -> CoreConfig {
        CoreConfig {
            robot: self.robot.clone(),
            rate_hz: self.rate_hz,
            stream_timeout: self.stream_timeout,
            lease_timeout: self.lease_timeout,
            limits: self.limits.clone(),
            max_acceleration: self.max_acceleration,
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

/// A running daemon; dropping it stops it.
pub struct Daemon {
    /// Keeps the session open as long as this runs (dropping its last handle closes it).
    _session: zenoh::Session,
    worker: Worker<DaemonError>,
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
    ) -> Result<Self, DaemonError> {
        if !(1.0..=1000.0).contains(&cfg.rate_hz) {
            return Err(DaemonError::Config(crate::config::ConfigError(
                "rate must be within 1..=1000 Hz".into(),
            )));
        }
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
        // `lease`, `info` and the requests' queryables; the e-stop has a path of its own (below)
        let names = ["lease", "info", "kinematics"]
            .into_iter()
            .chain(Request::NAMES.into_iter().filter(|n| *n != "estop"));
        for name in names {
            let tx = tx.clone();
            queryables.push(
                session
                    .declare_queryable(keys::daemon_query(&robot, name))
                    .callback(move |q| {
                        let _ = tx.send(Msg::Query(name, q));
                    })
                    .wait()
                    .map_err(ApiError::zenoh(format!("declaring the `{name}` queryable")))?,
            );
        }
        // the e-stop's own channel: the loop serves it before anything else, so no flood of
        // other messages delays it
        let (estop_tx, estop_rx) = tokio::sync::mpsc::unbounded_channel::<zenoh::query::Query>();
        queryables.push(
            session
                .declare_queryable(keys::daemon_query(&robot, "estop"))
                .callback(move |q| {
                    let _ = estop_tx.send(q);
                })
                .wait()
                .map_err(ApiError::zenoh("declaring the `estop` queryable"))?,
        );
        drop(tx);
        let state_pub = session
            .declare_publisher(keys::state(&robot))
            .wait()
            .map_err(ApiError::zenoh("declaring the state publisher"))?;
        let core = Core::new(
            model,
            backend.name(),
            backend.joint_names(),
            cfg.core(),
            Instant::now(),
            rand::SeedableRng::from_entropy(),
        )?;
        let mut backend = backend;
        // the same limits on board: the firmware enforces what the daemon does
        backend.set_limits(core.limits())?;
        let mut server = Server {
            core,
            backend,
            rate_hz: cfg.rate_hz,
            pending: HashMap::new(),
            next_id: 0,
            rejected: rejected.clone(),
            state_pub,
            tick_errors: TickErrors::default(),
        };
        let worker = Worker::spawn("daemon", move |stop| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| DaemonError::Io {
                    what: "starting the tokio runtime".into(),
                    source: e,
                })?;
            let r = rt.block_on(server.run(rx, estop_rx, stop));
            drop(subs);
            drop(queryables);
            r
        })
        .map_err(|e| DaemonError::Io {
            what: "spawning the daemon thread".into(),
            source: e,
        })?;
        Ok(Self {
            _session: session,
            worker,
            rejected,
        })
    }

    /// Stop and wait.
    pub fn stop(self) -> Result<(), DaemonError> {
        self.worker.stop()
    }

    /// Whether the daemon's thread ended.
    pub fn is_finished(&self) -> bool {
        self.worker.is_finished()
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
) -> Result<zenoh::pubsub::Subscriber<()>, ApiError> {
    let tx = tx.clone();
    let rejected = rejected.clone();
    let context = format!("subscribing to {key}");
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
        .map_err(ApiError::zenoh(context))
}

fn reject(counter: &AtomicU64, why: &str) {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 10 || n.is_multiple_of(1000) {
        tracing::warn!("rejected command #{n}: {why}");
    }
}

/// The control core with its transport: the backend, the state publisher and the queries
/// waiting for a reply.
struct Server {
    core: Core,
    backend: Box<dyn Backend>,
    rate_hz: f64,
    pending: HashMap<RequestId, zenoh::query::Query>,
    next_id: RequestId,
    rejected: Arc<AtomicU64>,
    state_pub: zenoh::pubsub::Publisher<'static>,
    tick_errors: TickErrors,
}

/// Ticks that failed (a backend write or the state's publication): counted and logged at most
/// once a second. None of them ends the loop: the next tick tries again, so a hiccup of the
/// transport never leaves the robot without its daemon.
#[derive(Default)]
struct TickErrors {
    count: u64,
    logged: Option<(Instant, u64)>,
}

impl TickErrors {
    fn failed(&mut self, e: &DaemonError) {
        self.count += 1;
        let due = self
            .logged
            .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1));
        if due {
            let since = self.logged.map_or(0, |(_, n)| n);
            tracing::warn!(
                "tick failed ({} since the last report, {} in all): {e}",
                self.count - since,
                self.count
            );
            self.logged = Some((Instant::now(), self.count));
        }
    }
}

impl Server {
    async fn run(
        &mut self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>,
        mut estop: tokio::sync::mpsc::UnboundedReceiver<zenoh::query::Query>,
        stop: &AtomicBool,
    ) -> Result<(), DaemonError> {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate_hz));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::SeqCst) {
            tokio::select! {
                biased;
                Some(q) = estop.recv() => self.estop(q),
                _ = tick.tick() => {
                    if let Err(e) = self.tick() {
                        self.tick_errors.failed(&e);
                    }
                }
                m = rx.recv() => match m {
                    Some(m) => self.handle(m),
                    None => break,
                },
            }
        }
        Ok(())
    }

    fn handle(&mut self, m: Msg) {
        let now = Instant::now();
        // the backend's latest state, read once: the core judges staleness by it, and requests
        // start from it
        let measured = self.backend.read();
        if let Some(m) = &measured {
            self.core.saw(m.at);
        }
        match m {
            Msg::Targets(t) => self.core.joint_targets(&t, now),
            Msg::Cartesian(t) => self.core.cartesian_target(&t, now),
            Msg::Query(name, q) => self.answer(name, q, measured.as_ref(), now),
        }
        self.flush();
    }

    /// The e-stop: latched in the core, the backend's own latched e-stop written, and only then
    /// answered.
    fn estop(&mut self, q: zenoh::query::Query) {
        let Some(req) = self.decoded("estop", &q) else {
            return;
        };
        let was = self.core.estopped();
        let answer = self.core.request(0, req, None, Instant::now());
        let mut r = match answer {
            Answer::Now(r) => r,
            Answer::Later => unreachable!("the e-stop is answered at once"),
        };
        let now = self.core.estopped();
        if now != was {
            if let Err(e) = self.backend.estop(now) {
                r.reason = Some(format!(
                    "latched in the daemon, but the backend's own e-stop could not be written: {e}"
                ));
            }
        }
        reply(&q, &r);
        self.flush();
    }

    fn answer(
        &mut self,
        name: &str,
        q: zenoh::query::Query,
        measured: Option<&Measured>,
        now: Instant,
    ) {
        match name {
            "info" => reply_msg(&q, &self.core.info(self.backend.cameras())),
            "kinematics" => {
                let r = match schema::decode_robot::<schema::KinematicsRequest>(&payload(&q)) {
                    Ok(r) => self.core.kinematics(&r),
                    Err(e) => {
                        reject(&self.rejected, &format!("kinematics: {e}"));
                        schema::KinematicsReply {
                            v: schema::ROBOT_SCHEMA_VERSION,
                            status: "rejected".into(),
                            reason: Some(e.to_string()),
                            q: Vec::new(),
                            pose: None,
                        }
                    }
                };
                reply_msg(&q, &r);
            }
            "lease" => {
                let r = match schema::decode_robot::<schema::LeaseRequest>(&payload(&q)) {
                    Ok(r) => self.core.lease(&r, now),
                    Err(e) => self.core.lease_malformed(&e.to_string()),
                };
                reply_msg(&q, &r);
            }
            _ => {
                let Some(req) = self.decoded(name, &q) else {
                    return;
                };
                self.next_id += 1;
                let id = self.next_id;
                match self.core.request(id, req, measured, now) {
                    Answer::Now(r) => reply(&q, &r),
                    Answer::Later => {
                        self.pending.insert(id, q);
                    }
                }
            }
        }
    }

    /// The query's payload as the request of the queryable `name`; a malformed one is counted
    /// and answered `rejected` here.
    fn decoded(&self, name: &str, q: &zenoh::query::Query) -> Option<Request> {
        match Request::decode(name, &payload(q)) {
            Ok(r) => Some(r),
            Err(e) => {
                reject(&self.rejected, &format!("{name}: {e}"));
                reply(q, &Reply::new(crate::core::Status::Rejected, Some(&e)));
                None
            }
        }
    }

    /// Carry out what the core asked: replies, rejections counted, targets out now.
    fn flush(&mut self) {
        let out = self.core.take_outbox();
        self.deliver(&out);
        if out.tick_now {
            // event-driven: the targets go to the backend now, not at the next tick, and the
            // state that acknowledges them is published at once
            if let Err(e) = self.tick() {
                tracing::warn!("applying streaming targets: {e}");
            }
        } else if out.publish_now {
            if let Some(m) = self.backend.read() {
                if let Err(e) = self.publish(&m, Instant::now()) {
                    tracing::warn!("publishing the state: {e}");
                }
            }
        }
    }

    /// Replies to the queries waiting for them; rejections counted.
    fn deliver(&mut self, out: &Outbox) {
        for why in &out.rejected {
            reject(&self.rejected, why);
        }
        for (id, r) in &out.replies {
            if let Some(q) = self.pending.remove(id) {
                reply(&q, r);
            }
        }
    }

    fn tick(&mut self) -> Result<(), DaemonError> {
        let Some(m) = self.backend.read() else {
            return Ok(());
        };
        let now = Instant::now();
        let t = self.core.tick(&m, now);
        // a goto that ended (or that a stale backend cancelled) has its reply in the outbox
        let out = self.core.take_outbox();
        self.deliver(&out);
        if let Some(t) = t {
            self.backend.write(&t.position, t.torque)?;
        }
        self.publish(&m, now)
    }

    fn publish(&mut self, m: &Measured, now: Instant) -> Result<(), DaemonError> {
        if self.core.check_measured(m).is_err() {
            // rejected and counted by the tick: no state from a state that makes no sense
            return Ok(());
        }
        let st = self
            .core
            .state(m, now, self.rejected.load(Ordering::Relaxed));
        self.state_pub
            .put(schema::encode(&st))
            .wait()
            .map_err(ApiError::zenoh("publishing the state"))?;
        Ok(())
    }
}

/// A query's payload (empty without one).
fn payload(q: &zenoh::query::Query) -> Vec<u8> {
    q.payload()
        .map(|p| p.to_bytes().into_owned())
        .unwrap_or_default()
}

fn reply_msg<T: serde::Serialize>(q: &zenoh::query::Query, msg: &T) {
    if let Err(e) = q.reply(q.key_expr().clone(), schema::encode(msg)).wait() {
        tracing::warn!("could not reply: {e}");
    }
}

fn reply(q: &zenoh::query::Query, r: &Reply) {
    reply_msg(q, &r.to_msg());
}
