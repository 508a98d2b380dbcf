//! Observation / action normalisation exactly as LeRobot's `NormalizerProcessorStep` and
//! `UnnormalizerProcessorStep`: MEAN_STD, MIN_MAX, QUANTILES (q01/q99), QUANTILE10 (q10/q90)
//! and IDENTITY, per feature type, with the statistics from the processor's safetensors file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::PolicyError;

/// A normalisation mode, as written in `norm_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormMode {
    /// No change.
    Identity,
    /// `(x − mean) / (std + eps)`; inverse `x · std + mean`.
    MeanStd,
    /// `2 (x − min) / (max − min) − 1`.
    MinMax,
    /// Like MIN_MAX with q01 / q99.
    Quantiles,
    /// Like MIN_MAX with q10 / q90.
    Quantile10,
}

/// A feature's type, as in LeRobot (`STATE`, `VISUAL`, `ACTION`, `ENV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeatureType {
    /// Robot state.
    State,
    /// Camera image.
    Visual,
    /// Action.
    Action,
    /// Environment state.
    Env,
    /// Language tokens and anything else.
    #[serde(other)]
    Other,
}

/// A feature declaration: type and shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Feature {
    /// Type.
    #[serde(rename = "type")]
    pub kind: FeatureType,
    /// Shape without the batch dimension.
    pub shape: Vec<usize>,
}

/// The normaliser of one processor pipeline (pre or post).
#[derive(Debug)]
pub struct Normalizer {
    features: HashMap<String, FeatureType>,
    norm_map: HashMap<FeatureType, NormMode>,
    stats: HashMap<String, Tensor>,
    eps: f32,
}

#[derive(Deserialize)]
struct StepConfig {
    #[serde(default = "default_eps")]
    eps: f32,
    features: HashMap<String, Feature>,
    norm_map: HashMap<String, NormMode>,
}

fn default_eps() -> f32 {
    1e-8
}

#[derive(Deserialize)]
struct Step {
    registry_name: String,
    #[serde(default)]
    config: serde_json::Value,
    state_file: Option<String>,
}

#[derive(Deserialize)]
struct Pipeline {
    steps: Vec<Step>,
}

impl Normalizer {
    /// Load the normaliser step of `dir/<name>.json` (`policy_preprocessor` or
    /// `policy_postprocessor`), whose registry name is `registry` (`normalizer_processor` or
    /// `unnormalizer_processor`). A pipeline without that step normalises nothing.
    pub fn load(
        dir: &Path,
        name: &str,
        registry: &str,
        device: &Device,
    ) -> Result<Self, PolicyError> {
        let path = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, e))?;
        let pipeline: Pipeline = serde_json::from_str(&text)
            .map_err(|e| PolicyError::Format(format!("{}: {e}", path.display())))?;
        let Some(step) = pipeline
            .steps
            .into_iter()
            .find(|s| s.registry_name == registry)
        else {
            return Ok(Self {
                features: HashMap::new(),
                norm_map: HashMap::new(),
                stats: HashMap::new(),
                eps: 1e-8,
            });
        };
        let cfg: StepConfig = serde_json::from_value(step.config).map_err(|e| {
            PolicyError::Format(format!("{}: step {registry}: {e}", path.display()))
        })?;
        let mut norm_map = HashMap::new();
        for (k, v) in cfg.norm_map {
            let t: FeatureType = serde_json::from_value(serde_json::Value::String(k.clone()))
                .map_err(|e| PolicyError::Format(format!("norm_map key {k}: {e}")))?;
            norm_map.insert(t, v);
        }
        let stats = match step.state_file {
            Some(f) => {
                let p = dir.join(&f);
                candle_core::safetensors::load(&p, device)
                    .map_err(|e| PolicyError::Format(format!("{}: {e}", p.display())))?
            }
            None => HashMap::new(),
        };
        Ok(Self {
            features: cfg.features.into_iter().map(|(k, f)| (k, f.kind)).collect(),
            norm_map,
            stats,
            eps: cfg.eps,
        })
    }

    fn stat(&self, key: &str, name: &str) -> Result<&Tensor, PolicyError> {
        self.stats.get(&format!("{key}.{name}")).ok_or_else(|| {
            PolicyError::Format(format!(
                "normalisation of `{key}` needs the `{name}` statistic"
            ))
        })
    }

    fn has_stats(&self, key: &str) -> bool {
        let prefix = format!("{key}.");
        self.stats.keys().any(|k| k.starts_with(&prefix))
    }

    /// Fail when `key` is normalised (its type's mode is not IDENTITY) but has no statistics:
    /// lerobot passes such a feature through unnormalised without a word (lerobot #4415).
    pub fn require_stats(&self, key: &str) -> Result<(), PolicyError> {
        let Some(kind) = self.features.get(key) else {
            return Ok(());
        };
        let mode = self
            .norm_map
            .get(kind)
            .copied()
            .unwrap_or(NormMode::Identity);
        if mode != NormMode::Identity && !self.has_stats(key) {
            let mut have: Vec<&str> = self
                .stats
                .keys()
                .filter_map(|k| k.rsplit_once('.').map(|(f, _)| f))
                .collect();
            have.sort_unstable();
            have.dedup();
            return Err(PolicyError::Format(format!(
                "`{key}` is normalised ({mode:?}) but the processor has no statistics for it \
                 (it has them for: {}); lerobot would pass it through unnormalised (lerobot \
                 #4415): fix the statistics' keys in the processor's .safetensors file",
                if have.is_empty() {
                    "nothing".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
        Ok(())
    }

    /// Normalise (`inverse = false`) or un-normalise one feature's tensor (batch first).
    pub fn apply(&self, key: &str, x: &Tensor, inverse: bool) -> Result<Tensor, PolicyError> {
        let Some(kind) = self.features.get(key) else {
            return Ok(x.clone());
        };
        let mode = self
            .norm_map
            .get(kind)
            .copied()
            .unwrap_or(NormMode::Identity);
        if mode == NormMode::Identity || !self.has_stats(key) {
            return Ok(x.clone());
        }
        let eps = self.eps as f64;
        let range = |lo: &str, hi: &str| -> Result<(Tensor, Tensor), PolicyError> {
            let lo = self.stat(key, lo)?;
            let d = (self.stat(key, hi)? - lo)?;
            // where the range is 0, use eps (as LeRobot does)
            let zero = d.eq(0.0)?;
            let d = zero.where_cond(&Tensor::full(self.eps, d.shape(), d.device())?, &d)?;
            Ok((lo.clone(), d))
        };
        let y = match mode {
            NormMode::Identity => x.clone(),
            NormMode::MeanStd => {
                let (m, s) = (self.stat(key, "mean")?, self.stat(key, "std")?);
                if inverse {
                    x.broadcast_mul(s)?.broadcast_add(m)?
                } else {
                    x.broadcast_sub(m)?.broadcast_div(&(s + eps)?)?
                }
            }
            NormMode::MinMax | NormMode::Quantiles | NormMode::Quantile10 => {
                let (lo, hi) = match mode {
                    NormMode::MinMax => ("min", "max"),
                    NormMode::Quantiles => ("q01", "q99"),
                    _ => ("q10", "q90"),
                };
                let (lo, d) = range(lo, hi)?;
                if inverse {
                    ((x + 1.0)?.broadcast_mul(&d)? / 2.0)?.broadcast_add(&lo)?
                } else {
                    ((x.broadcast_sub(&lo)? * 2.0)?.broadcast_div(&d)? - 1.0)?
                }
            }
        };
        Ok(y)
    }
}
