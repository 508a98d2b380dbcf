//! Processes that die: the sim is killed (SIGKILL) under a daemon that a client drives. The
//! daemon holds and says why while its backend is silent, and recovers — without a jump — when a
//! new sim comes back on the same endpoint. The daemon is killed under a driving client: the
//! robot holds where it was, the client gets errors, and a new daemon takes up where the robot
//! stands. The policy server is killed under a runner driving the robot: the robot holds, the
//! runner says so and carries on when a new server comes. The router between the sim, the daemon
//! and a client is killed: the daemon holds on its silent backend, the client's calls fail
//! instead of hanging, and all of them reconnect when a router returns on the same endpoint.
//! (The recorder's kill -9: `record.rs`; the firmware's: `tests/tests/daemon_serial.rs`.)

use std::time::Duration;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::common::{self, sim_and_daemon, start_listening, start_reachy, start_sim};
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

/// The lines a child writes to its stdout, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("  | {l}");
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line containing `what` (the lines before it are dropped); fails after 60 s.
fn line_with(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line with `{what}`: {e}"),
        }
    }
}

#[test]
fn the_robot_holds_while_the_policy_server_is_dead_and_the_runner_resumes_on_a_new_one() {
    let Some((ckpt, ds)) = crate::policy_run::fixture() else {
        return;
    };
    let robot = "kpol";
    let sd = common::sim_and_daemon_with(robot, &["--cameras", "--camera-size", "64x48"]);
    let endpoint = sd.endpoint.clone();
    let ckpt_s = ckpt.to_str().unwrap();
    let serve = |listen: &[&'static str]| -> Vec<&str> {
        let mut a = vec![
            "policy",
            "serve",
            "--checkpoint",
            ckpt_s,
            "--name",
            robot,
            "--stats-every",
            "0",
        ];
        a.extend_from_slice(listen);
        a
    };
    let (mut server, server_ep) = start_listening(&serve(&[]), "policy server ready");
    let report = ckpt.parent().unwrap().join("runner-survives.json");
    let mut runner = common::Kill(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(["policy", "run", "--connect", &endpoint, "--robot", robot])
            .args(["--server", &server_ep, "--server-name", robot])
            .args(["--dataset", ds.to_str().unwrap(), "--episode-time", "25"])
            .arg("--report")
            .arg(&report)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let out = lines_of(&mut runner.0);

    // watch the robot
    let session = ZenohOptions {
        connect: vec![endpoint.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let (state, _sub) =
        reachy_api::net::subscribe_latest(&session, &reachy_api::schema::keys::state(robot), |b| {
            reachy_api::schema::decode_robot::<RobotState>(b).ok()
        })
        .unwrap();
    let arm: Vec<usize> = {
        assert!(reachy_api::net::wait_until(
            Duration::from_secs(20),
            Duration::from_millis(5),
            || state.lock().unwrap().is_some()
        ));
        let st = state.lock().unwrap().clone().unwrap();
        crate::policy_run::NAMES
            .iter()
            .map(|n| st.names.iter().position(|m| m == n).unwrap())
            .collect()
    };
    // how far the arm is from the pose the policy's actions are centred on
    let off_pose = |s: &RobotState| {
        arm.iter()
            .zip(crate::policy_run::POSE)
            .map(|(&i, p)| (s.position[i] - p).abs())
            .fold(0.0f32, f32::max)
    };
    let at_pose = || {
        reachy_api::net::wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
            state
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|s| off_pose(s) < 0.15)
        })
    };
    assert!(at_pose(), "the policy never drove the arm to its pose");

    // SIGKILL the server: the runner says so, keeps running, and the robot holds at the pose
    let _ = server.0.kill();
    let _ = server.0.wait();
    line_with(&out, "inference failed");
    let held = state.lock().unwrap().clone().unwrap();
    let seq = held.seq;
    assert!(reachy_api::net::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(5),
        || state
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.seq > seq + 50)
    ));
    let later = state.lock().unwrap().clone().unwrap();
    assert!(!later.stale, "{later:?}");
    assert!(
        off_pose(&later) < 0.15,
        "the arm left the pose: {:?}",
        later.position
    );
    assert!(runner.0.try_wait().unwrap().is_none(), "the runner gave up");

    // a new server on the same endpoint: the runner resumes and finishes its episode
    let mut again = serve(&["--listen"]);
    again.push(&server_ep);
    server = start_reachy(&again, "policy server ready");
    let back = line_with(&out, "inference back");
    assert!(back.contains("failed request"), "{back}");
    let status = runner.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let e = &r["episodes"][0];
    assert!(e["errors"].as_u64().unwrap() >= 1, "{e}");
    assert!(e["tracking_error"].as_f64().unwrap() < 0.1, "{e}");
    drop(server);
}

#[test]
fn everyone_holds_while_the_router_is_dead_and_reconnects_when_it_returns() {
    let (mut router, r) = start_listening(&["router"], "router ready");
    let _sim = start_reachy(&["sim", "--robot", "krt", "--connect", &r], "sim ready");
    let _daemon = start_reachy(
        &["daemon", "--robot", "krt", "--connect", &r],
        "daemon ready",
    );
    let session = ZenohOptions {
        connect: vec![r.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let c =
        RobotClient::connect(&session, "krt", "faults", "script", Duration::from_secs(20)).unwrap();
    let yaw = ["neck_yaw".to_string()];
    assert_eq!(c.goto(&yaw, &[0.3], 0.5).unwrap().status, "ok");

    // SIGKILL the router: everything is cut from everything; the client is told, not left hanging
    let _ = router.0.kill();
    let _ = router.0.wait();
    assert!(c.goto(&yaw, &[0.0], 0.5).is_err());

    // a new router on the same endpoint: the sim, the daemon and the client find each other
    // again; the robot held where it was (no jump) and moves again
    router = start_reachy(&["router", "--listen", &r], "router ready");
    let st = state_where(&c, "fresh states through the new router", |s| !s.stale);
    let i = st.names.iter().position(|n| n == "neck_yaw").unwrap();
    assert!((st.position[i] - 0.3).abs() < 0.03, "{}", st.position[i]);
    let mut last = None;
    let ok =
        reachy_api::net::wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            last = Some(c.goto(&yaw, &[-0.2], 0.5));
            last.as_ref()
                .is_some_and(|r| r.as_ref().is_ok_and(|r| r.status == "ok"))
        });
    assert!(ok, "no goto through the new router: {last:?}");
    drop(router);
}
