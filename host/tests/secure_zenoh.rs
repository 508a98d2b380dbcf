//! Listening beyond loopback needs authentication: `reachy sim` refuses `--listen tcp/0.0.0.0:…`
//! without it, accepts it with zenoh's user-password authentication, and then answers only the
//! clients that present valid credentials.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{listening_endpoint, start_listening, start_reachy_line};
use reachy_api::net::ZenohOptions;
use reachy_api::schema::{self, keys};
use zenoh::Wait;

fn sim_info(config: &Path, endpoint: &str, wait: Duration) -> Option<schema::SimInfo> {
    let session = ZenohOptions {
        connect: vec![endpoint.to_string()],
        zenoh_config: Some(config.to_path_buf()),
        ..Default::default()
    }
    .open()
    .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < wait {
        let replies = session
            .get(keys::sim_query("sec", "info"))
            .timeout(Duration::from_millis(500))
            .wait()
            .unwrap();
        if let Ok(r) = replies.recv() {
            if let Ok(s) = r.result() {
                return Some(schema::decode_sim(&s.payload().to_bytes()).unwrap());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A client's zenoh config at `path`: no listener, no scouting, `creds` (`user: …, password: …`,
/// or nothing) for user-password authentication.
fn client_config(path: &Path, creds: &str) -> std::path::PathBuf {
    std::fs::write(
        path,
        format!(
            "{{ mode: \"peer\", scouting: {{ multicast: {{ enabled: false }} }},
               listen: {{ endpoints: [] }},
               connect: {{ timeout_ms: 1000, exit_on_failure: false }},
               transport: {{ auth: {{ usrpwd: {{ {creds} }} }} }} }}"
        ),
    )
    .unwrap();
    path.to_path_buf()
}

#[test]
fn remote_listening_needs_credentials() {
    let dir = std::env::temp_dir().join(format!("reachy-secure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users.txt");
    std::fs::write(&users, "reachy:s3cret\n").unwrap();
    let server = dir.join("server.json5");
    std::fs::write(
        &server,
        format!(
            "{{ mode: \"peer\", scouting: {{ multicast: {{ enabled: false }} }},
               transport: {{ auth: {{ usrpwd: {{ dictionary_file: {:?} }} }} }} }}",
            users.display().to_string()
        ),
    )
    .unwrap();
    let client = |name: &str, creds: &str| client_config(&dir.join(name), creds);
    let good = client("good.json5", "user: \"reachy\", password: \"s3cret\"");
    let wrong = client("wrong.json5", "user: \"reachy\", password: \"guess\"");
    let none = client("none.json5", "");

    // without authentication, a listener on every interface is refused with the reason
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["sim", "--robot", "sec", "--listen", "tcp/0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");

    // with user-password authentication it listens, and answers valid credentials only
    let (_sim, line) = start_reachy_line(
        &[
            "sim",
            "--robot",
            "sec",
            "--listen",
            "tcp/0.0.0.0:0",
            "--zenoh-config",
            server.to_str().unwrap(),
        ],
        "sim ready",
    );
    // every interface: the line names the machine's addresses (loopback left out), the port
    // is the same on each
    let any = listening_endpoint(&line).expect(&line);
    let port = any.rsplit(':').next().unwrap();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let info = sim_info(&good, &endpoint, Duration::from_secs(10)).expect("valid credentials");
    assert_eq!(info.robot, "sec");
    assert!(sim_info(&wrong, &endpoint, Duration::from_secs(2)).is_none());
    assert!(sim_info(&none, &endpoint, Duration::from_secs(2)).is_none());
    std::fs::remove_dir_all(&dir).ok();
}

/// The shipped access control (`config/zenoh/daemon-acl.json5`): a viewer reads the state but its
/// commands never reach the daemon (not even counted as rejected) and it gets no lease; an
/// operator drives; a peer without credentials reaches neither the daemon nor the sim.
#[test]
fn the_shipped_access_control_lets_viewers_watch_and_operators_drive() {
    let dir = std::env::temp_dir().join(format!("reachy-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("daemon-users.txt");
    std::fs::write(&users, "operator:op-pass\nviewer:view-pass\n").unwrap();
    let sim_users = dir.join("sim-users.txt");
    std::fs::write(&sim_users, "daemon:d-pass\n").unwrap();
    let shipped = |name: &str| {
        std::fs::read_to_string(crate::common::repo_root().join("config/zenoh").join(name)).unwrap()
    };
    let daemon_cfg = dir.join("daemon.json5");
    std::fs::write(
        &daemon_cfg,
        shipped("daemon-acl.json5")
            .replace("CHANGE-ME", "d-pass")
            .replace("config/zenoh/daemon-users.txt", users.to_str().unwrap()),
    )
    .unwrap();
    let sim_cfg = dir.join("sim.json5");
    std::fs::write(
        &sim_cfg,
        shipped("sim-auth.json5")
            .replace("config/zenoh/sim-users.txt", sim_users.to_str().unwrap()),
    )
    .unwrap();
    let peer = |user: Option<(&str, &str)>| {
        let creds = user.map_or(String::new(), |(u, p)| {
            format!("user: {u:?}, password: {p:?}")
        });
        client_config(
            &dir.join(format!("peer-{}.json5", user.map_or("none", |u| u.0))),
            &creds,
        )
    };
    let (_sim, sim_ep) = start_listening(
        &[
            "sim",
            "--robot",
            "acl",
            "--zenoh-config",
            sim_cfg.to_str().unwrap(),
        ],
        "sim ready",
    );
    let (_daemon, daemon_ep) = start_listening(
        &[
            "daemon",
            "--robot",
            "acl",
            "--connect",
            &sim_ep,
            "--zenoh-config",
            daemon_cfg.to_str().unwrap(),
        ],
        "daemon ready",
    );
    let open = |cfg: &Path, ep: &str| {
        ZenohOptions {
            connect: vec![ep.to_string()],
            zenoh_config: Some(cfg.to_path_buf()),
            ..Default::default()
        }
        .open()
        .unwrap()
    };
    let wait = Duration::from_secs(10);

    // the viewer: state yes, lease no, its commands dropped before the daemon
    let viewer = open(&peer(Some(("viewer", "view-pass"))), &daemon_ep);
    let (state, _sub) = reachy_api::net::subscribe_latest(&viewer, &keys::state("acl"), |b| {
        schema::decode_robot::<schema::RobotState>(b).ok()
    })
    .unwrap();
    let now = || state.lock().unwrap().clone();
    assert!(reachy_api::net::wait_until(
        wait,
        Duration::from_millis(5),
        || now().is_some()
    ));
    assert!(reachy_api::client::daemon_info(&viewer, "acl", wait).is_ok());
    assert!(
        reachy_api::RobotClient::connect(&viewer, "acl", "v", "teleop", Duration::from_secs(2))
            .is_err(),
        "a viewer got the lease"
    );
    let before = now().unwrap();
    let i = before.names.iter().position(|n| n == "neck_yaw").unwrap();
    let cmd = schema::JointCommand {
        v: schema::ROBOT_SCHEMA_VERSION,
        names: vec!["neck_yaw".into()],
        position: vec![0.5],
        torque: None,
    };
    let publ = viewer
        .declare_publisher(keys::joint_targets("acl"))
        .wait()
        .unwrap();
    for _ in 0..20 {
        publ.put(schema::encode(&cmd)).wait().unwrap();
    }

    // the operator drives; the viewer's commands were never seen
    let operator = open(&peer(Some(("operator", "op-pass"))), &daemon_ep);
    let c = reachy_api::RobotClient::connect(&operator, "acl", "op", "teleop", wait).unwrap();
    let r = c.goto(&["neck_yaw".to_string()], &[0.2], 0.5).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    let after = c.state().unwrap();
    assert_eq!(
        after.rejected, before.rejected,
        "the viewer's commands reached the daemon"
    );
    assert!((after.target[i] - 0.2).abs() < 1e-3, "{}", after.target[i]);

    // without credentials: neither the daemon nor the sim answers
    let stranger = peer(None);
    let s = open(&stranger, &daemon_ep);
    assert!(
        reachy_api::client::daemon_info(&s, "acl", Duration::from_secs(2)).is_err(),
        "the daemon answered a peer without credentials"
    );
    let s = open(&stranger, &sim_ep);
    let sim: Result<schema::SimInfo, _> = reachy_api::net::get(
        &s,
        &keys::sim_query("acl", "info"),
        None,
        Duration::from_secs(2),
        schema::decode_sim,
    );
    assert!(sim.is_err(), "the sim answered a peer without credentials");
    std::fs::remove_dir_all(&dir).ok();
}
