//! `reachy policy …`: learned policies (LeRobot ACT and SmolVLA checkpoints) on candle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use candle_core::{DType, Tensor};
use clap::Subcommand;
use reachy_policies::Policy;

/// `reachy policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Predict one action chunk: lerobot's pre-processor → predict_action_chunk → post-processor.
    /// The observation file holds tensors named as in lerobot: `observation.state` [1,S] and
    /// `observation.images.<cam>` [1,3,H,W] (float in [0,1]); for SmolVLA also the language,
    /// `observation.language.tokens` and `.attention_mask` [1,L] int64 (or --task), and an
    /// optional `noise` [1,chunk,max_action_dim] f32 (the sampler's start, random otherwise).
    /// The output holds `action` [1, chunk, A] in robot units.
    Predict {
        /// Checkpoint directory as lerobot saves it (config.json, model.safetensors, processors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Observation tensors (safetensors).
        #[arg(long)]
        observation: PathBuf,
        /// Where to write the action chunk (safetensors).
        #[arg(long)]
        out: PathBuf,
        /// `cpu` or `cuda[:N]` (CUDA needs a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, or f16 / bf16 on GPU.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// The instruction, for policies that take one (SmolVLA), tokenized with the
        /// checkpoint's tokenizer; the observation's own tokens take precedence.
        #[arg(long)]
        task: Option<String>,
    },
    /// Time chunk inference on a checkpoint: mean and p50 over --iters runs after one warm-up.
    Bench {
        /// Checkpoint directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Observation tensors (safetensors).
        #[arg(long)]
        observation: PathBuf,
        /// Timed runs.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// `cpu` or `cuda[:N]`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, f16, bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Also time lerobot's PyTorch policy on the same checkpoint and observation, with the
        /// same number of threads, using this Python (which must have lerobot installed).
        #[arg(long, value_name = "PYTHON")]
        compare_lerobot: Option<PathBuf>,
        /// The instruction, for policies that take one (SmolVLA), tokenized with the
        /// checkpoint's tokenizer; the observation's own tokens take precedence.
        #[arg(long)]
        task: Option<String>,
    },
    /// Run a policy on the robot: a running daemon (--connect ENDPOINT), or the simulated robot
    /// started in this process (--backend sim, the default without --connect). The policy runs
    /// here (--checkpoint) or on a policy server (--server ENDPOINT). Async by default: the next
    /// chunk is computed while the current one executes.
    Run(Box<RunArgs>),
    /// Serve a policy (ACT or SmolVLA) over zenoh to the runners of any number of robots (one
    /// session each): observations in (with the task, for SmolVLA), timestamped action chunks
    /// out, on `reachy_policy/<name>/infer`.
    Serve {
        /// Checkpoint directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Server name (the key segment); runners pick it with --server-name.
        #[arg(long, default_value = "default")]
        name: String,
        /// `cpu` or `cuda[:N]`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, f16, bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Print the per-session counters every this many seconds (0: never).
        #[arg(long, default_value_t = 10.0)]
        stats_every: f64,
        /// Zenoh endpoints (runners connect to the --listen one).
        #[command(flatten)]
        zenoh: super::args::ZenohArgs,
    },
}

/// `reachy policy run`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// Checkpoint directory (inference in this process).
    #[arg(long, required_unless_present = "server")]
    pub checkpoint: Option<PathBuf>,
    /// A policy server's endpoint (`reachy policy serve --listen …`) to infer on instead.
    #[arg(long, value_name = "ENDPOINT", conflicts_with = "checkpoint")]
    pub server: Option<String>,
    /// Name of the policy server.
    #[arg(long, default_value = "default")]
    pub server_name: String,
    /// A LeRobot dataset whose meta/info.json names the state and action features (and gives
    /// the fps).
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,
    /// State feature names, comma-separated (e.g. `r_shoulder_pitch.pos,…`).
    #[arg(long, value_delimiter = ',')]
    pub state_names: Option<Vec<String>>,
    /// Action feature names, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub action_names: Option<Vec<String>>,
    /// Map an image feature to a camera: `head=head_camera` (repeatable).
    #[arg(long = "camera", value_name = "KEY=CAMERA")]
    pub cameras: Vec<String>,
    /// Control rate (Hz); default the dataset's fps, else 30.
    #[arg(long)]
    pub fps: Option<f64>,
    /// Episodes to run.
    #[arg(long, default_value_t = 1)]
    pub episodes: usize,
    /// Length of an episode (s).
    #[arg(long, default_value_t = 10.0)]
    pub episode_time: f64,
    /// Synchronous mode (infer only when the queue runs dry: the robot waits at chunk ends).
    #[arg(long)]
    pub sync: bool,
    /// Async mode: request the next chunk this many steps earlier than the measured latency.
    #[arg(long, default_value_t = 2)]
    pub margin_steps: usize,
    /// ACT's temporal ensembling with this coefficient (e.g. 0.01) instead of the chunk queue:
    /// a chunk per step, synchronously, as LeRobot does (default: the checkpoint's setting).
    #[arg(long, value_name = "COEFF")]
    pub temporal_ensemble: Option<f64>,
    /// Actions used per chunk (default: the checkpoint's n_action_steps).
    #[arg(long)]
    pub n_action_steps: Option<usize>,
    /// Language instruction (for policies that take one).
    #[arg(long)]
    pub task: Option<String>,
    /// `cpu` or `cuda[:N]` (local inference).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16, bf16 (local inference).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[command(flatten)]
    pub report: super::args::ReportArgs,
    #[command(flatten)]
    pub rerun: super::args::RerunArgs,
    /// The robot: --connect to a daemon, or the in-process sim (episode i on scene seed + i).
    #[command(flatten)]
    pub robot: super::args::RobotArgs,
}

/// lerobot timing script, embedded so the binary works from any directory.
const LEROBOT_TIMER: &str = include_str!("../../../policies/tests/python/time_lerobot_policy.py");

fn load(
    checkpoint: &Path,
    observation: &Path,
    device: &str,
    dtype: &str,
) -> anyhow::Result<(Policy, HashMap<String, Tensor>)> {
    let device = reachy_policies::parse_device(device)?;
    let dtype = reachy_policies::parse_dtype(dtype)?;
    if device.is_cpu() && dtype != DType::F32 {
        bail!("half precision is for GPUs; use --dtype f32 on the CPU");
    }
    let policy = Policy::load(checkpoint, &device, dtype)
        .with_context(|| format!("loading checkpoint {}", checkpoint.display()))?;
    let obs = candle_core::safetensors::load(observation, &candle_core::Device::Cpu)
        .map_err(|e| anyhow!("reading observation {}: {e}", observation.display()))?;
    Ok((policy, obs))
}

/// Run a `policy` subcommand.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    reachy_policies::keep_freed_memory();
    match cmd {
        PolicyCommand::Run(a) => run_policy(*a)?,
        PolicyCommand::Serve {
            checkpoint,
            name,
            device,
            dtype,
            stats_every,
            zenoh,
        } => {
            let policy = reachy_apps::policy_run::LocalPolicy::load(&checkpoint, &device, &dtype)?;
            let spec = policy.spec().clone();
            let session = zenoh.open()?;
            let server = reachy_apps::policy_serve::PolicyServer::spawn(&session, &name, policy)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            ctrlc::set_handler(move || s2.store(true, std::sync::atomic::Ordering::Relaxed))
                .context("Ctrl-C handler")?;
            println!(
                "policy server ready: {} (state {}, action {}, {} camera(s), chunk {}, {device}){}",
                reachy_api::schema::keys::policy_infer(&name),
                spec.state_dim,
                spec.action_dim,
                spec.images.len(),
                spec.chunk_size,
                reachy_api::net::listening_note(&session)
            );
            use std::io::Write;
            std::io::stdout().flush().ok();
            let mut last = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if stats_every > 0.0 && last.elapsed().as_secs_f64() >= stats_every {
                    last = Instant::now();
                    for s in server.stats() {
                        println!(
                            "  {}: {} served, {} dropped, {} errors, p50 {:.1} ms, p99 {:.1} ms, \
                             queue {}",
                            s.session,
                            s.served,
                            s.dropped,
                            s.errors,
                            s.p50_ms,
                            s.p99_ms,
                            server.queue_depth()
                        );
                    }
                    std::io::stdout().flush().ok();
                }
            }
        }
        PolicyCommand::Predict {
            checkpoint,
            observation,
            out,
            device,
            dtype,
            task,
        } => {
            let (policy, obs) = load(&checkpoint, &observation, &device, &dtype)?;
            let t0 = Instant::now();
            let action = policy.predict_chunk(&obs, task.as_deref())?;
            tracing::info!(shape = ?action.dims(), ms = t0.elapsed().as_secs_f64() * 1e3, "action chunk");
            candle_core::safetensors::save(&HashMap::from([("action".to_string(), action)]), &out)
                .map_err(|e| anyhow!("writing {}: {e}", out.display()))?;
        }
        PolicyCommand::Bench {
            checkpoint,
            observation,
            iters,
            device,
            dtype,
            compare_lerobot,
            task,
        } => {
            let t_load = Instant::now();
            let (policy, obs) = load(&checkpoint, &observation, &device, &dtype)?;
            let load_s = t_load.elapsed().as_secs_f64();
            let task = task.as_deref();
            if compare_lerobot.is_some() && policy.takes_task() && task.is_none() {
                // lerobot's pre-processor tokenizes the task text itself: it cannot take ours
                bail!(
                    "--compare-lerobot with a {} policy needs --task TEXT (lerobot's processor \
                     tokenizes the instruction itself; the observation's tokens are ours only)",
                    policy.kind()
                );
            }
            policy.predict_chunk(&obs, task)?;
            let mut ms = Vec::with_capacity(iters);
            for _ in 0..iters.max(1) {
                let t0 = Instant::now();
                let a = policy.predict_chunk(&obs, task)?;
                // force completion on asynchronous devices
                let _ = a.flatten_all()?.to_vec1::<f32>()?;
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            let mean = ms.iter().sum::<f64>() / ms.len() as f64;
            ms.sort_by(|a, b| a.total_cmp(b));
            let threads = candle_core::utils::get_num_threads();
            let mut report = serde_json::json!({
                "policy": policy.kind(), "device": device, "dtype": dtype, "iters": ms.len(),
                "mean_ms": mean, "p50_ms": ms[ms.len() / 2], "min_ms": ms[0],
                "threads": threads, "load_s": load_s, "peak_rss_mb": peak_rss_mb(),
                "cameras": policy.io().image_keys()?.len(), "chunk_size": policy.chunk_size(),
            });
            match &policy {
                Policy::Act(p) => {
                    report["dim_model"] = p.config().dim_model.into();
                    report["backbone"] = p.config().vision_backbone.clone().into();
                }
                Policy::SmolVla(p) => {
                    report["num_steps"] = p.config().num_steps.into();
                    report["vlm_layers"] = p.config().num_vlm_layers.into();
                }
            }
            if let Some(py) = compare_lerobot {
                let script = std::env::temp_dir()
                    .join(format!("reachy-time-lerobot-{}.py", std::process::id()));
                std::fs::write(&script, LEROBOT_TIMER)?;
                let out = std::process::Command::new(&py)
                    .arg(&script)
                    .arg(&checkpoint)
                    .arg(&observation)
                    .arg(iters.max(1).to_string())
                    .arg(threads.to_string())
                    .args(task)
                    .output()
                    .with_context(|| format!("running {}", py.display()))?;
                let _ = std::fs::remove_file(&script);
                if !out.status.success() {
                    bail!(
                        "lerobot timing failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text.lines().last().unwrap_or_default();
                let theirs: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("lerobot timing output `{line}`"))?;
                let lr = theirs["lerobot_ms"].as_f64().unwrap_or(f64::NAN);
                report["lerobot_mean_ms"] = theirs["lerobot_ms"].clone();
                report["lerobot_p50_ms"] = theirs["lerobot_p50_ms"].clone();
                report["lerobot_min_ms"] = theirs["lerobot_min_ms"].clone();
                report["torch"] = theirs["torch"].clone();
                report["lerobot_load_s"] = theirs["lerobot_load_s"].clone();
                report["lerobot_peak_rss_mb"] = theirs["lerobot_peak_rss_mb"].clone();
                report["speedup_vs_lerobot"] = serde_json::json!(lr / mean);
                // the best of each side: the least disturbed by a shared machine's noise
                let lr_min = theirs["lerobot_min_ms"].as_f64().unwrap_or(f64::NAN);
                report["speedup_vs_lerobot_min"] = serde_json::json!(lr_min / ms[0]);
            }
            println!("{report}");
        }
    }
    Ok(())
}

/// This process's peak resident memory (MB), from /proc (Linux; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `reachy policy run`.
fn run_policy(a: RunArgs) -> anyhow::Result<()> {
    let urdf = a.urdf.path();
    use reachy_apps::policy_run as pr;
    use std::time::Duration;
    let (ds_state, ds_action, ds_fps) = match &a.dataset {
        Some(d) => {
            let reachy_dataset::FeatureNames {
                state: s,
                action: ac,
                fps: f,
            } = reachy_dataset::dataset_names(d)?;
            (Some(s), Some(ac), f)
        }
        None => (None, None, None),
    };
    let state_names = a.state_names.clone().or(ds_state);
    let action_names = a.action_names.clone().or(ds_action);
    let fps = a.fps.or(ds_fps).unwrap_or(30.0);
    let overrides = a
        .cameras
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, c)| (k.to_string(), c.to_string()))
                .ok_or_else(|| anyhow!("--camera takes KEY=CAMERA, not `{m}`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sink = a.rerun.sink()?;
    // the policy first: its features decide which cameras the in-process sim renders, at what
    // size. A policy server is reached on a session of its own, so the robot's traffic stays
    // off that link.
    let mut policy_session = None;
    let mut ensemble_coeff = None;
    let (infer, spec) = match (&a.checkpoint, &a.server) {
        (_, Some(server)) => {
            let s = super::args::ZenohArgs {
                connect: vec![server.clone()],
                listen: Vec::new(),
                zenoh_config: a.robot.zenoh.zenoh_config.clone(),
            }
            .open()?;
            let (remote, info) =
                pr::RemotePolicy::connect(&s, &a.server_name, Duration::from_secs(10))?;
            println!(
                "policy server `{}` on {}: state {}, action {}, {} camera(s)",
                info.name,
                info.device,
                info.state_dim,
                info.action_dim,
                info.images.len()
            );
            policy_session = Some(s);
            (pr::remote_infer(remote), pr::PolicySpec::from(&info))
        }
        (Some(dir), None) => {
            let l = pr::LocalPolicy::load(dir, &a.device, &a.dtype)?;
            if l.takes_task() && a.task.is_none() {
                bail!(
                    "{} takes a language instruction: give --task TEXT (e.g. --task \"pick up the \
                     cube\")",
                    dir.display()
                );
            }
            let spec = l.spec().clone();
            ensemble_coeff = l.temporal_ensemble_coeff();
            (pr::local_infer(l), spec)
        }
        (None, None) => bail!("give --checkpoint DIR or --server ENDPOINT"),
    };
    // the cameras the policy reads, at the largest image size it takes
    let (w, h) = spec
        .images
        .iter()
        .map(|(_, [_, h, w])| (*w as u32, *h as u32))
        .max()
        .unwrap_or((320, 240));
    let all = reachy_sim::camera::CameraSpec::reachy(w, h);
    let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    let wanted: Vec<String> = spec
        .images
        .iter()
        .filter_map(|(k, _)| pr::camera_for(k, &names, &overrides).ok())
        .collect();
    let cameras = all
        .into_iter()
        .filter(|c| wanted.contains(&c.name))
        .collect();
    let mut robot =
        reachy_apps::inprocess::ClientRobot::open(&a.robot.options(), urdf, cameras, fps)?;
    let mut client = robot.connect("policy", "policy")?;
    let joints: Vec<String> = client
        .info()
        .joints
        .iter()
        .map(|j| j.name.clone())
        .collect();
    let cams: Vec<String> = client
        .info()
        .cameras
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let map = pr::map_features(
        &spec,
        &joints,
        &cams,
        state_names.as_deref(),
        action_names.as_deref(),
        &overrides,
    )?;
    let cams: Vec<String> = map.images.iter().map(|(_, c, _)| c.clone()).collect();
    robot.record_to(
        sink.as_ref(),
        reachy_viz::Layout {
            cameras: cams.clone(),
            policy: true,
            episodes: true,
            ..Default::default()
        },
    )?;
    let annotator = robot.annotator();
    let opts = pr::RunOptions {
        fps,
        n_action_steps: a.n_action_steps.unwrap_or(spec.n_action_steps).max(1),
        synchronous: a.sync,
        margin_steps: a.margin_steps,
        episodes: a.episodes,
        episode_s: a.episode_time,
        task: a.task.clone(),
        session: format!("{}-{}", robot.name, std::process::id()),
        temporal_ensemble: a.temporal_ensemble.or(ensemble_coeff),
        chunk_size: spec.chunk_size,
    };
    let mode = if opts.temporal_ensemble.is_some() {
        "temporal-ensembling"
    } else if a.sync {
        "sync"
    } else {
        "async"
    };
    println!(
        "policy run: {} action(s) → {} joint(s), {} camera(s), {fps} Hz, {mode} mode, {} \
         episode(s) of {} s on {}",
        spec.action_dim,
        map.action.len(),
        map.images.len(),
        a.episodes,
        a.episode_time,
        if robot.sim().is_some() {
            "the simulated robot (in this process)".to_string()
        } else {
            format!("robot `{}`", robot.name)
        }
    );
    let home = client.state()?.position;
    let seed = a.robot.seed;
    let sim_ref = robot.sim();
    let events = annotator.clone();
    let mut before = |ep: usize, c: &mut reachy_api::client::RobotClient| -> anyhow::Result<()> {
        if let Some(a) = &events {
            a.event(&format!("policy episode {ep}: start"));
        }
        if ep > 0 {
            let r = c.goto(&joints, &home, 1.5)?;
            if r.status != "ok" && r.status != "clamped" {
                bail!(
                    "going home before episode {ep}: {} {:?}",
                    r.status,
                    r.reason
                );
            }
            if let Some(s) = sim_ref {
                s.reset_scene(seed + ep as u64)?;
            }
        }
        Ok(())
    };
    let action = map.action.clone();
    let mut on_chunk = |chunk: &[Vec<f32>], latency_ms: f64| {
        if let Some(a) = &annotator {
            a.chunk(&action, chunk, latency_ms);
        }
    };
    let reports = pr::run(
        &mut client,
        &map,
        infer,
        &opts,
        &mut before,
        &mut on_chunk,
        &mut |s| println!("  {s}"),
    )?;
    drop(client);
    robot.stop()?;
    drop(policy_session);
    let summary = serde_json::json!({
        "fps": fps,
        "mode": mode,
        "server": a.server,
        "features": map,
        "spec": spec,
        "episodes": reports,
    });
    a.report.write(&summary)
}
