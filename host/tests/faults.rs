//! Processes that die: the sim is killed (SIGKILL) under a daemon that a client drives. The
//! daemon holds and says why while its backend is silent, and recovers — without a jump — when a
//! new sim comes back on the same endpoint. The daemon is killed under a driving client: the
//! robot holds where it was, the client gets errors, and a new daemon takes up where the robot
//! stands. (The recorder's kill -9: `record.rs`.)

use std::time::Duration;

use crate::common::{sim_and_daemon, start_reachy, start_sim};
use reachy_api::schema::RobotState;
use reachy_api::{RobotClient, ZenohOptions};

/// The first state for which `ok` holds; fails after 20 s.
fn state_where(c: &RobotClient, what: &str, ok: impl Fn(&RobotState) -> bool) -> RobotState {
    c.wait_for_state(Duration::from_secs(20), ok)
        .unwrap_or_else(|e| panic!("never: {what}: {e}"))
}

#[test]
fn the_daemon_holds_while_the_sim_is_dead_and_recovers_when_it_returns() {
    let mut robot = sim_and_daemon("kf");
    let b = robot.endpoint.clone();
    let session = ZenohOptions {
        connect: vec![b],
        ..Default::default()
    }
    .open()
    .unwrap();
    let c =
        RobotClient::connect(&session, "kf", "faults", "script", Duration::from_secs(10)).unwrap();
    let yaw = ["neck_yaw".to_string()];
    assert_eq!(c.goto(&yaw, &[0.3], 0.5).unwrap().status, "ok");

    // SIGKILL
    let _ = robot.sim.0.kill();
    let _ = robot.sim.0.wait();
    let st = state_where(&c, "the daemon reports its backend stale", |s| s.stale);
    let r = c.goto(&yaw, &[0.0], 0.5).unwrap();
    assert_eq!(r.status, "rejected", "{r:?}");
    assert!(r.reason.unwrap().contains("holding"));
    // what it holds is where the robot was
    let i = st.names.iter().position(|n| n == "neck_yaw").unwrap();
    assert!((st.target[i] - 0.3).abs() < 0.03, "{}", st.target[i]);

    // a new sim (at its home pose) on the same endpoint: fresh states, motion accepted again,
    // and the daemon takes up where the new robot is rather than pulling it back
    robot.sim = start_sim("kf", &robot.sim_endpoint);
    let st = state_where(&c, "fresh states again", |s| !s.stale);
    assert!(
        st.target[i].abs() < 0.05,
        "no jump back to 0.3: {}",
        st.target[i]
    );
    let r = c.goto(&yaw, &[-0.2], 0.5).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
}

#[test]
fn the_robot_holds_while_the_daemon_is_dead_and_a_new_daemon_takes_up_where_it_stands() {
    let mut robot = sim_and_daemon("kd");
    let session = ZenohOptions {
        connect: vec![robot.endpoint.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let c =
        RobotClient::connect(&session, "kd", "faults", "script", Duration::from_secs(10)).unwrap();
    let yaw = ["neck_yaw".to_string()];
    assert_eq!(c.goto(&yaw, &[0.3], 0.5).unwrap().status, "ok");
    // the sim itself, watched directly
    let sim_session = ZenohOptions {
        connect: vec![robot.sim_endpoint.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let (sim_state, _sub) = reachy_api::net::subscribe_latest(
        &sim_session,
        &reachy_api::schema::keys::sim_joint_state("kd"),
        |b| reachy_api::schema::decode_sim::<reachy_api::schema::JointState>(b).ok(),
    )
    .unwrap();
    let sim_now = || sim_state.lock().unwrap().clone();
    assert!(reachy_api::net::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(5),
        || sim_now().is_some()
    ));
    let i = sim_now()
        .unwrap()
        .names
        .iter()
        .position(|n| n == "neck_yaw")
        .unwrap();

    // SIGKILL the daemon
    let _ = robot.daemon.0.kill();
    let _ = robot.daemon.0.wait();
    let killed_at = sim_now().unwrap().seq;
    // a second of simulated time later the robot is still where the daemon left it
    assert!(reachy_api::net::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(5),
        || sim_now().is_some_and(|s| s.seq > killed_at + 100)
    ));
    let held = sim_now().unwrap().position[i];
    assert!((held - 0.3).abs() < 0.03, "the robot drifted to {held}");
    // the client is told, not left hanging
    assert!(c.goto(&yaw, &[0.0], 0.5).is_err());

    // a new daemon on the same endpoints: a new lease, no jump, motion again
    robot.daemon = start_reachy(
        &[
            "daemon",
            "--robot",
            "kd",
            "--connect",
            &robot.sim_endpoint,
            "--listen",
            &robot.endpoint,
        ],
        "daemon ready",
    );
    let c2 = RobotClient::connect(
        &session,
        "kd",
        "faults-2",
        "script",
        Duration::from_secs(20),
    )
    .unwrap();
    let st = c2.state().unwrap();
    let j = st.names.iter().position(|n| n == "neck_yaw").unwrap();
    assert!(
        (st.target[j] - 0.3).abs() < 0.03,
        "no jump: target {}",
        st.target[j]
    );
    let r = c2.goto(&yaw, &[-0.2], 0.5).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
}
