//! `reachy policy …`: learned policies (LeRobot ACT checkpoints) on candle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use candle_core::{DType, Tensor};
use clap::Subcommand;
use reachy_policies::ActPolicy;

/// `reachy policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Predict one action chunk: lerobot's pre-processor → predict_action_chunk → post-processor.
    /// The observation file holds tensors named as in lerobot: `observation.state` [1,S] and
    /// `observation.images.<cam>` [1,3,H,W] (float in [0,1]); the output holds `action`
    /// [1, chunk, A] in robot units.
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
        /// Also time lerobot's PyTorch ACT on the same checkpoint and observation, with the same
        /// number of threads, using this Python (which must have lerobot installed).
        #[arg(long, value_name = "PYTHON")]
        compare_lerobot: Option<PathBuf>,
    },
}

/// lerobot timing script, embedded so the binary works from any directory.
const LEROBOT_TIMER: &str = include_str!("../../../policies/tests/python/time_lerobot_act.py");

fn parse_device(s: &str) -> anyhow::Result<candle_core::Device> {
    let cuda = match s {
        "cpu" => None,
        "cuda" => Some(0),
        s => match s.strip_prefix("cuda:") {
            Some(n) => Some(
                n.parse::<usize>()
                    .with_context(|| format!("bad CUDA ordinal in `{s}`"))?,
            ),
            None => bail!("--device must be `cpu`, `cuda` or `cuda:N`, not `{s}`"),
        },
    };
    Ok(reachy_policies::device(cuda)?)
}

fn parse_dtype(s: &str) -> anyhow::Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => bail!("--dtype must be f32, f16 or bf16, not `{s}`"),
    })
}

fn load(
    checkpoint: &Path,
    observation: &Path,
    device: &str,
    dtype: &str,
) -> anyhow::Result<(ActPolicy, HashMap<String, Tensor>)> {
    let device = parse_device(device)?;
    let dtype = parse_dtype(dtype)?;
    if device.is_cpu() && dtype != DType::F32 {
        bail!("half precision is for GPUs; use --dtype f32 on the CPU");
    }
    let policy = ActPolicy::load(checkpoint, &device, dtype)
        .with_context(|| format!("loading checkpoint {}", checkpoint.display()))?;
    let obs = candle_core::safetensors::load(observation, &candle_core::Device::Cpu)
        .map_err(|e| anyhow!("reading observation {}: {e}", observation.display()))?;
    Ok((policy, obs))
}

/// Run a `policy` subcommand.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Predict {
            checkpoint,
            observation,
            out,
            device,
            dtype,
        } => {
            let (policy, obs) = load(&checkpoint, &observation, &device, &dtype)?;
            let t0 = Instant::now();
            let action = policy.predict_chunk(&obs)?;
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
        } => {
            let (policy, obs) = load(&checkpoint, &observation, &device, &dtype)?;
            policy.predict_chunk(&obs)?;
            let mut ms = Vec::with_capacity(iters);
            for _ in 0..iters.max(1) {
                let t0 = Instant::now();
                let a = policy.predict_chunk(&obs)?;
                // force completion on asynchronous devices
                let _ = a.flatten_all()?.to_vec1::<f32>()?;
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            let mean = ms.iter().sum::<f64>() / ms.len() as f64;
            ms.sort_by(|a, b| a.total_cmp(b));
            let cfg = policy.config();
            let threads = candle_core::utils::get_num_threads();
            let mut report = serde_json::json!({
                "device": device, "dtype": dtype, "iters": ms.len(),
                "mean_ms": mean, "p50_ms": ms[ms.len() / 2],
                "threads": threads,
                "dim_model": cfg.dim_model, "backbone": cfg.vision_backbone,
                "cameras": cfg.image_keys()?.len(), "chunk_size": cfg.chunk_size,
            });
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
                report["torch"] = theirs["torch"].clone();
                report["speedup_vs_lerobot"] = serde_json::json!(lr / mean);
            }
            println!("{report}");
        }
    }
    Ok(())
}
