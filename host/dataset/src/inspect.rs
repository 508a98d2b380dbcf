//! What a dataset holds (`reachy dataset info`) and whether it is sound (`reachy dataset
//! validate`): for datasets this crate wrote and for those lerobot wrote (several episodes per
//! file included). Every problem names its file and episode.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Float32Array, Float64Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::write::{DatasetSpec, VideoFeature};
use crate::{invalid, Context, DatasetError};

/// The spec (fps, joints, cameras) an `info.json` describes.
pub fn spec_of(info: &serde_json::Value) -> Result<DatasetSpec, DatasetError> {
    let fps = info
        .get("fps")
        .and_then(|v| v.as_f64())
        .filter(|f| f.fract() == 0.0 && (1.0..=1000.0).contains(f))
        .ok_or_else(|| invalid!("no integer fps within 1..=1000"))? as u32;
    let features = info
        .get("features")
        .and_then(|f| f.as_object())
        .ok_or_else(|| invalid!("no features"))?;
    let names = crate::read::feature_names(info, "observation.state")?;
    let mut cameras = Vec::new();
    let mut video = crate::video::VideoOptions::default();
    for (k, f) in features {
        if f.get("dtype").and_then(|d| d.as_str()) != Some("video") {
            continue;
        }
        let shape: Vec<u64> = f
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|s| s.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        let [h, w, 3] = shape[..] else {
            return Err(invalid!(
                "video feature `{k}`: shape {shape:?} is not [H, W, 3]"
            ));
        };
        if let Some(i) = f.get("info") {
            if let Some(g) = i.get("video.g").and_then(|g| g.as_u64()) {
                video.gop = g as u32;
            }
            if let Some(q) = i.get("video.qp").and_then(|g| g.as_u64()) {
                video.qp = q.min(51) as u8;
            }
        }
        cameras.push(VideoFeature {
            key: k.clone(),
            width: w as u32,
            height: h as u32,
        });
    }
    Ok(DatasetSpec {
        fps,
        names,
        robot_type: info
            .get("robot_type")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_string(),
        cameras,
        video,
    })
}

fn read_info(root: &Path) -> Result<serde_json::Value, DatasetError> {
    let path = root.join("meta/info.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn batches(path: &Path) -> Result<Vec<RecordBatch>, DatasetError> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{}: not a parquet file (truncated?)", path.display()))?
        .build()
        .with_context(|| format!("reading {}", path.display()))?;
    reader
        .map(|b| b.with_context(|| format!("reading {}", path.display())))
        .collect()
}

fn ints(b: &RecordBatch, name: &str) -> Option<Vec<i64>> {
    let c = b
        .column_by_name(name)?
        .as_any()
        .downcast_ref::<Int64Array>()?;
    Some(c.values().to_vec())
}

fn floats(b: &RecordBatch, name: &str) -> Option<Vec<f64>> {
    let c = b.column_by_name(name)?;
    if let Some(c) = c.as_any().downcast_ref::<Float64Array>() {
        return Some(c.values().to_vec());
    }
    let c = c.as_any().downcast_ref::<Float32Array>()?;
    Some(c.values().iter().map(|&x| x as f64).collect())
}

/// The tasks of `meta/tasks.parquet`, in `task_index` order.
pub fn read_tasks(root: &Path) -> Result<Vec<String>, DatasetError> {
    let path = root.join("meta/tasks.parquet");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut tasks: Vec<(i64, String)> = Vec::new();
    for b in batches(&path)? {
        let idx = ints(&b, "task_index")
            .ok_or_else(|| invalid!("{}: no int64 column task_index", path.display()))?;
        let col = b
            .column_by_name("__index_level_0__")
            .or_else(|| b.column_by_name("task"))
            .ok_or_else(|| invalid!("{}: no task text column", path.display()))?;
        let text: Vec<String> = if let Some(s) = col.as_any().downcast_ref::<LargeStringArray>() {
            (0..s.len()).map(|i| s.value(i).to_string()).collect()
        } else if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
            (0..s.len()).map(|i| s.value(i).to_string()).collect()
        } else {
            return Err(invalid!("{}: the task column is not text", path.display()));
        };
        tasks.extend(idx.into_iter().zip(text));
    }
    tasks.sort_by_key(|t| t.0);
    for (k, (i, _)) in tasks.iter().enumerate() {
        if *i != k as i64 {
            return Err(invalid!(
                "{}: task indices are not 0..{}",
                path.display(),
                tasks.len()
            ));
        }
    }
    Ok(tasks.into_iter().map(|t| t.1).collect())
}

/// The episode a file of this crate's layout (one file per episode) belongs to: `data/`,
/// `meta/episodes/` and `videos/<key>/` files named `chunk-CCC/file-FFF.*`.
pub fn episode_of_file(root: &Path, path: &Path) -> Option<usize> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
    let (chunk, file) = match parts[..] {
        ["data", c, f] | ["meta", "episodes", c, f] | ["videos", _, c, f] => (c, f),
        _ => return None,
    };
    let c: usize = chunk.strip_prefix("chunk-")?.parse().ok()?;
    let stem = file.strip_prefix("file-")?.split('.').next()?;
    let f: usize = stem.parse().ok()?;
    Some(c * crate::write::CHUNKS_SIZE + f)
}

/// One row of the episodes table.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeRow {
    /// `episode_index`.
    pub index: i64,
    /// `length` (frames).
    pub length: i64,
    /// `dataset_from_index`.
    pub from: i64,
    /// `dataset_to_index` (exclusive).
    pub to: i64,
    /// `data/chunk_index`, `data/file_index`.
    pub data: (i64, i64),
    /// Per camera key: chunk, file, from and to timestamps.
    pub videos: Vec<(String, i64, i64, f64, f64)>,
    /// The file it came from.
    pub file: PathBuf,
}

/// The episodes table, in file order.
pub fn episodes(root: &Path, video_keys: &[String]) -> Result<Vec<EpisodeRow>, DatasetError> {
    let mut rows = Vec::new();
    let files = crate::read::chunk_files(&root.join("meta/episodes"));
    if files.is_empty() {
        return Err(invalid!(
            "{}: no meta/episodes/chunk-*/file-*.parquet",
            root.display()
        ));
    }
    for path in files {
        for b in batches(&path)? {
            let col = |n: &str| {
                ints(&b, n).ok_or_else(|| invalid!("{}: no int64 column `{n}`", path.display()))
            };
            let (idx, len, from, to) = (
                col("episode_index")?,
                col("length")?,
                col("dataset_from_index")?,
                col("dataset_to_index")?,
            );
            let (dc, df) = (col("data/chunk_index")?, col("data/file_index")?);
            let mut vids = Vec::new();
            for k in video_keys {
                let c = col(&format!("videos/{k}/chunk_index"))?;
                let f = col(&format!("videos/{k}/file_index"))?;
                let t0 = floats(&b, &format!("videos/{k}/from_timestamp")).ok_or_else(|| {
                    invalid!("{}: no column `videos/{k}/from_timestamp`", path.display())
                })?;
                let t1 = floats(&b, &format!("videos/{k}/to_timestamp")).ok_or_else(|| {
                    invalid!("{}: no column `videos/{k}/to_timestamp`", path.display())
                })?;
                vids.push((c, f, t0, t1));
            }
            for i in 0..b.num_rows() {
                rows.push(EpisodeRow {
                    index: idx[i],
                    length: len[i],
                    from: from[i],
                    to: to[i],
                    data: (dc[i], df[i]),
                    videos: video_keys
                        .iter()
                        .zip(&vids)
                        .map(|(k, (c, f, t0, t1))| (k.clone(), c[i], f[i], t0[i], t1[i]))
                        .collect(),
                    file: path.clone(),
                });
            }
        }
    }
    Ok(rows)
}

fn format_path(template: &str, key: &str, chunk: i64, file: i64) -> String {
    template
        .replace("{video_key}", key)
        .replace("{chunk_index:03d}", &format!("{chunk:03}"))
        .replace("{file_index:03d}", &format!("{file:03}"))
}

/// One camera of a dataset, as `reachy dataset info` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraInfo {
    /// Feature key.
    pub key: String,
    /// Codec of its first video file (`avc1`, `av01`, …).
    pub codec: String,
    /// Width × height.
    pub size: [u32; 2],
    /// Bytes of its video files.
    pub bytes: u64,
}

/// What `reachy dataset info` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatasetInfo {
    /// Root.
    pub root: PathBuf,
    /// `robot_type`.
    pub robot_type: String,
    /// Episodes.
    pub episodes: u64,
    /// Frames.
    pub frames: u64,
    /// Frames per second.
    pub fps: u32,
    /// Duration (s).
    pub duration_s: f64,
    /// Feature keys with dtype and shape.
    pub features: Vec<(String, String, Vec<u64>)>,
    /// Cameras.
    pub cameras: Vec<CameraInfo>,
    /// Tasks.
    pub tasks: Vec<String>,
    /// Bytes of the whole directory.
    pub bytes: u64,
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += dir_bytes(&p);
        } else {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

fn first_mp4(dir: &Path) -> Option<PathBuf> {
    let mut files = Vec::new();
    for c in std::fs::read_dir(dir).ok()?.flatten() {
        for f in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "mp4") {
                files.push(f.path());
            }
        }
    }
    files.sort();
    files.into_iter().next()
}

/// What the dataset at `root` holds.
pub fn info(root: &Path) -> Result<DatasetInfo, DatasetError> {
    let meta = read_info(root)?;
    let spec = spec_of(&meta).map_err(|e| invalid!("{}/meta/info.json: {e}", root.display()))?;
    let frames = meta
        .get("total_frames")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let mut features = Vec::new();
    if let Some(f) = meta.get("features").and_then(|f| f.as_object()) {
        for (k, v) in f {
            let dtype = v
                .get("dtype")
                .and_then(|d| d.as_str())
                .unwrap_or("?")
                .to_string();
            let shape = v
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|s| s.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default();
            features.push((k.clone(), dtype, shape));
        }
    }
    let cameras = spec
        .cameras
        .iter()
        .map(|c| {
            let dir = root.join("videos").join(&c.key);
            let codec = first_mp4(&dir)
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| crate::mp4::parse(&b).ok())
                .map_or_else(|| "?".to_string(), |i| i.codec);
            CameraInfo {
                key: c.key.clone(),
                codec,
                size: [c.width, c.height],
                bytes: dir_bytes(&dir),
            }
        })
        .collect();
    Ok(DatasetInfo {
        root: root.to_path_buf(),
        robot_type: spec.robot_type,
        episodes: meta
            .get("total_episodes")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        frames,
        fps: spec.fps,
        duration_s: frames as f64 / spec.fps as f64,
        features,
        cameras,
        tasks: read_tasks(root)?,
        bytes: dir_bytes(root),
    })
}

/// One thing wrong with a dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    /// The file concerned.
    pub file: PathBuf,
    /// The episode concerned, if one.
    pub episode: Option<i64>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.episode {
            Some(e) => write!(f, "{}: episode {e}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Timestamps must match `frame_index / fps` within lerobot's default tolerance.
const TOLERANCE_S: f64 = 1e-4;

/// Check the dataset at `root`: metadata, episode indices and offsets, every data file's
/// timestamps and indices, every video's frame count against its episodes (H.264 videos
/// decoded frame by frame; other codecs by their index), the statistics, and files left by an
/// interrupted write. An empty list: sound.
pub fn validate(root: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut say = |file: PathBuf, episode: Option<i64>, message: String| {
        problems.push(Problem {
            file,
            episode,
            message,
        })
    };
    let info_path = root.join("meta/info.json");
    let meta = match read_info(root) {
        Ok(m) => m,
        Err(e) => {
            say(info_path, None, e.to_string());
            return problems;
        }
    };
    let spec = match spec_of(&meta) {
        Ok(s) => s,
        Err(e) => {
            say(info_path, None, e.to_string());
            return problems;
        }
    };
    let fps = spec.fps as f64;
    let keys: Vec<String> = spec.cameras.iter().map(|c| c.key.clone()).collect();
    let total_episodes = meta
        .get("total_episodes")
        .and_then(|v| v.as_i64())
        .unwrap_or(-1);
    let total_frames = meta
        .get("total_frames")
        .and_then(|v| v.as_i64())
        .unwrap_or(-1);
    let rows = match episodes(root, &keys) {
        Ok(r) => r,
        Err(e) => {
            say(root.join("meta/episodes"), None, e.to_string());
            return problems;
        }
    };
    if rows.len() as i64 != total_episodes {
        say(
            info_path.clone(),
            None,
            format!(
                "total_episodes is {total_episodes} but the episodes table has {} rows",
                rows.len()
            ),
        );
    }
    let mut expect_from = 0i64;
    for (k, r) in rows.iter().enumerate() {
        if r.index != k as i64 {
            say(
                r.file.clone(),
                Some(r.index),
                format!("at row {k}: episodes must be 0..N-1 in order"),
            );
        }
        if r.to - r.from != r.length || r.length <= 0 {
            say(
                r.file.clone(),
                Some(r.index),
                format!("length {} but indices {}..{}", r.length, r.from, r.to),
            );
        }
        if r.from != expect_from {
            say(
                r.file.clone(),
                Some(r.index),
                format!(
                    "starts at frame {} where the previous episode ended at {expect_from}",
                    r.from
                ),
            );
        }
        expect_from = r.to;
    }
    if expect_from != total_frames {
        say(
            info_path.clone(),
            None,
            format!("total_frames is {total_frames} but the episodes hold {expect_from}"),
        );
    }

    // data files: every row where its episode says
    let data_template = meta
        .get("data_path")
        .and_then(|p| p.as_str())
        .unwrap_or("data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")
        .to_string();
    let mut data_files: Vec<(i64, i64)> = rows.iter().map(|r| r.data).collect();
    data_files.sort();
    data_files.dedup();
    // per episode: (frame_index, timestamp, index) rows seen
    let mut seen: std::collections::BTreeMap<i64, Vec<(i64, f64, i64)>> = Default::default();
    for (c, f) in data_files {
        let path = root.join(format_path(&data_template, "", c, f));
        let bs = match batches(&path) {
            Ok(b) => b,
            Err(e) => {
                say(path, None, format!("missing or unreadable: {e}"));
                continue;
            }
        };
        for b in bs {
            let (Some(ep), Some(fi), Some(ts), Some(gi)) = (
                ints(&b, "episode_index"),
                ints(&b, "frame_index"),
                floats(&b, "timestamp"),
                ints(&b, "index"),
            ) else {
                say(
                    path.clone(),
                    None,
                    "lacks episode_index, frame_index, timestamp or index".into(),
                );
                break;
            };
            for i in 0..b.num_rows() {
                seen.entry(ep[i]).or_default().push((fi[i], ts[i], gi[i]));
            }
        }
    }
    for r in &rows {
        let file = root.join(format_path(&data_template, "", r.data.0, r.data.1));
        let Some(frames) = seen.get_mut(&r.index) else {
            say(file, Some(r.index), "no data rows".into());
            continue;
        };
        frames.sort_by_key(|f| f.0);
        if frames.len() as i64 != r.length {
            say(
                file.clone(),
                Some(r.index),
                format!("{} data rows for a length of {}", frames.len(), r.length),
            );
        }
        if let Some((k, (fi, ts, gi))) = frames.iter().enumerate().find(|(k, (fi, ts, gi))| {
            *fi != *k as i64 || (ts - *fi as f64 / fps).abs() > TOLERANCE_S || *gi != r.from + fi
        }) {
            say(
                file,
                Some(r.index),
                format!(
                    "row {k}: frame_index {fi}, timestamp {ts}, index {gi} (expected frame {k} \
                     at {:.6} s, index {})",
                    k as f64 / fps,
                    r.from + k as i64
                ),
            );
        }
    }
    for ep in seen.keys() {
        if !rows.iter().any(|r| r.index == *ep) {
            say(
                root.join("data"),
                Some(*ep),
                "data rows of an episode the table does not have".into(),
            );
        }
    }

    // videos: each episode's span holds its frames
    let video_template = meta
        .get("video_path")
        .and_then(|p| p.as_str())
        .unwrap_or("videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
        .to_string();
    let mut parsed: std::collections::BTreeMap<PathBuf, Result<crate::mp4::Mp4Info, String>> =
        Default::default();
    for r in &rows {
        for (key, c, f, t0, t1) in &r.videos {
            let path = root.join(format_path(&video_template, key, *c, *f));
            let info = parsed.entry(path.clone()).or_insert_with(|| {
                let bytes =
                    std::fs::read(&path).map_err(|e| format!("missing or unreadable: {e}"))?;
                let info = crate::mp4::parse(&bytes).map_err(|e| e.to_string())?;
                // H.264 is decoded, frame by frame (other codecs: the index's count)
                if info.codec == "avc1" {
                    let n = crate::video::decoded_frames(&bytes).map_err(|e| e.to_string())?;
                    if n as u64 != info.frames {
                        return Err(format!(
                            "{} frames in the index but {n} decode",
                            info.frames
                        ));
                    }
                }
                Ok(info)
            });
            let info = match info {
                Ok(i) => i,
                Err(e) => {
                    say(path, Some(r.index), e.clone());
                    continue;
                }
            };
            let span = ((t1 - t0) * fps).round() as i64;
            if span != r.length {
                say(
                    path.clone(),
                    Some(r.index),
                    format!(
                        "{key}: {t0}..{t1} s spans {span} frames for a length of {}",
                        r.length
                    ),
                );
            }
            let end_frame = (t1 * fps).round() as u64;
            if end_frame > info.frames {
                say(
                    path,
                    Some(r.index),
                    format!(
                        "{key}: the episode ends at frame {end_frame} but the video has {} frames",
                        info.frames
                    ),
                );
            }
        }
    }

    // statistics
    let stats_path = root.join("meta/stats.json");
    match std::fs::read_to_string(&stats_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
    {
        Err(e) => say(
            stats_path.clone(),
            None,
            format!("missing or unreadable: {e}"),
        ),
        Ok(stats) => {
            for k in std::iter::once("observation.state".to_string())
                .chain(std::iter::once("action".to_string()))
                .chain(keys.iter().cloned())
            {
                match stats.get(&k).map(|s| {
                    crate::stats::Stats::from_json(s, k.starts_with("observation.images."))
                }) {
                    None => say(stats_path.clone(), None, format!("no statistics of `{k}`")),
                    Some(Err(e)) => say(stats_path.clone(), None, format!("`{k}`: {e}")),
                    Some(Ok(s)) => {
                        let want = if s.image { 3 } else { spec.names.len() };
                        let all = s.min.iter().chain(&s.max).chain(&s.mean).chain(&s.std);
                        if s.mean.len() != want || all.clone().any(|x| !x.is_finite()) {
                            say(
                                stats_path.clone(),
                                None,
                                format!(
                                    "`{k}`: {} values (expected {want}) or a non-finite one",
                                    s.mean.len()
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    // what an interrupted write leaves
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".partial") || n.ends_with(".tmp"))
            {
                say(
                    p,
                    None,
                    "left by an interrupted write (`reachy record --resume` removes it)".into(),
                );
            }
        }
    }
    problems
}
