//! Running a chunking policy (LeRobot ACT or SmolVLA) on the robot through the daemon's API.
//!
//! The runner maps the checkpoint's features onto the robot (`r_shoulder_pitch.pos` → joint
//! `r_shoulder_pitch`, `observation.images.head` → camera `head_camera`), then at the policy's
//! fps sends one action per control step from a time-indexed queue
//! ([`reachy_policies::schedule::ChunkScheduler`]). In async mode the next chunk is computed on
//! another thread (or on a policy server) while the current one executes; overlapping steps are
//! blended and chunks from older observations are dropped, so the robot does not stall at chunk
//! boundaries.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use candle_core::{DType, Tensor};
use reachy_policies::schedule::{ChunkScheduler, ScheduleConfig, ScheduleStats};
use reachy_policies::Policy;
use serde::Serialize;

use reachy_api::client::RobotClient;
use reachy_api::schema::{self, keys, POLICY_SCHEMA_VERSION as PV};
use reachy_api::RobotIo;
use reachy_dataset::joint_of;

/// What a policy consumes and produces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySpec {
    /// `observation.state` size (0: none).
    pub state_dim: usize,
    /// Action size.
    pub action_dim: usize,
    /// Image features `(key, [3, H, W])`.
    pub images: Vec<(String, [usize; 3])>,
    /// Actions per chunk.
    pub chunk_size: usize,
    /// Actions of a chunk to execute (`n_action_steps`).
    pub n_action_steps: usize,
}

impl From<&schema::PolicyServerInfo> for PolicySpec {
    fn from(i: &schema::PolicyServerInfo) -> Self {
        Self {
            state_dim: i.state_dim,
            action_dim: i.action_dim,
            images: i.images.clone(),
            chunk_size: i.chunk_size,
            n_action_steps: i.n_action_steps,
        }
    }
}

/// An ACT or SmolVLA checkpoint loaded here, answering [`schema::PolicyRequest`]s.
pub struct LocalPolicy {
    policy: Policy,
    spec: PolicySpec,
    device: String,
}

impl LocalPolicy {
    /// Load a checkpoint directory on `device` (`cpu`, `cuda`, `cuda:N`) in `dtype`.
    pub fn load(dir: &Path, device: &str, dtype: &str) -> anyhow::Result<Self> {
        let dev = reachy_policies::parse_device(device)?;
        let dt = reachy_policies::parse_dtype(dtype)?;
        let policy = Policy::load(dir, &dev, dt)
            .with_context(|| format!("loading the checkpoint {}", dir.display()))?;
        let io = policy.io();
        let spec = PolicySpec {
            state_dim: io.state_feature()?.map(|(_, n)| n).unwrap_or(0),
            action_dim: io.action_dim()?,
            images: io.image_shapes()?,
            chunk_size: policy.chunk_size(),
            n_action_steps: policy.n_action_steps(),
        };
        if io.env_feature()?.is_some() {
            bail!("the checkpoint takes an environment state, which a robot does not provide");
        }
        Ok(Self {
            policy,
            spec,
            device: device.to_string(),
        })
    }

    /// What it consumes and produces.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// The checkpoint's temporal-ensembling coefficient, if it uses it.
    pub fn temporal_ensemble_coeff(&self) -> Option<f64> {
        self.policy.temporal_ensemble_coeff()
    }

    /// Whether the policy takes a language instruction (`task` in requests).
    pub fn takes_task(&self) -> bool {
        self.policy.takes_task()
    }

    /// Device name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// One action chunk (chunk × action dim, robot units) for an observation.
    pub fn infer(&self, req: &schema::PolicyRequest) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut obs: HashMap<String, Tensor> = HashMap::new();
        if self.spec.state_dim > 0 {
            if req.state.len() != self.spec.state_dim {
                bail!(
                    "observation.state has {} values; the policy expects {}",
                    req.state.len(),
                    self.spec.state_dim
                );
            }
            if req.state.iter().any(|v| !v.is_finite()) {
                bail!("observation.state holds a non-finite value");
            }
            obs.insert(
                "observation.state".into(),
                Tensor::from_vec(
                    req.state.clone(),
                    (1, self.spec.state_dim),
                    &candle_core::Device::Cpu,
                )?,
            );
        }
        for (key, [c, h, w]) in &self.spec.images {
            let img = req
                .images
                .iter()
                .find(|i| &i.key == key)
                .ok_or_else(|| anyhow!("the observation has no image `{key}`"))?;
            if (img.width as usize, img.height as usize) != (*w, *h) || *c != 3 {
                bail!(
                    "image `{key}` is {}x{}; the policy expects {w}x{h} RGB",
                    img.width,
                    img.height
                );
            }
            if img.data.len() != w * h * 3 {
                bail!("image `{key}`: {} bytes for {w}x{h} RGB", img.data.len());
            }
            let t = Tensor::from_slice(&img.data, (*h, *w, 3), &candle_core::Device::Cpu)?
                .permute((2, 0, 1))?
                .to_dtype(DType::F32)?
                .affine(1.0 / 255.0, 0.0)?
                .unsqueeze(0)?;
            obs.insert(key.clone(), t);
        }
        if self.policy.takes_task() && req.task.is_none() {
            bail!(
                "this {} policy needs a task (the language instruction: --task TEXT)",
                self.policy.kind()
            );
        }
        let actions = self.policy.predict_chunk(&obs, req.task.as_deref())?;
        let mut chunk = actions.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        chunk
            .pop()
            .ok_or_else(|| anyhow!("the policy returned an empty batch"))
    }
}

/// A policy server reached over zenoh (`reachy policy serve`).
pub struct RemotePolicy {
    session: zenoh::Session,
    server: String,
    timeout: Duration,
}

impl RemotePolicy {
    /// Ask the server `name` on `session` for its `info` (waiting up to `timeout`).
    pub fn connect(
        session: &zenoh::Session,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Self, schema::PolicyServerInfo)> {
        let info = reachy_api::net::retry(
            timeout,
            || format!("no policy server `{name}`"),
            || {
                policy_query::<schema::PolicyServerInfo>(
                    session,
                    &keys::policy_info(name),
                    None,
                    Duration::from_secs(1),
                )
            },
        )?;
        Ok((
            Self {
                session: session.clone(),
                server: name.to_string(),
                timeout: Duration::from_secs(10),
            },
            info,
        ))
    }

    /// Send an observation, wait for its chunk.
    pub fn infer(&self, req: &schema::PolicyRequest) -> anyhow::Result<schema::PolicyChunk> {
        Ok(policy_query(
            &self.session,
            &keys::policy_infer(&self.server),
            Some(schema::encode(req)),
            self.timeout,
        )?)
    }
}

/// One query of a policy server: the decoded reply, or its error message.
pub fn policy_query<T: serde::de::DeserializeOwned + schema::Versioned>(
    session: &zenoh::Session,
    key: &str,
    payload: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<T, reachy_api::ApiError> {
    reachy_api::net::get(session, key, payload, timeout, schema::decode_policy)
}

/// Where the checkpoint's features go on the robot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureMap {
    /// Daemon joint index of each `observation.state` value.
    pub state: Vec<usize>,
    /// Daemon joint index of each action value.
    pub action: Vec<usize>,
    /// Action feature names (for reports).
    pub action_names: Vec<String>,
    /// `(feature key, camera, [3, H, W])` per image feature.
    pub images: Vec<(String, String, [usize; 3])>,
}

/// The image feature a camera is recorded as, the inverse of [`camera_for`]: LeRobot's usual
/// names for Reachy's cameras (`head_camera` → `observation.images.head`, `r_wrist_camera` →
/// `right_wrist`, `l_wrist_camera` → `left_wrist`), else the camera's name without `_camera`.
pub fn image_key_of(camera: &str) -> String {
    let k = match camera {
        "r_wrist_camera" => "right_wrist",
        "l_wrist_camera" => "left_wrist",
        c => c.strip_suffix("_camera").unwrap_or(c),
    };
    format!("observation.images.{k}")
}

/// The camera an image feature stands for: `observation.images.<k>` → a camera named `<k>`,
/// `<k>_camera`, or (LeRobot's usual names) `head` → `head_camera`, `left_wrist` →
/// `l_wrist_camera`, `right_wrist` → `r_wrist_camera`; `overrides` (`k=camera`) win.
pub fn camera_for(
    key: &str,
    cameras: &[String],
    overrides: &[(String, String)],
) -> anyhow::Result<String> {
    let k = key.strip_prefix("observation.images.").unwrap_or(key);
    if let Some((_, c)) = overrides.iter().find(|(o, _)| o == k || o == key) {
        return cameras
            .iter()
            .find(|n| *n == c)
            .cloned()
            .ok_or_else(|| anyhow!("--camera {k}={c}: the robot has no camera `{c}`"));
    }
    let alias = match k {
        "left_wrist" | "wrist_left" => Some("l_wrist_camera"),
        "right_wrist" | "wrist_right" => Some("r_wrist_camera"),
        _ => None,
    };
    let candidates = [k.to_string(), format!("{k}_camera")];
    cameras
        .iter()
        .find(|c| candidates.contains(c) || Some(c.as_str()) == alias)
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "image feature `{key}` matches no camera of the robot ({}); map it with \
                 --camera {k}=<camera>",
                if cameras.is_empty() {
                    "it publishes none".to_string()
                } else {
                    cameras.join(", ")
                }
            )
        })
}

/// Map the policy's features onto the robot's joints and cameras. Without names, the state and
/// the action are taken to be every joint in the daemon's order (when the sizes match).
pub fn map_features(
    spec: &PolicySpec,
    joints: &[String],
    cameras: &[String],
    state_names: Option<&[String]>,
    action_names: Option<&[String]>,
    camera_overrides: &[(String, String)],
) -> anyhow::Result<FeatureMap> {
    let resolve =
        |what: &str, dim: usize, names: Option<&[String]>| -> anyhow::Result<Vec<usize>> {
            match names {
                Some(n) => {
                    if n.len() != dim {
                        bail!("{} {what} names for a policy {what} of size {dim}", n.len());
                    }
                    n.iter().map(|n| Ok(joint_of(n, joints)?)).collect()
                }
                None if dim == 0 => Ok(Vec::new()),
                None if dim == joints.len() => Ok((0..dim).collect()),
                None => bail!(
                    "the policy's {what} has {dim} values and the robot {} joints: give the names \
                 (--dataset DIR with meta/info.json, or --{what}-names)",
                    joints.len()
                ),
            }
        };
    let state = resolve("state", spec.state_dim, state_names)?;
    let action = resolve("action", spec.action_dim, action_names)?;
    let names: Vec<String> = match action_names {
        Some(n) => n.to_vec(),
        None => action
            .iter()
            .map(|&i| format!("{}.pos", joints[i]))
            .collect(),
    };
    let images = spec
        .images
        .iter()
        .map(|(k, s)| Ok((k.clone(), camera_for(k, cameras, camera_overrides)?, *s)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut seen = action.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != action.len() {
        bail!("two action features drive the same joint");
    }
    Ok(FeatureMap {
        state,
        action,
        action_names: names,
        images,
    })
}

/// Resize an `rgb8` image (bilinear); the same size is a copy.
pub fn resize_rgb(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    if (sw, sh) == (dw, dh) {
        return src.to_vec();
    }
    let mut out = vec![0u8; dw * dh * 3];
    let sx = sw as f32 / dw as f32;
    let sy = sh as f32 / dh as f32;
    for y in 0..dh {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (sh - 1) as f32);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let ty = fy - y0 as f32;
        for x in 0..dw {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (sw - 1) as f32);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(sw - 1);
            let tx = fx - x0 as f32;
            for c in 0..3 {
                let p = |xx: usize, yy: usize| src[(yy * sw + xx) * 3 + c] as f32;
                let v = (p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx) * (1.0 - ty)
                    + (p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx) * ty;
                out[(y * dw + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Control rate (Hz): the dataset's fps.
    pub fps: f64,
    /// Actions used per chunk.
    pub n_action_steps: usize,
    /// Synchronous mode (LeRobot's default): infer only when the queue is empty.
    pub synchronous: bool,
    /// Async mode: ask for the next chunk this many steps (beyond the measured latency) early.
    pub margin_steps: usize,
    /// Episodes.
    pub episodes: usize,
    /// Length of an episode (s).
    pub episode_s: f64,
    /// Language instruction.
    pub task: Option<String>,
    /// Session name sent to a policy server (one per robot).
    pub session: String,
    /// ACT's temporal ensembling with this coefficient instead of the chunk queue: a chunk is
    /// computed at every step (synchronously, as LeRobot does) and each step's action is the
    /// weighted average of every prediction made for it.
    pub temporal_ensemble: Option<f64>,
    /// Actions per chunk (for temporal ensembling).
    pub chunk_size: usize,
}

/// What happened in one episode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EpisodeReport {
    /// Episode index.
    pub episode: usize,
    /// Control steps run.
    pub steps: u64,
    /// Steps that sent an action.
    pub actions_sent: u64,
    /// Time from the episode's start to its first action (s): the first inference.
    pub first_action_s: f64,
    /// Chunks used.
    pub chunks: u64,
    /// Chunks dropped as stale (computed from an older observation than one already used).
    pub stale_dropped: u64,
    /// Steps of arriving chunks whose time had passed, and control steps that started more than
    /// one period late.
    pub late_steps: u64,
    /// Steps blended between two chunks.
    pub blended_steps: u64,
    /// Control steps after the first action with no action queued (the robot stalled).
    pub stalls: u64,
    /// Inference failures.
    pub errors: u64,
    /// Observation → chunk arrival latency, median (ms).
    pub latency_p50_ms: f64,
    /// Observation → chunk latency, 99th percentile (ms).
    pub latency_p99_ms: f64,
    /// Largest change of a commanded joint between two consecutive steps (rad).
    pub max_step_change: f32,
    /// Mean queue depth at control steps (actions ready ahead).
    pub mean_queue_depth: f64,
    /// Last action sent, by feature name.
    pub last_action: Vec<(String, f32)>,
    /// Largest distance between the measured joints and the last action at the episode's end
    /// (rad): whether the robot followed.
    pub tracking_error: f32,
}

/// A request to the inference thread, and its answer.
type Infer = Box<dyn FnMut(&schema::PolicyRequest) -> anyhow::Result<schema::PolicyChunk> + Send>;

/// Inference on a loaded policy, timed, as a chunk message.
pub fn local_infer(policy: LocalPolicy) -> Infer {
    Box::new(move |req| {
        let t = Instant::now();
        let actions = policy.infer(req)?;
        Ok(schema::PolicyChunk {
            v: PV,
            session: req.session.clone(),
            seq: req.seq,
            t_obs: req.t_obs,
            actions,
            infer_ms: t.elapsed().as_secs_f64() * 1e3,
            queue_ms: 0.0,
            queue_depth: 0,
        })
    })
}

/// Inference on a policy server.
pub fn remote_infer(remote: RemotePolicy) -> Infer {
    Box::new(move |req| remote.infer(req))
}

/// Failed inferences in a row, said once when they start and once when they end (a dead policy
/// server fails every request until a new one answers: one line each way, not one per step).
#[derive(Default)]
struct Outage {
    /// When the first failure of the current run came (s since the episode's start), and how
    /// many followed.
    since: Option<(f64, u64)>,
}

impl Outage {
    fn failed(&mut self, now: f64, e: &anyhow::Error, progress: &mut dyn FnMut(&str)) {
        match &mut self.since {
            Some((_, n)) => *n += 1,
            None => {
                progress(&format!(
                    "inference failed: {e:#} (the robot holds its last target; retrying)"
                ));
                self.since = Some((now, 1));
            }
        }
    }

    fn answered(&mut self, now: f64, progress: &mut dyn FnMut(&str)) {
        if let Some((t, n)) = self.since.take() {
            progress(&format!(
                "inference back after {n} failed request(s), {:.1} s without chunks",
                now - t
            ));
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Run `opts.episodes` episodes on the robot of `client`. Before each episode
/// `before_episode(i)` runs (go home, reset the scene). Every chunk taken goes to
/// `on_chunk(actions, observation-to-arrival latency in ms)` (the rerun view draws it), progress
/// lines go to `progress`.
pub fn run(
    client: &mut RobotClient,
    map: &FeatureMap,
    mut infer: Infer,
    opts: &RunOptions,
    before_episode: &mut dyn FnMut(usize, &mut RobotClient) -> anyhow::Result<()>,
    on_chunk: &mut dyn FnMut(&[Vec<f32>], f64),
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<EpisodeReport>> {
    anyhow::ensure!(
        opts.fps > 0.0 && opts.fps <= 1000.0,
        "fps must be within 0..=1000"
    );
    let cameras: Vec<(
        String,
        String,
        [usize; 3],
        reachy_api::net::Latest<schema::CameraFrame>,
    )> = map
        .images
        .iter()
        .map(|(k, c, s)| Ok((k.clone(), c.clone(), *s, client.camera(c)?)))
        .collect::<anyhow::Result<_>>()?;
    // the inference thread: observations in, chunks out
    let (obs_tx, obs_rx) = mpsc::channel::<schema::PolicyRequest>();
    #[allow(clippy::type_complexity)]
    let (chunk_tx, chunk_rx) =
        mpsc::channel::<(f64, anyhow::Result<schema::PolicyChunk>, Instant)>();
    let worker = std::thread::Builder::new()
        .name("policy-inference".into())
        .spawn(move || {
            for req in obs_rx {
                let r = infer(&req);
                if chunk_tx.send((req.t_obs, r, Instant::now())).is_err() {
                    break;
                }
            }
        })
        .context("starting the inference thread")?;
    let period = Duration::from_secs_f64(1.0 / opts.fps);
    let steps = (opts.episode_s * opts.fps).round() as u64;
    let mut reports = Vec::new();
    let mut seq = 0u64;
    for ep in 0..opts.episodes {
        before_episode(ep, client)?;
        // every camera has a frame before the clock starts
        for (_, cam, _, latest) in &cameras {
            let t0 = Instant::now();
            while latest.lock().map(|l| l.is_none()).unwrap_or(true) {
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(10),
                    "camera `{cam}` publishes no frames (a sim started without --cameras?)"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut sched = ChunkScheduler::new(ScheduleConfig {
            fps: opts.fps,
            n_action_steps: opts.n_action_steps,
            margin_steps: opts.margin_steps,
            synchronous: opts.synchronous,
        });
        let mut rep = EpisodeReport {
            episode: ep,
            ..Default::default()
        };
        let mut latencies = Vec::new();
        let mut outage = Outage::default();
        let mut started = false;
        let mut last: Option<Vec<f32>> = None;
        let mut depth_sum = 0.0;
        let t0 = Instant::now();
        // chunks of the previous episode (still in flight) are ignored
        let first_seq = seq + 1;
        let mut ensembler = opts.temporal_ensemble.map(|c| {
            reachy_policies::ensemble::TemporalEnsembler::new(c, opts.chunk_size, map.action.len())
        });
        for k in 0..steps {
            let due = t0 + period * k as u32;
            match due.checked_duration_since(Instant::now()) {
                Some(d) => std::thread::sleep(d),
                None if Instant::now() - due > period => rep.late_steps += 1,
                None => {}
            }
            let now = t0.elapsed().as_secs_f64();
            if let Some(ens) = &mut ensembler {
                // temporal ensembling: one chunk per step, waited for
                rep.steps += 1;
                seq += 1;
                obs_tx
                    .send(observe(client, map, &cameras, opts, seq, now)?)
                    .map_err(|_| anyhow!("the inference thread stopped"))?;
                let chunk = loop {
                    let (_, r, arrived) = chunk_rx
                        .recv_timeout(Duration::from_secs(30))
                        .map_err(|_| anyhow!("no chunk from the policy within 30 s"))?;
                    match r {
                        Ok(c) if c.seq < seq => continue,
                        Ok(c) => {
                            let at = arrived.saturating_duration_since(t0).as_secs_f64();
                            latencies.push((at - now) * 1e3);
                            outage.answered(at, progress);
                            break Some(c.actions);
                        }
                        Err(e) => {
                            outage.failed(now, &e, progress);
                            break None;
                        }
                    }
                };
                let ok = chunk.as_ref().is_some_and(|c| {
                    c.len() == opts.chunk_size
                        && c.iter()
                            .all(|a| a.len() == map.action.len() && a.iter().all(|v| v.is_finite()))
                });
                let Some(chunk) = chunk.filter(|_| ok) else {
                    rep.errors += 1;
                    continue;
                };
                rep.chunks += 1;
                on_chunk(&chunk, latencies.last().copied().unwrap_or(0.0));
                let rows: Vec<Vec<f64>> = chunk
                    .iter()
                    .map(|a| a.iter().map(|&v| v as f64).collect())
                    .collect();
                let a: Vec<f32> = ens.update(&rows).into_iter().map(|v| v as f32).collect();
                if let Some(p) = &last {
                    for (x, y) in p.iter().zip(&a) {
                        rep.max_step_change = rep.max_step_change.max((x - y).abs());
                    }
                } else {
                    rep.first_action_s = t0.elapsed().as_secs_f64();
                }
                client.command(&map.action, &a)?;
                rep.actions_sent += 1;
                last = Some(a);
                continue;
            }
            while let Ok((t_obs, r, arrived)) = chunk_rx.try_recv() {
                match r {
                    Ok(c) if c.seq < first_seq => {}
                    Ok(c) if t_obs >= 0.0 && c.t_obs == t_obs => {
                        let at = arrived.saturating_duration_since(t0).as_secs_f64();
                        latencies.push((at - t_obs) * 1e3);
                        outage.answered(at, progress);
                        if c.actions.iter().any(|a| a.len() != map.action.len()) {
                            rep.errors += 1;
                            sched.cancel_request();
                            progress(&format!(
                                "chunk with actions of the wrong size (expected {})",
                                map.action.len()
                            ));
                        } else {
                            on_chunk(&c.actions, latencies.last().copied().unwrap_or(0.0));
                            sched.push(t_obs, &c.actions, now);
                        }
                    }
                    Ok(_) => {
                        rep.errors += 1;
                        sched.cancel_request();
                    }
                    Err(e) => {
                        rep.errors += 1;
                        sched.cancel_request();
                        outage.failed(now, &e, progress);
                    }
                }
            }
            if sched.wants_chunk(now) {
                seq += 1;
                obs_tx
                    .send(observe(client, map, &cameras, opts, seq, now)?)
                    .map_err(|_| anyhow!("the inference thread stopped"))?;
            }
            rep.steps += 1;
            if !started {
                if sched.depth(now) == 0 {
                    continue;
                }
                started = true;
                rep.first_action_s = now;
            }
            depth_sum += sched.depth(now) as f64;
            if let Some(a) = sched.next(now) {
                if a.iter().any(|v| !v.is_finite()) {
                    rep.errors += 1;
                    continue;
                }
                if let Some(p) = &last {
                    for (x, y) in p.iter().zip(&a) {
                        rep.max_step_change = rep.max_step_change.max((x - y).abs());
                    }
                }
                client.command(&map.action, &a)?;
                rep.actions_sent += 1;
                last = Some(a);
            }
        }
        let ScheduleStats {
            chunks,
            stale_dropped,
            late_steps,
            blended_steps,
            stalls,
        } = sched.stats;
        if ensembler.is_none() {
            rep.chunks = chunks;
            rep.stale_dropped = stale_dropped;
            rep.late_steps += late_steps;
            rep.blended_steps = blended_steps;
            rep.stalls = stalls;
        }
        rep.latency_p50_ms = percentile(&mut latencies, 0.5);
        rep.latency_p99_ms = percentile(&mut latencies, 0.99);
        let active = (rep.actions_sent + rep.stalls).max(1) as f64;
        rep.mean_queue_depth = depth_sum / active;
        if let Some(a) = &last {
            let measured = client.state()?.position;
            rep.tracking_error = map
                .action
                .iter()
                .zip(a)
                .map(|(&i, v)| measured.get(i).map_or(f32::INFINITY, |m| (m - v).abs()))
                .fold(0.0, f32::max);
        }
        rep.last_action = map
            .action_names
            .iter()
            .cloned()
            .zip(last.unwrap_or_default())
            .collect();
        progress(&format!(
            "episode {ep}: {} steps, {} actions, {} chunks, {} stalls, {} stale, latency p50 \
             {:.1} ms / p99 {:.1} ms",
            rep.steps,
            rep.actions_sent,
            rep.chunks,
            rep.stalls,
            rep.stale_dropped,
            rep.latency_p50_ms,
            rep.latency_p99_ms
        ));
        reports.push(rep);
    }
    drop(obs_tx);
    worker
        .join()
        .map_err(|_| anyhow!("the inference thread panicked"))?;
    Ok(reports)
}

/// The observation now: mapped joint positions and camera images at the policy's size.
fn observe(
    client: &RobotClient,
    map: &FeatureMap,
    cameras: &[(
        String,
        String,
        [usize; 3],
        reachy_api::net::Latest<schema::CameraFrame>,
    )],
    opts: &RunOptions,
    seq: u64,
    now: f64,
) -> anyhow::Result<schema::PolicyRequest> {
    let state = client.state()?;
    let values = map
        .state
        .iter()
        .map(|&i| {
            state
                .position
                .get(i)
                .copied()
                .ok_or_else(|| anyhow!("the state has no joint {i}"))
        })
        .collect::<anyhow::Result<Vec<f32>>>()?;
    let mut images = Vec::with_capacity(cameras.len());
    for (key, cam, [_, h, w], latest) in cameras {
        let f = latest
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .ok_or_else(|| anyhow!("no frame from camera `{cam}`"))?;
        let (fw, fh) = (f.width as usize, f.height as usize);
        anyhow::ensure!(
            f.is_rgb8(),
            "camera `{cam}`: a frame that is not {fw}x{fh} rgb8"
        );
        images.push(schema::ImageMsg {
            key: key.clone(),
            width: *w as u32,
            height: *h as u32,
            data: resize_rgb(&f.data, fw, fh, *w, *h),
        });
    }
    Ok(schema::PolicyRequest {
        v: PV,
        session: opts.session.clone(),
        seq,
        t_obs: now,
        state: values,
        images,
        task: opts.task.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joints() -> Vec<String> {
        ["r_shoulder_pitch", "r_elbow_pitch", "r_gripper", "neck_yaw"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn spec(s: usize, a: usize, cams: &[&str]) -> PolicySpec {
        PolicySpec {
            state_dim: s,
            action_dim: a,
            images: cams
                .iter()
                .map(|c| (format!("observation.images.{c}"), [3, 48, 64]))
                .collect(),
            chunk_size: 10,
            n_action_steps: 10,
        }
    }

    #[test]
    fn names_map_onto_joints_and_cameras() {
        let names: Vec<String> = ["r_gripper.pos", "r_shoulder_pitch.pos"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cams = vec!["head_camera".to_string(), "r_wrist_camera".to_string()];
        let m = map_features(
            &spec(2, 2, &["head", "right_wrist"]),
            &joints(),
            &cams,
            Some(&names),
            Some(&names),
            &[],
        )
        .unwrap();
        assert_eq!(m.state, vec![2, 0]);
        assert_eq!(m.action, vec![2, 0]);
        assert_eq!(m.images[0].1, "head_camera");
        assert_eq!(m.images[1].1, "r_wrist_camera");
        // default: every joint in order
        let m = map_features(&spec(4, 4, &[]), &joints(), &[], None, None, &[]).unwrap();
        assert_eq!(m.action, vec![0, 1, 2, 3]);
        assert_eq!(m.action_names[3], "neck_yaw.pos");
        // an override
        let m = map_features(
            &spec(0, 4, &["front"]),
            &joints(),
            &cams,
            None,
            None,
            &[("front".into(), "r_wrist_camera".into())],
        )
        .unwrap();
        assert_eq!(m.images[0].1, "r_wrist_camera");
    }

    #[test]
    fn bad_mappings_say_why() {
        let bad: Vec<String> = vec!["r_knee.pos".into()];
        let e = map_features(&spec(1, 4, &[]), &joints(), &[], Some(&bad), None, &[]).unwrap_err();
        assert!(e.to_string().contains("no joint `r_knee`"), "{e}");
        let e = map_features(&spec(3, 4, &[]), &joints(), &[], None, None, &[]).unwrap_err();
        assert!(e.to_string().contains("--dataset"), "{e}");
        let e = map_features(&spec(0, 4, &["top"]), &joints(), &[], None, None, &[]).unwrap_err();
        assert!(e.to_string().contains("publishes none"), "{e}");
        let vel: Vec<String> = vec!["r_gripper.vel".into()];
        let e = map_features(&spec(1, 4, &[]), &joints(), &[], Some(&vel), None, &[]).unwrap_err();
        assert!(e.to_string().contains("only joint positions"), "{e}");
        let twice: Vec<String> = vec!["r_gripper.pos".into(), "r_gripper".into()];
        let e =
            map_features(&spec(0, 2, &[]), &joints(), &[], None, Some(&twice), &[]).unwrap_err();
        assert!(e.to_string().contains("same joint"), "{e}");
    }

    #[test]
    fn resize_keeps_flat_colours_and_corners() {
        let (w, h) = (8, 6);
        let mut src = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let v = if x < w / 2 { 10 } else { 200 };
                src[(y * w + x) * 3..][..3].copy_from_slice(&[v, 50, 255]);
            }
        }
        let out = resize_rgb(&src, w, h, 4, 3);
        assert_eq!(out.len(), 4 * 3 * 3);
        assert_eq!(&out[..3], &[10, 50, 255]);
        assert_eq!(&out[(4 - 1) * 3..][..3], &[200, 50, 255]);
        assert_eq!(resize_rgb(&src, w, h, w, h), src);
    }
}
