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
    info: schema::DaemonInfo,
    token: u64,
    state: crate::net::Latest<schema::RobotState>,
    objects: crate::net::Latest<schema::ObjectPoses>,
    targets: zenoh::pubsub::Publisher<'static>,
    cartesian: zenoh::pubsub::Publisher<'static>,
    _subs: Vec<zenoh::pubsub::Subscriber<()>>,
}

fn query<T: serde::de::DeserializeOwned + schema::Versioned>(
    session: &zenoh::Session,
    key: &str,
    payload: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<T> {
    crate::net::get(session, key, payload, timeout, schema::decode_robot)
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
        let info: schema::DaemonInfo = crate::net::retry(
            timeout,
            || format!("no daemon for robot `{robot}`"),
            || {
                query(
                    session,
                    &keys::daemon_query(robot, "info"),
                    None,
                    Duration::from_secs(1),
                )
            },
        )?;
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
        // ready when the daemon publishes a state (its backend has answered)
        let t0 = Instant::now();
        while state.lock().map(|l| l.is_none()).unwrap_or(true) {
            anyhow::ensure!(
                t0.elapsed() < timeout,
                "the daemon of `{robot}` publishes no state (its backend does not answer)"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let targets = session
            .declare_publisher(keys::joint_targets(robot))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let cartesian = session
            .declare_publisher(keys::cartesian_targets(robot))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            session: session.clone(),
            cartesian,
            robot: robot.into(),
            names: info.joints.iter().map(|j| j.name.clone()).collect(),
            info,
            token: lease.token,
            state,
            objects,
            targets,
            _subs: subs,
        })
    }

    /// The daemon's `info` (joints, limits, chains, cameras, backend).
    pub fn info(&self) -> &schema::DaemonInfo {
        &self.info
    }

    /// The lease token (for requests sent by hand).
    pub fn lease_token(&self) -> u64 {
        self.token
    }

    /// Keep the latest frame of a camera the daemon re-publishes.
    pub fn camera(
        &mut self,
        camera: &str,
    ) -> anyhow::Result<crate::net::Latest<schema::CameraFrame>> {
        anyhow::ensure!(
            self.info.cameras.iter().any(|c| c.name == camera),
            "the robot has no camera `{camera}`"
        );
        let (latest, sub) =
            crate::net::subscribe_latest(&self.session, &keys::camera(&self.robot, camera), |b| {
                schema::decode_robot::<schema::CameraFrame>(b).ok()
            })?;
        self._subs.push(sub);
        Ok(latest)
    }

    /// Stream a TCP target (solved by the daemon's IK; outcome in the state's `cartesian`).
    pub fn cartesian(
        &self,
        arm: &str,
        position: [f32; 3],
        orientation: Option<[f32; 4]>,
        gripper: Option<f32>,
    ) -> anyhow::Result<()> {
        let msg = schema::CartesianTarget {
            v: V,
            lease: self.token,
            arm: arm.into(),
            position,
            orientation,
            gripper,
        };
        self.cartesian
            .put(schema::encode(&msg))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))
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
