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
