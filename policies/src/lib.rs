//! Learned policies of the Reachy stack, on candle, with no zenoh and no tokio.
//!
//! - [`act`]: the ACT network, weight-compatible with LeRobot's `ACTPolicy`.
//! - [`normalize`]: LeRobot's normaliser / un-normaliser processor steps.
//! - [`ActPolicy`]: a LeRobot ACT checkpoint directory loaded as `lerobot` saves it
//!   (`config.json`, `model.safetensors`, `policy_preprocessor*.json/.safetensors`,
//!   `policy_postprocessor*.json/.safetensors`); [`ActPolicy::predict_chunk`] is lerobot's
//!   pre-processor → `predict_action_chunk` → post-processor.
//! - [`SmolVlaPolicy`] ([`smolvla`]): LeRobot's SmolVLA vision-language-action policy, from a
//!   lerobot checkpoint directory plus its backbone's configuration and tokenizer.
//! - [`Policy`]: either, chosen by the checkpoint's `type`.
//! - [`ensemble`]: ACT's temporal ensembling, as an option of the runner.
//! - [`schedule`]: time-indexed action queue with async chunk requests, cross-fading and stale-chunk dropping.
//!
//! Devices: CPU by default; the `cuda` feature adds candle's CUDA backend (f32, f16, bf16).
#![warn(missing_docs)]

pub mod act;
// the CPU convolution kernel writes disjoint tiles of one buffer through raw pointers
#[allow(unsafe_code)]
mod conv;
pub mod ensemble;
pub mod features;
// the CPU linear kernel: SIMD intrinsics over raw pointers into packed weights
#[allow(unsafe_code)]
pub mod linear;
pub mod normalize;
pub mod schedule;
pub mod smolvla;
// the kernel's pointers (as in `linear`)
#[allow(unsafe_code)]
mod winograd;

/// Keep the memory inference frees for its next allocations: glibc serves blocks above its
/// mmap threshold (128 KiB, growing to at most 32 MiB) with fresh pages and gives freed heap
/// back past its trim threshold, so every chunk's activations (a SigLIP layer's are 3–12 MiB)
/// page-faulted and were zeroed anew — ~80 000 faults a SmolVLA chunk, ~5 % of its CPU time.
/// This serves blocks up to 32 MiB from the heap and trims it only past 2 GiB free. The peak footprint is
/// unchanged (it is the peak); what was freed stays mapped for reuse. Process-wide: call it
/// once, where a process is about to run a policy (the `reachy policy` commands do). A no-op
/// off glibc.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; any value is accepted or refused (0)
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use act::{Act, ActConfig, ActInputs};
pub use features::Io;
pub use normalize::{NormMode, Normalizer};
pub use smolvla::{SmolVla, SmolVlaConfig, SmolVlaPolicy};

/// Errors of policy loading and inference.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A checkpoint file is malformed.
    #[error("bad checkpoint: {0}")]
    Format(String),
    /// A configuration this implementation does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Observation tensors do not match the policy.
    #[error("bad observation: {0}")]
    Input(String),
    /// A tensor operation failed (shapes, device).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl PolicyError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Pick the device: CUDA ordinal `Some(i)` (needs the `cuda` feature), else the CPU.
pub fn device(cuda: Option<usize>) -> Result<Device, PolicyError> {
    match cuda {
        None => Ok(Device::Cpu),
        Some(i) => Device::new_cuda(i).map_err(|e| {
            PolicyError::Unsupported(format!(
                "CUDA device {i}: {e} (build with `--features cuda` on a machine with CUDA)"
            ))
        }),
    }
}

/// `cpu`, `cuda` or `cuda:N` → the candle device. Errors name the `--device` option, the name
/// every command that takes a device gives it.
pub fn parse_device(s: &str) -> Result<Device, PolicyError> {
    let cuda = match s {
        "cpu" => None,
        "cuda" => Some(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(PolicyError::Unsupported(format!(
                    "bad CUDA ordinal in `--device {s}`"
                )))
            }
            None => {
                return Err(PolicyError::Unsupported(format!(
                    "--device must be `cpu`, `cuda` or `cuda:N`, not `{s}`"
                )))
            }
        },
    };
    device(cuda)
}

/// `f32`, `f16` or `bf16` → the candle dtype (errors name the `--dtype` option).
pub fn parse_dtype(s: &str) -> Result<DType, PolicyError> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => {
            return Err(PolicyError::Unsupported(format!(
                "--dtype must be f32, f16 or bf16, not `{s}`"
            )))
        }
    })
}

/// A LeRobot ACT checkpoint with its processors.
pub struct ActPolicy {
    model: Act,
    pre: Normalizer,
    post: Normalizer,
    device: Device,
    dtype: DType,
}

impl ActPolicy {
    /// Load `dir` (as written by lerobot's `save_pretrained`) on `device` in `dtype`
    /// (F32 everywhere; F16 / BF16 on GPU).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, PolicyError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| PolicyError::io(&cfg_path, e))?;
        let cfg: ActConfig = serde_json::from_str(&text)
            .map_err(|e| PolicyError::Format(format!("{}: {e}", cfg_path.display())))?;
        if !cfg.kind.is_empty() && cfg.kind != "act" {
            return Err(PolicyError::Unsupported(format!(
                "policy type `{}` (this loader reads `act`)",
                cfg.kind
            )));
        }
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(PolicyError::io(
                &weights,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        // SAFETY: the file is memory-mapped read-only; it must not change while loaded.
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device) }
            .map_err(|e| PolicyError::Format(format!("{}: {e}", weights.display())))?;
        let model = Act::load(cfg, vb)?;
        let pre = Normalizer::load(dir, "policy_preprocessor", "normalizer_processor", device)?;
        let post = Normalizer::load(
            dir,
            "policy_postprocessor",
            "unnormalizer_processor",
            device,
        )?;
        Ok(Self {
            model,
            pre,
            post,
            device: device.clone(),
            dtype,
        })
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &ActConfig {
        self.model.config()
    }

    /// Device in use.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Predict one action chunk from raw observations named as in lerobot:
    /// `observation.state` (1, S) and `observation.images.<cam>` (1, 3, H, W) in [0, 1].
    /// Returns un-normalised actions (1, chunk, A) in f32 on the CPU.
    pub fn predict_chunk(&self, obs: &HashMap<String, Tensor>) -> Result<Tensor, PolicyError> {
        let get = |k: &str, rank: usize| -> Result<Tensor, PolicyError> {
            let t = obs
                .get(k)
                .ok_or_else(|| PolicyError::Input(format!("missing `{k}`")))?;
            let t = if t.rank() == rank - 1 {
                t.unsqueeze(0)?
            } else {
                t.clone()
            };
            if t.rank() != rank {
                return Err(PolicyError::Input(format!(
                    "`{k}` has shape {:?}; expected rank {rank}",
                    t.dims()
                )));
            }
            let t = t.to_device(&self.device)?.to_dtype(DType::F32)?;
            let n = self.pre.apply(k, &t, false)?;
            Ok(n.to_dtype(self.dtype)?)
        };
        let inputs = self.model.inputs();
        let state = match &inputs.state {
            Some((k, n)) => {
                let s = get(k, 2)?;
                if s.dim(1)? != *n {
                    return Err(PolicyError::Input(format!(
                        "`{k}` has {} values; the policy expects {n}",
                        s.dim(1)?
                    )));
                }
                Some(s)
            }
            None => None,
        };
        let env = match &inputs.env {
            Some((k, _)) => Some(get(k, 2)?),
            None => None,
        };
        let images = inputs
            .images
            .iter()
            .map(|k| {
                let t = get(k, 4)?;
                if t.dim(1)? != 3 {
                    return Err(PolicyError::Input(format!(
                        "`{k}` must be (1, 3, H, W), got {:?}",
                        t.dims()
                    )));
                }
                Ok(t)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let actions = self.model.forward(state.as_ref(), env.as_ref(), &images)?;
        let actions = actions.to_dtype(DType::F32)?;
        let actions = self.post.apply("action", &actions, true)?;
        Ok(actions.to_device(&Device::Cpu)?)
    }
}

/// A LeRobot checkpoint of any type this crate runs, chosen by its `config.json`'s `type`.
pub enum Policy {
    /// ACT.
    Act(Box<ActPolicy>),
    /// SmolVLA.
    SmolVla(Box<SmolVlaPolicy>),
}

impl Policy {
    /// Load a checkpoint directory (`type` `act` or `smolvla`).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, PolicyError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| PolicyError::io(&cfg_path, e))?;
        #[derive(serde::Deserialize)]
        struct Kind {
            #[serde(rename = "type", default)]
            kind: String,
        }
        let k: Kind = serde_json::from_str(&text)
            .map_err(|e| PolicyError::Format(format!("{}: {e}", cfg_path.display())))?;
        match k.kind.as_str() {
            "act" | "" => Ok(Self::Act(Box::new(ActPolicy::load(dir, device, dtype)?))),
            "smolvla" => Ok(Self::SmolVla(Box::new(SmolVlaPolicy::load(
                dir, device, dtype,
            )?))),
            t => Err(PolicyError::Unsupported(format!(
                "policy type `{t}` (this build runs `act` and `smolvla`)"
            ))),
        }
    }

    /// `act` or `smolvla`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Act(_) => "act",
            Self::SmolVla(_) => "smolvla",
        }
    }

    /// Input and output features.
    pub fn io(&self) -> &Io {
        match self {
            Self::Act(p) => &p.config().io,
            Self::SmolVla(p) => &p.config().io,
        }
    }

    /// Actions per chunk.
    pub fn chunk_size(&self) -> usize {
        match self {
            Self::Act(p) => p.config().chunk_size,
            Self::SmolVla(p) => p.config().chunk_size,
        }
    }

    /// Actions executed per chunk.
    pub fn n_action_steps(&self) -> usize {
        match self {
            Self::Act(p) => p.config().n_action_steps,
            Self::SmolVla(p) => p.config().n_action_steps,
        }
    }

    /// ACT's temporal-ensembling coefficient, if the checkpoint uses it.
    pub fn temporal_ensemble_coeff(&self) -> Option<f64> {
        match self {
            Self::Act(p) => p.config().temporal_ensemble_coeff,
            Self::SmolVla(_) => None,
        }
    }

    /// Whether the policy takes a language instruction.
    pub fn takes_task(&self) -> bool {
        matches!(self, Self::SmolVla(_))
    }

    /// One un-normalised action chunk [1, chunk, A] (f32, CPU) from lerobot-named observation
    /// tensors; `task` is the instruction of policies that take one (ignored by ACT).
    pub fn predict_chunk(
        &self,
        obs: &HashMap<String, Tensor>,
        task: Option<&str>,
    ) -> Result<Tensor, PolicyError> {
        on_the_threads(|| match self {
            Self::Act(p) => p.predict_chunk(obs),
            Self::SmolVla(p) => p.predict_chunk(obs, task),
        })
    }
}

/// `f` run on a thread of rayon's pool (the caller waits): the CPU kernels' parallel regions
/// then start on the thread already running and the other threads join in, instead of every
/// region handed from the caller to sleeping workers and back (a few hundred a chunk).
fn on_the_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
