//! `reachy doctor` against simulated servos on a pty and a fake sysfs tree: the servos the
//! servo map expects found or named as missing, the FTDI latency timer caught and fixed, the
//! exit code; a running daemon found; `reachy completions`.

use crate::common;

use std::process::Command;

fn doctor(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .arg("doctor")
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{out}{}", String::from_utf8_lossy(&o.stderr));
    (o.status.success(), out)
}

fn line<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no `{what}` line in:\n{out}"))
}

#[test]
fn doctor_finds_servos_and_a_slow_latency_timer() {
    let dir = std::env::temp_dir().join(format!("reachy-doctor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let timer = dir.join("sys/bus/usb-serial/devices/ttyUSB0/latency_timer");
    std::fs::create_dir_all(timer.parent().unwrap()).unwrap();
    std::fs::write(&timer, "16\n").unwrap();
    std::fs::create_dir_all(dir.join("dev")).unwrap();
    let bus = dir.join("bus");
    // r_arm's bus holds 8 servos (7 joints and the gripper): only 1-6 are there
    let _servos = common::sim_servos(&bus, "1-6");
    let bus_arg = format!("r_arm={}", bus.display());
    let (sys, dev) = (dir.join("sys"), dir.join("dev"));
    let common_args = [
        "--bus",
        bus_arg.as_str(),
        "--sysfs",
        sys.to_str().unwrap(),
        "--dev",
        dev.to_str().unwrap(),
        "--no-render",
        "--zenoh-port",
        "0",
    ];
    let (ok, out) = doctor(&common_args);
    assert!(!ok, "missing servos are errors");
    assert!(line(&out, "servo r_arm/1 r_shoulder_pitch").starts_with("ok"));
    assert!(line(&out, "servo r_arm/6 ").starts_with("ok"));
    let missing = line(&out, "servo r_arm/7 r_wrist_yaw");
    assert!(
        missing.starts_with("error") && missing.contains("did not answer"),
        "{missing}"
    );
    assert!(line(&out, "servo r_arm/8 r_gripper").starts_with("error"));
    assert!(out.contains("give it ID 8"), "the fix names the ID");
    assert!(line(&out, "bus cycle r_arm").contains("sync read of 6 servos"));
    let slow = line(&out, "latency timer ttyUSB0");
    assert!(
        slow.starts_with("warning") && slow.contains("16 ms"),
        "{slow}"
    );
    assert!(
        out.contains("latency_timer}=\"1\""),
        "the udev rule is given"
    );
    assert!(line(&out, "serial adapters").starts_with("warning"));
    assert!(out.contains("2 error(s)"));

    // --fix-latency writes 1 ms
    let mut fix = common_args.to_vec();
    fix.push("--fix-latency");
    let (_, out) = doctor(&fix);
    assert!(line(&out, "latency timer ttyUSB0").contains("was 16 ms, set to 1 ms"));
    assert_eq!(std::fs::read_to_string(&timer).unwrap().trim(), "1");
    let (_, out) = doctor(&common_args);
    assert!(line(&out, "latency timer ttyUSB0").starts_with("ok"));

    // a bus the servo map does not have
    let (ok, out) = doctor(&[
        "--bus",
        "r_leg=/dev/null",
        "--no-render",
        "--sysfs",
        "/nonexistent",
    ]);
    assert!(!ok);
    assert!(
        line(&out, "bus r_leg").contains("r_arm"),
        "names the known buses"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn doctor_finds_a_running_daemon() {
    let sd = common::sim_and_daemon("doctored");
    let (ok, out) = doctor(&[
        "--connect",
        &sd.endpoint,
        "--robot",
        "doctored",
        "--no-render",
        "--sysfs",
        "/nonexistent",
        "--zenoh-port",
        "0",
    ]);
    let d = line(&out, "daemon `doctored`");
    assert!(d.starts_with("ok") && d.contains("backend sim"), "{d}");
    assert!(
        ok || out.contains("serial adapters"),
        "only the missing adapter may fail"
    );
}

#[test]
fn completions_for_bash_name_the_subcommands() {
    let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for sub in ["doctor", "demo", "policy", "completions"] {
        assert!(s.contains(sub), "{sub}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// The direct-bus backend's wrong arguments: what it needs, and the port that failed.
#[test]
fn the_dynamixel_backend_names_what_is_wrong() {
    for (bus, says) in [
        ("r_arm", "needs --bus BUS=PORT"),
        ("r_arm=/nonexistent/ttyUSB0", "/nonexistent/ttyUSB0"),
        ("r_leg=/dev/null", "no servo bus `r_leg`"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(["daemon", "--backend", "dynamixel", "--bus", bus])
            .args(["--listen", common::ANY_PORT])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{bus}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{bus}: {err}");
    }
}

/// What the latency timer check exists for: behind an adapter holding each reply 16 ms (FTDI's
/// default), the measured bus cycle exceeds the 1 kHz loop's period and doctor says so.
#[test]
fn doctor_catches_a_slow_adapter_in_the_bus_cycle() {
    let dir = std::env::temp_dir().join(format!("reachy-doctor-slow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = dir.join("bus");
    let _servos = common::sim_servos_with(&bus, "1-8", &["--latency-ms", "16"]);
    let arg = format!("r_arm={}", bus.display());
    let (ok, out) = doctor(&[
        "--bus",
        &arg,
        "--no-render",
        "--sysfs",
        "/nonexistent",
        "--zenoh-port",
        "0",
    ]);
    let cycle = line(&out, "bus cycle r_arm");
    assert!(cycle.starts_with("warning"), "{cycle}");
    let ms: f64 = cycle
        .split("servos: ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{cycle}"));
    assert!(ms >= 16.0, "{cycle}");
    assert!(out.contains("latency timer to 1 ms"));
    // a warning, not an error: the robot works, slowly
    assert!(ok || out.contains("serial adapters"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
