//! Writing LeRobot v3 datasets: state, action and camera videos, one commit point per episode.
//!
//! [`DatasetWriter::begin_episode`] starts an [`EpisodeWriter`]: its frames' joints stay in
//! memory (a few kB a second), each camera's frames go through a bounded queue to an encoder
//! thread that writes the episode's MP4 as they come. [`DatasetWriter::finish_episode`] then
//! makes the episode durable at once, in an order where a crash at any point leaves every
//! earlier episode loadable: the videos finalised and synced, the episode's data file, its
//! episodes-table file, the tasks, `stats.json` (a running aggregate) and last `info.json` (the
//! commit point) each written to a temporary name, synced and renamed. Every episode has its
//! own data, video and episodes-table files, so closing one costs the same however large the
//! dataset has grown. [`DatasetWriter::resume`] continues after the last committed episode and
//! removes what an interrupted one left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow_array::builder::{Float64Builder, ListBuilder, StringBuilder};
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, LargeStringArray,
    ListArray, RecordBatch,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::stats::{Stats, NAMES as STATS};
use crate::video::{VideoOptions, VideoSummary, VideoWriter};
use crate::{bail, invalid, Context, DatasetError};

/// Files per chunk folder.
pub const CHUNKS_SIZE: usize = 1000;

/// One recorded frame's vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `observation.state`.
    pub state: Vec<f32>,
    /// `action`.
    pub action: Vec<f32>,
}

/// One camera stream of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFeature {
    /// Feature key, `observation.images.<name>`.
    pub key: String,
    /// Width (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
}

/// What a dataset holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// Frames per second.
    pub fps: u32,
    /// Joint feature names (`<joint>.pos`) of `observation.state` and `action`.
    pub names: Vec<String>,
    /// `robot_type` of `info.json`.
    pub robot_type: String,
    /// Camera streams.
    pub cameras: Vec<VideoFeature>,
    /// How they are encoded.
    pub video: VideoOptions,
}

/// The temporary name of `path` while it is written.
pub(crate) fn partial(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn sync_dir(dir: &Path) {
    // durability of the renames; some file systems refuse to sync a directory, which costs
    // nothing here
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().ok();
    }
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    use std::io::Write;
    let tmp = partial(path);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), DatasetError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = partial(path);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(batch)?;
    let file = w.into_inner()?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn fixed_list(rows: &[&[f32]], dim: usize) -> Result<ArrayRef, DatasetError> {
    let values: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let field = Arc::new(Field::new("element", DataType::Float32, true));
    Ok(Arc::new(FixedSizeListArray::try_new(
        field,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )?))
}

fn batch(cols: Vec<(String, ArrayRef)>) -> Result<RecordBatch, DatasetError> {
    let schema = Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(n.as_str(), a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        cols.into_iter().map(|(_, a)| a).collect(),
    )?)
}

/// `chunk-CCC/file-FFF` of episode `ep` (one file per episode).
fn chunk_file(ep: usize) -> (usize, usize) {
    (ep / CHUNKS_SIZE, ep % CHUNKS_SIZE)
}

/// Where episode `ep`'s files are, relative to the root.
pub fn data_path(ep: usize) -> String {
    let (c, f) = chunk_file(ep);
    format!("data/chunk-{c:03}/file-{f:03}.parquet")
}

/// The episodes-table file of episode `ep`.
pub fn episodes_path(ep: usize) -> String {
    let (c, f) = chunk_file(ep);
    format!("meta/episodes/chunk-{c:03}/file-{f:03}.parquet")
}

/// The video of camera `key` for episode `ep`.
pub fn video_path(key: &str, ep: usize) -> String {
    let (c, f) = chunk_file(ep);
    format!("videos/{key}/chunk-{c:03}/file-{f:03}.mp4")
}

/// The features every dataset has besides the vectors and the videos.
const INDEX_FEATURES: [(&str, &str); 5] = [
    ("timestamp", "float32"),
    ("frame_index", "int64"),
    ("episode_index", "int64"),
    ("index", "int64"),
    ("task_index", "int64"),
];

/// A LeRobot v3 dataset being written.
pub struct DatasetWriter {
    root: PathBuf,
    spec: DatasetSpec,
    episodes: usize,
    frames: usize,
    tasks: Vec<String>,
    /// running aggregate per feature
    stats: BTreeMap<String, Stats>,
    removed: Vec<PathBuf>,
}

struct CameraStream {
    tx: SyncSender<Arc<Vec<u8>>>,
    queued: Arc<AtomicUsize>,
    thread: JoinHandle<Result<VideoSummary, DatasetError>>,
}

/// An episode being recorded ([`DatasetWriter::begin_episode`]).
pub struct EpisodeWriter {
    index: usize,
    task: String,
    frames: Vec<Frame>,
    cameras: Vec<CameraStream>,
    queue_full: u64,
    dim: usize,
    image_sizes: Vec<usize>,
}

/// What [`EpisodeWriter::push`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// An encoder's queue was full: the frame waited for room (nothing is dropped).
    pub waited: bool,
}

/// A committed episode.
#[derive(Debug, Clone)]
pub struct EpisodeReport {
    /// Its index.
    pub index: usize,
    /// Frames.
    pub frames: usize,
    /// Pushes that found an encoder queue full.
    pub queue_full: u64,
    /// Seconds from [`DatasetWriter::finish_episode`]'s call to the commit (encoders drained,
    /// everything synced).
    pub commit_s: f64,
    /// Seconds the encoders spent converting and encoding, over all cameras.
    pub encode_s: f64,
    /// Bytes of the episode's videos.
    pub video_bytes: u64,
}

impl EpisodeWriter {
    /// Frames so far.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame was pushed.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The episode's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Frames waiting in the fullest encoder queue.
    pub fn backlog(&self) -> usize {
        self.cameras
            .iter()
            .map(|c| c.queued.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Add a frame: its vectors and one `rgb8` image per camera, in the spec's order. Images
    /// are shared, not copied: a camera that had no new frame passes the previous one again.
    pub fn push(&mut self, frame: Frame, images: &[Arc<Vec<u8>>]) -> Result<Pushed, DatasetError> {
        if frame.state.len() != self.dim || frame.action.len() != self.dim {
            bail!("every frame needs {} state and action values", self.dim);
        }
        if frame
            .state
            .iter()
            .chain(&frame.action)
            .any(|v| !v.is_finite())
        {
            bail!("a frame with a non-finite state or action");
        }
        if images.len() != self.cameras.len() {
            bail!("{} images for {} cameras", images.len(), self.cameras.len());
        }
        for (img, &size) in images.iter().zip(&self.image_sizes) {
            if img.len() != size {
                bail!("an image of {} bytes where {size} are expected", img.len());
            }
        }
        let mut waited = false;
        for k in 0..self.cameras.len() {
            let img = images[k].clone();
            let cam = &self.cameras[k];
            cam.queued.fetch_add(1, Ordering::Relaxed);
            let sent = match cam.tx.try_send(img) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(img)) => {
                    waited = true;
                    cam.tx.send(img).map_err(|_| ())
                }
                Err(TrySendError::Disconnected(_)) => Err(()),
            };
            if sent.is_err() {
                // the encoder stopped: its error says why
                let cam = self.cameras.remove(k);
                drop(cam.tx);
                return Err(match cam.thread.join() {
                    Ok(Err(e)) => e,
                    _ => invalid!("a video encoder stopped"),
                });
            }
        }
        if waited {
            self.queue_full += 1;
        }
        self.frames.push(frame);
        Ok(Pushed { waited })
    }
}

impl DatasetWriter {
    /// Start a dataset at `root`, which must not hold one.
    pub fn create(root: &Path, spec: DatasetSpec) -> Result<Self, DatasetError> {
        if root.join("meta/info.json").exists() {
            bail!(
                "{} already holds a dataset (--resume continues it)",
                root.display()
            );
        }
        check_spec(&spec)?;
        std::fs::create_dir_all(root.join("meta"))
            .with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            spec,
            episodes: 0,
            frames: 0,
            tasks: Vec::new(),
            stats: BTreeMap::new(),
            removed: Vec::new(),
        })
    }

    /// Continue the dataset at `root` after its last committed episode, removing what an
    /// interrupted episode left; `spec` must be what the dataset holds (fps, joints, cameras).
    pub fn resume(root: &Path, spec: DatasetSpec) -> Result<Self, DatasetError> {
        let info_path = root.join("meta/info.json");
        if !info_path.exists() {
            return Self::create(root, spec);
        }
        check_spec(&spec)?;
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&info_path)
                .with_context(|| format!("reading {}", info_path.display()))?,
        )
        .with_context(|| format!("parsing {}", info_path.display()))?;
        let have =
            crate::inspect::spec_of(&info).map_err(|e| invalid!("{}: {e}", info_path.display()))?;
        if have.fps != spec.fps || have.names != spec.names || have.cameras != spec.cameras {
            bail!(
                "--resume: {} holds {} fps, joints [{}] and cameras [{}]; this recording has {} \
                 fps, joints [{}] and cameras [{}]",
                root.display(),
                have.fps,
                have.names.join(", "),
                describe(&have.cameras),
                spec.fps,
                spec.names.join(", "),
                describe(&spec.cameras)
            );
        }
        let count = |k: &str| info.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let (episodes, frames) = (count("total_episodes"), count("total_frames"));
        let tasks = crate::inspect::read_tasks(root)?;
        let mut stats = BTreeMap::new();
        if episodes > 0 {
            let path = root.join("meta/stats.json");
            let v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("parsing {}", path.display()))?;
            let obj = v
                .as_object()
                .ok_or_else(|| invalid!("{}: not an object", path.display()))?;
            for (k, s) in obj {
                let image = k.starts_with("observation.images.");
                let s = Stats::from_json(s, image)
                    .map_err(|e| invalid!("{}: `{k}`: {e}", path.display()))?;
                stats.insert(k.clone(), s);
            }
        }
        let mut w = Self {
            root: root.to_path_buf(),
            spec,
            episodes,
            frames,
            tasks,
            stats,
            removed: Vec::new(),
        };
        w.removed = w.remove_uncommitted()?;
        Ok(w)
    }

    /// Remove the files of episodes past the last commit and every temporary file.
    fn remove_uncommitted(&self) -> Result<Vec<PathBuf>, DatasetError> {
        let mut removed = Vec::new();
        let mut dirs = vec![self.root.join("data"), self.root.join("meta")];
        for c in &self.spec.cameras {
            dirs.push(self.root.join("videos").join(&c.key));
        }
        let mut stack = dirs;
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let stale = name.ends_with(".partial")
                    || name.ends_with(".tmp")
                    || crate::inspect::episode_of_file(&self.root, &p)
                        .is_some_and(|ep| ep >= self.episodes);
                if stale {
                    std::fs::remove_file(&p)
                        .with_context(|| format!("removing {}", p.display()))?;
                    removed.push(p);
                }
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// Files [`DatasetWriter::resume`] removed: what an interrupted episode left.
    pub fn removed(&self) -> &[PathBuf] {
        &self.removed
    }

    /// Episodes committed so far.
    pub fn episodes(&self) -> usize {
        self.episodes
    }

    /// Frames committed so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// What the dataset holds.
    pub fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    /// Start the next episode: one encoder thread per camera, each with a queue of `queue`
    /// frames.
    pub fn begin_episode(&self, task: &str, queue: usize) -> Result<EpisodeWriter, DatasetError> {
        let index = self.episodes;
        let mut cameras = Vec::new();
        for c in &self.spec.cameras {
            let path = self.root.join(video_path(&c.key, index));
            let mut video =
                VideoWriter::create(&path, c.width, c.height, self.spec.fps, self.spec.video)?;
            let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(queue.max(1));
            let queued = Arc::new(AtomicUsize::new(0));
            let q = queued.clone();
            let thread = std::thread::Builder::new()
                .name(format!("encode {}", c.key))
                .spawn(move || {
                    while let Ok(img) = rx.recv() {
                        let r = video.push(&img);
                        q.fetch_sub(1, Ordering::Relaxed);
                        if let Err(e) = r {
                            video.discard();
                            return Err(e);
                        }
                    }
                    video.finish()
                })
                .with_context(|| "starting an encoder thread")?;
            cameras.push(CameraStream { tx, queued, thread });
        }
        Ok(EpisodeWriter {
            index,
            task: task.to_string(),
            frames: Vec::new(),
            cameras,
            queue_full: 0,
            dim: self.spec.names.len(),
            image_sizes: self
                .spec
                .cameras
                .iter()
                .map(|c| (c.width * c.height * 3) as usize)
                .collect(),
        })
    }

    /// Drop an episode (re-record it): its encoders stop and its partial files go.
    pub fn discard_episode(&self, ep: EpisodeWriter) {
        for c in ep.cameras {
            drop(c.tx);
            c.thread.join().ok();
        }
        for c in &self.spec.cameras {
            let path = self.root.join(video_path(&c.key, ep.index));
            std::fs::remove_file(&path).ok();
            std::fs::remove_file(partial(&path)).ok();
        }
    }

    /// Commit `ep`: when this returns, the episode is on disk, synced, and in the metadata.
    pub fn finish_episode(&mut self, ep: EpisodeWriter) -> Result<EpisodeReport, DatasetError> {
        let t0 = std::time::Instant::now();
        if ep.index != self.episodes {
            bail!("episode {} finished out of order", ep.index);
        }
        let n = ep.frames.len();
        let mut videos = Vec::new();
        let mut failure = None;
        for c in ep.cameras {
            drop(c.tx);
            match c.thread.join() {
                Ok(Ok(s)) => videos.push(s),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(invalid!("a video encoder panicked"))),
            }
        }
        if n == 0 {
            failure = failure.or(Some(invalid!("an episode needs at least one frame")));
        }
        for (v, c) in videos.iter().zip(&self.spec.cameras) {
            if v.frames != n {
                failure = failure.or(Some(invalid!(
                    "camera {}: {} video frames for {n} rows",
                    c.key,
                    v.frames
                )));
            }
        }
        if let Some(e) = failure {
            for c in &self.spec.cameras {
                std::fs::remove_file(self.root.join(video_path(&c.key, ep.index))).ok();
            }
            return Err(e);
        }
        let index = ep.index;
        let fps = self.spec.fps as f64;
        let from = self.frames;
        let task_index = match self.tasks.iter().position(|t| *t == ep.task) {
            Some(i) => i,
            None => {
                self.tasks.push(ep.task.clone());
                self.write_tasks()?;
                self.tasks.len() - 1
            }
        };
        let dim = self.spec.names.len();
        let ts: Vec<f32> = (0..n).map(|i| (i as f64 / fps) as f32).collect();
        let fi: Vec<i64> = (0..n as i64).collect();
        let gi: Vec<i64> = (from as i64..(from + n) as i64).collect();
        let states: Vec<&[f32]> = ep.frames.iter().map(|f| f.state.as_slice()).collect();
        let actions: Vec<&[f32]> = ep.frames.iter().map(|f| f.action.as_slice()).collect();
        let data = batch(vec![
            ("observation.state".into(), fixed_list(&states, dim)?),
            ("action".into(), fixed_list(&actions, dim)?),
            ("timestamp".into(), Arc::new(Float32Array::from(ts.clone()))),
            ("frame_index".into(), Arc::new(Int64Array::from(fi.clone()))),
            (
                "episode_index".into(),
                Arc::new(Int64Array::from(vec![index as i64; n])),
            ),
            ("index".into(), Arc::new(Int64Array::from(gi.clone()))),
            (
                "task_index".into(),
                Arc::new(Int64Array::from(vec![task_index as i64; n])),
            ),
        ])?;
        write_parquet(&self.root.join(data_path(index)), &data)?;

        // this episode's statistics
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let col = |v: &[i64]| v.iter().map(|&x| vec![x as f64]).collect::<Vec<_>>();
        let mut stats: Vec<(String, Stats)> = vec![
            (
                "observation.state".into(),
                Stats::of_rows(&states.iter().map(|s| f64s(s)).collect::<Vec<_>>()),
            ),
            (
                "action".into(),
                Stats::of_rows(&actions.iter().map(|s| f64s(s)).collect::<Vec<_>>()),
            ),
        ];
        for (v, c) in videos.iter().zip(&self.spec.cameras) {
            stats.push((c.key.clone(), Stats::of_histogram(&v.histogram, n as u64)));
        }
        stats.push((
            "timestamp".into(),
            Stats::of_rows(&ts.iter().map(|&t| vec![t as f64]).collect::<Vec<_>>()),
        ));
        stats.push(("frame_index".into(), Stats::of_rows(&col(&fi))));
        stats.push((
            "episode_index".into(),
            Stats::of_rows(&vec![vec![index as f64]; n]),
        ));
        stats.push(("index".into(), Stats::of_rows(&col(&gi))));
        stats.push((
            "task_index".into(),
            Stats::of_rows(&vec![vec![task_index as f64]; n]),
        ));
        self.write_episode_row(index, &ep.task, n, from, &stats)?;

        // the running aggregate, then the commit
        for (k, s) in &stats {
            match self.stats.get_mut(k) {
                Some(acc) => acc.merge(s)?,
                None => {
                    self.stats.insert(k.clone(), s.clone());
                }
            }
        }
        let json: serde_json::Map<String, serde_json::Value> = self
            .stats
            .iter()
            .map(|(k, s)| (k.clone(), s.to_json()))
            .collect();
        atomic_write(
            &self.root.join("meta/stats.json"),
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )?;
        self.episodes += 1;
        self.frames += n;
        if let Err(e) = self.write_info() {
            self.episodes -= 1;
            self.frames -= n;
            return Err(e);
        }
        for d in ["meta", "meta/episodes", "data"] {
            sync_dir(&self.root.join(d));
        }
        sync_dir(&self.root.join(data_path(index)).with_file_name(""));
        sync_dir(&self.root.join(episodes_path(index)).with_file_name(""));
        for c in &self.spec.cameras {
            sync_dir(&self.root.join(video_path(&c.key, index)).with_file_name(""));
        }
        Ok(EpisodeReport {
            index,
            frames: n,
            queue_full: ep.queue_full,
            commit_s: t0.elapsed().as_secs_f64(),
            encode_s: videos.iter().map(|v| v.encode_s).sum(),
            video_bytes: videos.iter().map(|v| v.bytes).sum(),
        })
    }

    /// One episode as a vector episode of the old API: vectors only, no cameras.
    pub fn add_episode(
        &mut self,
        frames: &[Frame],
        task: &str,
    ) -> Result<EpisodeReport, DatasetError> {
        if !self.spec.cameras.is_empty() {
            bail!("a dataset with cameras needs their images: use begin_episode");
        }
        let mut ep = self.begin_episode(task, 1)?;
        for f in frames {
            ep.push(f.clone(), &[])?;
        }
        self.finish_episode(ep)
    }

    fn write_episode_row(
        &self,
        index: usize,
        task: &str,
        n: usize,
        from: usize,
        stats: &[(String, Stats)],
    ) -> Result<(), DatasetError> {
        let int = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
        let (chunk, file) = chunk_file(index);
        let mut tasks = ListBuilder::new(StringBuilder::new());
        tasks.values().append_value(task);
        tasks.append(true);
        let mut cols: Vec<(String, ArrayRef)> = vec![
            ("episode_index".into(), int(index as i64)),
            ("tasks".into(), Arc::new(tasks.finish())),
            ("length".into(), int(n as i64)),
            ("data/chunk_index".into(), int(chunk as i64)),
            ("data/file_index".into(), int(file as i64)),
            ("dataset_from_index".into(), int(from as i64)),
            ("dataset_to_index".into(), int((from + n) as i64)),
        ];
        let duration = n as f64 / self.spec.fps as f64;
        for c in &self.spec.cameras {
            let k = &c.key;
            cols.push((format!("videos/{k}/chunk_index"), int(chunk as i64)));
            cols.push((format!("videos/{k}/file_index"), int(file as i64)));
            cols.push((
                format!("videos/{k}/from_timestamp"),
                Arc::new(Float64Array::from(vec![0.0])),
            ));
            cols.push((
                format!("videos/{k}/to_timestamp"),
                Arc::new(Float64Array::from(vec![duration])),
            ));
        }
        for (feature, s) in stats {
            let int_feature = INDEX_FEATURES
                .iter()
                .any(|(k, t)| k == feature && *t == "int64");
            for stat in STATS {
                let name = format!("stats/{feature}/{stat}");
                let vals = s.values(stat);
                let col: ArrayRef = if stat == "count"
                    || (int_feature && (stat == "min" || stat == "max"))
                {
                    Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>([Some(
                        vals.iter().map(|&x| Some(x as i64)).collect::<Vec<_>>(),
                    )]))
                } else if s.image {
                    // [3, 1, 1] as nested lists
                    let mut b =
                        ListBuilder::new(ListBuilder::new(ListBuilder::new(Float64Builder::new())));
                    for x in &vals {
                        b.values().values().values().append_value(*x);
                        b.values().values().append(true);
                        b.values().append(true);
                    }
                    b.append(true);
                    Arc::new(b.finish())
                } else {
                    Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>([Some(
                        vals.iter().map(|&x| Some(x)).collect::<Vec<_>>(),
                    )]))
                };
                cols.push((name, col));
            }
        }
        cols.push(("meta/episodes/chunk_index".into(), int(chunk as i64)));
        cols.push(("meta/episodes/file_index".into(), int(file as i64)));
        write_parquet(&self.root.join(episodes_path(index)), &batch(cols)?)
    }

    fn write_tasks(&self) -> Result<(), DatasetError> {
        // a pandas frame indexed by the task text
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
        write_parquet(&self.root.join("meta/tasks.parquet"), &batch)
    }

    fn write_info(&self) -> Result<(), DatasetError> {
        let names = &self.spec.names;
        let vector =
            serde_json::json!({"dtype": "float32", "shape": [names.len()], "names": names});
        let mut features = serde_json::Map::new();
        features.insert("observation.state".into(), vector.clone());
        features.insert("action".into(), vector);
        for c in &self.spec.cameras {
            features.insert(
                c.key.clone(),
                serde_json::json!({
                    "dtype": "video",
                    "shape": [c.height, c.width, 3],
                    "names": ["height", "width", "channels"],
                    "info": {
                        "video.height": c.height,
                        "video.width": c.width,
                        "video.codec": "h264",
                        "video.pix_fmt": "yuv420p",
                        "video.is_depth_map": false,
                        "video.fps": self.spec.fps,
                        "video.channels": 3,
                        "video.g": self.spec.video.gop,
                        "video.qp": self.spec.video.qp,
                        "has_audio": false
                    }
                }),
            );
        }
        for (k, t) in INDEX_FEATURES {
            features.insert(
                k.into(),
                serde_json::json!({"dtype": t, "shape": [1], "names": null}),
            );
        }
        let info = serde_json::json!({
            "codebase_version": "v3.0",
            "robot_type": self.spec.robot_type,
            "total_episodes": self.episodes,
            "total_frames": self.frames,
            "total_tasks": self.tasks.len(),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": self.spec.fps,
            "splits": {"train": format!("0:{}", self.episodes)},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": if self.spec.cameras.is_empty() {
                serde_json::Value::Null
            } else {
                "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4".into()
            },
            "features": features,
        });
        atomic_write(
            &self.root.join("meta/info.json"),
            serde_json::to_string_pretty(&info)?.as_bytes(),
        )
    }
}

fn describe(cams: &[VideoFeature]) -> String {
    cams.iter()
        .map(|c| format!("{} {}x{}", c.key, c.width, c.height))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_spec(spec: &DatasetSpec) -> Result<(), DatasetError> {
    if spec.names.is_empty() {
        bail!("a dataset needs at least one joint");
    }
    if spec.names.iter().any(|n| n.contains('/')) {
        bail!("feature names may not contain '/'");
    }
    if !(1..=1000).contains(&spec.fps) {
        bail!("fps must be within 1..=1000");
    }
    for c in &spec.cameras {
        if c.key.contains('/') || !c.key.starts_with("observation.images.") {
            bail!(
                "camera feature `{}`: `observation.images.<name>`, no '/'",
                c.key
            );
        }
        if c.width == 0
            || c.height == 0
            || !c.width.is_multiple_of(2)
            || !c.height.is_multiple_of(2)
        {
            bail!(
                "camera {}: {}x{} (an even width and height)",
                c.key,
                c.width,
                c.height
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_dataset_that_replay_reads_back() {
        let dir = std::env::temp_dir().join(format!("reachy-rec-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let names = vec!["a.pos".to_string(), "b.pos".to_string()];
        let spec = DatasetSpec {
            fps: 10,
            names: names.clone(),
            robot_type: "test".into(),
            cameras: Vec::new(),
            video: VideoOptions::default(),
        };
        let mut w = DatasetWriter::create(&dir, spec.clone()).unwrap();
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
        assert!(DatasetWriter::create(&dir, spec).is_err());
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
