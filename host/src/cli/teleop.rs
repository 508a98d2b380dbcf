//! `reachy teleop`: teleoperation through the daemon's API with the `teleop` lease (it pre-empts
//! policies and scripts), from a Cartesian pose stream on stdin ([`reachy_apps::teleop`] says
//! what the lines hold and what comes back).

use anyhow::bail;

/// `reachy teleop`
#[derive(Debug, clap::Args)]
pub struct TeleopArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// `stdin`: JSON lines of TCP targets (`{"arm", "position", "orientation"?, "gripper"?}`)
    /// or `{"hold": SECONDS}`.
    #[arg(long, default_value = "stdin")]
    pub input: String,
    /// Rate at which `hold` re-sends the last targets (Hz).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    #[command(flatten)]
    pub rerun: super::args::RerunArgs,
    /// The robot: --connect to a daemon, or the in-process sim.
    #[command(flatten)]
    pub robot: super::args::RobotArgs,
}

/// Run `reachy teleop`; Ok(false) when a line was bad.
pub fn run(a: TeleopArgs, urdf: Option<&std::path::Path>) -> anyhow::Result<bool> {
    if a.input != "stdin" {
        bail!(
            "--input `{}`: only `stdin` (JSON lines) is available",
            a.input
        );
    }
    let sink = a.rerun.sink()?;
    let mut robot =
        reachy_apps::inprocess::ClientRobot::open(&a.robot.options(), urdf, Vec::new(), 30.0)?;
    let client = robot.connect("teleop", "teleop")?;
    robot.record_to(sink.as_ref(), reachy_viz::Layout::default())?;
    let bad =
        reachy_apps::teleop::pose_stream(&client, std::io::stdin().lock(), a.rate, &mut |v| {
            println!("{v}")
        })?;
    drop(client);
    robot.stop()?;
    Ok(bad == 0)
}
