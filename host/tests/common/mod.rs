//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python interpreter for interop tests: `$REACHY_PYTHON`, else the repo's `.venv`, else
/// `python3` on PATH. `None` only when no Python exists at all.
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("REACHY_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("python3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("python3"))
}

/// Python with `module` importable; panics with the install hint when Python exists but the
/// module does not (CI installs it: `.ci/run`), returns `None` (skip) when there is no Python.
pub fn python_with(module: &str, pip_name: &str) -> Option<PathBuf> {
    let Some(py) = python() else {
        eprintln!("SKIPPED: no Python interpreter found; install Python 3 to run the {module} cross-check");
        return None;
    };
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import `{module}`: run `.ci/run` or `{} -m pip install {pip_name}` (or set REACHY_PYTHON)",
        py.display(),
        py.display()
    );
    Some(py)
}

/// A child process killed and reaped when dropped.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Run a Python script of the repository; its last stdout line, parsed as JSON.
pub fn run_python_json(py: &std::path::Path, script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(py)
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.lines().last().unwrap_or("")).unwrap();
    eprintln!("{v}");
    v
}

/// Run `cmd` with `input` on its stdin (stdout and stderr captured) and wait for it.
#[allow(dead_code)]
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A Pinocchio reference script (`host/tests/python/<script>`) answering `request` on stdout.
#[allow(dead_code)]
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
#[allow(dead_code)]
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
