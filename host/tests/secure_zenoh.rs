//! Listening beyond loopback needs authentication: `reachy sim` refuses `--listen tcp/0.0.0.0:…`
//! without it, accepts it with zenoh's user-password authentication, and then answers only the
//! clients that present valid credentials.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{free_port, start_reachy};
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
    let client = |name: &str, creds: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "{{ mode: \"peer\", scouting: {{ multicast: {{ enabled: false }} }},
                   listen: {{ endpoints: [] }},
                   connect: {{ timeout_ms: 1000, exit_on_failure: false }},
                   transport: {{ auth: {{ usrpwd: {{ {creds} }} }} }} }}"
            ),
        )
        .unwrap();
        p
    };
    let good = client("good.json5", "user: \"reachy\", password: \"s3cret\"");
    let wrong = client("wrong.json5", "user: \"reachy\", password: \"guess\"");
    let none = client("none.json5", "");

    // without authentication, a listener on every interface is refused with the reason
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args([
            "sim",
            "--robot",
            "sec",
            "--listen",
            &format!("tcp/0.0.0.0:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");

    // with user-password authentication it listens, and answers valid credentials only
    let _sim = start_reachy(
        &[
            "sim",
            "--robot",
            "sec",
            "--listen",
            &format!("tcp/0.0.0.0:{port}"),
            "--zenoh-config",
            server.to_str().unwrap(),
        ],
        "sim ready",
    );
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let info = sim_info(&good, &endpoint, Duration::from_secs(10)).expect("valid credentials");
    assert_eq!(info.robot, "sec");
    assert!(sim_info(&wrong, &endpoint, Duration::from_secs(2)).is_none());
    assert!(sim_info(&none, &endpoint, Duration::from_secs(2)).is_none());
    std::fs::remove_dir_all(&dir).ok();
}
