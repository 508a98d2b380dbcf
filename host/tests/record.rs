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

/// `reachy <args>`, its output; panics with stderr unless it succeeds.
fn reachy_ok(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(args)
        .env("LP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reachy {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("reachy-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Frames rendered by the sim's camera while the arm moves, encoded by the recorder's encoder,
/// decoded by PyAV's FFmpeg: every frame there, at exactly i/fps, close to the render.
#[test]
fn rendered_frames_survive_the_encoder_within_35_db() {
    let Some(py) = common::python_with("av", "av") else {
        return;
    };
    let (urdf, _) = reachy_kinematics::model::RobotModel::load(None).unwrap();
    let (w, h) = (320u32, 240u32);
    let mut world = reachy_apps::inprocess::SimRobot::world(
        &urdf,
        3,
        reachy_sim::camera::CameraSpec::reachy(w, h)
            .into_iter()
            .filter(|c| c.name == "head_camera")
            .collect(),
    )
    .unwrap();
    let dir = temp("psnr");
    std::fs::create_dir_all(&dir).unwrap();
    let video = dir.join("v.mp4");
    let mut enc = reachy_dataset::video::VideoWriter::create(
        &video,
        w,
        h,
        30,
        reachy_dataset::VideoOptions::default(),
    )
    .unwrap();
    let names = world.joint_names().to_vec();
    let arm: Vec<usize> = ["r_shoulder_pitch", "r_elbow_pitch"]
        .iter()
        .map(|n| names.iter().position(|m| m == n).unwrap())
        .collect();
    let mut raw = Vec::new();
    for i in 0..45 {
        let a = i as f32 / 45.0;
        world.set_targets_at(&arm, &[-0.8 * a, -1.2 * a]).unwrap();
        world.advance(1.0 / 30.0);
        let img = world.render().unwrap().remove(0);
        enc.push(&img.rgb).unwrap();
        raw.extend_from_slice(&img.rgb);
    }
    enc.finish().unwrap();
    let rawp = dir.join("frames.rgb");
    std::fs::write(&rawp, &raw).unwrap();
    let d = common::run_python_json(
        &py,
        "host/tests/python/video_psnr.py",
        &[s(&video), s(&rawp), &w.to_string(), &h.to_string()],
    );
    assert_eq!(d["frames"], 45, "{d}");
    assert_eq!(d["codec"], "h264");
    for (i, p) in d["pts"].as_array().unwrap().iter().enumerate() {
        assert!((p.as_f64().unwrap() - i as f64 / 30.0).abs() < 1e-6, "{d}");
    }
    let mean = d["mean_psnr"].as_f64().unwrap();
    eprintln!("PSNR mean {mean:.1} dB, min {}", d["min_psnr"]);
    assert!(mean >= 35.0, "{d}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The loop a user runs: scripted demonstrations with a camera recorded in the sim, validated,
/// loaded by lerobot with its default decoder (every frame), trained on by `lerobot-train`, the
/// checkpoint lerobot wrote run on the simulated robot by `reachy policy run`.
#[test]
fn recorded_demonstrations_train_in_lerobot_and_the_policy_runs() {
    let Some(py) = common::python_with("lerobot", "lerobot") else {
        return;
    };
    let train = py.with_file_name("lerobot-train");
    let dir = temp("rec-loop");
    let report = dir.with_extension("json");
    let out = reachy_ok(&[
        "record",
        "--backend",
        "sim",
        "--teleop",
        "scripted",
        "--cameras",
        "all",
        "--camera-size",
        "64x48",
        "--episodes",
        "2",
        "--episode-time",
        "4",
        "--fps",
        "10",
        "--task",
        "put the red cube down",
        "--root",
        s(&dir),
        "--report",
        s(&report),
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let eps = r["episodes"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{r}");
    for e in eps {
        assert_eq!(e["frames"], 40, "{r}");
        assert_eq!(e["queue_full"], 0, "{r}");
        assert!(e["commit_s"].as_f64().unwrap() < 1.0, "{r}");
        assert!(e["script"].as_str().is_some(), "{r}");
    }
    let keys: Vec<&str> = r["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "observation.images.head",
            "observation.images.right_wrist",
            "observation.images.left_wrist"
        ]
    );

    let v = reachy_ok(&["dataset", "validate", s(&dir)]);
    assert!(String::from_utf8_lossy(&v.stdout).contains(": ok"));
    let i = reachy_ok(&["dataset", "info", s(&dir), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(info["episodes"], 2);
    assert_eq!(info["frames"], 80);
    assert_eq!(info["cameras"][0]["codec"], "avc1");

    let d = common::run_python_json(
        &py,
        "host/tests/python/check_lerobot_dataset.py",
        &[s(&dir)],
    );
    assert_eq!(d["len"], 80, "{d}");
    assert_eq!(d["task"], "put the red cube down");
    for k in &keys {
        assert_eq!(
            d["images"][k]["shape"],
            serde_json::json!([80, 3, 48, 64]),
            "{d}"
        );
    }
    let img = &d["images"]["observation.images.head"];
    // the arm moves in the head camera's view
    assert!(img["change"].as_f64().unwrap() > 0.005, "{d}");
    for c in 0..3 {
        let (a, b) = (
            img["stats_mean"][c].as_f64().unwrap(),
            img["pixel_mean"][c].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 0.03,
            "stats.json mean {a} vs decoded {b}: {d}"
        );
    }
    for (k, t) in d["timestamps"].as_array().unwrap().iter().enumerate() {
        assert!((t.as_f64().unwrap() - (k % 40) as f64 / 10.0).abs() < 1e-4);
    }
    // the scripted arm moved
    let moved = d["action_span"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(moved > 0.1, "{d}");

    // lerobot trains a tiny ACT on it
    let outdir = dir.with_extension("train");
    std::fs::remove_dir_all(&outdir).ok();
    let t = Command::new(&train)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .args([
            "--dataset.repo_id=local/rec-loop",
            &format!("--dataset.root={}", dir.display()),
            "--policy.type=act",
            "--policy.device=cpu",
            "--policy.push_to_hub=false",
            "--policy.pretrained_backbone_weights=null",
            "--policy.dim_model=32",
            "--policy.n_heads=2",
            "--policy.dim_feedforward=64",
            "--policy.n_encoder_layers=1",
            "--policy.n_decoder_layers=1",
            "--policy.chunk_size=10",
            "--policy.n_action_steps=10",
            "--policy.latent_dim=8",
            "--steps=4",
            "--batch_size=4",
            "--num_workers=0",
            "--save_freq=4",
            "--log_freq=1",
            "--wandb.enable=false",
            &format!("--output_dir={}", outdir.display()),
        ])
        .output()
        .unwrap();
    assert!(
        t.status.success(),
        "lerobot-train: {}\n{}",
        String::from_utf8_lossy(&t.stdout),
        String::from_utf8_lossy(&t.stderr)
    );
    let ckpt = outdir.join("checkpoints/last/pretrained_model");
    assert!(ckpt.join("model.safetensors").exists());

    // the checkpoint lerobot wrote drives the simulated robot
    let run_report = dir.with_extension("run.json");
    let out = reachy_ok(&[
        "policy",
        "run",
        "--checkpoint",
        s(&ckpt),
        "--dataset",
        s(&dir),
        "--backend",
        "sim",
        "--episode-time",
        "1",
        "--report",
        s(&run_report),
    ]);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let rr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run_report).unwrap()).unwrap();
    assert!(rr.to_string().contains("steps"), "{rr}");

    // (`reachy replay` of a recorded episode: records_a_teleoperated_robot_that_lerobot_loads)
    for p in [&dir, &outdir] {
        std::fs::remove_dir_all(p).ok();
    }
}

/// `reachy record` on the in-process sim, its head camera at 64x48.
const RECORD_SIM_HEAD: [&str; 7] = [
    "record",
    "--backend",
    "sim",
    "--cameras",
    "head_camera",
    "--camera-size",
    "64x48",
];

fn total_episodes(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(dir.join("meta/info.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["total_episodes"].as_u64())
        .unwrap_or(0)
}

/// `kill -9` in the middle of an episode: every finished episode still loads in lerobot, and
/// `--resume` removes the remains and records after them.
#[test]
fn kill_9_loses_only_the_running_episode_and_resume_continues() {
    let Some(py) = common::python_with("lerobot", "lerobot") else {
        return;
    };
    let dir = temp("rec-kill");
    let args = [
        &RECORD_SIM_HEAD[..],
        &[
            "--episode-time",
            "1.5",
            "--fps",
            "10",
            "--task",
            "still",
            "--root",
        ],
    ]
    .concat();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(&args)
        .arg(&dir)
        .args(["--episodes", "50"])
        .env("LP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // two episodes committed, the third under way (its video being written)
    let third = dir.join("videos/observation.images.head/chunk-000/file-002.mp4.partial");
    let ok = reachy_api::net::wait_until(
        std::time::Duration::from_secs(120),
        std::time::Duration::from_millis(5),
        || total_episodes(&dir) >= 2 && third.exists(),
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(ok, "the recorder never reached its third episode");
    let n = total_episodes(&dir);
    let d = common::run_python_json(
        &py,
        "host/tests/python/check_lerobot_dataset.py",
        &[s(&dir)],
    );
    assert_eq!(d["episodes"].as_u64(), Some(n), "{d}");
    assert_eq!(d["len"].as_u64(), Some(15 * n), "{d}");
    // validate names what the interrupted episode left, and nothing else
    let v = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["dataset", "validate", s(&dir)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(!v.status.success(), "{text}");
    for line in text
        .lines()
        .filter(|l| l.contains(": ") && !l.contains("problem(s)"))
    {
        assert!(line.contains("interrupted write"), "{text}");
    }

    let out = reachy_ok(&[&args[..], &[s(&dir), "--episodes", "1", "--resume"]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("removed"), "{text}");
    assert_eq!(total_episodes(&dir), n + 1);
    reachy_ok(&["dataset", "validate", s(&dir)]);
    let d = common::run_python_json(
        &py,
        "host/tests/python/check_lerobot_dataset.py",
        &[s(&dir)],
    );
    assert_eq!(d["len"].as_u64(), Some(15 * (n + 1)), "{d}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Ctrl-C (SIGINT) in the middle of an episode keeps what was recorded of it.
#[test]
fn ctrl_c_keeps_the_running_episode() {
    let dir = temp("rec-int");
    let mut child = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(RECORD_SIM_HEAD)
        .args(["--episode-time", "600", "--fps", "10", "--root"])
        .arg(&dir)
        .env("LP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // the episode has started: its first frame is taken before any stop is looked at
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("episode 1/1: recording") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the recorder ended");
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?} {rest}");
    assert!(rest.contains("episode 0: "), "{rest}");
    assert_eq!(total_episodes(&dir), 1);
    reachy_ok(&["dataset", "validate", s(&dir)]);
    std::fs::remove_dir_all(&dir).ok();
}

/// The operator's keys in a real terminal (tmux): → ends an episode early, ← records it again,
/// Esc stops keeping the running one.
#[test]
fn terminal_keys_end_rerecord_and_stop_episodes() {
    let dir = temp("rec-keys");
    let cmd = format!(
        "LP_NUM_THREADS=1 {} {} --episode-time 600 --fps 10 --episodes 3 --root {}; sleep 600",
        env!("CARGO_BIN_EXE_reachy"),
        RECORD_SIM_HEAD.join(" "),
        dir.display()
    );
    let Some(term) = common::Tmux::start("keys", 200, &cmd) else {
        return;
    };
    term.wait_for("episode 1/3: recording", 1, 120);
    term.send("Right");
    term.wait_for("episode 2/3: recording", 1, 120);
    term.send("Left");
    term.wait_for("episode 2/3: recording", 2, 120);
    term.send("Escape");
    term.wait_for("dataset `", 1, 120);
    let text = term.screen();
    drop(term);
    assert_eq!(total_episodes(&dir), 2, "{text}");
    assert!(text.contains("episode 0: "), "{text}");
    assert!(text.contains("episode 1: "), "{text}");
    reachy_ok(&["dataset", "validate", s(&dir)]);
    std::fs::remove_dir_all(&dir).ok();
}

/// `reachy dataset validate` on what lerobot wrote (two episodes in one data file and one AV1
/// video): sound; then with a truncated video and a missing data file: each named, exit 1.
#[test]
fn validates_what_lerobot_wrote_and_names_broken_files() {
    let Some(py) = common::python_with("lerobot", "lerobot") else {
        return;
    };
    let dir = temp("validate-lerobot");
    common::run_python_json(
        &py,
        "host/tests/python/make_lerobot_dataset.py",
        &[s(&dir), "--video"],
    );
    let v = reachy_ok(&["dataset", "validate", s(&dir)]);
    assert!(String::from_utf8_lossy(&v.stdout).contains(": ok"));
    let i = reachy_ok(&["dataset", "info", s(&dir), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(info["episodes"], 2);
    assert_eq!(info["frames"], 105);
    assert_eq!(info["cameras"][0]["codec"], "av01", "{info}");

    let video = dir.join("videos/observation.images.head/chunk-000/file-000.mp4");
    let bytes = std::fs::read(&video).unwrap();
    std::fs::write(&video, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(dir.join("data/chunk-000/file-000.parquet")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["dataset", "validate", s(&dir)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("videos/observation.images.head/chunk-000/file-000.mp4")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("data/chunk-000/file-000.parquet") && l.contains("missing")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Recording while teleoperating, in one process: `--teleop pose-stream` reads the operator's
/// JSON lines on stdin and the recorded actions follow them.
#[test]
fn records_while_teleoperating_from_a_pose_stream() {
    let dir = temp("rec-pose");
    let out = common::run_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_reachy")).args([
            "record",
            "--backend",
            "sim",
            "--cameras",
            "none",
            "--teleop",
            "pose-stream",
            "--episodes",
            "1",
            "--episode-time",
            "3",
            "--fps",
            "10",
            "--root",
            s(&dir),
        ]),
        concat!(
            r#"{"arm": "r_arm", "position": [0.15, -0.4, 0.5]}"#,
            "\n",
            r#"{"hold": 1.5}"#,
            "\n",
        )
        .as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the verdicts went to stderr, the recorder's lines to stdout
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#""status":"ok""#));
    let ep = reachy_dataset::load_episode(&dir, 0).unwrap();
    assert_eq!(ep.actions.len(), 30);
    // the right arm's commanded joints moved with the stream
    let span = (0..ep.names.len())
        .filter(|&i| ep.names[i].starts_with("r_") && !ep.names[i].contains("gripper"))
        .map(|i| {
            let v = ep.actions.iter().map(|a| a[i]);
            v.clone().fold(f32::MIN, f32::max) - v.fold(f32::MAX, f32::min)
        })
        .fold(0.0, f32::max);
    assert!(span > 0.1, "the right arm moved {span} rad");
    std::fs::remove_dir_all(&dir).ok();
}

/// Recording while teleoperating from the keyboard, in one process and one terminal (tmux): the
/// held key moves the arm into the recording, `q` ends teleop and the recording with it, keeping
/// the episode.
#[test]
fn records_while_teleoperating_from_the_keyboard() {
    let dir = temp("rec-kb");
    let cmd = format!(
        "LP_NUM_THREADS=1 {} record --backend sim --cameras none --teleop keyboard --speed 0.08 0.5 \
         --episodes 1 --episode-time 600 --fps 10 --root {}; sleep 600",
        env!("CARGO_BIN_EXE_reachy"),
        dir.display()
    );
    let Some(term) = common::Tmux::start("rec-kb", 200, &cmd) else {
        return;
    };
    term.wait_for("episode 1/1: recording", 1, 120);
    // a held `d`, as the terminal repeats it: the right hand out to its side
    for _ in 0..40 {
        term.send("d");
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    // until the move is in the recording (a second of frames after it), then `q`
    std::thread::sleep(std::time::Duration::from_secs(1));
    term.send("q");
    term.wait_for("dataset `", 1, 120);
    let text = term.screen();
    drop(term);
    let ep = reachy_dataset::load_episode(&dir, 0).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let span = (0..ep.names.len())
        .filter(|&i| ep.names[i].starts_with("r_") && !ep.names[i].contains("gripper"))
        .map(|i| {
            let v = ep.actions.iter().map(|a| a[i]);
            v.clone().fold(f32::MIN, f32::max) - v.fold(f32::MAX, f32::min)
        })
        .fold(0.0, f32::max);
    assert!(
        span > 0.05,
        "the right arm moved {span} rad in the recording\n{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
