//! Replaying a recorded episode of a LeRobot v3 dataset on the robot through the daemon's API:
//! the episode's `action` rows (read from `data/chunk-*/file-*.parquet`, several episodes per
//! file allowed) mapped onto joints by the names in `meta/info.json`, streamed at the dataset's
//! fps after a smooth approach to the first frame.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, ListArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::Serialize;

use crate::client::RobotClient;
use crate::pick_place::RobotIo;

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
fn data_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let data = dir.join("data");
    let mut files = Vec::new();
    let chunks = std::fs::read_dir(&data)
        .with_context(|| format!("{}: not a LeRobot dataset (no data/)", dir.display()))?;
    for chunk in chunks {
        let chunk = chunk?.path();
        if !chunk.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&chunk)? {
            let f = f?.path();
            if f.extension().is_some_and(|e| e == "parquet") {
                files.push(f);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{}: no data/chunk-*/file-*.parquet", dir.display());
    }
    Ok(files)
}

fn int_column<'a>(b: &'a RecordBatch, name: &str, file: &Path) -> anyhow::Result<&'a Int64Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| anyhow!("{}: no int64 column `{name}`", file.display()))
}

/// The rows of a list-of-float32 column (fixed-size or variable lists).
fn float_rows(b: &RecordBatch, name: &str, file: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| anyhow!("{}: no column `{name}`", file.display()))?;
    let bad = || anyhow!("{}: `{name}` is not a list of float32", file.display());
    let row = |v: std::sync::Arc<dyn Array>| -> anyhow::Result<Vec<f32>> {
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
pub fn load_episode(dir: &Path, index: i64) -> anyhow::Result<Episode> {
    let (_, names, fps) = crate::policy_run::dataset_names(dir)?;
    let fps = fps.ok_or_else(|| anyhow!("{}: meta/info.json has no fps", dir.display()))?;
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

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Episode index.
    pub episode: i64,
    /// Frames streamed.
    pub frames: usize,
    /// Dataset fps.
    pub fps: f64,
    /// Wall time of the streaming (s).
    pub wall_s: f64,
    /// Control steps that started more than one period late.
    pub late_steps: u64,
    /// Last action sent, by name.
    pub last_action: Vec<(String, f32)>,
    /// Largest distance between measured joints and the last action after a short hold (rad).
    pub final_error: f32,
}

/// Replay `ep` on the robot of `client`: go to the first frame in `approach_s`, stream the rest at
/// the dataset's fps times `speed`, hold the last frame for half a second.
pub fn replay(
    client: &mut RobotClient,
    ep: &Episode,
    speed: f64,
    approach_s: f32,
) -> anyhow::Result<ReplayReport> {
    if !(speed > 0.0 && speed <= 10.0) {
        bail!("--speed must be within 0..=10");
    }
    let joints = client.joint_names();
    let idx = ep
        .names
        .iter()
        .map(|n| crate::policy_run::joint_of(n, &joints))
        .collect::<anyhow::Result<Vec<usize>>>()?;
    let first = &ep.actions[0];
    let names: Vec<String> = idx.iter().map(|&i| joints[i].clone()).collect();
    let r = client.goto(&names, first, approach_s)?;
    if r.status != "ok" && r.status != "clamped" {
        bail!("going to the first frame: {} {:?}", r.status, r.reason);
    }
    let period = Duration::from_secs_f64(1.0 / (ep.fps * speed));
    let t0 = Instant::now();
    let mut late = 0;
    for (k, a) in ep.actions.iter().enumerate() {
        let due = t0 + period * k as u32;
        match due.checked_duration_since(Instant::now()) {
            Some(d) => std::thread::sleep(d),
            None if Instant::now() - due > period => late += 1,
            None => {}
        }
        client.command(&idx, a)?;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let last = ep.actions.last().expect("non-empty");
    // hold the last frame (a silent stream would hold wherever the robot is)
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_millis(500) {
        client.command(&idx, last)?;
        std::thread::sleep(period.min(Duration::from_millis(20)));
    }
    let measured = client.positions()?;
    let final_error = idx
        .iter()
        .zip(last)
        .map(|(&i, v)| measured.get(i).map_or(f32::INFINITY, |m| (m - v).abs()))
        .fold(0.0, f32::max);
    Ok(ReplayReport {
        episode: ep.index,
        frames: ep.actions.len(),
        fps: ep.fps,
        wall_s,
        late_steps: late,
        last_action: ep.names.iter().cloned().zip(last.iter().copied()).collect(),
        final_error,
    })
}
