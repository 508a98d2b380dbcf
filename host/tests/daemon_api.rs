//! The daemon's zenoh API, in one process with the simulator: leases and their priorities,
//! goto with honest replies, malformed and unauthorised commands rejected and counted, e-stop.

use std::time::Duration;

use reachy_host::daemon::{Daemon, DaemonConfig, SimBackend};
use reachy_host::model::{RobotModel, REACHY_URDF};
use reachy_host::schema::{self, keys, ROBOT_SCHEMA_VERSION as V};
use reachy_host::sim_bridge::{BridgeConfig, SimBridge};
use reachy_sim::world::{World, WorldConfig};
use zenoh::Wait;

fn get<T: serde::de::DeserializeOwned + schema::Versioned>(
    s: &zenoh::Session,
    key: &str,
    payload: Vec<u8>,
) -> T {
    let r = s
        .get(key)
        .payload(payload)
        .timeout(Duration::from_secs(10))
        .wait()
        .unwrap()
        .recv()
        .unwrap();
    schema::decode_robot(&r.result().ok().unwrap().payload().to_bytes()).unwrap()
}

fn lease(s: &zenoh::Session, client: &str, priority: &str) -> schema::LeaseReply {
    get(
        s,
        &keys::daemon_query("t", "lease"),
        schema::encode(&schema::LeaseRequest {
            v: V,
            client: client.into(),
            priority: priority.into(),
            release: None,
        }),
    )
}

fn goto(s: &zenoh::Session, token: u64, joint: &str, q: f32, d: f32) -> schema::CommandReply {
    get(
        s,
        &keys::daemon_query("t", "goto"),
        schema::encode(&schema::GotoRequest {
            v: V,
            lease: token,
            names: vec![joint.into()],
            position: vec![q],
            duration: d,
        }),
    )
}

fn state(s: &zenoh::Session) -> schema::RobotState {
    let sub = s.declare_subscriber(keys::state("t")).wait().unwrap();
    let m = sub.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    schema::decode_robot(&m.payload().to_bytes()).unwrap()
}

/// The sim (no scene) and a daemon with `cfg` on one in-process session, warmed up.
fn start(cfg: DaemonConfig) -> (zenoh::Session, SimBridge, Daemon) {
    let session = reachy_host::net::ZenohArgs::default().open().unwrap();
    let mut world = WorldConfig::new(REACHY_URDF);
    world.scene = None;
    let bridge = SimBridge::spawn(
        session.clone(),
        World::new(world).unwrap(),
        BridgeConfig {
            robot: cfg.robot.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let backend = SimBackend::connect(&session, &cfg.robot, Duration::from_secs(5)).unwrap();
    let daemon = Daemon::spawn(
        session.clone(),
        RobotModel::reachy().unwrap(),
        Box::new(backend),
        cfg,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    (session, bridge, daemon)
}

#[test]
fn acceleration_limit_ramps_every_command() {
    let conf = reachy_host::config::Config::parse("robot = \"ta\"\nmax_acceleration = 2.0\n", "t")
        .unwrap();
    let (session, bridge, daemon) = start(DaemonConfig::from_config(&conf));
    let l = get::<schema::LeaseReply>(
        &session,
        &keys::daemon_query("ta", "lease"),
        schema::encode(&schema::LeaseRequest {
            v: V,
            client: "c".into(),
            priority: "script".into(),
            release: None,
        }),
    );
    let st = state_of(&session, "ta");
    let i = st.names.iter().position(|n| n == "neck_yaw").unwrap();
    let q0 = st.target[i];
    // a 0.5 rad jump, streamed: after 0.2 s at 2 rad/s² the target has moved about
    // a t² / 2 = 0.04 rad, not the URDF velocity limit's worth
    let p = session
        .declare_publisher(keys::joint_targets("ta"))
        .wait()
        .unwrap();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(200) {
        p.put(schema::encode(&schema::JointTargets {
            v: V,
            lease: l.token,
            names: vec!["neck_yaw".into()],
            position: vec![q0 + 0.5],
        }))
        .wait()
        .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let moved = state_of(&session, "ta").target[i] - q0;
    assert!(moved > 0.01 && moved < 0.07, "moved {moved} rad in 0.2 s");
    daemon.stop().unwrap();
    bridge.stop().unwrap();
}

#[test]
fn configured_limits_tighten_the_urdf() {
    let conf = reachy_host::config::Config::parse(
        "robot = \"t\"\n[limits]\nneck_yaw = { upper = 0.5 }\n",
        "test",
    )
    .unwrap();
    let (session, bridge, daemon) = start(DaemonConfig::from_config(&conf));
    let l = lease(&session, "c", "script");
    let r = goto(&session, l.token, "neck_yaw", 0.8, 0.3);
    assert_eq!(r.status, "clamped", "{r:?}");
    std::thread::sleep(Duration::from_millis(400));
    let st = state(&session);
    let i = st.names.iter().position(|n| n == "neck_yaw").unwrap();
    assert!((st.position[i] - 0.5).abs() < 0.02, "{}", st.position[i]);
    daemon.stop().unwrap();
    bridge.stop().unwrap();
}

#[test]
fn leases_goto_rejections_and_estop() {
    let (session, bridge, daemon) = start(DaemonConfig {
        robot: "t".into(),
        ..Default::default()
    });

    // leases: policy first; a script cannot take it; teleop pre-empts
    let policy = lease(&session, "policy@gpu", "policy");
    assert!(policy.granted);
    let script = lease(&session, "script", "script");
    assert!(!script.granted);
    assert_eq!(script.holder.as_deref(), Some("policy@gpu"));
    let teleop = lease(&session, "teleop@vr", "teleop");
    assert!(teleop.granted);
    assert!(!lease(&session, "x", "boss").granted, "unknown priority");

    // the policy's token no longer moves anything; the teleop's does
    let r = goto(&session, policy.token, "neck_yaw", 0.3, 0.3);
    assert_eq!(r.status, "rejected", "{r:?}");
    assert!(r.reason.unwrap().contains("teleop@vr"));
    let r = goto(&session, teleop.token, "neck_yaw", 0.4, 0.5);
    assert_eq!(r.status, "ok", "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    let st = state(&session);
    let i = st.names.iter().position(|n| n == "neck_yaw").unwrap();
    assert!(
        (st.position[i] - 0.4).abs() < 0.02,
        "neck_yaw {}",
        st.position[i]
    );
    assert_eq!(st.lease.as_deref(), Some("teleop@vr"));
    assert_eq!(st.tcp.len(), 2);
    assert_eq!(st.gripper.len(), 2);
    assert_eq!(st.backend, "sim");

    // Cartesian, look-at and gripper commands answer honestly
    let cart = |pos: [f32; 3]| -> schema::CommandReply {
        get(
            &session,
            &keys::daemon_query("t", "cartesian"),
            schema::encode(&schema::CartesianRequest {
                v: V,
                lease: teleop.token,
                arm: "r_arm".into(),
                position: pos,
                orientation: None,
                duration: Some(0.5),
            }),
        )
    };
    let r = cart([0.35, -0.3, 0.9]);
    assert_eq!(r.status, "ok", "{r:?}");
    std::thread::sleep(Duration::from_millis(400));
    let st = state(&session);
    let tcp = &st
        .tcp
        .iter()
        .find(|p| p.name == "r_arm")
        .unwrap()
        .pose
        .position;
    let err = ((tcp[0] - 0.35).powi(2) + (tcp[1] + 0.3).powi(2) + (tcp[2] - 0.9).powi(2)).sqrt();
    assert!(err < 0.02, "measured TCP {tcp:?}, {err} m from the target");
    let r = cart([2.0, 0.0, 1.0]);
    assert_eq!(r.status, "unreachable", "{r:?}");
    assert!(r.reason.unwrap().contains("out of reach"));
    let r: schema::CommandReply = get(
        &session,
        &keys::daemon_query("t", "look_at"),
        schema::encode(&schema::LookAtRequest {
            v: V,
            lease: teleop.token,
            point: [1.0, 0.3, 1.0],
            duration: None,
        }),
    );
    assert_eq!(r.status, "ok", "{r:?}");
    let grip = |opening: f32| -> schema::CommandReply {
        get(
            &session,
            &keys::daemon_query("t", "gripper"),
            schema::encode(&schema::GripperRequest {
                v: V,
                lease: teleop.token,
                side: "l".into(),
                opening,
                duration: None,
            }),
        )
    };
    assert_eq!(grip(1.0).status, "ok");
    std::thread::sleep(Duration::from_millis(300));
    let g = state(&session).gripper;
    assert!(g[1] > 0.8, "the left gripper opened: {g:?}");
    assert_eq!(grip(1.5).status, "rejected");

    // a goal beyond the limit is clamped and says so
    let r = goto(&session, teleop.token, "neck_pitch", 1.0, 0.3);
    assert_eq!(r.status, "clamped", "{r:?}");

    // malformed and non-finite streaming commands are rejected and counted
    let before = daemon.rejected.load(std::sync::atomic::Ordering::Relaxed);
    let yaw_before = state(&session).position[i];
    let p = session
        .declare_publisher(keys::joint_targets("t"))
        .wait()
        .unwrap();
    p.put(b"\xffgarbage".to_vec()).wait().unwrap();
    p.put(schema::encode(&schema::JointTargets {
        v: V,
        lease: teleop.token,
        names: vec!["neck_yaw".into()],
        position: vec![f32::NAN],
    }))
    .wait()
    .unwrap();
    p.put(schema::encode(&schema::JointTargets {
        v: V,
        lease: policy.token,
        names: vec!["neck_yaw".into()],
        position: vec![0.0],
    }))
    .wait()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = daemon.rejected.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - before, 3);
    let st = state(&session);
    assert!(
        (st.position[i] - yaw_before).abs() < 0.01,
        "nothing moved: {yaw_before} then {}",
        st.position[i]
    );

    // e-stop: latched, gotos refused; clear holds where the robot is
    let r: schema::CommandReply = get(
        &session,
        &keys::daemon_query("t", "estop"),
        schema::encode(&schema::EstopRequest { v: V, engage: true }),
    );
    assert_eq!(r.status, "ok");
    std::thread::sleep(Duration::from_millis(100));
    assert!(state(&session).estop);
    assert_eq!(
        goto(&session, teleop.token, "neck_yaw", 0.0, 0.3).status,
        "rejected"
    );
    let r: schema::CommandReply = get(
        &session,
        &keys::daemon_query("t", "estop"),
        schema::encode(&schema::EstopRequest {
            v: V,
            engage: false,
        }),
    );
    assert_eq!(r.status, "ok");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!state(&session).estop);

    daemon.stop().unwrap();
    bridge.stop().unwrap();
}

fn torque(s: &zenoh::Session, token: u64, on: bool) -> schema::CommandReply {
    get(
        s,
        &keys::daemon_query("t2", "torque"),
        schema::encode(&schema::TorqueRequest {
            v: V,
            lease: token,
            on,
        }),
    )
}

fn state_of(s: &zenoh::Session, robot: &str) -> schema::RobotState {
    let sub = s.declare_subscriber(keys::state(robot)).wait().unwrap();
    let m = sub.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    schema::decode_robot(&m.payload().to_bytes()).unwrap()
}

#[test]
fn compliant_mode_and_head_gaze() {
    let (session, bridge, daemon) = start(DaemonConfig {
        robot: "t2".into(),
        ..Default::default()
    });
    let st = state_of(&session, "t2");
    let gaze = st.gaze.expect("the head's pose");
    assert!(gaze.position[2] > st.tcp[0].pose.position[2], "{gaze:?}");
    // torque needs the lease
    let r = torque(&session, 42, false);
    assert_eq!(r.status, "rejected", "{r:?}");
    let l = get::<schema::LeaseReply>(
        &session,
        &keys::daemon_query("t2", "lease"),
        schema::encode(&schema::LeaseRequest {
            v: V,
            client: "teach".into(),
            priority: "teleop".into(),
            release: None,
        }),
    );
    assert!(l.granted);
    let i = st.names.iter().position(|n| n == "r_elbow_pitch").unwrap();
    let before = st.position[i];
    assert_eq!(torque(&session, l.token, false).status, "ok");
    std::thread::sleep(Duration::from_millis(1500));
    // limp: the forearm falls under gravity, the targets follow, and that is no fault
    let st = state_of(&session, "t2");
    assert!(!st.torque);
    assert!(st.faults.is_empty(), "{:?}", st.faults);
    assert!(
        (st.position[i] - before).abs() > 0.05,
        "r_elbow_pitch stayed at {before} with torque off"
    );
    assert!((st.target[i] - st.position[i]).abs() < 0.05);
    // torque back on: it holds where it is, no jump back
    assert_eq!(torque(&session, l.token, true).status, "ok");
    std::thread::sleep(Duration::from_millis(300));
    let a = state_of(&session, "t2");
    std::thread::sleep(Duration::from_millis(500));
    let b = state_of(&session, "t2");
    assert!(a.torque && b.torque);
    assert!(
        (a.position[i] - b.position[i]).abs() < 0.02,
        "{} → {}",
        a.position[i],
        b.position[i]
    );
    assert!(
        (b.position[i] - before).abs() > 0.03,
        "it did not jump back to {before}"
    );
    daemon.stop().unwrap();
    bridge.stop().unwrap();
}
