//! Writing LeRobot v3 datasets (state and action; no camera streams yet).
//!
//! The recorder is passive: it samples the daemon's state at the dataset's fps — measured joint
//! positions as `observation.state`, the commanded targets as `action` — while someone else
//! drives (teleop, a policy, a script). Each finished episode is written at once: its own data
//! file `data/chunk-CCC/file-FFF.parquet`, then the episode table, tasks, stats and `info.json`
//! rewritten atomically, so a crash mid-episode leaves every finished episode readable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, LargeStringArray, ListArray,
    RecordBatch,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{bail, Context, DatasetError};

const CHUNKS_SIZE: usize = 1000;
const STATS: [&str; 10] = [
    "min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99",
];

/// One recorded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `observation.state`.
    pub state: Vec<f32>,
    /// `action`.
    pub action: Vec<f32>,
}

struct EpisodeMeta {
    index: usize,
    task: String,
    length: usize,
    from: usize,
    stats: Vec<(String, FeatureStats)>,
}

/// Statistics of one feature over some frames (per dimension).
#[derive(Debug, Clone)]
struct FeatureStats {
    int: bool,
    v: [Vec<f64>; 10],
    count: usize,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let x = q * (sorted.len() - 1) as f64;
    let (i, f) = (x.floor() as usize, x - x.floor());
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] * (1.0 - f) + sorted[j] * f
}

/// Per-dimension statistics of `rows` (each row one frame).
fn stats_of(rows: &[Vec<f64>], int: bool) -> FeatureStats {
    let dim = rows.first().map_or(0, Vec::len);
    let mut v: [Vec<f64>; 10] = Default::default();
    for d in 0..dim {
        let mut col: Vec<f64> = rows.iter().map(|r| r[d]).collect();
        col.sort_by(|a, b| a.total_cmp(b));
        let n = col.len() as f64;
        let mean = col.iter().sum::<f64>() / n;
        let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let vals = [
            col[0],
            col[col.len() - 1],
            mean,
            var.sqrt(),
            n,
            quantile(&col, 0.01),
            quantile(&col, 0.10),
            quantile(&col, 0.50),
            quantile(&col, 0.90),
            quantile(&col, 0.99),
        ];
        for (k, x) in vals.into_iter().enumerate() {
            v[k].push(x);
        }
    }
    FeatureStats {
        int,
        v,
        count: rows.len(),
    }
}

/// A LeRobot v3 dataset being written.
pub struct DatasetWriter {
    root: PathBuf,
    fps: u32,
    names: Vec<String>,
    robot_type: String,
    episodes: Vec<EpisodeMeta>,
    tasks: Vec<String>,
    /// every frame so far, per feature, for the dataset's stats
    all: Vec<(String, bool, Vec<Vec<f64>>)>,
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), DatasetError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn fixed_list(rows: &[Vec<f32>], dim: usize) -> Result<ArrayRef, DatasetError> {
    let values: Vec<f32> = rows.iter().flatten().copied().collect();
    let field = Arc::new(Field::new("element", DataType::Float32, true));
    Ok(Arc::new(FixedSizeListArray::try_new(
        field,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )?))
}

impl DatasetWriter {
    /// Start a dataset at `root` (which must not hold one) for joints `names` (`<joint>.pos`).
    pub fn create(
        root: &Path,
        fps: u32,
        names: Vec<String>,
        robot_type: &str,
    ) -> Result<Self, DatasetError> {
        if root.join("meta/info.json").exists() {
            bail!("{} already holds a dataset", root.display());
        }
        if names.iter().any(|n| n.contains('/')) {
            bail!("feature names may not contain '/'");
        }
        if !(1..=1000).contains(&fps) {
            bail!("fps must be within 1..=1000");
        }
        std::fs::create_dir_all(root.join("meta"))
            .with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            fps,
            names,
            robot_type: robot_type.to_string(),
            episodes: Vec::new(),
            tasks: Vec::new(),
            all: Vec::new(),
        })
    }

    /// Episodes written so far.
    pub fn episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Write one finished episode and bring the metadata up to date.
    pub fn add_episode(&mut self, frames: &[Frame], task: &str) -> Result<(), DatasetError> {
        let dim = self.names.len();
        if frames.is_empty() {
            bail!("an episode needs at least one frame");
        }
        if frames
            .iter()
            .any(|f| f.state.len() != dim || f.action.len() != dim)
        {
            bail!("every frame needs {dim} state and action values");
        }
        let ep = self.episodes.len();
        let from: usize = self.episodes.iter().map(|e| e.length).sum();
        let task_index = match self.tasks.iter().position(|t| t == task) {
            Some(i) => i,
            None => {
                self.tasks.push(task.to_string());
                self.tasks.len() - 1
            }
        };
        let n = frames.len();
        let ts: Vec<f32> = (0..n)
            .map(|i| (i as f64 / self.fps as f64) as f32)
            .collect();
        let fi: Vec<i64> = (0..n as i64).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "observation.state",
                fixed_list(
                    &frames.iter().map(|f| f.state.clone()).collect::<Vec<_>>(),
                    dim,
                )?,
            ),
            (
                "action",
                fixed_list(
                    &frames.iter().map(|f| f.action.clone()).collect::<Vec<_>>(),
                    dim,
                )?,
            ),
            ("timestamp", Arc::new(Float32Array::from(ts.clone()))),
            ("frame_index", Arc::new(Int64Array::from(fi.clone()))),
            (
                "episode_index",
                Arc::new(Int64Array::from(vec![ep as i64; n])),
            ),
            (
                "index",
                Arc::new(Int64Array::from(
                    (from as i64..(from + n) as i64).collect::<Vec<_>>(),
                )),
            ),
            (
                "task_index",
                Arc::new(Int64Array::from(vec![task_index as i64; n])),
            ),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            columns.into_iter().map(|(_, a)| a).collect(),
        )?;
        write_parquet(&self.data_path(ep), &batch)?;

        // statistics of this episode, and of everything so far
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let per_feature: Vec<(String, bool, Vec<Vec<f64>>)> = vec![
            (
                "observation.state".into(),
                false,
                frames.iter().map(|f| f64s(&f.state)).collect(),
            ),
            (
                "action".into(),
                false,
                frames.iter().map(|f| f64s(&f.action)).collect(),
            ),
            (
                "timestamp".into(),
                false,
                ts.iter().map(|&t| vec![t as f64]).collect(),
            ),
            (
                "frame_index".into(),
                true,
                fi.iter().map(|&i| vec![i as f64]).collect(),
            ),
            ("episode_index".into(), true, vec![vec![ep as f64]; n]),
            (
                "index".into(),
                true,
                (from..from + n).map(|i| vec![i as f64]).collect(),
            ),
            ("task_index".into(), true, vec![vec![task_index as f64]; n]),
        ];
        let stats = per_feature
            .iter()
            .map(|(k, int, rows)| (k.clone(), stats_of(rows, *int)))
            .collect();
        if self.all.is_empty() {
            self.all = per_feature;
        } else {
            for (acc, (_, _, rows)) in self.all.iter_mut().zip(per_feature) {
                acc.2.extend(rows);
            }
        }
        self.episodes.push(EpisodeMeta {
            index: ep,
            task: task.to_string(),
            length: n,
            from,
            stats,
        });
        self.write_meta()
    }

    fn data_path(&self, ep: usize) -> PathBuf {
        self.root.join(format!(
            "data/chunk-{:03}/file-{:03}.parquet",
            ep / CHUNKS_SIZE,
            ep % CHUNKS_SIZE
        ))
    }

    fn write_meta(&self) -> Result<(), DatasetError> {
        // episodes table
        let eps = &self.episodes;
        let ints = |f: &dyn Fn(&EpisodeMeta) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from(eps.iter().map(f).collect::<Vec<_>>()))
        };
        let mut tasks = ListBuilder::new(StringBuilder::new());
        for e in eps {
            tasks.values().append_value(&e.task);
            tasks.append(true);
        }
        let mut cols: Vec<(String, ArrayRef)> = vec![
            ("episode_index".into(), ints(&|e| e.index as i64)),
            ("tasks".into(), Arc::new(tasks.finish())),
            ("length".into(), ints(&|e| e.length as i64)),
            (
                "data/chunk_index".into(),
                ints(&|e| (e.index / CHUNKS_SIZE) as i64),
            ),
            (
                "data/file_index".into(),
                ints(&|e| (e.index % CHUNKS_SIZE) as i64),
            ),
            ("dataset_from_index".into(), ints(&|e| e.from as i64)),
            (
                "dataset_to_index".into(),
                ints(&|e| (e.from + e.length) as i64),
            ),
        ];
        let features: Vec<(String, bool)> = eps[0]
            .stats
            .iter()
            .map(|(k, s)| (k.clone(), s.int))
            .collect();
        for (fi, (feature, int)) in features.iter().enumerate() {
            for (si, stat) in STATS.iter().enumerate() {
                let name = format!("stats/{feature}/{stat}");
                let as_int = *stat == "count" || (*int && (*stat == "min" || *stat == "max"));
                let col: ArrayRef = if as_int {
                    Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                        eps.iter().map(|e| {
                            let s = &e.stats[fi].1;
                            Some(if *stat == "count" {
                                vec![Some(s.count as i64)]
                            } else {
                                s.v[si].iter().map(|&x| Some(x as i64)).collect()
                            })
                        }),
                    ))
                } else {
                    Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(
                        eps.iter().map(|e| {
                            Some(
                                e.stats[fi].1.v[si]
                                    .iter()
                                    .map(|&x| Some(x))
                                    .collect::<Vec<_>>(),
                            )
                        }),
                    ))
                };
                cols.push((name, col));
            }
        }
        cols.push(("meta/episodes/chunk_index".into(), ints(&|_| 0)));
        cols.push(("meta/episodes/file_index".into(), ints(&|_| 0)));
        let schema = Schema::new(
            cols.iter()
                .map(|(n, a)| Field::new(n.as_str(), a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        let batch =
            RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, a)| a).collect())?;
        write_parquet(
            &self.root.join("meta/episodes/chunk-000/file-000.parquet"),
            &batch,
        )?;

        // tasks: a pandas frame indexed by the task text
        let pandas = serde_json::json!({
            "index_columns": ["__index_level_0__"],
            "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
            "columns": [
                {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                 "numpy_type": "int64", "metadata": null},
                {"name": null, "field_name": "__index_level_0__", "pandas_type": "unicode",
                 "numpy_type": "object", "metadata": null}],
            "attributes": {},
            "creator": {"library": "reachy", "version": env!("CARGO_PKG_VERSION")},
            "pandas_version": "2.2.0"
        });
        let schema = Schema::new(vec![
            Field::new("task_index", DataType::Int64, true),
            Field::new("__index_level_0__", DataType::LargeUtf8, true),
        ])
        .with_metadata([("pandas".to_string(), pandas.to_string())].into());
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(
                    (0..self.tasks.len() as i64).collect::<Vec<_>>(),
                )),
                Arc::new(LargeStringArray::from(self.tasks.clone())),
            ],
        )?;
        write_parquet(&self.root.join("meta/tasks.parquet"), &batch)?;

        // stats.json over every frame
        let mut stats = serde_json::Map::new();
        for (k, int, rows) in &self.all {
            let s = stats_of(rows, *int);
            let mut m = serde_json::Map::new();
            for (si, stat) in STATS.iter().enumerate() {
                let v = if *stat == "count" {
                    serde_json::json!([s.count])
                } else {
                    serde_json::json!(s.v[si])
                };
                m.insert(stat.to_string(), v);
            }
            stats.insert(k.clone(), m.into());
        }
        atomic_write(
            &self.root.join("meta/stats.json"),
            serde_json::to_string_pretty(&stats)?.as_bytes(),
        )?;

        // info.json last: it says how many episodes there are
        let total_frames: usize = eps.iter().map(|e| e.length).sum();
        let vector = |names: &[String]| serde_json::json!({"dtype": "float32", "shape": [names.len()], "names": names});
        let scalar = |dtype: &str| serde_json::json!({"dtype": dtype, "shape": [1], "names": null});
        let info = serde_json::json!({
            "codebase_version": "v3.0",
            "robot_type": self.robot_type,
            "total_episodes": eps.len(),
            "total_frames": total_frames,
            "total_tasks": self.tasks.len(),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": self.fps,
            "splits": {"train": format!("0:{}", eps.len())},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": null,
            "features": {
                "observation.state": vector(&self.names),
                "action": vector(&self.names),
                "timestamp": scalar("float32"),
                "frame_index": scalar("int64"),
                "episode_index": scalar("int64"),
                "index": scalar("int64"),
                "task_index": scalar("int64"),
            }
        });
        atomic_write(
            &self.root.join("meta/info.json"),
            serde_json::to_string_pretty(&info)?.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_dataset_that_replay_reads_back() {
        let dir = std::env::temp_dir().join(format!("reachy-rec-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let names = vec!["a.pos".to_string(), "b.pos".to_string()];
        let mut w = DatasetWriter::create(&dir, 10, names.clone(), "test").unwrap();
        for e in 0..2 {
            let frames: Vec<Frame> = (0..5 + e)
                .map(|i| Frame {
                    state: vec![i as f32, e as f32],
                    action: vec![i as f32 + 0.5, -(e as f32)],
                })
                .collect();
            w.add_episode(&frames, if e == 0 { "wave" } else { "nod" })
                .unwrap();
        }
        assert!(DatasetWriter::create(&dir, 10, names, "test").is_err());
        let ep = crate::read::load_episode(&dir, 1).unwrap();
        assert_eq!(ep.actions.len(), 6);
        assert_eq!(ep.actions[5], vec![5.5, -1.0]);
        assert_eq!(ep.fps, 10.0);
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta/stats.json")).unwrap())
                .unwrap();
        assert_eq!(stats["action"]["count"][0], 11);
        assert_eq!(stats["frame_index"]["max"][0], 5.0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
