//! Recording demonstrations into a LeRobot v3 dataset: the daemon's measured joints as
//! `observation.state`, its commanded targets as `action`, and every selected camera as an
//! H.264 video, sampled at the dataset's fps while someone drives the robot — the built-in
//! scripted pick-and-place (`Teleop::Scripted`, a new seeded scene per episode), or anyone else
//! (`Teleop::None`).
//!
//! The loop only samples and hands frames on: encoding runs on one thread per camera behind a
//! bounded queue ([`reachy_dataset::EpisodeWriter`]), every late tick and every repeated camera
//! frame is counted and reported, and each episode is committed to disk the moment it ends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use reachy_api::client::RobotClient;
use reachy_api::net::Latest;
use reachy_api::schema::{self, keys};
use reachy_api::{ApiError, RobotIo};
use reachy_dataset::write::{DatasetSpec, DatasetWriter, Frame, VideoFeature};
use reachy_dataset::VideoOptions;
use reachy_kinematics::model::RobotModel;

/// Who drives the robot while recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teleop {
    /// The built-in demonstration: the demo's pick-and-place of `red_cube` (or the object in
    /// [`RecordConfig::object`]), a new scene (seed + episode index) per episode. Needs a sim.
    Scripted,
    /// Someone else (a teleop process, a policy, a script): record only.
    None,
}

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Dataset directory.
    pub root: PathBuf,
    /// Episodes to record (more, with `resume`).
    pub episodes: usize,
    /// Length of an episode (s).
    pub episode_time: f64,
    /// Pause between episodes (s): the scene is reset then.
    pub reset_time: f64,
    /// Frames per second.
    pub fps: u32,
    /// Task of every episode.
    pub task: String,
    /// Cameras to record (the daemon's names); `None`: every camera the daemon publishes.
    pub cameras: Option<Vec<String>>,
    /// Continue the dataset at `root` after its last committed episode.
    pub resume: bool,
    /// Who drives.
    pub teleop: Teleop,
    /// `robot_type` of the dataset.
    pub robot_type: String,
    /// Scene seed of the first episode (scripted).
    pub seed: u64,
    /// Object the scripted demonstration moves.
    pub object: String,
    /// Encoding.
    pub video: VideoOptions,
    /// Encoder queue per camera (s of frames).
    pub queue_s: f64,
}

/// Keys of the episode control (LeRobot's: → ← Esc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// End the running episode now and keep it.
    EndEpisode,
    /// Drop the running episode and record it again.
    Rerecord,
    /// Keep the running episode and stop.
    Stop,
}

/// Where the recording is, for a progress display.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Episode being recorded (dataset index).
    pub episode: usize,
    /// Its number in this run (1-based) and the run's total.
    pub k: usize,
    /// Episodes of this run.
    pub of: usize,
    /// Seconds into the episode (or the reset).
    pub elapsed: f64,
    /// Its length.
    pub length: f64,
    /// Frames per second achieved so far in this episode.
    pub fps: f64,
    /// Frames waiting in the fullest encoder queue.
    pub backlog: usize,
    /// `recording` or `reset`.
    pub phase: &'static str,
}

/// One committed episode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpisodeSummary {
    /// Dataset index.
    pub index: usize,
    /// Frames.
    pub frames: usize,
    /// Frames per second achieved (frames over the episode's wall time).
    pub achieved_fps: f64,
    /// Ticks taken more than one period late.
    pub late: u64,
    /// The latest tick (s behind its schedule).
    pub max_lateness_s: f64,
    /// Frames without a new daemon state (the previous one repeated).
    pub repeated_states: u64,
    /// Per camera: frames without a new image (the previous one repeated).
    pub repeated_images: Vec<(String, u64)>,
    /// Frames that waited for room in an encoder queue (none dropped).
    pub queue_full: u64,
    /// From the episode's last frame to durable on disk (s).
    pub commit_s: f64,
    /// Encoder time over all cameras (s).
    pub encode_s: f64,
    /// Bytes of the episode's videos.
    pub video_bytes: u64,
    /// The scripted demonstration: what it did (`success`, or why not).
    pub script: Option<String>,
}

/// What a recording did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordSummary {
    /// Episodes committed by this run.
    pub episodes: Vec<EpisodeSummary>,
    /// Episodes in the dataset now.
    pub total_episodes: usize,
    /// Files an interrupted earlier run left, removed on resume.
    pub removed: Vec<PathBuf>,
    /// Camera feature keys recorded, with the camera each comes from.
    pub cameras: Vec<(String, String)>,
}

/// Targets = the measured positions, once the state shows the robot where the sim put it.
fn hold_where_it_is(client: &mut RobotClient) -> anyhow::Result<()> {
    let after = client.state()?.seq + 2;
    let s = client.wait_for_state(Duration::from_secs(5), |s| s.seq >= after)?;
    let all: Vec<usize> = (0..s.position.len()).collect();
    client.command(&all, &s.position)?;
    Ok(())
}

/// A [`RobotIo`] that stops (an error from `advance`) when `stop` is set: the scripted
/// demonstration ends with its episode.
struct Stoppable<'a> {
    io: &'a mut RobotClient,
    stop: &'a AtomicBool,
}

impl RobotIo for Stoppable<'_> {
    type Error = ApiError;
    fn joint_names(&self) -> Vec<String> {
        self.io.joint_names()
    }
    fn positions(&mut self) -> Result<Vec<f32>, ApiError> {
        self.io.positions()
    }
    fn command(&mut self, indices: &[usize], targets: &[f32]) -> Result<(), ApiError> {
        self.io.command(indices, targets)
    }
    fn advance(&mut self, seconds: f64) -> Result<(), ApiError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(ApiError::Refused("the episode ended".into()));
        }
        self.io.advance(seconds)
    }
    fn object(&mut self, name: &str) -> Result<([f32; 3], [f32; 4], f32), ApiError> {
        self.io.object(name)
    }
}

struct Camera {
    name: String,
    latest: Latest<schema::CameraFrame>,
    last: Arc<Vec<u8>>,
    repeated: u64,
    size: (u32, u32),
    _sub: zenoh::pubsub::Subscriber<()>,
}

impl Camera {
    /// The newest frame, or the previous one again (counted).
    fn take(&mut self) -> anyhow::Result<Arc<Vec<u8>>> {
        let new = self.latest.lock().ok().and_then(|mut l| l.take());
        match new {
            Some(f) => {
                if (f.width, f.height) != self.size || !f.is_rgb8() {
                    bail!(
                        "camera `{}` sent a {}x{} {} frame of {} bytes where {}x{} rgb8 is \
                         recorded",
                        self.name,
                        f.width,
                        f.height,
                        f.encoding,
                        f.data.len(),
                        self.size.0,
                        self.size.1
                    );
                }
                self.last = Arc::new(f.data);
            }
            None => self.repeated += 1,
        }
        Ok(self.last.clone())
    }
}

/// Record into `cfg.root` from the daemon of `robot` on `session`. `controls` carries the
/// operator's keys, `stop` is Ctrl-C (the running episode is kept), `progress` is called a few
/// times a second.
pub fn record(
    session: &zenoh::Session,
    robot: &str,
    model: &RobotModel,
    cfg: &RecordConfig,
    controls: Option<&Receiver<Control>>,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<RecordSummary> {
    if !(cfg.episode_time > 0.0 && cfg.episode_time <= 86_400.0) {
        bail!("--episode-time must be within 0..=86400 s");
    }
    if !(cfg.reset_time >= 0.0 && cfg.reset_time <= 86_400.0) {
        bail!("--reset-time must be within 0..=86400 s");
    }
    let info = reachy_api::client::daemon_info(session, robot, Duration::from_secs(10))?;
    let selected: Vec<&schema::CameraInfo> = match &cfg.cameras {
        None => info.cameras.iter().collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                info.cameras.iter().find(|c| c.name == *n).ok_or_else(|| {
                    anyhow!(
                        "--cameras: the robot has no camera `{n}` (it has: {})",
                        if info.cameras.is_empty() {
                            "none; a sim started without --cameras".to_string()
                        } else {
                            info.cameras
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let (state, _state_sub) =
        reachy_api::net::subscribe_latest(session, &keys::state(robot), |b| {
            schema::decode_robot::<schema::RobotState>(b).ok()
        })?;
    let mut cameras = Vec::new();
    for c in &selected {
        let (latest, sub) =
            reachy_api::net::subscribe_latest(session, &keys::camera(robot, &c.name), |b| {
                schema::decode_robot::<schema::CameraFrame>(b).ok()
            })?;
        cameras.push(Camera {
            name: c.name.clone(),
            latest,
            last: Arc::new(Vec::new()),
            repeated: 0,
            size: (c.width, c.height),
            _sub: sub,
        });
    }
    let ready = || {
        state.lock().is_ok_and(|l| l.is_some())
            && cameras
                .iter()
                .all(|c| c.latest.lock().is_ok_and(|l| l.is_some()))
    };
    if !reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(5), ready) {
        bail!("no state or no camera frame from the daemon of `{robot}` within 10 s");
    }
    let first = state.lock().ok().and_then(|l| l.clone()).expect("checked");
    let names: Vec<String> = first.names.iter().map(|n| format!("{n}.pos")).collect();
    let keys: Vec<(String, String)> = cameras
        .iter()
        .map(|c| (crate::policy_run::image_key_of(&c.name), c.name.clone()))
        .collect();
    let spec = DatasetSpec {
        fps: cfg.fps,
        names,
        robot_type: cfg.robot_type.clone(),
        cameras: keys
            .iter()
            .zip(&cameras)
            .map(|((k, _), c)| VideoFeature {
                key: k.clone(),
                width: c.size.0,
                height: c.size.1,
            })
            .collect(),
        video: cfg.video,
    };
    let mut writer = if cfg.resume {
        DatasetWriter::resume(&cfg.root, spec)?
    } else {
        DatasetWriter::create(&cfg.root, spec)?
    };
    for c in &mut cameras {
        c.take()?;
    }
    let mut driver = match cfg.teleop {
        Teleop::Scripted => Some(
            RobotClient::connect(
                session,
                robot,
                &format!("record-script-{}", std::process::id()),
                "script",
                Duration::from_secs(10),
            )
            .context("taking the lease for the scripted demonstration")?,
        ),
        Teleop::None => None,
    };
    let period = Duration::from_secs_f64(1.0 / cfg.fps as f64);
    let n = (cfg.episode_time * cfg.fps as f64).round().max(1.0) as usize;
    let queue = ((cfg.queue_s * cfg.fps as f64).ceil() as usize).max(2);
    let mut done = Vec::new();
    let mut k = 0usize;
    let mut stopping = false;
    while k < cfg.episodes && !stopping && !stop.load(Ordering::Relaxed) {
        let index = writer.episodes();
        // the reset: a new scene for the script, the operator's pause otherwise
        let reset = if let Some(client) = &mut driver {
            crate::inprocess::reset_sim(session, robot, cfg.seed + index as u64)
                .context("resetting the sim's scene (the scripted demonstration needs a sim)")?;
            // the robot was put home: the daemon's targets go there too (else the previous
            // episode's last targets pull it back, and are recorded as the first action)
            hold_where_it_is(client)?;
            // the cubes settle
            cfg.reset_time.max(0.3)
        } else if k > 0 {
            cfg.reset_time
        } else {
            0.0
        };
        let r0 = Instant::now();
        while r0.elapsed().as_secs_f64() < reset && !stop.load(Ordering::Relaxed) {
            progress(&Progress {
                episode: index,
                k: k + 1,
                of: cfg.episodes,
                elapsed: r0.elapsed().as_secs_f64(),
                length: reset,
                fps: 0.0,
                backlog: 0,
                phase: "reset",
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for c in &mut cameras {
            c.repeated = 0;
        }
        let mut ep = writer.begin_episode(&cfg.task, queue)?;
        progress(&Progress {
            episode: index,
            k: k + 1,
            of: cfg.episodes,
            elapsed: 0.0,
            length: cfg.episode_time,
            fps: 0.0,
            backlog: 0,
            phase: "start",
        });
        let script_stop = AtomicBool::new(false);
        let mut control = None;
        let (mut late, mut repeated_states, mut max_late) = (0u64, 0u64, 0.0f64);
        let mut last_seq = first.seq.wrapping_sub(1);
        let t0 = Instant::now();
        let mut last_progress = t0;
        let mut wall = 0.0;
        let script = std::thread::scope(|scope| -> anyhow::Result<Option<String>> {
            let handle = driver.as_mut().map(|client| {
                let stop = &script_stop;
                let object = cfg.object.clone();
                scope.spawn(move || -> String {
                    let mut run = || -> anyhow::Result<bool> {
                        let objects = client.objects()?;
                        let place = crate::pick_place::free_spot(&objects, &object)
                            .ok_or_else(|| anyhow!("no free spot for `{object}`"))?;
                        let task = crate::pick_place::PickPlace::new(&object, place);
                        let mut io = Stoppable { io: client, stop };
                        Ok(crate::pick_place::run(&mut io, model, &task, &mut |_| {})?.success)
                    };
                    match run() {
                        Ok(true) => "success".into(),
                        Ok(false) => "placed outside the tolerance".into(),
                        Err(e) => format!("{e:#}"),
                    }
                })
            });
            let result = (|| -> anyhow::Result<()> {
                for i in 0..n {
                    let due = t0 + period * i as u32;
                    let now = Instant::now();
                    match due.checked_duration_since(now) {
                        Some(d) => std::thread::sleep(d),
                        None => {
                            let behind = (now - due).as_secs_f64();
                            max_late = max_late.max(behind);
                            if behind > period.as_secs_f64() {
                                late += 1;
                            }
                        }
                    }
                    let s = state
                        .lock()
                        .ok()
                        .and_then(|l| l.clone())
                        .ok_or_else(|| anyhow!("the daemon's state stopped"))?;
                    if s.names.len() != first.names.len() {
                        bail!("the daemon's joints changed while recording");
                    }
                    if s.seq == last_seq {
                        repeated_states += 1;
                    }
                    last_seq = s.seq;
                    let images = cameras
                        .iter_mut()
                        .map(|c| c.take())
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    ep.push(
                        Frame {
                            state: s.position,
                            action: s.target,
                        },
                        &images,
                    )?;
                    if let Some(c) = controls.and_then(|r| r.try_recv().ok()) {
                        control = Some(c);
                        break;
                    }
                    if stop.load(Ordering::Relaxed) {
                        control = Some(Control::Stop);
                        break;
                    }
                    if last_progress.elapsed() > Duration::from_millis(200) {
                        last_progress = Instant::now();
                        let elapsed = t0.elapsed().as_secs_f64();
                        progress(&Progress {
                            episode: index,
                            k: k + 1,
                            of: cfg.episodes,
                            elapsed,
                            length: cfg.episode_time,
                            fps: (i + 1) as f64 / elapsed.max(1e-9),
                            backlog: ep.backlog(),
                            phase: "recording",
                        });
                    }
                }
                Ok(())
            })();
            wall = t0.elapsed().as_secs_f64();
            script_stop.store(true, Ordering::Relaxed);
            let script = handle.map(|h| h.join().unwrap_or_else(|_| "panicked".into()));
            result.map(|()| script)
        });
        let script = match script {
            Ok(s) => s,
            Err(e) => {
                writer.discard_episode(ep);
                return Err(e.context(format!("recording episode {index}")));
            }
        };
        if control == Some(Control::Rerecord) {
            writer.discard_episode(ep);
            continue;
        }
        let frames = ep.len();
        let report = writer.finish_episode(ep)?;
        done.push(EpisodeSummary {
            index,
            frames,
            achieved_fps: frames as f64 / wall.max(1e-9),
            late,
            max_lateness_s: max_late,
            repeated_states,
            repeated_images: cameras
                .iter()
                .map(|c| (c.name.clone(), c.repeated))
                .collect(),
            queue_full: report.queue_full,
            commit_s: report.commit_s,
            encode_s: report.encode_s,
            video_bytes: report.video_bytes,
            script,
        });
        if control == Some(Control::Stop) {
            stopping = true;
        }
        k += 1;
    }
    drop(driver);
    Ok(RecordSummary {
        episodes: done,
        total_episodes: writer.episodes(),
        removed: writer.removed().to_vec(),
        cameras: keys,
    })
}
