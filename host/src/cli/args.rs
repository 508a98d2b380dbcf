//! Flags shared by several subcommands, as clap types; each turns into the plain option struct
//! the libraries take.

use std::path::PathBuf;

use reachy_api::net::ZenohOptions;
use reachy_apps::inprocess::RobotOptions;
use reachy_viz::RerunSink;

/// `--urdf FILE`, on the commands that read the robot description (not on `bus`, `router`,
/// `dataset` or `firmware`, which never do).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UrdfArgs {
    /// Robot description to use instead of the built-in urdf/reachy.urdf.
    #[arg(long, value_name = "FILE")]
    pub urdf: Option<PathBuf>,
}

impl UrdfArgs {
    /// The file, if one was given.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.urdf.as_deref()
    }
}

/// Zenoh options of a command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ZenohArgs {
    /// Zenoh endpoint to listen on, e.g. `tcp/127.0.0.1:7447` (repeatable). Addresses other than
    /// loopback need --zenoh-config with authentication or TLS.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen: Vec<String>,
    /// Zenoh endpoint (a router or another process) to connect to (repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Vec<String>,
    /// A zenoh JSON5 config file applied first (user-password authentication, TLS certificates);
    /// --listen / --connect are added to it. Multicast scouting stays off unless it turns it on.
    #[arg(long, value_name = "FILE")]
    pub zenoh_config: Option<PathBuf>,
}

impl ZenohArgs {
    /// The session options.
    pub fn options(&self) -> ZenohOptions {
        ZenohOptions {
            listen: self.listen.clone(),
            connect: self.connect.clone(),
            zenoh_config: self.zenoh_config.clone(),
        }
    }

    /// Open the session.
    pub fn open(&self) -> anyhow::Result<zenoh::Session> {
        Ok(self.options().open()?)
    }
}

/// Where a client command (teleop, record, replay, policy run) finds its robot.
#[derive(Debug, Clone, clap::Args)]
pub struct RobotArgs {
    /// `sim`: start the simulated robot in this process (the default without --connect);
    /// `firmware`: the same, driven through the firmware's control cores (a `reachy firmware
    /// run` process per limb) and servo buses;
    /// `qemu`: through the firmware images in QEMU, a board per limb (the images from
    /// $REACHY_FW_IMAGE or the board crate's release build).
    #[arg(long)]
    pub backend: Option<String>,
    /// Robot name.
    #[arg(long = "robot", value_name = "ROBOT", default_value = "reachy")]
    pub name: String,
    /// Scene seed of the in-process sim.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Zenoh endpoints: --connect reaches a running daemon.
    #[command(flatten)]
    pub zenoh: ZenohArgs,
}

impl RobotArgs {
    /// The options.
    pub fn options(&self) -> RobotOptions {
        RobotOptions {
            backend: self.backend.clone(),
            name: self.name.clone(),
            seed: self.seed,
            zenoh: self.zenoh.options(),
            // `firmware`: this binary's `reachy firmware run`, a process per limb
            firmware_program: std::env::current_exe().ok(),
        }
    }
}

/// `--rerun spawn | save FILE | connect ADDR`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RerunArgs {
    /// Record to rerun: `spawn` (a viewer), `save FILE` (.rrd) or `connect ADDR`: the robot posed
    /// from its joints, TCPs and their targets, commanded vs measured joints, camera images.
    #[arg(long, num_args = 1..=2, value_names = ["MODE", "ARG"])]
    pub rerun: Option<Vec<String>>,
}

impl RerunArgs {
    /// The sink, if `--rerun` was given.
    pub fn sink(&self) -> anyhow::Result<Option<RerunSink>> {
        RerunSink::from_flag(self.rerun.as_deref())
    }
}

/// `--report FILE`: the command's outcome as JSON.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReportArgs {
    /// Write the report (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

impl ReportArgs {
    /// Write `value` to the report file, if one was asked for.
    pub fn write(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        use anyhow::Context;
        if let Some(p) = &self.report {
            std::fs::write(p, serde_json::to_string_pretty(value)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}
