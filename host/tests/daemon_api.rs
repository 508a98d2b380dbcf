//! The daemon's zenoh API, in one process with the simulator: leases and their priorities,
//! goto with honest replies, malformed and unauthorised commands rejected and counted, e-stop.
//! Each test runs twice (issue 14 §3): on the sim backend (`daemon_api::sim::…`) and through
//! the firmware (`daemon_api::firmware::…`: the physics robot's joints as Dynamixel servo buses
//! on ptys, the firmware's control core on each, the daemon on their host links) — the same
//! client-visible behaviour on both.

use std::time::{Duration, Instant};

use reachy_api::schema::{self, keys, ROBOT_SCHEMA_VERSION as V};
use reachy_apps::inprocess::{SimRobot, SimRobotOptions, Through};
use reachy_daemon::DaemonConfig;
use reachy_kinematics::model::{RobotModel, REACHY_URDF};
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
            renew: None,
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
    state_of(s, "t")
}

/// The first state of `robot` for which `ok` holds. Fails after 10 s: the condition never came
/// (a bound on failure, not a window the test depends on).
fn state_where(
    s: &zenoh::Session,
    robot: &str,
    what: &str,
    ok: impl Fn(&schema::RobotState) -> bool,
) -> schema::RobotState {
    let sub = s.declare_subscriber(keys::state(robot)).wait().unwrap();
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(m)) = sub.recv_timeout(Duration::from_millis(500)) {
            let st: schema::RobotState = schema::decode_robot(&m.payload().to_bytes()).unwrap();
            if ok(&st) {
                return st;
            }
            last = Some(st);
        }
    }
    panic!("no state of `{robot}` where {what} within 10 s; the last: {last:?}");
}

/// The first state at least `ticks` control periods after `after`.
fn ticks_after(
    s: &zenoh::Session,
    robot: &str,
    after: &schema::RobotState,
    ticks: u64,
) -> schema::RobotState {
    state_where(s, robot, "enough ticks passed", |st| {
        st.seq >= after.seq + ticks
    })
}

/// Wait until `counter` reached `n`; fails after 10 s.
fn count_reaches(counter: &std::sync::atomic::AtomicU64, n: u64) {
    let t0 = Instant::now();
    while counter.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the count stayed below {n}"
        );
        std::thread::yield_now();
    }
}

/// The sim (no scene) and a daemon with `cfg` on one in-process session, the daemon reaching
/// the physics `through` the sim backend or the firmware, warmed up.
fn start(cfg: DaemonConfig, through: &Through) -> (zenoh::Session, SimRobot) {
    let robot = cfg.robot.clone();
    let mut world = WorldConfig::new(REACHY_URDF);
    world.scene = None;
    let sim = SimRobot::start(
        World::new(world).unwrap(),
        RobotModel::reachy().unwrap(),
        SimRobotOptions {
            robot: robot.clone(),
            through: through.clone(),
            daemon: Some(cfg),
            ..Default::default()
        },
    )
    .unwrap();
    let session = sim.session.clone();
    // warmed up: the daemon publishes states of the robot's joints
    state_where(&session, &robot, "the daemon is up", |s| {
        !s.names.is_empty()
    });
    (session, sim)
}

/// Through the firmware as `reachy demo --backend firmware` goes: a `reachy firmware run`
/// process per limb between the physics servo buses and the daemon's host links.
fn firmware_processes() -> Through {
    Through::Firmware {
        program: Some(env!("CARGO_BIN_EXE_reachy").into()),
    }
}

/// The backend's name in the state.
fn backend_name(through: &Through) -> &'static str {
    match through {
        Through::Sim => "sim",
        Through::Firmware { program: None } => "dynamixel",
        Through::Firmware { program: Some(_) } => "serial",
        Through::Qemu { .. } => "qemu",
    }
}

fn acceleration_limit_ramps_every_command(through: Through) {
    let conf =
        reachy_daemon::config::Config::parse("robot = \"ta\"\nmax_acceleration = 2.0\n", "t")
            .unwrap();
    let (session, robot) = start(DaemonConfig::from_config(&conf), &through);
    let l = get::<schema::LeaseReply>(
        &session,
        &keys::daemon_query("ta", "lease"),
        schema::encode(&schema::LeaseRequest {
            v: V,
            client: "c".into(),
            priority: "script".into(),
            release: None,
            renew: None,
        }),
    );
    let st = state_of(&session, "ta");
    let i = st.names.iter().position(|n| n == "neck_yaw").unwrap();
    let q0 = st.target[i];
    // a 0.5 rad jump, streamed, one target per state: after t s of the daemon's own clock at
    // 2 rad/s² the target has moved about a t² / 2 (0.04 rad at 0.2 s), not the URDF velocity
    // limit's worth
    let p = session
        .declare_publisher(keys::joint_targets("ta"))
        .wait()
        .unwrap();
    let sub = session
        .declare_subscriber(keys::state("ta"))
        .wait()
        .unwrap();
    let send = || {
        p.put(schema::encode(&schema::JointTargets {
            v: V,
            lease: l.token,
            names: vec!["neck_yaw".into()],
            position: vec![q0 + 0.5],
        }))
        .wait()
        .unwrap()
    };
    send();
    let next = || -> schema::RobotState {
        let m = sub.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        schema::decode_robot(&m.payload().to_bytes()).unwrap()
    };
    // the first state that shows the stream moving: the ramp starts there
    let first = loop {
        let s = next();
        if s.target[i] != q0 {
            break s;
        }
    };
    let last = loop {
        send();
        let s = next();
        if s.t - first.t >= 0.2 {
            break s;
        }
    };
    let dt = (last.t - first.t) as f32;
    let moved = last.target[i] - first.target[i];
    let bound = 2.0 * (dt + 0.02) * (dt + 0.02) / 2.0;
    assert!(
        moved > 0.25 * bound && moved <= bound,
        "moved {moved} rad in {dt} s (at most {bound} at 2 rad/s²)"
    );
    robot.stop().unwrap();
}

fn configured_limits_tighten_the_urdf(through: Through) {
    let conf = reachy_daemon::config::Config::parse(
        "robot = \"t\"\n[limits]\nneck_yaw = { upper = 0.5 }\n",
        "test",
    )
    .unwrap();
    let (session, robot) = start(DaemonConfig::from_config(&conf), &through);
    let l = lease(&session, "c", "script");
    let r = goto(&session, l.token, "neck_yaw", 0.8, 0.3);
    assert_eq!(r.status, "clamped", "{r:?}");
    let i = state(&session)
        .names
        .iter()
        .position(|n| n == "neck_yaw")
        .unwrap();
    let st = state_where(&session, "t", "neck_yaw settles", |s| {
        (s.position[i] - 0.5).abs() < 0.02
    });
    assert!(
        st.target[i] <= 0.5 + 1e-6,
        "the target stays within the limit"
    );
    robot.stop().unwrap();
}

fn leases_goto_rejections_and_estop(through: Through) {
    let (session, robot) = start(
        DaemonConfig {
            robot: "t".into(),
            ..Default::default()
        },
        &through,
    );

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
    let i = state(&session)
        .names
        .iter()
        .position(|n| n == "neck_yaw")
        .unwrap();
    let st = state_where(&session, "t", "neck_yaw reaches 0.4", |s| {
        (s.position[i] - 0.4).abs() < 0.02
    });
    assert_eq!(st.lease.as_deref(), Some("teleop@vr"));
    assert_eq!(st.tcp.len(), 2);
    assert_eq!(st.gripper.len(), 2);
    assert_eq!(st.backend, backend_name(&through));

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
    let tcp_err = |st: &schema::RobotState| {
        let tcp = &st
            .tcp
            .iter()
            .find(|p| p.name == "r_arm")
            .unwrap()
            .pose
            .position;
        ((tcp[0] - 0.35).powi(2) + (tcp[1] + 0.3).powi(2) + (tcp[2] - 0.9).powi(2)).sqrt()
    };
    state_where(
        &session,
        "t",
        "the measured TCP is within 2 cm of the target",
        |s| tcp_err(s) < 0.02,
    );
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
    state_where(&session, "t", "the left gripper opened", |s| {
        s.gripper[1] > 0.8
    });
    assert_eq!(grip(1.5).status, "rejected");

    // a goal beyond the limit is clamped and says so
    let r = goto(&session, teleop.token, "neck_pitch", 1.0, 0.3);
    assert_eq!(r.status, "clamped", "{r:?}");

    // malformed and non-finite streaming commands are rejected and counted
    let before = robot
        .daemon()
        .rejected
        .load(std::sync::atomic::Ordering::Relaxed);
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
    count_reaches(&robot.daemon().rejected, before + 3);
    let after = robot
        .daemon()
        .rejected
        .load(std::sync::atomic::Ordering::Relaxed);
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
        schema::encode(&schema::EstopRequest {
            v: V,
            engage: true,
            lease: None,
        }),
    );
    assert_eq!(r.status, "ok");
    // the reply comes after the e-stop latched: the next state shows it
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
            lease: Some(teleop.token),
        }),
    );
    assert_eq!(r.status, "ok");
    assert!(!state(&session).estop);

    robot.stop().unwrap();
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

fn compliant_mode_and_head_gaze(through: Through) {
    let (session, robot) = start(
        DaemonConfig {
            robot: "t2".into(),
            ..Default::default()
        },
        &through,
    );
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
            renew: None,
        }),
    );
    assert!(l.granted);
    let i = st.names.iter().position(|n| n == "r_elbow_pitch").unwrap();
    let before = st.position[i];
    assert_eq!(torque(&session, l.token, false).status, "ok");
    // limp: the forearm falls under gravity, the targets follow, and that is no fault
    let st = state_where(&session, "t2", "the limp forearm fell", |s| {
        (s.position[i] - before).abs() > 0.05
    });
    assert!(!st.torque);
    assert!(st.faults.is_empty(), "{:?}", st.faults);
    assert!(
        (st.position[i] - before).abs() > 0.05,
        "r_elbow_pitch stayed at {before} with torque off"
    );
    assert!((st.target[i] - st.position[i]).abs() < 0.05);
    // torque back on: it holds where it is, no jump back
    assert_eq!(torque(&session, l.token, true).status, "ok");
    let on = state_where(&session, "t2", "torque is back", |s| s.torque);
    // 30 periods to settle, then 50 more (0.5 s at 100 Hz) holding
    let a = ticks_after(&session, "t2", &on, 30);
    let b = ticks_after(&session, "t2", &a, 50);
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
    robot.stop().unwrap();
}

fn a_dropped_client_gives_its_lease_back(through: Through) {
    use reachy_api::RobotClient;
    let (session, robot) = start(
        DaemonConfig {
            robot: "t3".into(),
            ..Default::default()
        },
        &through,
    );
    let connect =
        |name: &str| RobotClient::connect(&session, "t3", name, "script", Duration::from_secs(5));
    let first = connect("first").unwrap();
    let e = connect("second").err().expect("the lease is held");
    assert!(e.to_string().contains("held by"), "{e}");
    // dropped: the lease comes back at once, not after it lapses
    drop(first);
    let _second = connect("second").unwrap();
    state_where(&session, "t3", "the new holder in the state", |s| {
        s.lease.as_deref() == Some("second")
    });
    robot.stop().unwrap();
}

/// Each test above as `sim::NAME` and `firmware::NAME`.
macro_rules! on_both_backends {
    ($($t:ident),* $(,)?) => {
        mod sim {
            $( #[test] fn $t() { super::$t(super::Through::Sim) } )*
        }
        mod firmware {
            $( #[test] fn $t() { super::$t(super::firmware_processes()) } )*
        }
    };
}

on_both_backends!(
    acceleration_limit_ramps_every_command,
    configured_limits_tighten_the_urdf,
    leases_goto_rejections_and_estop,
    compliant_mode_and_head_gaze,
    a_dropped_client_gives_its_lease_back,
);
