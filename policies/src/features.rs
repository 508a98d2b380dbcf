//! A checkpoint's input and output features (`input_features` / `output_features` of its
//! `config.json`), in checkpoint order: the camera order matters.

use serde::Deserialize;

use crate::normalize::{Feature, FeatureType};
use crate::PolicyError;

/// `input_features` and `output_features` of a LeRobot policy configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Io {
    /// Input features in checkpoint order.
    pub input_features: serde_json::Map<String, serde_json::Value>,
    /// Output features (`action`).
    pub output_features: serde_json::Map<String, serde_json::Value>,
}

impl Io {
    fn features(
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<(String, Feature)>, PolicyError> {
        map.iter()
            .map(|(k, v)| {
                serde_json::from_value::<Feature>(v.clone())
                    .map(|f| (k.clone(), f))
                    .map_err(|e| PolicyError::Format(format!("feature {k}: {e}")))
            })
            .collect()
    }

    /// Camera keys, in checkpoint order.
    pub fn image_keys(&self) -> Result<Vec<String>, PolicyError> {
        Ok(self.image_shapes()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Camera keys with their `[channels, height, width]`, in checkpoint order.
    pub fn image_shapes(&self) -> Result<Vec<(String, [usize; 3])>, PolicyError> {
        Self::features(&self.input_features)?
            .into_iter()
            .filter(|(_, f)| f.kind == FeatureType::Visual)
            .map(|(k, f)| match f.shape[..] {
                [c, h, w] => Ok((k, [c, h, w])),
                _ => Err(PolicyError::Format(format!(
                    "image feature {k} has shape {:?}; expected [3, H, W]",
                    f.shape
                ))),
            })
            .collect()
    }

    /// `(key, dim)` of the robot state input, if any.
    pub fn state_feature(&self) -> Result<Option<(String, usize)>, PolicyError> {
        Ok(Self::features(&self.input_features)?
            .into_iter()
            .find(|(k, f)| f.kind == FeatureType::State && k == "observation.state")
            .map(|(k, f)| (k, f.shape.iter().product())))
    }

    /// `(key, dim)` of the environment state input, if any.
    pub fn env_feature(&self) -> Result<Option<(String, usize)>, PolicyError> {
        Ok(Self::features(&self.input_features)?
            .into_iter()
            .find(|(_, f)| f.kind == FeatureType::Env)
            .map(|(k, f)| (k, f.shape.iter().product())))
    }

    /// Action dimension.
    pub fn action_dim(&self) -> Result<usize, PolicyError> {
        Self::features(&self.output_features)?
            .into_iter()
            .find(|(k, _)| k == "action")
            .map(|(_, f)| f.shape.iter().product())
            .ok_or_else(|| PolicyError::Format("config has no `action` output feature".into()))
    }
}
