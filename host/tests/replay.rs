//! `reachy replay` on a LeRobot v3 dataset that lerobot itself writes (two episodes in one
//! parquet file): the episode's actions reach the simulated robot, which ends on the last frame;
//! a missing episode and a corrupt data file are clear errors.

use crate::common;

use std::process::Command;

fn reachy(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn replays_a_lerobot_episode_on_the_simulated_robot() {
    let Some(py) = common::python_with("lerobot", "lerobot") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("reachy-replay-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let made = common::run_python_json(
        &py,
        "host/tests/python/make_lerobot_dataset.py",
        &[dir.to_str().unwrap()],
    );
    let report = dir.join("report.json");
    let out = reachy(&[
        "replay",
        "--dataset",
        dir.to_str().unwrap(),
        "--episode",
        "1",
        "--approach",
        "1",
        "--report",
        report.to_str().unwrap(),
    ]);
    let r = common::report_of(&out, &report, "replay");
    assert_eq!(r["episode"], 1);
    assert_eq!(r["frames"], made["lengths"][1]);
    assert_eq!(r["fps"], 30.0);
    // the last action read from the parquet file is the one lerobot wrote
    let last = r["last_action"].as_array().unwrap();
    assert_eq!(last[0][0], "r_shoulder_pitch.pos");
    for (k, a) in last.iter().enumerate() {
        let want = made["last"][1][k].as_f64().unwrap();
        assert!(
            (a[1].as_f64().unwrap() - want).abs() < 1e-6,
            "{a} vs {want}"
        );
    }
    let err = r["final_error"].as_f64().unwrap();
    assert!(err < 0.05, "the robot ended {err} rad from the last frame");

    // bad input: clear errors, nothing moves
    let out = reachy(&[
        "replay",
        "--dataset",
        dir.to_str().unwrap(),
        "--episode",
        "7",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("episode 7 is not in") && e.contains("{0, 1}"),
        "{e}"
    );
    let file = std::fs::read_dir(dir.join("data/chunk-000"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, b"PAR1 not really parquet").unwrap();
    let out = reachy(&["replay", "--dataset", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("not a parquet file"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
