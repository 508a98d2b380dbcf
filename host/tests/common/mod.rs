//! Helpers shared by the host's integration tests.

use std::process::Command;

pub use reachy_test_support::{python_with, repo_root, run_python_json, run_with_stdin, Kill};

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The simulated robot as two processes on fresh loopback endpoints: `reachy sim` for `robot`
/// and `reachy daemon` connected to it. Returns them with the sim's and the daemon's endpoint.
pub struct SimAndDaemon {
    /// `reachy sim`.
    pub sim: Kill,
    /// `reachy daemon` (killed when this is dropped).
    pub daemon: Kill,
    /// Where the sim listens.
    pub sim_endpoint: String,
    /// Where the daemon listens (clients connect here).
    pub endpoint: String,
}

/// Start [`SimAndDaemon`] for `robot`.
pub fn sim_and_daemon(robot: &str) -> SimAndDaemon {
    let sim_endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let sim = start_sim(robot, &sim_endpoint);
    let daemon = start_reachy(
        &[
            "daemon",
            "--robot",
            robot,
            "--connect",
            &sim_endpoint,
            "--listen",
            &endpoint,
        ],
        "daemon ready",
    );
    SimAndDaemon {
        sim,
        daemon,
        sim_endpoint,
        endpoint,
    }
}

/// `reachy sim` for `robot` listening on `endpoint`.
pub fn start_sim(robot: &str, endpoint: &str) -> Kill {
    start_reachy(
        &["sim", "--robot", robot, "--listen", endpoint],
        "sim ready",
    )
}

/// Start `reachy ARGS` and wait for its first stdout line to start with `ready`.
pub fn start_reachy(args: &[&str], ready: &str) -> Kill {
    use std::io::BufRead;
    let mut c = Kill(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(c.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with(ready), "{args:?}: {line:?}");
    c
}

/// A Pinocchio reference script (`host/tests/python/<script>`) answering `request` on stdout.
pub fn pinocchio<T: serde::de::DeserializeOwned>(
    py: &std::path::Path,
    script: &str,
    request: &serde_json::Value,
) -> T {
    let out = run_with_stdin(
        Command::new(py).arg(repo_root().join("host/tests/python").join(script)),
        request.to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The JSON report a `reachy` command wrote to `report`, once its output shows it exited 0 (its
/// stdout echoed; `what` and its stderr in the failure message).
pub fn report_of(
    out: &std::process::Output,
    report: &std::path::Path,
    what: &str,
) -> serde_json::Value {
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}
