//! Reading LeRobot v3 datasets: feature names and fps from `meta/info.json`, and an episode's
//! `action` rows from `data/chunk-*/file-*.parquet` (several episodes per file allowed).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, ListArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::{bail, invalid, Context, DatasetError};

/// What `meta/info.json` says of a dataset's features.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureNames {
    /// `observation.state` names (`r_shoulder_pitch.pos`, …).
    pub state: Vec<String>,
    /// `action` names.
    pub action: Vec<String>,
    /// Frames per second, if given.
    pub fps: Option<f64>,
}

/// Feature names of a LeRobot dataset (`meta/info.json`): state names, action names, fps.
pub fn dataset_names(dir: &Path) -> Result<FeatureNames, DatasetError> {
    let path = dir.join("meta").join("info.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let info: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let names = |k: &str| feature_names(&info, k).map_err(|e| invalid!("{}: {e}", path.display()));
    let fps = info.get("fps").and_then(|v| v.as_f64());
    Ok(FeatureNames {
        state: names("observation.state")?,
        action: names("action")?,
        fps,
    })
}

/// The names of feature `k` in an `info.json`: a list, or LeRobot's older `{"motors": [...]}`
/// form.
pub(crate) fn feature_names(
    info: &serde_json::Value,
    k: &str,
) -> Result<Vec<String>, DatasetError> {
    let v = info
        .pointer(&format!("/features/{}/names", k.replace('/', "~1")))
        .ok_or_else(|| invalid!("no features.{k}.names"))?;
    let list = v
        .as_array()
        .or_else(|| v.as_object().and_then(|o| o.values().next()?.as_array()))
        .ok_or_else(|| invalid!("features.{k}.names is not a list"))?;
    list.iter()
        .map(|n| {
            n.as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid!("a name of {k} is not a string"))
        })
        .collect()
}

/// The joint a feature name stands for: `r_shoulder_pitch.pos` → `r_shoulder_pitch`.
pub fn joint_of(name: &str, joints: &[String]) -> Result<usize, DatasetError> {
    let j = name.strip_suffix(".pos").unwrap_or(name);
    if name.contains('.') && !name.ends_with(".pos") {
        bail!("feature `{name}`: only joint positions (`<joint>.pos`) are supported");
    }
    joints.iter().position(|n| n == j).ok_or_else(|| {
        invalid!(
            "feature `{name}` has no joint `{j}` on this robot (joints: {})",
            joints.join(", ")
        )
    })
}

/// One episode's actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// Episode index.
    pub index: i64,
    /// Action feature names (`r_shoulder_pitch.pos`, …).
    pub names: Vec<String>,
    /// Frames per second.
    pub fps: f64,
    /// One action per frame, in frame order.
    pub actions: Vec<Vec<f32>>,
}

/// The data files of a dataset, in order.
fn data_files(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let data = dir.join("data");
    std::fs::read_dir(&data)
        .with_context(|| format!("{}: not a LeRobot dataset (no data/)", dir.display()))?;
    let files = chunk_files(&data);
    if files.is_empty() {
        bail!("{}: no data/chunk-*/file-*.parquet", dir.display());
    }
    Ok(files)
}

/// The `chunk-*/file-*.parquet` files under `dir`, sorted (lerobot's order); none when `dir`
/// cannot be read.
pub(crate) fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for chunk in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(chunk.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn int_column<'a>(
    b: &'a RecordBatch,
    name: &str,
    file: &Path,
) -> Result<&'a Int64Array, DatasetError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| invalid!("{}: no int64 column `{name}`", file.display()))
}

/// The rows of a list-of-float32 column (fixed-size or variable lists).
fn float_rows(b: &RecordBatch, name: &str, file: &Path) -> Result<Vec<Vec<f32>>, DatasetError> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| invalid!("{}: no column `{name}`", file.display()))?;
    let bad = || invalid!("{}: `{name}` is not a list of float32", file.display());
    let row = |v: std::sync::Arc<dyn Array>| -> Result<Vec<f32>, DatasetError> {
        let f = v.as_any().downcast_ref::<Float32Array>().ok_or_else(bad)?;
        Ok(f.values().to_vec())
    };
    if let Some(l) = col.as_any().downcast_ref::<FixedSizeListArray>() {
        (0..l.len()).map(|i| row(l.value(i))).collect()
    } else if let Some(l) = col.as_any().downcast_ref::<ListArray>() {
        (0..l.len()).map(|i| row(l.value(i))).collect()
    } else {
        Err(bad())
    }
}

/// Read episode `index` of the dataset at `dir`.
pub fn load_episode(dir: &Path, index: i64) -> Result<Episode, DatasetError> {
    let FeatureNames {
        action: names, fps, ..
    } = dataset_names(dir)?;
    let fps = fps.ok_or_else(|| invalid!("{}: meta/info.json has no fps", dir.display()))?;
    if !(fps > 0.0 && fps <= 1000.0) {
        bail!("{}: fps {fps} is not within 0..=1000", dir.display());
    }
    let mut frames: Vec<(i64, Vec<f32>)> = Vec::new();
    let mut episodes = std::collections::BTreeSet::new();
    for file in data_files(dir)? {
        let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f)
            .with_context(|| format!("{}: not a parquet file", file.display()))?;
        let schema = builder.parquet_schema();
        // the leaves of the three columns (a list column has one leaf)
        let cols = ["episode_index", "frame_index", "action"];
        let top = |d: &parquet::schema::types::ColumnDescriptor| {
            d.path().parts().first().cloned().unwrap_or_default()
        };
        for c in cols {
            if !schema.columns().iter().any(|d| top(d) == c) {
                bail!("{}: no column `{c}`", file.display());
            }
        }
        let leaves: Vec<usize> = schema
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, d)| cols.contains(&top(d).as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::leaves(schema, leaves);
        let reader = builder
            .with_projection(mask)
            .build()
            .with_context(|| format!("reading {}", file.display()))?;
        for batch in reader {
            let b = batch.with_context(|| format!("reading {}", file.display()))?;
            let ep = int_column(&b, "episode_index", &file)?;
            let fr = int_column(&b, "frame_index", &file)?;
            let act = float_rows(&b, "action", &file)?;
            for (i, a) in act.into_iter().enumerate() {
                let e = ep.value(i);
                episodes.insert(e);
                if e == index {
                    frames.push((fr.value(i), a));
                }
            }
        }
    }
    if frames.is_empty() {
        bail!(
            "episode {index} is not in {} (episodes {:?})",
            dir.display(),
            episodes
        );
    }
    frames.sort_by_key(|(k, _)| *k);
    for (k, (f, a)) in frames.iter().enumerate() {
        if *f != k as i64 {
            bail!("episode {index}: frame {k} is missing (found frame {f} there)");
        }
        if a.len() != names.len() {
            bail!(
                "episode {index}, frame {k}: {} action values for {} names",
                a.len(),
                names.len()
            );
        }
        if a.iter().any(|v| !v.is_finite()) {
            bail!("episode {index}, frame {k}: a non-finite action");
        }
    }
    Ok(Episode {
        index,
        names,
        fps,
        actions: frames.into_iter().map(|(_, a)| a).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_from_info_json() {
        let dir = std::env::temp_dir().join(format!("reachy-info-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("meta")).unwrap();
        std::fs::write(
            dir.join("meta/info.json"),
            r#"{"fps": 15, "features": {
                "observation.state": {"dtype":"float32","shape":[2],"names":["a.pos","b.pos"]},
                "action": {"dtype":"float32","shape":[2],"names":{"motors":["a.pos","b.pos"]}}}}"#,
        )
        .unwrap();
        let f = dataset_names(&dir).unwrap();
        assert_eq!(f.state, vec!["a.pos", "b.pos"]);
        assert_eq!(f.action, f.state);
        assert_eq!(f.fps, Some(15.0));
        std::fs::write(dir.join("meta/info.json"), "{not json").unwrap();
        assert!(dataset_names(&dir).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
