//! `reachy record` beside a driver: the sim and the daemon run as processes, `reachy teleop` moves
//! the right arm, `reachy record` samples the daemon's state into a LeRobot v3 dataset; lerobot
//! itself loads every frame of it, and `reachy replay` plays an episode back.

use crate::common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

#[test]
fn records_a_teleoperated_robot_that_lerobot_loads() {
    let Some(py) = common::python_with("lerobot", "lerobot") else {
        return;
    };
    let _robot = crate::common::sim_and_daemon("rec");
    let b = _robot.endpoint.clone();
    let dir = std::env::temp_dir().join(format!("reachy-record-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let mut rec = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["record", "--robot", "rec", "--connect", &b, "--out"])
        .arg(&dir)
        .args([
            "--episodes",
            "2",
            "--episode-time",
            "1.5",
            "--fps",
            "20",
            "--task",
            "wave",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(rec.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("recording"), "{line}");
    // the driver: the right arm out and back, beside the table
    let mut tele = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["teleop", "--robot", "rec", "--connect", &b])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = tele.stdin.take().unwrap();
        for l in [
            r#"{"arm": "r_arm", "position": [0.15, -0.35, 0.45]}"#,
            r#"{"hold": 0.8}"#,
            r#"{"arm": "r_arm", "position": [0.15, -0.42, 0.55]}"#,
            r#"{"hold": 0.8}"#,
            r#"{"arm": "r_arm", "position": [0.18, -0.17, 0.39]}"#,
            r#"{"hold": 0.8}"#,
        ] {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    tele.wait().unwrap();
    assert!(rec.wait().unwrap().success());

    let d = common::run_python_json(
        &py,
        "host/tests/python/check_lerobot_dataset.py",
        &[dir.to_str().unwrap()],
    );
    assert_eq!(d["len"], 60);
    assert_eq!(d["episodes"], 2);
    assert_eq!(d["fps"], 20);
    assert_eq!(d["task"], "wave");
    let names: Vec<&str> = d["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let i = names
        .iter()
        .position(|n| *n == "r_shoulder_pitch.pos")
        .unwrap();
    assert!(names.contains(&"neck_yaw.pos"));
    // the teleoperated arm moved, in the commands and in the measured joints
    let span = |k: &str| d[k].as_array().unwrap()[..].to_vec();
    let moved = |k: &str| {
        span(k)
            .iter()
            .map(|v| v.as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    assert!(moved("action_span") > 0.1, "{d}");
    assert!(moved("state_span") > 0.1, "{d}");
    assert!(span("action_span")[i].as_f64().is_some());
    let eps = d["episode_index"].as_array().unwrap();
    assert_eq!(eps.iter().filter(|e| **e == 1).count(), 30);

    // and it replays
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["replay", "--robot", "rec", "--connect", &b, "--dataset"])
        .arg(&dir)
        .args(["--episode", "1", "--approach", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
