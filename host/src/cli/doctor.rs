//! `reachy doctor` and `reachy completions`.

use anyhow::{anyhow, Context};
use clap::Args;
use reachy_apps::doctor::{self, DoctorOptions, Level};
use reachy_kinematics::model::RobotModel;

/// `reachy doctor …`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// A servo bus to check, as BUS=PORT with BUS a chain of the servo map (`r_arm`, `l_arm`,
    /// `head`; `reachy kin joints` lists it), e.g. `--bus r_arm=/dev/ttyUSB0` (repeatable).
    #[arg(long, value_name = "BUS=PORT")]
    pub bus: Vec<String>,
    /// The buses' baud rate.
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Servo reply timeout (ms).
    #[arg(long, default_value_t = 20)]
    pub timeout_ms: u32,
    /// The control loop rate the measured bus cycle is held against (Hz).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Set USB-serial latency timers above 1 ms to 1 ms (needs write access to sysfs: root).
    #[arg(long)]
    pub fix_latency: bool,
    /// Skip the rendering adapter probe.
    #[arg(long)]
    pub no_render: bool,
    /// Where device nodes are.
    #[arg(long, default_value = "/dev", value_name = "DIR")]
    pub dev: std::path::PathBuf,
    /// Where sysfs is mounted.
    #[arg(long, default_value = "/sys", value_name = "DIR")]
    pub sysfs: std::path::PathBuf,
    /// TCP ports zenoh will want, reported free or taken (repeatable).
    #[arg(long = "zenoh-port", default_values_t = [7447u16, 7448])]
    pub zenoh_ports: Vec<u16>,
    /// Look for a running daemon at this zenoh endpoint, e.g. `tcp/127.0.0.1:7448`.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Option<String>,
    /// The daemon's robot name.
    #[arg(long, default_value = "reachy")]
    pub robot: String,
    /// Robot description.
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
}

/// Run the checks, print the table; Ok(false) when any check is an error.
pub fn run(a: DoctorArgs) -> anyhow::Result<bool> {
    let (_, model) = RobotModel::load(a.urdf.path())?;
    let buses = a
        .bus
        .iter()
        .map(|b| {
            b.split_once('=')
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .ok_or_else(|| anyhow!("--bus `{b}`: BUS=PORT, e.g. r_arm=/dev/ttyUSB0"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        a.rate > 0.0 && a.rate <= 10_000.0,
        "--rate must be within 0..=10000 Hz"
    );
    let opts = DoctorOptions {
        dev: a.dev,
        sysfs: a.sysfs,
        buses,
        baud: a.baud,
        timeout_ms: a.timeout_ms,
        rate_hz: a.rate,
        fix_latency: a.fix_latency,
        render: !a.no_render,
        zenoh_ports: a.zenoh_ports,
    };
    let session = match &a.connect {
        Some(e) => Some(
            reachy_api::net::ZenohOptions {
                listen: Vec::new(),
                connect: vec![e.clone()],
                zenoh_config: None,
            }
            .open()
            .with_context(|| format!("connecting to {e}"))?,
        ),
        None => None,
    };
    let checks = doctor::run(
        &model,
        &opts,
        session.as_ref().map(|s| (s, a.robot.as_str())),
    );
    print!("{}", doctor::table(&checks));
    let errors = checks.iter().filter(|c| c.level == Level::Error).count();
    let warnings = checks.iter().filter(|c| c.level == Level::Warning).count();
    println!("{errors} error(s), {warnings} warning(s)");
    Ok(errors == 0)
}
