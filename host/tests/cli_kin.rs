//! The `reachy` binary as a script would use it: JSON lines in, JSON lines out, exit codes.

use crate::common;

use std::process::Command;

fn reachy(args: &[&str], stdin: &str) -> (i32, String, String) {
    let out = common::run_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_reachy")).args(args),
        stdin.as_bytes(),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn chains_fk_ik_through_the_binary() {
    let (code, out, _) = reachy(&["kin", "chains"], "");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    let (code, out, _) = reachy(
        &["kin", "fk"],
        "{\"chain\":\"r_arm\",\"q\":[0.1,-1.2,0,-1.4,0,0,0]}\n",
    );
    assert_eq!(code, 0);
    let fk: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let line = serde_json::json!({"chain":"r_arm","t":fk["t"],"quat_xyzw":fk["quat_xyzw"]});
    let (code, out, _) = reachy(&["kin", "ik"], &format!("{line}\n"));
    assert_eq!(code, 0);
    let ik: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ik["ok"], true);
}

#[test]
fn bad_lines_and_bad_files_fail_cleanly() {
    let (code, out, _) = reachy(
        &["kin", "fk"],
        "garbage\n{\"chain\":\"head\",\"q\":[0,0,0]}\n",
    );
    assert_eq!(code, 1, "a failed line makes the exit code non-zero");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("{\"error\":\"line 1:"));
    assert!(lines[1].contains("quat_xyzw"));

    // --urdf where the subcommand's own flags go, before or after its subcommand
    for args in [
        ["kin", "--urdf", "/no/such.urdf", "chains"],
        ["kin", "chains", "--urdf", "/no/such.urdf"],
    ] {
        let (code, _, err) = reachy(&args, "");
        assert_eq!(code, 2);
        assert!(err.contains("/no/such.urdf"), "{err}");
    }

    let (code, _, err) = reachy(&["kin", "frobnicate"], "");
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

#[test]
fn urdf_passes_check_urdf() {
    let Ok(out) = Command::new("check_urdf")
        .arg(common::repo_root().join("urdf/reachy.urdf"))
        .output()
    else {
        reachy_test_support::missing("check_urdf", "Debian liburdfdom-tools; .ci/run installs it");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Successfully Parsed XML"));
    assert!(text.contains("root Link: base_link"));
}

/// `--urdf` is offered by the commands that read the robot description, and only by them.
#[test]
fn urdf_only_where_it_is_read() {
    let help = |args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--help");
        let (code, out, err) = reachy(&a, "");
        assert_eq!(code, 0, "{a:?}: {err}");
        out
    };
    for cmd in [
        &["kin", "fk"][..],
        &["sim"],
        &["daemon"],
        &["demo"],
        &["teleop"],
        &["record"],
        &["replay"],
        &["policy", "run"],
    ] {
        assert!(help(cmd).contains("--urdf"), "{cmd:?} lacks --urdf");
    }
    for cmd in [
        &["bus", "scan"][..],
        &["router"],
        &["dataset", "info"],
        &["firmware", "run"],
        &["sim", "servos"],
        &["policy", "serve"],
        &["policy", "predict"],
    ] {
        assert!(!help(cmd).contains("--urdf"), "{cmd:?} offers --urdf");
    }
    let (code, _, err) = reachy(&["bus", "--urdf", "x.urdf", "scan"], "");
    assert_eq!(code, 2, "{err}");
}
