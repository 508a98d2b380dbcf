//! `reachy firmware run`: the firmware core as a host process, with a pty for the host link and
//! serial ports (or ptys from `reachy sim servos`) as servo buses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use reachy_firmware::control::JointMap;
use reachy_firmware::dynamixel::Model;

use reachy_daemon::serial::SerialIo;

/// `reachy firmware …`
#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Run the firmware control loop on this machine. Joints are numbered in --bus order.
    Run {
        /// Create the host link as a pty with a symlink at this path.
        #[arg(long)]
        link: PathBuf,
        /// A servo bus: `CHAIN=PATH` takes the chain's servos from the URDF's servo map (see
        /// `reachy kin joints`), e.g. `r_arm=/dev/ttyUSB0`; `PATH:IDS` gives IDs by hand, e.g.
        /// `/tmp/bus:1-8`. Repeat per limb (≤ 3); firmware joint indices follow this order.
        #[arg(long, required = true)]
        bus: Vec<String>,
        /// Bus baud rate.
        #[arg(long, default_value_t = 1_000_000)]
        baud: u32,
        /// Control rate (Hz).
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Servo model (current units).
        #[arg(long, default_value = "xm430-w350")]
        model: String,
    },
    /// Run the Cortex-M4 firmware image in QEMU (mps2-an386) with its UARTs wired: UART0, the
    /// host link, as a symlink at --link; UART1, the servo bus, bridged to --bus (e.g. the pty
    /// of `reachy sim servos`). No socat needed.
    Qemu {
        /// The firmware image (`cd firmware/boards/mps2-an386 && cargo build --release` builds
        /// `target/thumbv7em-none-eabihf/release/reachy-fw-mps2`).
        #[arg(long)]
        image: PathBuf,
        /// Symlink to create for the host link (UART0).
        #[arg(long)]
        link: PathBuf,
        /// Serial device or pty to bridge the servo bus (UART1) to.
        #[arg(long)]
        bus: Option<PathBuf>,
    },
}

/// Run a `firmware` subcommand.
pub fn run(cmd: FirmwareCommand) -> anyhow::Result<()> {
    let (link, bus, baud, rate, model) = match cmd {
        FirmwareCommand::Run {
            link,
            bus,
            baud,
            rate,
            model,
        } => (link, bus, baud, rate, model),
        FirmwareCommand::Qemu { image, link, bus } => return qemu(&image, &link, bus.as_deref()),
    };
    if bus.len() > reachy_firmware::control::MAX_BUSES {
        bail!("at most {} buses", reachy_firmware::control::MAX_BUSES);
    }
    if !(1..=10_000).contains(&rate) {
        bail!("--rate must be within 1..10000 Hz");
    }
    let model = Model::from_name(&model).ok_or_else(|| anyhow!("unknown model `{model}`"))?;
    let mut ports = Vec::new();
    let mut joints = Vec::new();
    let robot = reachy_kinematics::model::RobotModel::reachy()?;
    let map = robot.servo_map();
    let mut names = Vec::new();
    for (b, spec) in bus.iter().enumerate() {
        let path = match spec.split_once('=') {
            Some((chain, path)) => {
                let on_bus: Vec<_> = map.iter().filter(|a| a.bus == chain).collect();
                if on_bus.is_empty() {
                    let chains: Vec<&str> = robot.chains.iter().map(|c| c.name()).collect();
                    bail!(
                        "--bus `{spec}`: no chain `{chain}` (known: {})",
                        chains.join(", ")
                    );
                }
                for a in on_bus {
                    joints.push(JointMap {
                        bus: b as u8,
                        id: a.id,
                    });
                    names.push(a.joint.clone());
                }
                path
            }
            None => {
                let (path, ids) = spec.rsplit_once(':').ok_or_else(|| {
                    anyhow!("--bus `{spec}`: expected CHAIN=PATH (e.g. r_arm=/dev/ttyUSB0) or PATH:IDS (e.g. /tmp/bus:1-8)")
                })?;
                for id in super::bus::parse_ids(ids)? {
                    joints.push(JointMap { bus: b as u8, id });
                    names.push(format!("{path}#{id}"));
                }
                path
            }
        };
        ports.push(SerialIo::open(path, baud).with_context(|| format!("opening bus {path}"))?);
    }
    tracing::info!(joints = ?names, "firmware joint indices");
    let core = reachy_apps::direct::HostCore::new(&link, ports, &joints, model, rate)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed)).context("Ctrl-C handler")?;
    tracing::info!(link = %link.display(), joints = joints.len(), rate, "firmware running");
    core.run(&stop);
    let _ = std::fs::remove_file(&link);
    Ok(())
}

/// `reachy firmware qemu`: the image in QEMU, UART0 linked at `link`, UART1 bridged to `bus`.
fn qemu(
    image: &std::path::Path,
    link: &std::path::Path,
    bus: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut board = reachy_apps::qemu::QemuBoard::start(image, link, bus)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed)).context("Ctrl-C handler")?;
    println!(
        "firmware in QEMU: host link at {} (UART0 {}), servo bus UART1 {}{}",
        link.display(),
        board.uart0,
        board.uart1,
        bus.map(|b| format!(" bridged to {}", b.display()))
            .unwrap_or_default()
    );
    use std::io::Write;
    std::io::stdout().flush().ok();
    match board.wait(&stop)? {
        Some(s) if !s.success() => bail!("qemu-system-arm: {s}"),
        _ => Ok(()),
    }
}
