//! The Python SDK (`host/python`, `reachy_rs`) against the simulated robot: every call with its
//! effect checked (`host/tests/python/sdk_check.py`), and the LeRobot plugin found by lerobot's
//! own discovery and driven by `lerobot-record` and `lerobot-replay`.

use crate::common::{self, run_python_json};

/// `reachy sim` with a small head camera and `reachy daemon` on it.
fn robot(name: &str) -> common::SimAndDaemon {
    common::sim_and_daemon_with(name, &["--cameras", "--camera-size", "64x48"])
}

#[test]
fn the_sdk_drives_the_simulated_robot() {
    let Some(py) = common::python_with("reachy_rs", "-e ./host/python") else {
        return;
    };
    let sd = robot("sdk");
    let ep = sd.endpoint.clone();
    let r = run_python_json(&py, "host/tests/python/sdk_check.py", &[&ep, "sdk"]);
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    assert_eq!(r["joints"], 21, "{r}");
    assert_eq!(r["goto_finished"], true, "{r}");
    assert_eq!(r["goto_status"], "ok", "{r}");
    assert!(f("goto_err") < 0.03, "{r}");
    assert!((f("elbow_pitch") + 0.8).abs() < 0.03, "{r}");
    assert!(
        (f("degrees_shoulder_pitch") - 0.3 - 10f64.to_radians()).abs() < 0.03,
        "{r}"
    );
    assert!(
        r["bad_mode"].as_str().unwrap().contains("minimum_jerk"),
        "{r}"
    );
    assert!(f("fk_agrees") < 1e-3, "{r}");
    assert_eq!(r["ik_joints"], 7, "{r}");
    assert!(f("ik_fk_err") < 2e-3, "{r}");
    assert!(f("pose_moved") > 0.03, "{r}");
    assert!(f("cartesian_err") < 0.01, "there within 1 cm: {r}");
    for k in ["ik_unreachable", "goto_unreachable"] {
        assert_eq!(r[k][0], "unreachable", "{k}: {r}");
        assert!(
            r[k][1].as_str().unwrap().contains("out of reach"),
            "{k}: {r}"
        );
    }
    assert!(f("unreachable_moved") < 0.01, "{r}");
    // percent; the sim's fingers close on nothing, so "closed" is the bottom of the range
    assert!(f("gripper_closed") < 10.0, "{r}");
    assert!((f("gripper_half") - 50.0).abs() < 10.0, "{r}");
    assert!(f("gripper_open") > 90.0, "{r}");
    // within the goto's 0.02 rad per neck joint
    assert!(
        f("look_at_angle") < 0.1,
        "the head camera looks at the point: {r}"
    );
    assert!(f("neck_yaw") > 0.1, "{r}");
    assert_eq!(r["frame_shape"], serde_json::json!([48, 64, 3]), "{r}");
    assert_eq!(r["camera_advertised"], serde_json::json!([48, 64]), "{r}");
    assert_eq!(r["frame_dtype"], "uint8");
    assert!(f("frame_std") > 5.0, "not blank: {r}");
    assert_eq!(r["finished_while_running"], false, "{r}");
    assert_eq!(r["cancelled"], "cancelled", "{r}");
    assert_eq!(r["other_refused"][0], "rejected", "{r}");
    assert!(
        r["other_refused"][1]
            .as_str()
            .unwrap()
            .contains("lease refused"),
        "{r}"
    );
    assert_eq!(r["callbacks"], true, "{r}");
    assert_eq!(r["callback_seq_increasing"], true, "{r}");
    assert_eq!(r["estop"], true, "{r}");
    assert_eq!(r["estop_cleared"], true, "{r}");
    assert_eq!(r["torque_off"], true, "{r}");
    assert!(
        r["missing_robot"].as_str().unwrap().contains("no state"),
        "{r}"
    );
}

/// `features` of a dataset's `meta/info.json`: each feature's names and shape (dtypes and
/// video details differ between encoders).
fn features(root: &std::path::Path) -> serde_json::Value {
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("meta/info.json")).unwrap())
            .unwrap();
    let mut out = serde_json::Map::new();
    for (k, v) in info["features"].as_object().unwrap() {
        if ["observation.state", "action"].contains(&k.as_str())
            || k.starts_with("observation.images.")
        {
            out.insert(
                k.clone(),
                serde_json::json!({"shape": v["shape"], "names": if k.starts_with("observation.images.") { serde_json::Value::Null } else { v["names"].clone() }}),
            );
        }
    }
    serde_json::Value::Object(out)
}

#[test]
fn lerobot_records_and_replays_through_the_plugin() {
    use std::process::Command;
    use std::time::Duration;
    let Some(py) =
        common::python_with("lerobot_robot_reachy_rs", "-e ./host/python/lerobot_plugin")
    else {
        return;
    };
    let bin = py.parent().unwrap();
    // lerobot's own discovery finds the plugin
    let found = Command::new(&py)
        .args([
            "-c",
            "from lerobot.utils.import_utils import register_third_party_plugins as r; r(); \
             from lerobot.robots import RobotConfig; \
             from lerobot.robots.utils import make_robot_from_config as m; \
             print(type(m(RobotConfig.get_choice_class('reachy_rs')())).__name__)",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        "ReachyRs",
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );

    let name = "lrec";
    let sd = robot(name);
    let ep = sd.endpoint.clone();
    let session = reachy_api::ZenohOptions {
        connect: vec![ep.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let c = reachy_api::RobotClient::connect(
        &session,
        name,
        "check",
        "script",
        Duration::from_secs(20),
    )
    .unwrap();
    let home = c.state().unwrap();
    let yaw = home.names.iter().position(|n| n == "neck_yaw").unwrap();
    c.release().unwrap();

    // a policy lerobot made: ACT with random weights, its actions centred on the home pose with
    // the head turned 0.4 rad
    let dir = std::env::temp_dir().join(format!("reachy-lerobot-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut pose = home.position.clone();
    pose[yaw] += 0.4;
    let mean: Vec<String> = pose.iter().map(|v| v.to_string()).collect();
    let out = Command::new(&py)
        .arg(common::repo_root().join("policies/tests/python/make_act_fixture.py"))
        .arg(&dir)
        .args(["--cameras", "1", "--height", "48", "--width", "64"])
        .args([
            "--state-dim",
            "21",
            "--action-dim",
            "21",
            "--dim-model",
            "32",
        ])
        .args([
            "--heads", "2", "--ff", "64", "--layers", "1", "--chunk", "10",
        ])
        .arg(format!("--mean={}", mean.join(",")))
        .args(["--std", "0.01"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let robot_args = [
        "--robot.type=reachy_rs".to_string(),
        format!("--robot.endpoint={ep}"),
        format!("--robot.robot={name}"),
        "--robot.camera_width=64".into(),
        "--robot.camera_height=48".into(),
    ];
    let ds = dir.join("recorded");
    let rec = Command::new(bin.join("lerobot-record"))
        .args(&robot_args)
        .arg("--robot.camera_names=[head]")
        .arg(format!(
            "--policy.path={}",
            dir.join("checkpoint").display()
        ))
        .arg("--dataset.repo_id=local/eval_reachy_rs")
        .arg(format!("--dataset.root={}", ds.display()))
        .args(["--dataset.num_episodes=1", "--dataset.episode_time_s=3"])
        .args(["--dataset.reset_time_s=0", "--dataset.fps=10"])
        .args([
            "--dataset.single_task=turn the head",
            "--dataset.push_to_hub=false",
        ])
        .args(["--display_data=false", "--play_sounds=false"])
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "lerobot-record: {}",
        String::from_utf8_lossy(&rec.stderr)
    );
    // the head is where the policy's actions (and so the episode's) are centred
    let head_on_pose = |after: &str| {
        let st = c.state().unwrap();
        assert!(
            (st.position[yaw] - pose[yaw]).abs() < 0.1,
            "yaw at {} after {after}, the policy's pose {}",
            st.position[yaw],
            pose[yaw]
        );
    };
    head_on_pose("lerobot-record");

    // the same features as `reachy record` gives
    let ours = dir.join("ours");
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["record", "--connect", &ep, "--robot", name, "--root"])
        .arg(&ours)
        .args(["--episodes", "1", "--episode-time", "1", "--fps", "10"])
        .args(["--cameras", "head_camera", "--camera-size", "64x48"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(features(&ds), features(&ours));

    // lerobot-replay through the plugin: back home first, then the episode's actions
    let c = reachy_api::RobotClient::connect(
        &session,
        name,
        "check",
        "script",
        Duration::from_secs(20),
    )
    .unwrap();
    let r = c.goto(&home.names, &home.position, 1.0).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    c.release().unwrap();
    let rep = Command::new(bin.join("lerobot-replay"))
        .args(&robot_args)
        .arg("--robot.camera_names=[]")
        .arg("--dataset.repo_id=local/eval_reachy_rs")
        .arg(format!("--dataset.root={}", ds.display()))
        .args([
            "--dataset.episode=0",
            "--dataset.fps=10",
            "--play_sounds=false",
        ])
        .output()
        .unwrap();
    assert!(
        rep.status.success(),
        "lerobot-replay: {}",
        String::from_utf8_lossy(&rep.stderr)
    );
    head_on_pose("lerobot-replay");
    std::fs::remove_dir_all(&dir).ok();
}
