//! Helpers shared by the host's integration tests.

use std::process::Command;

pub use reachy_test_support::{
    listening_endpoint, max_abs_diff, python_with, repo_root, run_python_json, run_with_stdin, Kill,
};

/// What a test listens on: loopback, a port the OS picks. The process reports the port it got
/// in its ready line (`… listening on tcp/127.0.0.1:PORT`), which [`start_listening`] reads back:
/// no port is probed, closed and hoped to be free still.
pub const ANY_PORT: &str = "tcp/127.0.0.1:0";

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
    sim_and_daemon_with(robot, &[])
}

/// [`SimAndDaemon`] with more `reachy sim` flags, e.g. `--cameras`.
pub fn sim_and_daemon_with(robot: &str, sim_flags: &[&str]) -> SimAndDaemon {
    let mut sim_args = vec!["sim", "--robot", robot];
    sim_args.extend_from_slice(sim_flags);
    let (sim, sim_endpoint) = start_listening(&sim_args, "sim ready");
    let (daemon, endpoint) = start_listening(
        &["daemon", "--robot", robot, "--connect", &sim_endpoint],
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
    start_reachy_line(args, ready).0
}

/// Start `reachy ARGS --listen tcp/127.0.0.1:0` and wait for its ready line; the endpoint it
/// listens on, read from that line.
pub fn start_listening(args: &[&str], ready: &str) -> (Kill, String) {
    let mut a = args.to_vec();
    a.extend(["--listen", ANY_PORT]);
    let (c, line) = start_reachy_line(&a, ready);
    let endpoint = listening_endpoint(&line)
        .unwrap_or_else(|| panic!("{args:?}: no `listening on` in {line:?}"));
    (c, endpoint)
}

/// Start `reachy ARGS`, wait for its first stdout line to start with `ready`; the line.
pub fn start_reachy_line(args: &[&str], ready: &str) -> (Kill, String) {
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
    (c, line)
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

/// `reachy sim servos` on a pseudo-terminal linked at `link`, with servo `ids` (e.g. `1-6`);
/// returns once the link exists.
pub fn sim_servos(link: &std::path::Path, ids: &str) -> Kill {
    sim_servos_with(link, ids, &[])
}

/// [`sim_servos`] with more flags (`--latency-ms 16`, `--dead 3`).
pub fn sim_servos_with(link: &std::path::Path, ids: &str, extra: &[&str]) -> Kill {
    let k = Kill(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args([
                "sim",
                "servos",
                "--pty",
                link.to_str().unwrap(),
                "--ids",
                ids,
            ])
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = std::time::Instant::now();
    while !link.exists() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "sim servos did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    k
}

/// A command in a detached tmux session (a real terminal for raw-mode keys), killed on drop.
pub struct Tmux {
    session: String,
}

impl Tmux {
    /// Run `cmd` in a new `width`×50 session named after `tag`. Without tmux: `None`, after
    /// [`reachy_test_support::missing`] said so (a failure under CI).
    pub fn start(tag: &str, width: u32, cmd: &str) -> Option<Self> {
        let have = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            reachy_test_support::missing("tmux", "apt install tmux");
            return None;
        }
        let session = format!("reachy-{tag}-{}", std::process::id());
        let w = width.to_string();
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &w,
                "-y",
                "50",
                cmd,
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session {session}");
        Some(Self { session })
    }

    /// Type `keys` (tmux key names: `d`, `Tab`, `Right`, `Escape`).
    pub fn send(&self, keys: &str) {
        let _ = Command::new("tmux")
            .args(["send-keys", "-t", &self.session, keys])
            .output();
    }

    /// The screen and its last 100 lines of history.
    pub fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-S", "-100", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Wait until `what` shows `times` times on the screen, failing after `secs`.
    pub fn wait_for(&self, what: &str, times: usize, secs: u64) {
        let ok = reachy_api::net::wait_until(
            std::time::Duration::from_secs(secs),
            std::time::Duration::from_millis(20),
            || self.screen().matches(what).count() >= times,
        );
        assert!(ok, "no `{what}` ×{times} on the screen:\n{}", self.screen());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .output();
    }
}
