//! Helpers shared by the integration tests of every crate.
//!
//! A test whose foreign peer (a Python package, QEMU, `check_urdf`) is missing calls
//! [`missing`]: under CI (`CI` set) that fails the test, elsewhere it is skipped with the hint.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the tests run under CI (`CI` set and not `false`/`0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A foreign peer is missing: under CI the test fails with `what` and `hint`; elsewhere it
/// prints `SKIPPED` and the caller returns.
pub fn missing(what: &str, hint: &str) {
    assert!(!in_ci(), "{what} is missing under CI: {hint}");
    eprintln!("SKIPPED: {what} is missing ({hint})");
}

/// The Python interpreter for interop tests: `$REACHY_PYTHON`, else the repo's `.venv`, else
/// `python3` on PATH.
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

/// Python with `module` importable. Without Python: [`missing`] (fails under CI), `None`. With
/// Python but not the module: fails with the install hint (`.ci/run` installs it).
pub fn python_with(module: &str, pip_name: &str) -> Option<PathBuf> {
    let Some(py) = python() else {
        missing(
            "a Python interpreter",
            &format!("install Python 3 and `pip install {pip_name}` for the {module} cross-check"),
        );
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

/// Run `cmd` with `input` on its stdin (stdout and stderr captured) and wait for it.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Run a Python script of the repository; its last stdout line, parsed as JSON.
pub fn run_python_json(py: &Path, script: &str, args: &[&str]) -> serde_json::Value {
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

/// The first endpoint of a ready line's `listening on A, B` part.
pub fn listening_endpoint(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let ep = rest
        .split([',', ' ', ')', '\n'])
        .next()
        .filter(|e| !e.is_empty())?;
    Some(ep.to_string())
}

/// Run `bin demo ARGS --out OUT` (a fresh OUT in the temp dir named after `tag`), assert that it
/// exited 0 and that its summary says the cube ended within 2 cm of the target; its stdout, the
/// summary and OUT.
pub fn run_demo(bin: &Path, tag: &str, args: &[&str]) -> (String, serde_json::Value, PathBuf) {
    let out = std::env::temp_dir().join(format!("reachy-{tag}-{}", std::process::id()));
    let o = Command::new(bin)
        .arg("demo")
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("running reachy demo");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("demo.json")).expect("the demo's summary"),
    )
    .expect("the demo's summary is JSON");
    assert_eq!(summary["success"], true, "{summary}");
    assert!(
        summary["error_mm"].as_f64().is_some_and(|e| e < 20.0),
        "{summary}"
    );
    (stdout, summary, out)
}

/// The largest absolute difference between two tensors of the same shape (parity tests).
#[cfg(feature = "candle")]
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("comparing two f32 tensors")
}
