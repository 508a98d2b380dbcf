//! `reachy replay`: an episode of a LeRobot dataset replayed on the robot.

use std::path::PathBuf;

/// `reachy replay`
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// LeRobot v3 dataset directory (meta/info.json, data/chunk-*/file-*.parquet).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Episode index.
    #[arg(long, default_value_t = 0)]
    pub episode: i64,
    /// Playback speed (1 = the dataset's fps).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Seconds to reach the first frame (minimum jerk) before streaming.
    #[arg(long, default_value_t = 2.0)]
    pub approach: f32,
    #[command(flatten)]
    pub report: super::args::ReportArgs,
    #[command(flatten)]
    pub rerun: super::args::RerunArgs,
    /// The robot: --connect to a daemon, or the in-process sim.
    #[command(flatten)]
    pub robot: super::args::RobotArgs,
}

/// Run `reachy replay`.
pub fn run(a: ReplayArgs, urdf: Option<&std::path::Path>) -> anyhow::Result<()> {
    // read and check the whole episode before touching the robot
    let ep = reachy_dataset::load_episode(&a.dataset, a.episode)?;
    let sink = a.rerun.sink()?;
    let mut robot =
        reachy_apps::inprocess::ClientRobot::open(&a.robot.options(), urdf, Vec::new(), 30.0)?;
    let mut client = robot.connect("replay", "script")?;
    robot.record_to(sink.as_ref(), reachy_viz::Layout::default())?;
    println!(
        "replay: episode {} of {} ({} frames at {} fps, {} joints)",
        ep.index,
        a.dataset.display(),
        ep.actions.len(),
        ep.fps,
        ep.names.len()
    );
    let report = reachy_apps::replay::replay(&mut client, &ep, a.speed, a.approach)?;
    drop(client);
    robot.stop()?;
    println!(
        "replay: {} frames in {:.2} s ({} late), final error {:.4} rad",
        report.frames, report.wall_s, report.late_steps, report.final_error
    );
    a.report.write(&report)
}
