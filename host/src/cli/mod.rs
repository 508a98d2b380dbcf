//! The `reachy` command line: one module per subcommand family.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use reachy_kinematics::model::RobotModel;
use zenoh::Wait;

pub mod args;
pub mod bus;
pub mod daemon;
pub mod doctor;
pub mod firmware;
pub mod kin;
pub mod policy;
pub mod record;
pub mod replay;
pub mod servos;
pub mod sim;
pub mod teleop;

/// Reachy control stack: kinematics, servo bus tools, firmware, simulated servos, policies.
///
/// Examples:
///   reachy kin chains
///   echo '{"chain":"r_arm","q":[0,-1.3,0,-1.5,0,0,0]}' | reachy kin fk
///   echo '{"chain":"r_arm","t":[0.4,-0.25,0.8]}' | reachy kin ik
#[derive(Debug, Parser)]
#[command(name = "reachy", version, verbatim_doc_comment)]
pub struct Cli {
    /// More log output: -v everything at info (zenoh's session messages too), -vv debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Kinematics as JSON lines: list chains, forward and inverse kinematics, look-at.
    Kin {
        /// Robot description to use instead of the built-in urdf/reachy.urdf.
        #[arg(long, global = true, value_name = "FILE")]
        urdf: Option<std::path::PathBuf>,
        /// What to compute.
        #[command(subcommand)]
        command: kin::KinCommand,
    },
    /// Dynamixel 2.0 bus tools through a serial adapter: scan, read and write registers.
    #[command(subcommand)]
    Bus(bus::BusCommand),
    /// New servos set up for the URDF's servo map (ID, baud rate, limits), and their mounting
    /// calibrated into the config.
    #[command(subcommand)]
    Servos(servos::ServosCommand),
    /// The simulated robot on zenoh (physics, cameras, lock-step or real time), and simulated
    /// servos on a pseudo-terminal (`reachy sim servos`).
    Sim(sim::SimArgs),
    /// The robot behind one zenoh API (state, joint targets, goto, leases, e-stop), on the
    /// simulator backend.
    Daemon(daemon::DaemonArgs),
    /// Sim + daemon in this process and a scripted pick-and-place through the API; exit 0 only
    /// if the cube ends where it was meant to.
    Demo(daemon::DemoArgs),
    /// Teleoperate through the daemon's API (the `teleop` lease): a Cartesian pose stream as
    /// JSON lines (stdin or a zenoh key), the keyboard, a gamepad, a leader arm or a WebXR
    /// headset's browser. A running daemon (--connect) or the simulated robot started in this
    /// process.
    Teleop(Box<teleop::TeleopArgs>),
    /// Record demonstrations into a LeRobot v3 dataset: joint positions as `observation.state`,
    /// commanded targets as `action`, the cameras as H.264 videos, while the built-in script,
    /// teleop, a policy or anyone drives.
    Record(Box<record::RecordArgs>),
    /// Look at a LeRobot dataset: `info`, `validate`.
    #[command(subcommand)]
    Dataset(record::DatasetCommand),
    /// Replay an episode of a LeRobot dataset (its `action` rows, joints named `<joint>.pos`) on
    /// a running daemon (--connect) or the simulated robot started in this process.
    Replay(replay::ReplayArgs),
    /// A zenoh router: sims, daemons, policy servers and clients on several hosts all
    /// `--connect` to it (no zenohd needed). Runs until Ctrl-C.
    Router(args::ZenohArgs),
    /// The firmware core as a host process (link on a pty, servo buses on serial ports).
    #[command(subcommand)]
    Firmware(firmware::FirmwareCommand),
    /// Learned policies: LeRobot ACT checkpoints on candle (predict a chunk, benchmark, run on
    /// the robot, serve over zenoh).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Check what a first hour on a real robot breaks on, each line with its fix: serial
    /// adapters and permissions, USB latency timers, every servo the servo map expects
    /// (`--bus r_arm=/dev/ttyUSB0`), the bus cycle, rendering, CUDA, zenoh ports, a daemon
    /// (`--connect`). Exits non-zero when a check fails.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script, e.g. `reachy completions bash > ~/.local/share/bash-completion/completions/reachy`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Run a parsed command line; the exit code is non-zero when any input failed.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Kin { urdf, command: cmd } => {
            let (_, model) = RobotModel::load(urdf.as_deref())?;
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            let failed = kin::run(&model, cmd, stdin.lock(), stdout.lock())?;
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Bus(cmd) => bus::run(cmd).map(|_| ExitCode::SUCCESS),
        Command::Servos(cmd) => servos::run(cmd).map(|_| ExitCode::SUCCESS),
        Command::Sim(args) => {
            let (urdf, _) = RobotModel::load(args.run.urdf.path())?;
            sim::run(&urdf, args).map(|_| ExitCode::SUCCESS)
        }
        Command::Daemon(args) => {
            let (urdf, model) = RobotModel::load(args.urdf.path())?;
            daemon::run_daemon(&urdf, model, args).map(|_| ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let (urdf, model) = RobotModel::load(args.urdf.path())?;
            let ok = daemon::run_demo(&urdf, model, args)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Teleop(args) => {
            let urdf = args.urdf.urdf.clone();
            let ok = teleop::run(*args, urdf.as_deref())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Record(args) => {
            let urdf = args.urdf.urdf.clone();
            record::run(*args, urdf.as_deref()).map(|_| ExitCode::SUCCESS)
        }
        Command::Dataset(cmd) => Ok(if record::run_dataset(cmd)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Command::Replay(args) => {
            let urdf = args.urdf.urdf.clone();
            replay::run(args, urdf.as_deref()).map(|_| ExitCode::SUCCESS)
        }
        Command::Router(z) => run_router(&z).map(|_| ExitCode::SUCCESS),
        Command::Firmware(cmd) => firmware::run(cmd).map(|_| ExitCode::SUCCESS),
        Command::Policy(cmd) => policy::run(cmd).map(|_| ExitCode::SUCCESS),
        Command::Doctor(args) => Ok(if doctor::run(args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "reachy", &mut script);
            use std::io::Write;
            // a closed pipe (`| head`) is not an error worth a panic
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// Run a zenoh router on the `--listen` endpoints until Ctrl-C.
fn run_router(z: &args::ZenohArgs) -> anyhow::Result<()> {
    let session = z.options().open_router()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, std::sync::atomic::Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    println!(
        "router ready{}",
        reachy_api::net::listening_note(&session).replacen(';', ":", 1)
    );
    use std::io::Write;
    std::io::stdout().flush().ok();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    session
        .close()
        .wait()
        .map_err(|e| anyhow::anyhow!("closing the router: {e}"))
}
