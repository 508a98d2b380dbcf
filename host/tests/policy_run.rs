//! `reachy policy run` and `reachy policy serve` with a LeRobot ACT checkpoint that lerobot itself
//! builds (random weights; MEAN_STD statistics centred on a pose of the right arm, so its actions
//! sit near that pose), a LeRobot `meta/info.json` naming the features (`r_shoulder_pitch.pos`…),
//! and the simulated robot started in the runner's process with its head camera rendered.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::start_listening;

pub(crate) const NAMES: [&str; 8] = [
    "r_shoulder_pitch",
    "r_shoulder_roll",
    "r_elbow_yaw",
    "r_elbow_pitch",
    "r_wrist_roll",
    "r_wrist_pitch",
    "r_wrist_yaw",
    "r_gripper",
];
/// Where the policy's actions are centred (the hand stays in front of the table's edge); home is
/// [0, -1.309, 0, -0.5, 0, 0, 0, ~0].
pub(crate) const POSE: [f32; 8] = [0.3, -1.2, 0.0, -0.8, 0.0, 0.2, 0.0, 0.0];

/// The checkpoint and the dataset metadata, built once per test binary; `None` without Python.
pub(crate) fn fixture() -> Option<&'static (PathBuf, PathBuf)> {
    static F: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    F.get_or_init(|| {
        let py = common::python_with("lerobot", "lerobot")?;
        let dir = std::env::temp_dir().join(format!("reachy-policy-run-{}", std::process::id()));
        let mean: Vec<String> = POSE.iter().map(|v| v.to_string()).collect();
        let out = Command::new(&py)
            .arg(common::repo_root().join("policies/tests/python/make_act_fixture.py"))
            .arg(&dir)
            .args(["--cameras", "1", "--height", "48", "--width", "64"])
            .args(["--state-dim", "8", "--action-dim", "8", "--dim-model", "32"])
            .args([
                "--heads", "2", "--ff", "64", "--layers", "1", "--chunk", "20",
            ])
            .arg(format!("--mean={}", mean.join(",")))
            .args(["--std", "0.02"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fixture: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ds = dir.join("dataset");
        std::fs::create_dir_all(ds.join("meta")).unwrap();
        let names: Vec<String> = NAMES.iter().map(|n| format!("{n}.pos")).collect();
        let info = serde_json::json!({
            "codebase_version": "v3.0",
            "robot_type": "reachy2",
            "fps": 20,
            "features": {
                "observation.state": {"dtype": "float32", "shape": [8], "names": names},
                "action": {"dtype": "float32", "shape": [8], "names": names},
                "observation.images.head": {"dtype": "video", "shape": [48, 64, 3],
                    "names": ["height", "width", "channels"]},
            }
        });
        std::fs::write(ds.join("meta/info.json"), info.to_string()).unwrap();
        Some((dir.join("checkpoint"), ds))
    })
    .as_ref()
}

fn run_policy(args: &[&str], report: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["policy", "run"])
        .args(args)
        .arg("--report")
        .arg(report)
        .output()
        .unwrap();
    common::report_of(&out, report, &format!("policy run {args:?}"))
}

/// The episode reached the pose the actions are centred on, and every control step after the
/// first chunk sent an action.
fn check_episode(e: &serde_json::Value, expect_stalls: bool) {
    let steps = e["steps"].as_u64().unwrap();
    let sent = e["actions_sent"].as_u64().unwrap();
    let stalls = e["stalls"].as_u64().unwrap();
    assert!(e["chunks"].as_u64().unwrap() >= 2, "{e}");
    assert_eq!(e["errors"], 0, "{e}");
    if expect_stalls {
        assert!(stalls > 0, "sync mode waits at every chunk boundary: {e}");
    } else {
        assert_eq!(stalls, 0, "async mode never stalls: {e}");
        // the first action comes with the first chunk; from then on, one per step
        let first = (e["first_action_s"].as_f64().unwrap() * 20.0).round() as u64;
        assert!(sent + first >= steps - 1, "{e}");
    }
    // actions near the pose the statistics are centred on, measured joints on them
    let last = e["last_action"].as_array().unwrap();
    assert_eq!(last.len(), 8);
    for (i, a) in last.iter().enumerate() {
        assert_eq!(a[0], format!("{}.pos", NAMES[i]));
        let v = a[1].as_f64().unwrap() as f32;
        assert!((v - POSE[i]).abs() < 0.15, "{} = {v}: {e}", NAMES[i]);
    }
    let err = e["tracking_error"].as_f64().unwrap();
    assert!(
        err < 0.1,
        "measured joints {err} rad from the last action: {e}"
    );
    assert!(e["max_step_change"].as_f64().unwrap() < 0.6, "{e}");
}

/// `policy predict` equals lerobot's chunk on every CPU kernel of this machine: its own
/// (AVX-512 where the CPU has it), restricted to AVX2 + FMA, and candle's (`off`) — every
/// product, convolution, attention, softmax and GELU of ACT on each path.
#[test]
fn act_predicts_like_lerobot_on_every_cpu_kernel() {
    let Some((ckpt, _)) = fixture() else { return };
    let dir = ckpt.parent().unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &candle_core::Device::Cpu)
            .unwrap()["action"]
            .clone();
    for kernel in ["", "avx2", "off"] {
        let out = dir.join(format!("chunk-{kernel}.safetensors"));
        let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
            .env("REACHY_CPU_KERNEL", kernel)
            .args(["policy", "predict", "--checkpoint"])
            .arg(ckpt)
            .arg("--observation")
            .arg(dir.join("obs.safetensors"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap()
            ["action"]
            .clone();
        let d = common::max_abs_diff(&got, &expected);
        assert!(d <= 1e-4, "REACHY_CPU_KERNEL={kernel:?}: {d}");
    }
}

#[test]
fn policy_runs_the_simulated_robot_async_and_sync() {
    let Some((ckpt, ds)) = fixture() else {
        return;
    };
    let dir = ckpt.parent().unwrap();
    let ckpt = ckpt.to_str().unwrap();
    let ds = ds.to_str().unwrap();
    let rrd = dir.join("policy.rrd");
    let r = run_policy(
        &[
            "--checkpoint",
            ckpt,
            "--dataset",
            ds,
            "--episodes",
            "2",
            "--episode-time",
            "3",
            "--margin-steps",
            "6",
            "--seed",
            "1",
            "--rerun",
            "save",
            rrd.to_str().unwrap(),
        ],
        &dir.join("async.json"),
    );
    // the rerun view of the run: the chunks as the TCPs' future paths, the latency, the
    // episode boundaries, the camera beside the 3D view (issue 20)
    let v = reachy_viz::inspect::summarize(&rrd).unwrap();
    let rows = |e: &str| v.temporal_rows.get(e).copied().unwrap_or(0);
    let chunks = rows("policy/chunk/r_arm").max(rows("policy/chunk/l_arm"));
    assert!(chunks >= 2, "{:?}", v.temporal_rows);
    assert!(rows("policy/latency_ms") >= 2);
    assert_eq!(rows("events"), 2, "one event per episode");
    assert!(rows("cameras/head_camera") > 0);
    for (class, origin) in [
        ("2D", "cameras/head_camera"),
        ("TimeSeries", "policy/latency_ms"),
        ("TextLog", "events"),
    ] {
        assert!(
            v.views
                .iter()
                .any(|w| w.class == class && w.origin == origin),
            "{:?}",
            v.views
        );
    }
    assert_eq!(r["fps"], 20.0);
    assert_eq!(r["mode"], "async");
    assert_eq!(r["features"]["images"][0][1], "head_camera");
    let eps = r["episodes"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    for e in eps {
        check_episode(e, false);
    }
    // synchronous (LeRobot's default): the robot waits for each chunk
    let r = run_policy(
        &[
            "--checkpoint",
            ckpt,
            "--dataset",
            ds,
            "--episode-time",
            "3",
            "--sync",
            "--n-action-steps",
            "10",
        ],
        &dir.join("sync.json"),
    );
    check_episode(&r["episodes"][0], true);
    // ACT's temporal ensembling: a chunk at every step, averaged
    let r = run_policy(
        &[
            "--checkpoint",
            ckpt,
            "--dataset",
            ds,
            "--episode-time",
            "3",
            "--temporal-ensemble",
            "0.01",
        ],
        &dir.join("ensemble.json"),
    );
    assert_eq!(r["mode"], "temporal-ensembling");
    let e = &r["episodes"][0];
    assert_eq!(e["chunks"], e["actions_sent"], "{e}");
    check_episode(e, false);
}

#[test]
fn policy_server_serves_two_robots() {
    let Some((ckpt, ds)) = fixture() else {
        return;
    };
    let dir = ckpt.parent().unwrap();
    let (_server, endpoint) = start_listening(
        &[
            "policy",
            "serve",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--name",
            "shared",
            "--stats-every",
            "0",
        ],
        "policy server ready",
    );
    // two robots, each with its own in-process sim, on the one server
    let runners: Vec<_> = ["a", "b"]
        .iter()
        .map(|robot| {
            let report = dir.join(format!("served-{robot}.json"));
            let child = Command::new(env!("CARGO_BIN_EXE_reachy"))
                .args([
                    "policy",
                    "run",
                    "--server",
                    &endpoint,
                    "--server-name",
                    "shared",
                ])
                .args(["--robot", robot, "--dataset", ds.to_str().unwrap()])
                .args(["--episode-time", "3", "--margin-steps", "6", "--report"])
                .arg(&report)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, report)
        })
        .collect();
    for (child, report) in runners {
        let out = child.wait_with_output().unwrap();
        let r = common::report_of(&out, &report, "policy run --server");
        assert_eq!(r["server"], endpoint.as_str());
        check_episode(&r["episodes"][0], false);
    }

    // the server's own account, and bad input answered with a reason
    let session = reachy_api::net::ZenohOptions {
        connect: vec![endpoint.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let (remote, info) =
        reachy_apps::policy_run::RemotePolicy::connect(&session, "shared", Duration::from_secs(5))
            .unwrap();
    assert_eq!(
        (info.state_dim, info.action_dim, info.chunk_size),
        (8, 8, 20)
    );
    assert_eq!(
        info.images,
        vec![("observation.images.head".to_string(), [3, 48, 64])]
    );
    let served: Vec<_> = info.sessions.iter().filter(|s| s.served > 0).collect();
    assert_eq!(served.len(), 2, "{:?}", info.sessions);
    assert!(served.iter().all(|s| s.p50_ms > 0.0 && s.errors == 0));

    let mut req = reachy_api::schema::PolicyRequest {
        v: reachy_api::schema::POLICY_SCHEMA_VERSION,
        session: "probe".into(),
        seq: 1,
        t_obs: 0.0,
        state: vec![0.0; 3],
        images: vec![],
        task: None,
    };
    let e = remote.infer(&req).unwrap_err();
    assert!(
        format!("{e:#}").contains("observation.state has 3 values"),
        "{e:#}"
    );
    let e = reachy_apps::policy_run::policy_query::<reachy_api::schema::PolicyChunk>(
        &session,
        &reachy_api::schema::keys::policy_infer("shared"),
        Some(b"\xff\x00garbage".to_vec()),
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("malformed"), "{e:#}");

    // a burst from one session: only the newest observation is computed
    req.state = POSE.to_vec();
    req.images = vec![reachy_api::schema::ImageMsg {
        key: "observation.images.head".into(),
        width: 64,
        height: 48,
        data: vec![128; 64 * 48 * 3],
    }];
    let pending: Vec<_> = (1..=6)
        .map(|seq| {
            req.seq = seq;
            req.t_obs = seq as f64;
            use zenoh::Wait;
            session
                .get(reachy_api::schema::keys::policy_infer("shared"))
                .payload(reachy_api::schema::encode(&req))
                .timeout(Duration::from_secs(10))
                .wait()
                .unwrap()
        })
        .collect();
    let mut ok = Vec::new();
    for p in pending {
        let r = p.recv().unwrap();
        if let Ok(s) = r.result() {
            let c: reachy_api::schema::PolicyChunk =
                reachy_api::schema::decode_policy(&s.payload().to_bytes()).unwrap();
            assert_eq!(c.actions.len(), 20);
            ok.push(c.seq);
        }
    }
    assert!(ok.contains(&6), "the newest is always served: {ok:?}");
    assert!(ok.len() < 6, "older queued requests are dropped: {ok:?}");
    let (_, info) =
        reachy_apps::policy_run::RemotePolicy::connect(&session, "shared", Duration::from_secs(5))
            .unwrap();
    let probe = info.sessions.iter().find(|s| s.session == "probe").unwrap();
    assert!(probe.dropped >= 1 && probe.errors == 1, "{probe:?}");
}

/// A small SmolVLA that lerobot builds (random weights, statistics centred on [`POSE`]), with
/// the dataset metadata of [`fixture`]; `None` without Python.
fn smolvla_fixture() -> Option<&'static PathBuf> {
    static F: OnceLock<Option<PathBuf>> = OnceLock::new();
    F.get_or_init(|| {
        let py = common::python_with("transformers", "transformers")?;
        let dir = std::env::temp_dir().join(format!("reachy-smolvla-run-{}", std::process::id()));
        let mean: Vec<String> = POSE.iter().map(|v| v.to_string()).collect();
        let out = Command::new(&py)
            .arg(common::repo_root().join("policies/tests/python/make_smolvla_fixture.py"))
            .arg(&dir)
            .args(["--cameras", "1", "--height", "48", "--width", "64"])
            .args(["--state-dim", "8", "--action-dim", "8", "--chunk", "10"])
            .arg(format!("--mean={}", mean.join(",")))
            .args(["--std", "0.02", "--task", "pick up the red cube"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fixture: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(dir)
    })
    .as_ref()
}

#[test]
fn smolvla_predicts_like_lerobot_and_runs_the_simulated_robot_with_a_task() {
    let Some(dir) = smolvla_fixture() else {
        return;
    };
    let Some((_, ds)) = fixture() else {
        return;
    };
    let ckpt = dir.join("checkpoint");
    let ckpt_s = ckpt.to_str().unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &candle_core::Device::Cpu)
            .unwrap()["action"]
            .clone();
    // `policy predict` with the observation's tokens and noise, then with --task instead of
    // the tokens: lerobot's chunk both times
    let obs =
        candle_core::safetensors::load(dir.join("obs.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let no_tokens: std::collections::HashMap<String, candle_core::Tensor> = obs
        .iter()
        .filter(|(k, _)| !k.starts_with("observation.language."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let obs_task = dir.join("obs_no_tokens.safetensors");
    candle_core::safetensors::save(&no_tokens, &obs_task).unwrap();
    // (and once with the kernels restricted to AVX2 + FMA: SigLIP, the prefix and the expert
    // on that path too)
    for (obs_file, task, kernel) in [
        (dir.join("obs.safetensors"), None, ""),
        (dir.join("obs.safetensors"), None, "avx2"),
        (obs_task.clone(), Some("pick up the red cube"), ""),
    ] {
        let out = dir.join("chunk.safetensors");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reachy"));
        cmd.env("REACHY_CPU_KERNEL", kernel)
            .args(["policy", "predict", "--checkpoint", ckpt_s, "--observation"])
            .arg(&obs_file)
            .arg("--out")
            .arg(&out);
        if let Some(t) = task {
            cmd.args(["--task", t]);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap()
            ["action"]
            .clone();
        let d = common::max_abs_diff(&got, &expected);
        assert!(d <= 1e-4, "task {task:?}, kernel {kernel:?}: {d}");
    }
    // without a task: one clear error, before the robot starts
    let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["policy", "predict", "--checkpoint", ckpt_s, "--observation"])
        .arg(&obs_task)
        .args(["--out", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--task"));
    // `bench --compare-lerobot` needs the text even with tokens: lerobot tokenizes it itself
    let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["policy", "bench", "--checkpoint", ckpt_s, "--observation"])
        .arg(dir.join("obs.safetensors"))
        .args(["--iters", "1", "--compare-lerobot", "python3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--task") && err.contains("--compare-lerobot"),
        "{err}"
    );
    let report = dir.join("no_task.json");
    let o = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["policy", "run", "--checkpoint", ckpt_s, "--dataset"])
        .arg(ds)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--task"));
    // the async runner drives the simulated robot with it, the chunks near the pose
    let r = run_policy(
        &[
            "--checkpoint",
            ckpt_s,
            "--dataset",
            ds.to_str().unwrap(),
            "--task",
            "pick up the red cube",
            "--episode-time",
            "3",
            "--margin-steps",
            "6",
        ],
        &dir.join("smolvla.json"),
    );
    assert_eq!(r["mode"], "async");
    check_episode(&r["episodes"][0], false);
}
