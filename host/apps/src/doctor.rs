//! `reachy doctor`: what a user's first hour on a real robot breaks on, checked one line at a
//! time, each with how to fix it: serial adapters present and usable (the `dialout` group),
//! the USB-serial latency timers (16 ms by default on FTDI adapters: a 1 kHz loop becomes
//! ~30 Hz), every servo the URDF's servo map expects on its bus (model, firmware, voltage,
//! temperature, hardware errors), the measured bus cycle against the loop period, the rendering
//! adapter, CUDA, the zenoh ports and a running daemon.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reachy_daemon::serial::{SerialIo, StdClock};
use reachy_firmware::dynamixel::control_table::{self, Model};
use reachy_firmware::dynamixel::Master;
use reachy_kinematics::model::RobotModel;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Ok,
    /// For information (nothing to fix).
    Info,
    /// Works, but not as it should (the loop will be slow, a port is taken).
    Warning,
    /// Stops the robot from working.
    Error,
}

impl Level {
    /// `ok`, `info`, `warning`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was checked, e.g. `latency timer ttyUSB0`.
    pub what: String,
    /// How it came out.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it needs fixing.
    pub fix: Option<String>,
}

fn check(what: impl Into<String>, level: Level, detail: impl Into<String>) -> Check {
    Check {
        what: what.into(),
        level,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Where device nodes are (`/dev`): USB serial adapters are `ttyUSB*` and `ttyACM*` there.
    pub dev: PathBuf,
    /// Where sysfs is (`/sys`): latency timers are `bus/usb-serial/devices/*/latency_timer`.
    pub sysfs: PathBuf,
    /// Servo buses to check: (bus name as in the servo map, e.g. `r_arm`; serial port).
    pub buses: Vec<(String, String)>,
    /// The buses' baud rate.
    pub baud: u32,
    /// Reply timeout (ms).
    pub timeout_ms: u32,
    /// The control loop rate the bus cycle is held against (Hz).
    pub rate_hz: f64,
    /// Set latency timers above 1 ms to 1 ms.
    pub fix_latency: bool,
    /// Probe the rendering adapter (wgpu).
    pub render: bool,
    /// TCP ports zenoh will want (free or taken).
    pub zenoh_ports: Vec<u16>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            dev: "/dev".into(),
            sysfs: "/sys".into(),
            buses: Vec::new(),
            baud: 1_000_000,
            timeout_ms: 20,
            rate_hz: 1000.0,
            fix_latency: false,
            render: true,
            zenoh_ports: vec![7447, 7448],
        }
    }
}

/// Run every check; `daemon` is a session and robot name to look for a running daemon on.
pub fn run(
    model: &RobotModel,
    opts: &DoctorOptions,
    daemon: Option<(&zenoh::Session, &str)>,
) -> Vec<Check> {
    let mut out = Vec::new();
    out.extend(serial_ports(&opts.dev));
    out.extend(latency_timers(&opts.sysfs, opts.fix_latency));
    for (bus, port) in &opts.buses {
        out.extend(servo_bus(model, bus, port, opts));
    }
    if opts.render {
        out.push(renderer());
    }
    out.push(cuda());
    out.extend(zenoh_ports(&opts.zenoh_ports));
    if let Some((session, robot)) = daemon {
        out.push(daemon_check(session, robot));
    }
    out
}

/// The report as a table: level, check, what was found, and the fix under a line that needs
/// one.
pub fn table(checks: &[Check]) -> String {
    let w = checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<7}  {:<w$}  {}\n",
            c.level.as_str(),
            c.what,
            c.detail
        ));
        if let Some(f) = &c.fix {
            s.push_str(&format!("{:<7}  {:<w$}  fix: {f}\n", "", ""));
        }
    }
    s
}

fn serial_ports(dev: &Path) -> Vec<Check> {
    let mut ports: Vec<PathBuf> = std::fs::read_dir(dev)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ttyUSB") || n.starts_with("ttyACM"))
                })
                .collect()
        })
        .unwrap_or_default();
    ports.sort();
    if ports.is_empty() {
        return vec![check(
            "serial adapters",
            Level::Warning,
            format!(
                "no USB serial adapter in {} (ttyUSB*, ttyACM*)",
                dev.display()
            ),
        )
        .fix("plug the U2D2 / FTDI adapter in; `dmesg | tail` says whether the kernel saw it")];
    }
    ports.iter().map(|p| port_access(p)).collect()
}

fn port_access(p: &Path) -> Check {
    let what = format!("port {}", p.display());
    match std::fs::OpenOptions::new().read(true).write(true).open(p) {
        Ok(_) => check(what, Level::Ok, "readable and writable"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => check(
            what,
            Level::Error,
            "permission denied: this user cannot open it",
        )
        .fix("sudo usermod -aG dialout $USER, then log out and in again"),
        Err(e) => check(what, Level::Error, format!("cannot open it: {e}")),
    }
}

/// The udev rule that keeps FTDI latency timers at 1 ms.
pub const LATENCY_UDEV_RULE: &str = "ACTION==\"add\", SUBSYSTEM==\"usb-serial\", \
     DRIVER==\"ftdi_sio\", ATTR{latency_timer}=\"1\"";

fn latency_timers(sysfs: &Path, fix: bool) -> Vec<Check> {
    let dir = sysfs.join("bus/usb-serial/devices");
    let mut devs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    devs.sort();
    let mut out = Vec::new();
    for d in devs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = d.join("latency_timer");
        let what = format!("latency timer {name}");
        let Ok(text) = std::fs::read_to_string(&file) else {
            // not an FTDI adapter (CDC-ACM and CP210x have no latency timer)
            continue;
        };
        let Ok(ms) = text.trim().parse::<u32>() else {
            out.push(check(
                what,
                Level::Warning,
                format!("{} holds `{}`", file.display(), text.trim()),
            ));
            continue;
        };
        if ms <= 1 {
            out.push(check(what, Level::Ok, format!("{ms} ms")));
            continue;
        }
        let slow = format!(
            "{ms} ms: every bus read waits up to {ms} ms, a 1 kHz loop runs at ~{:.0} Hz",
            1000.0 / (2.0 * ms as f64)
        );
        if fix {
            match std::fs::write(&file, "1") {
                Ok(()) => out.push(check(what, Level::Ok, format!("was {ms} ms, set to 1 ms"))),
                Err(e) => out.push(
                    check(
                        what,
                        Level::Warning,
                        format!("{slow}; setting it failed: {e}"),
                    )
                    .fix(format!(
                        "sudo reachy doctor --fix-latency, or echo 1 | sudo tee {}",
                        file.display()
                    )),
                ),
            }
        } else {
            out.push(check(what, Level::Warning, slow).fix(format!(
                "reachy doctor --fix-latency (or echo 1 | sudo tee {}); to keep it, put `{}` in \
                 /etc/udev/rules.d/99-reachy-latency.rules",
                file.display(),
                LATENCY_UDEV_RULE
            )));
        }
    }
    out
}

fn reg(name: &str) -> &'static control_table::Register {
    control_table::by_name(name).expect("a register of the control table")
}

fn servo_bus(model: &RobotModel, bus: &str, port: &str, opts: &DoctorOptions) -> Vec<Check> {
    let expected: Vec<(String, u8)> = model
        .servo_map()
        .into_iter()
        .filter(|s| s.bus == bus)
        .map(|s| (s.joint, s.id))
        .collect();
    if expected.is_empty() {
        let buses: std::collections::BTreeSet<String> =
            model.servo_map().into_iter().map(|s| s.bus).collect();
        return vec![check(
            format!("bus {bus}"),
            Level::Error,
            format!(
                "the servo map has no bus `{bus}` (it has {})",
                buses.into_iter().collect::<Vec<_>>().join(", ")
            ),
        )];
    }
    let mut m = match reachy_daemon::serial::open_master(port, opts.baud, opts.timeout_ms) {
        Ok(m) => m,
        Err(e) => {
            return vec![check(
                format!("bus {bus}"),
                Level::Error,
                format!("cannot open {port}: {e}"),
            )]
        }
    };
    m.retries = 1;
    let mut out = Vec::new();
    let mut found = Vec::new();
    for (joint, id) in &expected {
        let what = format!("servo {bus}/{id} {joint}");
        let p = match m.ping(*id) {
            Ok(p) => p,
            Err(e) => {
                out.push(
                    check(
                        what,
                        Level::Error,
                        format!("{e} on {port} at {} baud", opts.baud),
                    )
                    .fix(format!(
                        "check its power and wiring; a new servo answers as ID 1 at 57600 baud \
                         (`reachy bus scan --port {port} --baud 57600`): give it ID {id} at {} \
                         baud",
                        opts.baud
                    )),
                );
                continue;
            }
        };
        found.push(*id);
        let model_name = Model::from_number(p.model)
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| format!("model {}", p.model));
        let read = |m: &mut Master<SerialIo, StdClock>, r: &control_table::Register| {
            let mut b = [0u8; 4];
            m.read(*id, r.addr, &mut b[..r.size as usize])
                .ok()
                .and_then(|_| r.decode(&b))
        };
        let volt = reg("present_input_voltage");
        let temp = reg("present_temperature");
        let herr = reg("hardware_error_status");
        let v = read(&mut m, volt).map(|x| x as f64 / 10.0);
        let t = read(&mut m, temp);
        let h = read(&mut m, herr);
        let mut detail = format!("{model_name}, firmware {}", p.firmware);
        if let Some(v) = v {
            detail.push_str(&format!(", {v:.1} V"));
        }
        if let Some(t) = t {
            detail.push_str(&format!(", {t} °C"));
        }
        let mut c = check(&what, Level::Ok, &detail);
        if let Some(h) = h.filter(|h| *h != 0) {
            let mut bits = Vec::new();
            for (bit, name) in [
                (0, "input voltage"),
                (2, "overheating"),
                (3, "motor encoder"),
                (4, "electrical shock"),
                (5, "overload"),
            ] {
                if h & (1 << bit) != 0 {
                    bits.push(name);
                }
            }
            c = check(
                &what,
                Level::Error,
                format!("{detail}; hardware error 0x{h:02x} ({})", bits.join(", ")),
            )
            .fix("remove the cause, then power-cycle the servo or reboot it (torque stays off until then)");
        } else if t.is_some_and(|t| t >= 70) {
            c = check(&what, Level::Warning, format!("{detail}: hot"))
                .fix("let it cool; lower the load or the duty cycle");
        }
        out.push(c);
    }
    out.push(bus_cycle(&mut m, bus, &found, opts.rate_hz));
    out
}

/// Time a sync read of every found servo's present position (what the control loop does each
/// cycle) and hold it against the loop period.
fn bus_cycle(m: &mut Master<SerialIo, StdClock>, bus: &str, ids: &[u8], rate_hz: f64) -> Check {
    let what = format!("bus cycle {bus}");
    if ids.is_empty() {
        return check(what, Level::Error, "no servo answered: nothing to time");
    }
    let r = reg("present_position");
    let mut buf = vec![0u8; ids.len() * r.size as usize];
    let mut ok = vec![false; ids.len()];
    const N: u32 = 50;
    let mut failed = 0;
    let t0 = Instant::now();
    for _ in 0..N {
        ok.iter_mut().for_each(|o| *o = false);
        match m.sync_read(r.addr, r.size as u16, ids, &mut buf, &mut ok) {
            Ok(n) if n == ids.len() => {}
            _ => failed += 1,
        }
    }
    let cycle = t0.elapsed() / N;
    let period = Duration::from_secs_f64(1.0 / rate_hz.max(1e-3));
    let detail = format!(
        "sync read of {} servos: {:.2} ms per cycle ({failed} of {N} incomplete); the loop period at \
         {rate_hz} Hz is {:.2} ms",
        ids.len(),
        cycle.as_secs_f64() * 1e3,
        period.as_secs_f64() * 1e3
    );
    if cycle > period {
        check(what, Level::Warning, detail).fix(
            "the loop will run slower than asked: set the adapter's latency timer to 1 ms, raise \
             the baud rate, or lower the rate",
        )
    } else if failed > 0 {
        check(what, Level::Warning, detail)
            .fix("replies were lost: check the wiring and termination")
    } else {
        check(what, Level::Ok, detail)
    }
}

fn renderer() -> Check {
    let spec = reachy_sim::camera::CameraSpec::reachy(32, 24);
    match reachy_sim::camera::Renderer::new(&spec[..1]) {
        Ok(r) => {
            let info = r.adapter_info();
            if info.to_lowercase().contains("llvmpipe") || info.to_lowercase().contains("lavapipe")
            {
                check("rendering", Level::Info, format!("{info}: software rendering on the CPU (no GPU found); sim cameras work, slower"))
            } else {
                check("rendering", Level::Ok, info)
            }
        }
        Err(e) => check("rendering", Level::Warning, format!("no adapter: {e}")).fix(
            "install a Vulkan driver (Debian: mesa-vulkan-drivers gives lavapipe); without one \
             the sim runs without cameras",
        ),
    }
}

fn cuda() -> Check {
    #[cfg(feature = "cuda")]
    {
        match candle_core::Device::new_cuda(0) {
            Ok(_) => check("CUDA", Level::Ok, "device 0 available to the policies"),
            Err(e) => check("CUDA", Level::Error, format!("built with CUDA, but: {e}"))
                .fix("check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"),
        }
    }
    #[cfg(not(feature = "cuda"))]
    check(
        "CUDA",
        Level::Info,
        "built without CUDA: policies run on the CPU (build with --features cuda for a GPU)",
    )
}

fn zenoh_ports(ports: &[u16]) -> Vec<Check> {
    ports
        .iter()
        .map(|&p| {
            let what = format!("zenoh port {p}");
            match std::net::TcpListener::bind(("127.0.0.1", p)) {
                Ok(_) => check(what, Level::Ok, "free"),
                Err(e) => check(
                    what,
                    Level::Info,
                    format!("taken ({e}): a sim, daemon or router may be running there"),
                ),
            }
        })
        .collect()
}

fn daemon_check(session: &zenoh::Session, robot: &str) -> Check {
    let what = format!("daemon `{robot}`");
    let key = reachy_api::schema::keys::state(robot);
    let sub = reachy_api::net::subscribe_latest(session, &key, |b| {
        reachy_api::schema::decode_robot::<reachy_api::schema::RobotState>(b).ok()
    });
    let (latest, _sub) = match sub {
        Ok(s) => s,
        Err(e) => {
            return check(
                what,
                Level::Error,
                format!("cannot subscribe to {key}: {e}"),
            )
        }
    };
    let got =
        reachy_api::net::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            latest.lock().map(|l| l.is_some()).unwrap_or(false)
        });
    let state = latest.lock().ok().and_then(|l| l.clone());
    match (got, state) {
        (true, Some(s)) => {
            let mut c = check(
                &what,
                Level::Ok,
                format!(
                    "state on {key}: backend {}, {} joints, torque {}",
                    s.backend,
                    s.names.len(),
                    if s.torque { "on" } else { "off" }
                ),
            );
            if !s.faults.is_empty() {
                c = check(
                    &what,
                    Level::Warning,
                    format!("{} servo fault(s): {:?}", s.faults.len(), s.faults),
                );
            }
            c
        }
        _ => check(what, Level::Error, format!("no state on {key} within 3 s")).fix(
            "start it (`reachy daemon`), or give the endpoint it listens on with --connect and its \
             name with --robot",
        ),
    }
}
