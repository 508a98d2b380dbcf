//! `reachy record`: record the robot into a LeRobot v3 dataset while something else drives it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use reachy_api::schema::{self, keys};
use reachy_dataset::write::{DatasetWriter, Frame};

/// `reachy record`
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Dataset directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Episodes to record.
    #[arg(long, default_value_t = 1)]
    pub episodes: usize,
    /// Length of an episode (s).
    #[arg(long, default_value_t = 10.0)]
    pub episode_time: f64,
    /// Pause between episodes (s), to reset the scene.
    #[arg(long, default_value_t = 0.0)]
    pub reset_time: f64,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Task of every episode (a language instruction).
    #[arg(long, default_value = "")]
    pub task: String,
    /// `robot_type` written in the dataset.
    #[arg(long, default_value = "reachy2")]
    pub robot_type: String,
    /// The robot: --connect to a daemon, or the in-process sim.
    #[command(flatten)]
    pub robot: super::args::RobotArgs,
}

/// Run `reachy record`.
pub fn run(a: RecordArgs, urdf: Option<&std::path::Path>) -> anyhow::Result<()> {
    if !(a.episode_time > 0.0 && a.episode_time <= 86_400.0) {
        bail!("--episode-time must be within 0..=86400 s");
    }
    let robot =
        reachy_apps::inprocess::ClientRobot::open(&a.robot.options(), urdf, Vec::new(), 30.0)?;
    // passive: no lease, the daemon's state only
    let (latest, _sub) =
        reachy_api::net::subscribe_latest(&robot.session, &keys::state(&robot.name), |b| {
            schema::decode_robot::<schema::RobotState>(b).ok()
        })?;
    let has_state = || latest.lock().is_ok_and(|l| l.is_some());
    if !reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(5), has_state) {
        bail!("no state from the daemon of `{}`", robot.name);
    }
    let first = latest.lock().ok().and_then(|l| l.clone()).expect("checked");
    let names: Vec<String> = first.names.iter().map(|n| format!("{n}.pos")).collect();
    let mut writer = DatasetWriter::create(&a.out, a.fps, names, &a.robot_type)?;
    println!(
        "recording {} episode(s) of {} s at {} fps from `{}` into {}",
        a.episodes,
        a.episode_time,
        a.fps,
        robot.name,
        a.out.display()
    );
    use std::io::Write;
    std::io::stdout().flush().ok();
    let period = Duration::from_secs_f64(1.0 / a.fps as f64);
    let n = (a.episode_time * a.fps as f64).round().max(1.0) as usize;
    for ep in 0..a.episodes {
        let mut frames = Vec::with_capacity(n);
        let (mut late, mut repeated) = (0u64, 0u64);
        let mut last_seq = u64::MAX;
        let t0 = Instant::now();
        for k in 0..n {
            let due = t0 + period * k as u32;
            match due.checked_duration_since(Instant::now()) {
                Some(d) => std::thread::sleep(d),
                None if Instant::now() - due > period => late += 1,
                None => {}
            }
            let Some(s) = latest.lock().ok().and_then(|l| l.clone()) else {
                bail!("the daemon's state stopped");
            };
            if s.names.len() != first.names.len() {
                bail!("the daemon's joints changed while recording");
            }
            if s.seq == last_seq {
                repeated += 1;
            }
            last_seq = s.seq;
            frames.push(Frame {
                state: s.position,
                action: s.target,
            });
        }
        writer.add_episode(&frames, &a.task)?;
        // the loop's timing is reported, never hidden behind frames stamped i/fps
        println!(
            "  episode {ep}: {} frames, {late} late, {repeated} without a new state",
            frames.len()
        );
        std::io::stdout().flush().ok();
        if ep + 1 < a.episodes && a.reset_time > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(a.reset_time));
        }
    }
    robot.stop()?;
    println!(
        "dataset: {} episode(s) in {}",
        writer.episodes(),
        a.out.display()
    );
    Ok(())
}
