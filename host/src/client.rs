//! A client of the daemon's zenoh API: lease, state, streaming joint targets, goto; and the sim's
//! ground-truth objects. Also a [`RobotIo`] so the scripted pick-and-place runs through the API.

use std::time::{Duration, Instant};

use anyhow::Context;
use zenoh::Wait;

use crate::pick_place::RobotIo;
use crate::schema::{self, keys, ROBOT_SCHEMA_VERSION as V};

/// A connected client holding the lease.
pub struct RobotClient {
    session: zenoh::Session,
    robot: String,
    names: Vec<String>,
    token: u64,
    state: crate::net::Latest<schema::RobotState>,
    objects: crate::net::Latest<schema::ObjectPoses>,
    targets: zenoh::pubsub::Publisher<'static>,
    _subs: Vec<zenoh::pubsub::Subscriber<()>>,
}

fn query<T: serde::de::DeserializeOwned + schema::Versioned>(
    session: &zenoh::Session,
    key: &str,
    payload: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<T> {
    let mut get = session.get(key).timeout(timeout);
    if let Some(p) = payload {
        get = get.payload(p);
    }
    let replies = get.wait().map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = replies
        .recv()
        .map_err(|_| anyhow::anyhow!("no reply from {key}"))?;
    match r.result() {
        Ok(s) => {
            schema::decode_robot(&s.payload().to_bytes()).with_context(|| format!("reply of {key}"))
        }
        Err(e) => anyhow::bail!("{key}: error reply ({} bytes)", e.payload().len()),
    }
}

impl RobotClient {
    /// Find the daemon of `robot`, take the lease as `client` with `priority`.
    pub fn connect(
        session: &zenoh::Session,
        robot: &str,
        client: &str,
        priority: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let t0 = Instant::now();
        let info: schema::DaemonInfo = loop {
            match query(
                session,
                &keys::daemon_query(robot, "info"),
                None,
                Duration::from_secs(1),
            ) {
                Ok(i) => break i,
                Err(e) if t0.elapsed() > timeout => {
                    return Err(e.context(format!("no daemon for robot `{robot}`")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let lease: schema::LeaseReply = query(
            session,
            &keys::daemon_query(robot, "lease"),
            Some(schema::encode(&schema::LeaseRequest {
                v: V,
                client: client.into(),
                priority: priority.into(),
                release: None,
            })),
            Duration::from_secs(2),
        )?;
        anyhow::ensure!(
            lease.granted,
            "lease refused: {} (held by {:?})",
            lease.reason.unwrap_or_default(),
            lease.holder
        );
        let (state, state_sub) = crate::net::subscribe_latest(session, &keys::state(robot), |b| {
            schema::decode_robot::<schema::RobotState>(b).ok()
        })?;
        let (objects, objects_sub) =
            crate::net::subscribe_latest(session, &keys::sim_objects(robot), |b| {
                schema::decode_sim::<schema::ObjectPoses>(b).ok()
            })?;
        let subs = vec![state_sub, objects_sub];
        let targets = session
            .declare_publisher(keys::joint_targets(robot))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            session: session.clone(),
            robot: robot.into(),
            names: info.joints.iter().map(|j| j.name.clone()).collect(),
            token: lease.token,
            state,
            objects,
            targets,
            _subs: subs,
        })
    }

    /// The latest state (waits up to 2 s for the first one).
    pub fn state(&self) -> anyhow::Result<schema::RobotState> {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.state.lock().ok().and_then(|l| l.clone()) {
                return Ok(s);
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(2),
                "no state from the daemon"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Joint goto with a minimum-jerk profile; returns when the daemon says it is done.
    pub fn goto(
        &self,
        names: &[String],
        position: &[f32],
        duration: f32,
    ) -> anyhow::Result<schema::CommandReply> {
        query(
            &self.session,
            &keys::daemon_query(&self.robot, "goto"),
            Some(schema::encode(&schema::GotoRequest {
                v: V,
                lease: self.token,
                names: names.to_vec(),
                position: position.to_vec(),
                duration,
            })),
            Duration::from_secs_f32(duration + 5.0),
        )
    }
}

impl RobotIo for RobotClient {
    fn joint_names(&self) -> Vec<String> {
        self.names.clone()
    }
    fn positions(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.state()?.position)
    }
    fn command(&mut self, indices: &[usize], targets: &[f32]) -> anyhow::Result<()> {
        let names = indices
            .iter()
            .map(|&i| self.names.get(i).cloned().context("joint index"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let msg = schema::JointTargets {
            v: V,
            lease: self.token,
            names,
            position: targets.to_vec(),
        };
        self.targets
            .put(schema::encode(&msg))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
    fn advance(&mut self, seconds: f64) -> anyhow::Result<()> {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        Ok(())
    }
    fn object(&mut self, name: &str) -> anyhow::Result<([f32; 3], [f32; 4], f32)> {
        let t0 = Instant::now();
        loop {
            if let Some(o) = self.objects.lock().ok().and_then(|l| l.clone()) {
                let o = o
                    .objects
                    .into_iter()
                    .find(|o| o.name == name)
                    .with_context(|| format!("no object `{name}`"))?;
                return Ok((o.pose.position, o.pose.orientation, o.half_size));
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(2),
                "no object poses from the sim"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
