//! `reachy firmware run`: the firmware core as a host process, with a pty for the host link and
//! serial ports (or ptys from `reachy sim servos`) as servo buses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    use std::io::BufRead;
    if !image.is_file() {
        bail!(
            "--image {}: no such file (cd firmware/boards/mps2-an386 && cargo build --release)",
            image.display()
        );
    }
    if link.symlink_metadata().is_ok() {
        bail!("--link {}: something is already there", link.display());
    }
    let mut child = std::process::Command::new("qemu-system-arm")
        .args([
            "-cpu",
            "cortex-m4",
            "-machine",
            "mps2-an386",
            "-display",
            "none",
        ])
        .args([
            "-monitor", "none", "-serial", "pty", "-serial", "pty", "-kernel",
        ])
        .arg(image)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting qemu-system-arm (Debian: apt install qemu-system-arm)")?;
    // QEMU says "char device redirected to /dev/pts/N (label serial0)" per UART, on either stream
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let streams: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("piped")),
        Box::new(child.stderr.take().expect("piped")),
    ];
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut ptys = Vec::new();
    let t0 = Instant::now();
    while ptys.len() < 2 && t0.elapsed() < Duration::from_secs(20) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if let Some(rest) = line.split("redirected to ").nth(1) {
                ptys.extend(rest.split_whitespace().next().map(str::to_string));
            } else {
                tracing::info!("qemu: {line}");
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("qemu-system-arm exited ({status}) before its UARTs were ready");
        }
    }
    if ptys.len() < 2 {
        let _ = child.kill();
        bail!("qemu-system-arm did not report its two UART ptys within 20 s");
    }
    std::os::unix::fs::symlink(&ptys[0], link)
        .with_context(|| format!("linking {} to {}", link.display(), ptys[0]))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed)).context("Ctrl-C handler")?;
    let mut bridges = Vec::new();
    if let Some(bus) = bus {
        let open = |p: &str| {
            serialport::new(p, 1_000_000)
                .timeout(Duration::from_millis(20))
                .open_native()
                .with_context(|| format!("opening {p}"))
        };
        let uart = open(&ptys[1])?;
        let dev = open(&bus.to_string_lossy())?;
        for (mut from, mut to) in [
            (uart.try_clone_native()?, dev.try_clone_native()?),
            (dev, uart),
        ] {
            let stop = stop.clone();
            bridges.push(std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    match from.read(&mut buf) {
                        Ok(0) => {}
                        Ok(n) => {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }));
        }
    }
    println!(
        "firmware in QEMU: host link at {} (UART0 {}), servo bus UART1 {}{}",
        link.display(),
        ptys[0],
        ptys[1],
        bus.map(|b| format!(" bridged to {}", b.display()))
            .unwrap_or_default()
    );
    use std::io::Write;
    std::io::stdout().flush().ok();
    let status = loop {
        if stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            break child.wait().ok();
        }
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let interrupted = stop.swap(true, Ordering::Relaxed);
    for b in bridges {
        let _ = b.join();
    }
    let _ = std::fs::remove_file(link);
    match status {
        Some(s) if !s.success() && !interrupted => bail!("qemu-system-arm: {s}"),
        _ => Ok(()),
    }
}
