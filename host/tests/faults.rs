//! Processes that die: the sim is killed (SIGKILL) under a daemon that a client drives. The
//! daemon holds and says why while its backend is silent, and recovers — without a jump — when a
//! new sim comes back on the same endpoint.

use std::time::Duration;

use crate::common::{sim_and_daemon, start_sim};
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
