//! A client of the daemon's zenoh API: lease, state, streaming joint targets, goto; and the sim's
//! ground-truth objects. Also a [`RobotIo`] so the scripted pick-and-place runs through the API.

use std::time::Duration;

use zenoh::Wait;

use crate::net::wait_until;
use crate::schema::{self, keys, ROBOT_SCHEMA_VERSION as V};
use crate::ApiError;

/// What a script needs from a robot: the daemon's client, or the simulator in lock-step (the
/// apps' `LockStep`), so the same code runs against both.
pub trait RobotIo {
    /// What can fail.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Actuated joint names, the order of [`Self::positions`].
    fn joint_names(&self) -> Vec<String>;
    /// Measured joint positions.
    fn positions(&mut self) -> Result<Vec<f32>, Self::Error>;
    /// Position targets for the joints at `indices`.
    fn command(&mut self, indices: &[usize], targets: &[f32]) -> Result<(), Self::Error>;
    /// Let `seconds` pass (simulated steps in lock-step, a sleep in real time).
    fn advance(&mut self, seconds: f64) -> Result<(), Self::Error>;
    /// Pose of a scene object: position, quaternion xyzw, half edge.
    fn object(&mut self, name: &str) -> Result<([f32; 3], [f32; 4], f32), Self::Error>;
}

/// A connected client holding the lease.
pub struct RobotClient {
    session: zenoh::Session,
    robot: String,
    /// The name the lease was taken under.
    client: String,
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
) -> Result<T, ApiError> {
    crate::net::get(session, key, payload, timeout, schema::decode_robot)
}

fn declare_publisher(
    session: &zenoh::Session,
    key: String,
) -> Result<zenoh::pubsub::Publisher<'static>, ApiError> {
    let what = format!("declaring a publisher on {key}");
    session
        .declare_publisher(key)
        .wait()
        .map_err(ApiError::zenoh(what))
}

fn put(p: &zenoh::pubsub::Publisher<'static>, bytes: Vec<u8>) -> Result<(), ApiError> {
    p.put(bytes)
        .wait()
        .map_err(ApiError::zenoh(format!("putting on {}", p.key_expr())))
}

/// A named pose: name, position (m), quaternion (xyzw).
pub type NamedPose = (String, [f32; 3], [f32; 4]);

/// The daemon's `info` (joints, limits, chains, cameras, backend), without a lease: what a
/// passive observer (the recorder) needs. Retried until `timeout`.
pub fn daemon_info(
    session: &zenoh::Session,
    robot: &str,
    timeout: Duration,
) -> Result<schema::DaemonInfo, ApiError> {
    crate::net::retry(
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
    )
}

impl RobotClient {
    /// Find the daemon of `robot`, take the lease as `client` with `priority`.
    pub fn connect(
        session: &zenoh::Session,
        robot: &str,
        client: &str,
        priority: &str,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        let info = daemon_info(session, robot, timeout)?;
        let lease: schema::LeaseReply = query(
            session,
            &keys::daemon_query(robot, "lease"),
            Some(schema::encode(&schema::LeaseRequest {
                v: V,
                client: client.into(),
                priority: priority.into(),
                release: None,
                renew: None,
            })),
            Duration::from_secs(2),
        )?;
        if !lease.granted {
            return Err(ApiError::Refused(format!(
                "lease refused: {} (held by {:?})",
                lease.reason.unwrap_or_default(),
                lease.holder
            )));
        }
        let (state, state_sub) = crate::net::subscribe_latest(session, &keys::state(robot), |b| {
            schema::decode_robot::<schema::RobotState>(b).ok()
        })?;
        let (objects, objects_sub) =
            crate::net::subscribe_latest(session, &keys::sim_objects(robot), |b| {
                schema::decode_sim::<schema::ObjectPoses>(b).ok()
            })?;
        let subs = vec![state_sub, objects_sub];
        // ready when the daemon publishes a state (its backend has answered)
        let has_state = || state.lock().map(|l| l.is_some()).unwrap_or(false);
        if !wait_until(timeout, Duration::from_millis(5), has_state) {
            return Err(ApiError::Timeout(format!(
                "the daemon of `{robot}` publishes no state (its backend does not answer)"
            )));
        }
        let targets = declare_publisher(session, keys::joint_targets(robot))?;
        let cartesian = declare_publisher(session, keys::cartesian_targets(robot))?;
        Ok(Self {
            session: session.clone(),
            client: client.into(),
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

    /// Give the lease back (dropping the client does it too), so the next controller need not
    /// wait for it to lapse.
    pub fn release(&self) -> Result<(), ApiError> {
        let r: schema::LeaseReply = query(
            &self.session,
            &keys::daemon_query(&self.robot, "lease"),
            Some(schema::encode(&schema::LeaseRequest {
                v: V,
                client: self.client.clone(),
                priority: "script".into(),
                release: Some(self.token),
                renew: None,
            })),
            Duration::from_millis(500),
        )?;
        if r.granted {
            Ok(())
        } else {
            Err(ApiError::Refused(format!(
                "the lease was not ours to give back: {}",
                r.reason.unwrap_or_default()
            )))
        }
    }

    /// Ground-truth poses of the sim's scene objects: name, position, quaternion (xyzw).
    pub fn objects(&self) -> Result<Vec<NamedPose>, ApiError> {
        let poses = latest_within(&self.objects, "no object poses from the sim")?;
        Ok(poses
            .objects
            .into_iter()
            .map(|o| (o.name, o.pose.position, o.pose.orientation))
            .collect())
    }

    /// Keep the latest frame of a camera the daemon re-publishes.
    pub fn camera(
        &mut self,
        camera: &str,
    ) -> Result<crate::net::Latest<schema::CameraFrame>, ApiError> {
        if !self.info.cameras.iter().any(|c| c.name == camera) {
            return Err(ApiError::Refused(format!(
                "the robot has no camera `{camera}`"
            )));
        }
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
    ) -> Result<(), ApiError> {
        let msg = schema::CartesianTarget {
            v: V,
            lease: self.token,
            arm: arm.into(),
            position,
            orientation,
            gripper,
        };
        put(&self.cartesian, schema::encode(&msg))
    }

    /// The latest state (waits up to 2 s for the first one).
    pub fn state(&self) -> Result<schema::RobotState, ApiError> {
        latest_within(&self.state, "no state from the daemon")
    }

    /// The first state for which `ok` holds, waiting up to `timeout` (e.g. until a motion
    /// settled, the e-stop shows, the backend answers again); the last state seen otherwise.
    pub fn wait_for_state(
        &self,
        timeout: Duration,
        ok: impl Fn(&schema::RobotState) -> bool,
    ) -> Result<schema::RobotState, ApiError> {
        let mut last = None;
        wait_until(timeout, Duration::from_millis(5), || {
            last = self.state.lock().ok().and_then(|l| l.clone());
            last.as_ref().is_some_and(&ok)
        });
        match last {
            Some(s) if ok(&s) => Ok(s),
            Some(s) => Err(ApiError::Timeout(format!(
                "no state of the awaited kind within {timeout:?}; the last: seq {}, stale {}, \
                 estop {}, faults {:?}",
                s.seq, s.stale, s.estop, s.faults
            ))),
            None => Err(ApiError::Timeout("no state from the daemon".into())),
        }
    }

    /// Joint goto with a minimum-jerk profile; returns when the daemon says it is done.
    pub fn goto(
        &self,
        names: &[String],
        position: &[f32],
        duration: f32,
    ) -> Result<schema::CommandReply, ApiError> {
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

/// The latest value in `slot`, waiting up to 2 s for the first one.
fn latest_within<T: Clone>(slot: &crate::net::Latest<T>, none: &str) -> Result<T, ApiError> {
    let mut got = None;
    wait_until(Duration::from_secs(2), Duration::from_millis(5), || {
        got = slot.lock().ok().and_then(|l| l.clone());
        got.is_some()
    });
    got.ok_or_else(|| ApiError::Timeout(none.into()))
}

impl RobotIo for RobotClient {
    type Error = ApiError;
    fn joint_names(&self) -> Vec<String> {
        self.names.clone()
    }
    fn positions(&mut self) -> Result<Vec<f32>, ApiError> {
        Ok(self.state()?.position)
    }
    fn command(&mut self, indices: &[usize], targets: &[f32]) -> Result<(), ApiError> {
        let names = indices
            .iter()
            .map(|&i| {
                self.names
                    .get(i)
                    .cloned()
                    .ok_or_else(|| ApiError::Refused(format!("no joint index {i}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let msg = schema::JointTargets {
            v: V,
            lease: self.token,
            names,
            position: targets.to_vec(),
        };
        put(&self.targets, schema::encode(&msg))
    }
    fn advance(&mut self, seconds: f64) -> Result<(), ApiError> {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        Ok(())
    }
    fn object(&mut self, name: &str) -> Result<([f32; 3], [f32; 4], f32), ApiError> {
        let poses = latest_within(&self.objects, "no object poses from the sim")?;
        let o = poses
            .objects
            .into_iter()
            .find(|o| o.name == name)
            .ok_or_else(|| ApiError::Refused(format!("no object `{name}`")))?;
        Ok((o.pose.position, o.pose.orientation, o.half_size))
    }
}

impl Drop for RobotClient {
    fn drop(&mut self) {
        // best effort: a daemon that is gone, or a lease taken over, has nothing to give back
        let _ = self.release();
    }
}
