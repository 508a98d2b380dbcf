//! `reachy sim` on zenoh, seen from outside: a stock Python zenoh + cbor2 client decodes the
//! state stream, steps the sim in lock-step, commands a joint; malformed commands are rejected,
//! counted, and leave the sim undisturbed.

use crate::common;

use std::process::Command;

use crate::common::{run_python_json, start_listening};

#[test]
fn python_zenoh_client_drives_the_lockstep_sim() {
    let Some(py) = common::python_with("zenoh", "eclipse-zenoh==1.10.2") else {
        return;
    };
    common::python_with("cbor2", "cbor2");
    let rrd = std::env::temp_dir().join(format!("reachy-sim-{}.rrd", std::process::id()));
    let (mut sim, endpoint) = start_listening(
        &[
            "sim",
            "--lockstep",
            "--robot",
            "testbot",
            "--cameras",
            "--camera-size",
            "32x24",
            "--camera-fps",
            "10",
            "--rerun",
            "save",
            rrd.to_str().unwrap(),
        ],
        "sim ready",
    );
    let r = run_python_json(
        &py,
        "host/tests/python/sim_client.py",
        &[&endpoint, "testbot"],
    );
    assert_eq!(r["joints"], 21);
    assert_eq!(r["state_names_match"], true);
    assert_eq!(
        r["fields"],
        serde_json::json!(["effort", "names", "position", "seq", "t", "v", "velocity"])
    );
    assert!(r["n_states"].as_u64().unwrap() >= 20, "{r}");
    assert_eq!(r["seqs_increasing"], true);
    // 20 control periods at 100 Hz
    let t20 = r["t_of_seq_20"].as_f64().unwrap();
    assert!((t20 - 0.2).abs() < 1e-6, "{t20}");
    assert_eq!(r["lockstep"], true);
    assert_eq!(r["rate_hz"], 100.0);
    assert_eq!(r["objects"].as_array().unwrap().len(), 3);
    let yaw = r["neck_yaw"].as_f64().unwrap();
    assert!(
        (yaw - 0.5).abs() < 0.02,
        "the commanded neck yaw tracks: {yaw}"
    );
    let after = r["neck_yaw_after_malformed"].as_f64().unwrap();
    assert!(
        (after - 0.5).abs() < 0.02,
        "malformed commands moved nothing: {after}"
    );
    assert_eq!(r["accepted"], 1);
    // 5 malformed commands + 1 malformed step request
    assert_eq!(r["rejected"], 6, "{r}");
    assert_eq!(r["bad_step_rejected"], true);
    // SIGTERM ends the sim as Ctrl-C does: its rerun recording is complete and holds the
    // robot's tree and the camera frames it published, with a view for each camera
    let st = Command::new("kill")
        .arg(sim.0.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(sim.0.wait().unwrap().success());
    let v = reachy_viz::inspect::summarize(&rrd).unwrap();
    std::fs::remove_file(&rrd).ok();
    for c in ["head_camera", "l_wrist_camera", "r_wrist_camera"] {
        let e = format!("cameras/{c}");
        assert!(
            v.temporal_rows.get(&e).copied().unwrap_or(0) >= 1,
            "{e}: {v:?}"
        );
        assert!(v.views.iter().any(|w| w.class == "2D" && w.origin == e));
    }
    assert!(v.temporal_rows.keys().any(|e| e.ends_with("/r_tcp")));
}

#[test]
fn refuses_to_listen_beyond_loopback_without_auth() {
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["sim", "--lockstep", "--listen", "tcp/0.0.0.0:7447"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen"), "{err}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    for args in [
        vec!["sim", "--rate", "5000"],
        vec!["sim", "--camera-size", "big", "--cameras"],
        vec!["sim", "--physics-hz", "10"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

/// `--connect` to where nothing listens: one line that says what was tried and what to start,
/// no zenoh warning with its source paths.
#[test]
fn a_dead_endpoint_is_one_clear_error() {
    // port 1 (tcpmux): nothing listens there
    let ep = "tcp/127.0.0.1:1".to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["teleop", "--connect", &ep])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("nothing answered at {ep}")), "{err}");
    assert!(err.contains("reachy daemon --listen"), "{err}");
    assert!(!err.contains(".cargo/registry"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Headless (no `XDG_RUNTIME_DIR`), the cameras start without the graphics stack's noise
/// (issue 18: `XDG_RUNTIME_DIR is invalid or not set`, twice, on every sim run).
#[test]
fn a_headless_sim_with_cameras_starts_quietly() {
    use std::io::{BufRead, Read};
    let mut sim = common::Kill(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(["sim", "--lockstep", "--cameras", "--camera-size", "32x24"])
            .args(["--listen", common::ANY_PORT])
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NODEVICE_SELECT")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(sim.0.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.starts_with("sim ready"), "{ready}");
    let st = Command::new("kill")
        .arg(sim.0.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let mut err = String::new();
    sim.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
    assert!(err.contains("cameras rendered on"), "{err}");
}
