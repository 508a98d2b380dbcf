//! `reachy record`: record demonstrations — joints and camera videos — into a LeRobot v3
//! dataset; `reachy dataset info|validate`: look at one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};

use reachy_apps::record::{Control, Progress, RecordConfig, Teleop};
use reachy_dataset::VideoOptions;

/// `reachy record`
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// Dataset directory (LeRobot's `--dataset.root`; `--out` is another name for it).
    #[arg(long, alias = "out", value_name = "DIR")]
    pub root: PathBuf,
    /// Dataset name (LeRobot's `--dataset.repo_id`), e.g. `me/reachy_pick`; printed for
    /// `lerobot-train --dataset.repo_id`. Defaults to the directory's name.
    #[arg(long)]
    pub repo_id: Option<String>,
    /// Episodes to record (with --resume: this many more).
    #[arg(long, default_value_t = 1)]
    pub episodes: usize,
    /// Length of an episode (s).
    #[arg(long, default_value_t = 10.0)]
    pub episode_time: f64,
    /// Pause between episodes (s): the scene is reset then.
    #[arg(long, default_value_t = 0.0)]
    pub reset_time: f64,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Task of every episode (a language instruction).
    #[arg(long, default_value = "")]
    pub task: String,
    /// Who drives: `scripted` (the demo's pick-and-place, a new seeded scene per episode; needs
    /// the sim), `pose-stream` (`reachy teleop`'s JSON lines on stdin, in this process; its
    /// answers go to stderr), `keyboard`, `gamepad`, `leader`, `webxr` (`reachy teleop --source`'s
    /// devices, in this process: the keyboard's q / Esc ends the recording), `none` (someone
    /// else: teleop, a policy, a script).
    #[arg(long, default_value = "none", value_parser = ["scripted", "pose-stream", "keyboard", "gamepad", "leader", "webxr", "none"])]
    pub teleop: String,
    /// The teleop device's settings (`--arm`, `--speed`, `--leader-port`, …).
    #[command(flatten)]
    pub device: super::teleop::DeviceArgs,
    /// Cameras: `all` (every camera the daemon publishes), `none`, or names
    /// (`head_camera,r_wrist_camera`).
    #[arg(long, default_value = "all")]
    pub cameras: String,
    /// Camera size of the in-process sim (`WxH`).
    #[arg(long, default_value = "640x480", value_name = "WxH")]
    pub camera_size: String,
    /// Continue the dataset after its last complete episode (what an interrupted episode left
    /// is removed).
    #[arg(long)]
    pub resume: bool,
    /// Object the scripted demonstration moves.
    #[arg(long, default_value = "red_cube")]
    pub object: String,
    /// Frames between video key frames.
    #[arg(long, default_value_t = VideoOptions::default().gop)]
    pub gop: u32,
    /// H.264 quantiser (0 best … 51 worst).
    #[arg(long, default_value_t = VideoOptions::default().qp)]
    pub qp: u8,
    /// `robot_type` written in the dataset.
    #[arg(long, default_value = "reachy2")]
    pub robot_type: String,
    /// The robot: --connect to a daemon, or the in-process sim.
    #[command(flatten)]
    pub robot: super::args::RobotArgs,
    /// Rerun view of the recording.
    #[command(flatten)]
    pub rerun: super::args::RerunArgs,
    /// Summary as JSON.
    #[command(flatten)]
    pub report: super::args::ReportArgs,
}

/// `WxH` as `reachy sim` takes it, both even (yuv420p video).
fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = super::sim::parse_size(s).context("--camera-size")?;
    if !w.is_multiple_of(2) || !h.is_multiple_of(2) {
        bail!("--camera-size {w}x{h}: the videos need an even width and height");
    }
    Ok((w, h))
}

/// The operator's keys, when stdin is a terminal: → ends the episode, ← re-records it, Esc
/// stops. Raw mode ends with the guard.
struct Keys {
    rx: std::sync::mpsc::Receiver<Control>,
    done: Arc<AtomicBool>,
}

impl Keys {
    fn start() -> Option<Self> {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() || crossterm::terminal::enable_raw_mode().is_err() {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            use crossterm::event::{poll, read, Event, KeyCode, KeyEventKind, KeyModifiers};
            while !d.load(Ordering::Relaxed) {
                if !poll(std::time::Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                let Ok(Event::Key(k)) = read() else { continue };
                if k.kind == KeyEventKind::Release {
                    continue;
                }
                let c = match k.code {
                    KeyCode::Right => Control::EndEpisode,
                    KeyCode::Left => Control::Rerecord,
                    KeyCode::Esc => Control::Stop,
                    // raw mode swallows Ctrl-C's signal
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        Control::Stop
                    }
                    _ => continue,
                };
                if tx.send(c).is_err() {
                    break;
                }
            }
        });
        Some(Self { rx, done })
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        crossterm::terminal::disable_raw_mode().ok();
    }
}

/// Run `reachy record`.
pub fn run(mut a: RecordArgs, urdf: Option<&std::path::Path>) -> anyhow::Result<()> {
    super::teleop::take_xr_listen(&mut a.device, &mut a.robot);
    let (w, h) = parse_size(&a.camera_size)?;
    let cameras = match a.cameras.as_str() {
        "all" => None,
        "none" => Some(Vec::new()),
        list => Some(list.split(',').map(|s| s.trim().to_string()).collect()),
    };
    // the in-process sim renders the cameras asked for, at the dataset's fps
    let specs: Vec<reachy_sim::camera::CameraSpec> = reachy_sim::camera::CameraSpec::reachy(w, h)
        .into_iter()
        .filter(|c| cameras.as_ref().is_none_or(|l| l.contains(&c.name)))
        .collect();
    let mut robot =
        reachy_apps::inprocess::ClientRobot::open(&a.robot.options(), urdf, specs, a.fps as f64)?;
    let (_, model) = reachy_kinematics::model::RobotModel::load(urdf)?;
    let repo_id = a.repo_id.clone().unwrap_or_else(|| {
        a.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into())
    });
    let cfg = RecordConfig {
        root: a.root.clone(),
        episodes: a.episodes,
        episode_time: a.episode_time,
        reset_time: a.reset_time,
        fps: a.fps,
        task: a.task.clone(),
        cameras: cameras.clone(),
        resume: a.resume,
        teleop: if a.teleop == "scripted" {
            Teleop::Scripted
        } else {
            Teleop::None
        },
        robot_type: a.robot_type.clone(),
        seed: a.robot.seed,
        object: a.object.clone(),
        video: VideoOptions {
            gop: a.gop,
            qp: a.qp,
        },
        queue_s: 2.0,
    };
    let sink = a.rerun.sink()?;
    let names: Vec<String> = cameras.clone().unwrap_or_else(|| {
        reachy_sim::camera::CameraSpec::reachy(w, h)
            .into_iter()
            .map(|c| c.name)
            .collect()
    });
    robot.record_to(
        sink.as_ref(),
        reachy_viz::Layout {
            cameras: names.clone(),
            episodes: true,
            ..Default::default()
        },
    )?;
    let annotator = robot.annotator();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    println!(
        "recording {} episode(s) of {} s at {} fps from `{}` into {} ({})",
        a.episodes,
        a.episode_time,
        a.fps,
        robot.name,
        a.root.display(),
        if a.resume { "resuming" } else { "new dataset" }
    );
    let operator = matches!(
        a.teleop.as_str(),
        "pose-stream" | "keyboard" | "gamepad" | "leader" | "webxr"
    );
    if operator {
        // the operator's device drives from its own thread with the teleop lease; the recorder
        // samples whatever the robot does. The device opens here, so a missing one is said
        // before the first episode.
        let opened = super::teleop::open_source(&a.teleop, &a.device, &model)?;
        let mut client = robot.connect("record-teleop", "teleop")?;
        let (device, stop2) = (a.device.clone(), stop.clone());
        let session = robot.session.clone();
        let source = a.teleop.clone();
        std::thread::Builder::new()
            .name("teleop".into())
            .spawn(move || {
                let r = super::teleop::drive(
                    opened,
                    &device,
                    &session,
                    &mut client,
                    &stop2,
                    false,
                    &mut |l| eprintln!("{l}"),
                );
                if let Err(e) = r {
                    eprintln!("teleop ({source}): {e:#}");
                }
                // the keyboard's q / Esc (or the device gone) ends the recording too
                if source != "pose-stream" {
                    stop2.store(true, Ordering::Relaxed);
                }
            })
            .context("starting the teleop source")?;
    }
    // keys need the terminal's stdin, which a pose stream, the keyboard source and the leader's
    // calibration read
    let keys = if matches!(a.teleop.as_str(), "pose-stream" | "keyboard" | "leader") {
        None
    } else {
        Keys::start()
    };
    if keys.is_some() {
        println!("keys: → ends the episode, ← records it again, Esc stops (keeping it)\r");
    }
    let bar = keys.as_ref().map(|_| {
        let b = indicatif::ProgressBar::new(1000);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        b
    });
    let mut phase = "";
    let mut progress = |p: &Progress| {
        if p.phase != phase {
            phase = p.phase;
            if let Some(a) = &annotator {
                a.event(&format!(
                    "episode {}/{} (dataset episode {}): {}",
                    p.k, p.of, p.episode, p.phase
                ));
            }
        }
        if p.phase == "start" {
            let line = format!(
                "episode {}/{}: recording (episode {} of the dataset)",
                p.k, p.of, p.episode
            );
            match &bar {
                Some(b) => b.println(line),
                None => {
                    println!("{line}");
                    use std::io::Write;
                    std::io::stdout().flush().ok();
                }
            }
        }
        if let Some(b) = &bar {
            b.set_prefix(format!("episode {}/{} ({})", p.k, p.of, p.phase));
            b.set_position((p.elapsed / p.length.max(1e-9) * 1000.0).min(1000.0) as u64);
            b.set_message(format!(
                "{:.1}/{:.1} s, {:.1} fps, encoder backlog {}",
                p.elapsed, p.length, p.fps, p.backlog
            ));
        }
    };
    let result = reachy_apps::record::record(
        &robot.session,
        &robot.name,
        &model,
        &cfg,
        keys.as_ref().map(|k| &k.rx),
        &stop,
        &mut progress,
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    drop(keys);
    let summary = result?;
    for p in &summary.removed {
        println!("  removed {} (left by an interrupted episode)", p.display());
    }
    for e in &summary.episodes {
        let repeated: u64 = e.repeated_images.iter().map(|r| r.1).sum();
        println!(
            "  episode {}: {} frames at {:.1} fps, {} late, {} repeated camera frames, {} \
             without a new state, {} waited for the encoder; durable {:.0} ms after its end, \
             {:.1} MB of video{}",
            e.index,
            e.frames,
            e.achieved_fps,
            e.late,
            repeated,
            e.repeated_states,
            e.queue_full,
            e.commit_s * 1000.0,
            e.video_bytes as f64 / 1e6,
            e.script
                .as_ref()
                .map(|s| format!("; scripted demonstration: {s}"))
                .unwrap_or_default()
        );
        if e.achieved_fps < 0.95 * a.fps as f64 || e.late > 0 {
            println!(
                "  warning: episode {} ran at {:.1} fps for {} fps asked ({} ticks late): this \
                 machine cannot hold the rate with these cameras",
                e.index, e.achieved_fps, a.fps, e.late
            );
        }
    }
    println!(
        "dataset `{repo_id}`: {} episode(s) in {} (train: lerobot-train --dataset.repo_id={repo_id} \
         --dataset.root={})",
        summary.total_episodes,
        a.root.display(),
        a.root.display()
    );
    a.report.write(&summary)?;
    robot.stop()
}

/// `reachy dataset`
#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Episodes, frames, duration, fps, features, cameras (codec, size), tasks, bytes.
    Info {
        /// Dataset directory.
        dir: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check timestamps, frame counts against the videos, episode indices and offsets, stats,
    /// missing or truncated files; exit 1 on any problem.
    Validate {
        /// Dataset directory.
        dir: PathBuf,
    },
}

/// Run `reachy dataset …`; Ok(false) when validation found problems.
pub fn run_dataset(cmd: DatasetCommand) -> anyhow::Result<bool> {
    match cmd {
        DatasetCommand::Info { dir, json } => {
            let i = reachy_dataset::inspect::info(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
                return Ok(true);
            }
            println!("{} ({})", i.root.display(), i.robot_type);
            println!(
                "  {} episodes, {} frames, {:.1} s at {} fps, {:.1} MB",
                i.episodes,
                i.frames,
                i.duration_s,
                i.fps,
                i.bytes as f64 / 1e6
            );
            println!("  features:");
            for (k, dtype, shape) in &i.features {
                println!("    {k}: {dtype} {shape:?}");
            }
            for c in &i.cameras {
                println!(
                    "  camera {}: {} {}x{}, {:.1} MB",
                    c.key,
                    c.codec,
                    c.size[0],
                    c.size[1],
                    c.bytes as f64 / 1e6
                );
            }
            println!("  tasks: {:?}", i.tasks);
            Ok(true)
        }
        DatasetCommand::Validate { dir } => {
            let problems = reachy_dataset::inspect::validate(&dir);
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                println!("{}: ok", dir.display());
            } else {
                println!("{}: {} problem(s)", dir.display(), problems.len());
            }
            Ok(problems.is_empty())
        }
    }
}
