//! The Python SDK (`host/python`, `reachy_rs`) against the simulated robot: every call with its
//! effect checked (`host/tests/python/sdk_check.py`), and the LeRobot plugin found by lerobot's
//! own discovery and driven by `lerobot-record` and `lerobot-replay`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{self, run_python_json, Kill};

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

/// A policy lerobot made, in `dir`: ACT with random weights on a 64x48 head camera and the 21
/// joints, its actions centred on `pose` (std 0.01), so where it drives the robot is known.
/// Returns its checkpoint directory.
fn act_fixture(py: &Path, dir: &Path, pose: &[f32]) -> PathBuf {
    let mean: Vec<String> = pose.iter().map(|v| v.to_string()).collect();
    let out = Command::new(py)
        .arg(common::repo_root().join("policies/tests/python/make_act_fixture.py"))
        .arg(dir)
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
    dir.join("checkpoint")
}

/// A LeRobot script started with its stdout and stderr in `log` (read back by [`log_of`] when
/// a check fails), killed when dropped.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Kill {
    let f = std::fs::File::create(log).unwrap();
    Kill(
        cmd.stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap(),
    )
}

/// The last 4 kB of a [`spawn_logged`] log.
fn log_of(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    s[s.len().saturating_sub(4000)..].to_string()
}

/// A zenoh session connected to `endpoints`.
fn session_to(endpoints: &[&str]) -> zenoh::Session {
    reachy_api::ZenohOptions {
        connect: endpoints.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    }
    .open()
    .unwrap()
}

/// A client of `robot` that only watches (its lease given back at once).
fn watcher(session: &zenoh::Session, robot: &str) -> reachy_api::RobotClient {
    let c = reachy_api::RobotClient::connect(session, robot, "check", "script", WAIT)
        .unwrap_or_else(|e| panic!("{robot}: {e}"));
    c.release().unwrap();
    c
}

/// Generous: the first wait includes loading torch and lerobot.
const WAIT: Duration = Duration::from_secs(20);
const LEROBOT_START: Duration = Duration::from_secs(120);

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
    let session = session_to(&[&ep]);
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

    // a policy lerobot made: its actions centred on the home pose with the head turned 0.4 rad
    let dir = std::env::temp_dir().join(format!("reachy-lerobot-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut pose = home.position.clone();
    pose[yaw] += 0.4;
    let checkpoint = act_fixture(&py, &dir, &pose);

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
        .arg(format!("--policy.path={}", checkpoint.display()))
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

/// `lerobot-teleoperate` with a Reachy as the leader (`--teleop.type=reachy_rs_leader`, the
/// teleoperator plugin, found by lerobot's discovery) and another as the follower
/// (`--robot.type=reachy_rs`): each of the leader's motions shows on the follower while it runs.
#[test]
fn lerobot_teleoperates_a_reachy_from_a_reachy_leader() {
    let Some(py) = common::python_with(
        "lerobot_teleoperator_reachy_rs",
        "-e ./host/python/lerobot_teleop_plugin",
    ) else {
        return;
    };
    let bin = py.parent().unwrap();
    let leader = common::sim_and_daemon("lead");
    let follower = common::sim_and_daemon("follow");
    // a session each: a zenoh client reaches one of the endpoints it is given
    let lead_session = session_to(&[&leader.endpoint]);
    let lead =
        reachy_api::RobotClient::connect(&lead_session, "lead", "driver", "script", WAIT).unwrap();
    let fol_session = session_to(&[&follower.endpoint]);
    let fol = watcher(&fol_session, "follow");
    let names = lead.state().unwrap().names;
    let at = |n: &str| names.iter().position(|m| m == n).unwrap();

    let dir = std::env::temp_dir().join(format!("reachy-lerobot-teleop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("teleoperate.log");
    let _teleop = spawn_logged(
        Command::new(bin.join("lerobot-teleoperate"))
            .args(["--robot.type=reachy_rs", "--robot.robot=follow"])
            .arg(format!("--robot.endpoint={}", follower.endpoint))
            .args(["--robot.camera_names=[]", "--robot.priority=teleop"])
            .args(["--teleop.type=reachy_rs_leader", "--teleop.robot=lead"])
            .arg(format!("--teleop.endpoint={}", leader.endpoint))
            .args(["--fps=30", "--teleop_time_s=600", "--display_data=false"]),
        &log,
    );
    // two motions of the leader, one after the other: the follower takes each
    let arm: Vec<String> = names[at("r_shoulder_pitch")..=at("r_wrist_yaw")].to_vec();
    for (step, (joints, target)) in [
        (arm.clone(), vec![0.3, -1.2, 0.0, -0.8, 0.0, 0.2, 0.0]),
        (
            vec!["neck_yaw".to_string(), "r_elbow_pitch".to_string()],
            vec![0.3, -0.5],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let r = lead.goto(&joints, &target, 1.0).unwrap();
        assert_eq!(r.status, "ok", "leader goto {step}: {r:?}");
        let idx: Vec<usize> = joints.iter().map(|j| at(j)).collect();
        let wait = if step == 0 { LEROBOT_START } else { WAIT };
        if let Err(e) = fol.wait_for_state(wait, |s| {
            idx.iter()
                .zip(&target)
                .all(|(&i, t)| (s.position[i] - t).abs() < 0.03)
        }) {
            panic!(
                "the follower did not take the leader's motion {step} ({joints:?} -> {target:?}): {e}\n\
                 lerobot-teleoperate: {}",
                log_of(&log)
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// LeRobot's async inference: its policy server (`lerobot.async_inference.policy_server`, an ACT
/// lerobot made) and its robot client (`lerobot.async_inference.robot_client`) with
/// `--robot.type=reachy_rs` drive the simulated robot to where the policy's actions point.
#[test]
fn lerobot_async_inference_drives_the_robot_through_the_plugin() {
    use std::io::BufRead;
    let Some(py) =
        common::python_with("lerobot_robot_reachy_rs", "-e ./host/python/lerobot_plugin")
    else {
        return;
    };
    common::python_with("grpc", "'lerobot[async]'");
    let name = "async";
    let sd = robot(name);
    let session = session_to(&[&sd.endpoint]);
    let c = watcher(&session, name);
    let home = c.state().unwrap();
    let yaw = home.names.iter().position(|n| n == "neck_yaw").unwrap();
    let dir = std::env::temp_dir().join(format!("reachy-lerobot-async-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut pose = home.position.clone();
    pose[yaw] += 0.4;
    let checkpoint = act_fixture(&py, &dir, &pose);

    let mut server = Kill(
        Command::new(&py)
            .arg(common::repo_root().join("host/tests/python/async_policy_server.py"))
            // lerobot writes its logs/ into the working directory
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the policy server said {line:?}"))
        .to_string();

    let log = dir.join("robot_client.log");
    let _client = spawn_logged(
        Command::new(&py)
            .args(["-m", "lerobot.async_inference.robot_client"])
            .current_dir(&dir)
            .args(["--robot.type=reachy_rs", &format!("--robot.robot={name}")])
            .arg(format!("--robot.endpoint={}", sd.endpoint))
            .args(["--robot.camera_names=[head]", "--robot.camera_width=64"])
            .arg("--robot.camera_height=48")
            .arg(format!("--server_address={address}"))
            .args(["--policy_type=act", "--policy_device=cpu"])
            .arg(format!(
                "--pretrained_name_or_path={}",
                checkpoint.display()
            ))
            .args(["--actions_per_chunk=10", "--fps=10", "--task=turn the head"]),
        &log,
    );
    if let Err(e) = c.wait_for_state(LEROBOT_START, |s| (s.position[yaw] - pose[yaw]).abs() < 0.1) {
        panic!(
            "the robot did not reach the policy's pose (neck_yaw {}): {e}\nrobot_client: {}",
            pose[yaw],
            log_of(&log)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
