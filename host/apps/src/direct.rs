//! The direct-bus backend (`reachy daemon --backend dynamixel --bus r_arm=/dev/ttyUSB0`):
//! servos straight from a USB adapter (U2D2, an FTDI cable), no MCU board. The firmware
//! crate's control core — the code that runs on the board, not a second implementation — runs
//! on a thread of the daemon's process over the adapter, and the daemon talks to it through the
//! same host link and [`SerialBackend`] it uses for a board, over an in-process pseudo-terminal.
//! So the API, the limits, the faults, the e-stop and the watchdog are the serial backend's:
//! if the daemon's loop stalls, the control core holds, then drops torque.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use reachy_api::worker::Worker;
use reachy_daemon::backend::{Backend, Measured};
use reachy_daemon::core::JointLimit;
use reachy_daemon::serial::{SerialIo, StdClock};
use reachy_daemon::{DaemonError, SerialBackend};
use reachy_firmware::control::{Controller, JointMap};
use reachy_firmware::dynamixel::Model;
use reachy_kinematics::model::RobotModel;

/// The firmware's control core on a host: its host link on a new pty at a path, its servo buses
/// on serial ports, one cycle per period once run. What `reachy firmware run` runs as a process
/// and [`DirectBackend`] on a thread.
pub struct HostCore {
    ctl: Controller<SerialIo, SerialIo, StdClock>,
    period: Duration,
    // the pty's other end, kept open while the core runs
    _slave: Box<dyn Send>,
}

impl HostCore {
    /// The core for `joints` on `buses` (a joint's `bus` indexes them), its host link at `link`,
    /// cycling at `rate_hz`.
    pub fn new(
        link: &std::path::Path,
        buses: Vec<SerialIo>,
        joints: &[JointMap],
        model: Model,
        rate_hz: u32,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=10_000).contains(&rate_hz),
            "the control rate must be within 1..10000 Hz"
        );
        let (master, slave) =
            reachy_sim::servo_pty::pty_pair(link).context("creating the host link pty")?;
        let period_us = 1_000_000 / rate_hz;
        let mut ctl = Controller::new(
            SerialIo::new(Box::new(master)),
            buses,
            StdClock::default(),
            joints,
            model,
            period_us,
        )
        .map_err(|e| anyhow!("firmware configuration: {e:?}"))?;
        ctl.set_bus_timeout_us(3_000);
        Ok(Self {
            ctl,
            period: Duration::from_micros(period_us as u64),
            _slave: Box::new(slave),
        })
    }

    /// Cycle once per period until `stop` is set; an overrun is not caught up (the controller
    /// counts it).
    pub fn run(mut self, stop: &AtomicBool) {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.ctl.tick();
            next += self.period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
    }
}

/// The servos of one bus of the servo map on a serial adapter, driven by the firmware's
/// control core in this process (or by a board's firmware image in QEMU, see
/// [`DirectBackend::qemu`]).
pub struct DirectBackend {
    inner: SerialBackend,
    // stopped after `inner` is dropped: fields drop in order
    behind: Option<Behind>,
    link: PathBuf,
}

/// What answers on the far end of the backend's host link.
enum Behind {
    /// The control core on a thread of this process.
    Core(Worker<anyhow::Error>),
    /// The control core as a `reachy firmware run` process.
    Process(FirmwareProcess),
    /// A board's image in QEMU, its servo bus bridged to the bus.
    Qemu(crate::qemu::QemuBoard),
}

/// How the direct backend drives its bus.
#[derive(Debug, Clone)]
pub struct DirectOptions {
    /// The servo map's bus (`r_arm`, `l_arm`, `head`).
    pub bus: String,
    /// The adapter, e.g. `/dev/ttyUSB0`.
    pub port: String,
    /// The bus's baud rate.
    pub baud: u32,
    /// The servos' model.
    pub model: Model,
    /// The control core's rate (Hz).
    pub rate_hz: u32,
}

impl DirectBackend {
    /// Open the adapter and start the control core on it.
    pub fn open(
        opts: &DirectOptions,
        robot: &RobotModel,
        mounts: &std::collections::BTreeMap<String, reachy_daemon::config::ServoMount>,
    ) -> anyhow::Result<Self> {
        let joints: Vec<JointMap> = robot
            .servo_map()
            .into_iter()
            .filter(|a| a.bus == opts.bus)
            .map(|a| JointMap { bus: 0, id: a.id })
            .collect();
        if joints.is_empty() {
            let chains: Vec<&str> = robot.chains.iter().map(|c| c.name()).collect();
            anyhow::bail!(
                "no servo bus `{}` in the servo map (known: {})",
                opts.bus,
                chains.join(", ")
            );
        }
        let bus = SerialIo::open(&opts.port, opts.baud)
            .with_context(|| format!("opening the servo bus {}", opts.port))?;
        let link = link_path("direct", &opts.bus);
        let core = HostCore::new(&link, vec![bus], &joints, opts.model, opts.rate_hz)?;
        let core = Worker::spawn(&format!("bus {}", opts.bus), move |stop: &AtomicBool| {
            core.run(stop);
            Ok(())
        })?;
        Self::behind_link(link, Behind::Core(core), robot, &opts.bus, mounts)
    }

    /// The servos of `bus` (a pty or adapter) driven by the firmware image for that limb in
    /// QEMU ([`crate::qemu::limb_image`] beside the arms' `image`): the board's UART1 bridged to
    /// the bus, its UART0 the host link of a serial backend.
    pub fn qemu(
        bus: &str,
        port: &str,
        image: &std::path::Path,
        robot: &RobotModel,
        mounts: &std::collections::BTreeMap<String, reachy_daemon::config::ServoMount>,
    ) -> anyhow::Result<Self> {
        let link = link_path("qemu", bus);
        let board = crate::qemu::QemuBoard::start(
            &crate::qemu::limb_image(image, bus),
            &link,
            Some(std::path::Path::new(port)),
        )
        .with_context(|| format!("the {bus} board in QEMU"))?;
        Self::behind_link(link, Behind::Qemu(board), robot, bus, mounts)
    }
}

impl DirectBackend {
    /// The servos of `bus` (a pty or adapter at `port`) driven by `program firmware run` (the
    /// `reachy` binary): the firmware's control core as a process between its host link and the
    /// bus, the daemon on the link through a serial backend.
    pub fn process(
        program: &std::path::Path,
        bus: &str,
        port: &str,
        robot: &RobotModel,
        mounts: &std::collections::BTreeMap<String, reachy_daemon::config::ServoMount>,
    ) -> anyhow::Result<Self> {
        let link = link_path("fw", bus);
        let core = FirmwareProcess::start(program, &link, bus, port)
            .with_context(|| format!("the {bus} firmware core"))?;
        Self::behind_link(link, Behind::Process(core), robot, bus, mounts)
    }

    /// The serial backend on `link`, whose far end `behind` answers.
    fn behind_link(
        link: PathBuf,
        behind: Behind,
        robot: &RobotModel,
        bus: &str,
        mounts: &std::collections::BTreeMap<String, reachy_daemon::config::ServoMount>,
    ) -> anyhow::Result<Self> {
        let inner = SerialBackend::open(
            link.to_str().unwrap_or_default(),
            1_000_000,
            robot,
            bus,
            mounts,
        )?;
        Ok(Self {
            inner,
            behind: Some(behind),
            link,
        })
    }
}

/// `reachy firmware run` as a child process: the firmware's control core at 1 kHz between its
/// host link (a pty it links at a path) and one servo bus. Dropping it kills the process and
/// removes the link.
pub struct FirmwareProcess {
    child: std::process::Child,
    link: PathBuf,
}

impl FirmwareProcess {
    /// Start `program firmware run --link LINK --bus BUS=PORT`; returns once the link is there.
    pub fn start(
        program: &std::path::Path,
        link: &std::path::Path,
        bus: &str,
        port: &str,
    ) -> anyhow::Result<Self> {
        let mut cmd = std::process::Command::new(program);
        cmd.args(["firmware", "run", "--link"])
            .arg(link)
            .arg("--bus")
            .arg(format!("{bus}={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // its warnings and errors reach the user; its start-up lines do not
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} firmware run", program.display()))?;
        let mut me = Self {
            child,
            link: link.to_path_buf(),
        };
        let t0 = Instant::now();
        while link.symlink_metadata().is_err() {
            if let Some(status) = me.child.try_wait()? {
                anyhow::bail!("`reachy firmware run` exited ({status}) before its link was up");
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "`reachy firmware run` did not create its link {} within 20 s",
                link.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(me)
    }
}

impl Drop for FirmwareProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.link);
    }
}

/// A fresh path for a backend's host link in the temp dir, also for several in one process.
fn link_path(kind: &str, bus: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("reachy-{kind}-{}-{bus}-{n}", std::process::id()))
}

impl Drop for DirectBackend {
    fn drop(&mut self) {
        match self.behind.take() {
            Some(Behind::Core(w)) => {
                if let Err(e) = w.stop() {
                    tracing::warn!("control core: {e:#}");
                }
            }
            Some(Behind::Qemu(board)) => drop(board),
            Some(Behind::Process(p)) => drop(p),
            None => {}
        }
        let _ = std::fs::remove_file(&self.link);
    }
}

impl Backend for DirectBackend {
    fn name(&self) -> &'static str {
        match self.behind {
            Some(Behind::Qemu(_)) => "qemu",
            // what `reachy daemon --backend serial` on a `reachy firmware run` says
            Some(Behind::Process(_)) => "serial",
            _ => "dynamixel",
        }
    }

    fn joint_names(&self) -> Vec<String> {
        self.inner.joint_names()
    }

    fn read(&mut self) -> Option<Measured> {
        self.inner.read()
    }

    fn write(&mut self, targets: &[f32], torque: bool) -> Result<(), DaemonError> {
        self.inner.write(targets, torque)
    }

    fn estop(&mut self, engage: bool) -> Result<(), DaemonError> {
        self.inner.estop(engage)
    }

    fn set_limits(&mut self, limits: &[JointLimit]) -> Result<(), DaemonError> {
        self.inner.set_limits(limits)
    }
}

/// `BUS=PORT[,BUS=PORT…]` (the dynamixel backend's `--bus` flags, or `[serial] bus`).
pub fn parse_buses(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    let buses = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|b| {
            b.split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .ok_or_else(|| {
                    anyhow!(
                        "the dynamixel backend needs --bus BUS=PORT (e.g. r_arm=/dev/ttyUSB0), got `{b}`"
                    )
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if buses.is_empty() {
        anyhow::bail!("the dynamixel backend needs --bus BUS=PORT (e.g. r_arm=/dev/ttyUSB0)");
    }
    for (k, (n, _)) in buses.iter().enumerate() {
        if buses[..k].iter().any(|(m, _)| m == n) {
            anyhow::bail!("--bus {n} is given twice");
        }
    }
    Ok(buses)
}

/// The direct backend over every bus in `buses` (servo-map bus, adapter): a control core on a
/// thread per bus, joined as one backend.
pub fn open_buses(
    buses: &[(String, String)],
    baud: u32,
    model: Model,
    robot: &RobotModel,
    mounts: &std::collections::BTreeMap<String, reachy_daemon::config::ServoMount>,
) -> anyhow::Result<Box<dyn Backend>> {
    open_each(buses, |bus, port| {
        DirectBackend::open(
            &DirectOptions {
                bus: bus.into(),
                port: port.into(),
                baud,
                model,
                rate_hz: 1000,
            },
            robot,
            mounts,
        )
    })
}

/// The firmware images in QEMU over every bus in `buses` (servo-map bus, pty): a board per
/// limb ([`DirectBackend::qemu`]), joined as one backend.
pub fn open_qemu_boards(
    buses: &[(String, String)],
    image: &std::path::Path,
    robot: &RobotModel,
) -> anyhow::Result<Box<dyn Backend>> {
    open_each(buses, |bus, port| {
        DirectBackend::qemu(bus, port, image, robot, &Default::default())
    })
}

/// The firmware's control core as a `program firmware run` process per bus in `buses`
/// (servo-map bus, pty or adapter; [`DirectBackend::process`]), joined as one backend.
pub fn open_firmware_processes(
    buses: &[(String, String)],
    program: &std::path::Path,
    robot: &RobotModel,
) -> anyhow::Result<Box<dyn Backend>> {
    open_each(buses, |bus, port| {
        DirectBackend::process(program, bus, port, robot, &Default::default())
    })
}

/// `open` on every (bus, port) of `buses`, joined as one backend.
fn open_each(
    buses: &[(String, String)],
    mut open: impl FnMut(&str, &str) -> anyhow::Result<DirectBackend>,
) -> anyhow::Result<Box<dyn Backend>> {
    let mut parts: Vec<Box<dyn Backend>> = Vec::new();
    for (bus, port) in buses {
        parts.push(Box::new(open(bus, port)?));
    }
    Ok(join(parts)?)
}

/// One backend of `parts`: the part itself, or all joined.
fn join(mut parts: Vec<Box<dyn Backend>>) -> Result<Box<dyn Backend>, DaemonError> {
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Box::new(reachy_daemon::MultiBackend::new(parts)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_specs_parse_and_bad_ones_say_why() {
        let b = parse_buses("r_arm=/dev/ttyUSB0, head=/dev/ttyUSB1").unwrap();
        assert_eq!(
            b,
            vec![
                ("r_arm".to_string(), "/dev/ttyUSB0".to_string()),
                ("head".to_string(), "/dev/ttyUSB1".to_string())
            ]
        );
        for (bad, says) in [
            ("r_arm", "BUS=PORT"),
            ("=/dev/ttyUSB0", "BUS=PORT"),
            ("", "BUS=PORT"),
            ("r_arm=/a,r_arm=/b", "twice"),
        ] {
            let e = parse_buses(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
