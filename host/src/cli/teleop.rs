//! `reachy teleop`: teleoperation through the daemon's API with the `teleop` lease (it pre-empts
//! policies and scripts), all motion through the daemon's limits, from one of several sources:
//! a Cartesian pose stream on stdin, the terminal's keys, a gamepad, or a leader arm
//! ([`reachy_apps::teleop`] says what each does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use reachy_apps::teleop::{gamepad, jog, keyboard, leader, webxr};

/// `reachy teleop`
#[derive(Debug, clap::Args)]
pub struct TeleopArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// `pose-stream` (JSON lines of TCP targets on stdin: `{"arm", "position", "orientation"?,
    /// "gripper"?}` or `{"hold": SECONDS}`), `keyboard` (this terminal's keys; also over SSH),
    /// `gamepad` (the first one gilrs finds), `leader` (a leader arm on --leader-port), `webxr`
    /// (a page for a headset's browser on `--listen IP:PORT`, default 0.0.0.0:8443; HTTPS with
    /// a self-signed certificate, plain HTTP on a loopback address).
    #[arg(long, default_value = "pose-stream")]
    pub source: String,
    /// The devices' settings.
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Deprecated spelling of `--source pose-stream`.
    #[arg(long, hide = true)]
    pub input: Option<String>,
    #[command(flatten)]
    pub rerun: super::args::RerunArgs,
    /// The robot: --connect to a daemon, or the in-process sim.
    #[command(flatten)]
    pub robot: super::args::RobotArgs,
}

/// What the teleop sources take (`reachy teleop`, `reachy record --teleop SOURCE`).
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// The arm driven first (keyboard, gamepad: Tab / the switch button changes it) or mirrored
    /// (leader).
    #[arg(long, default_value = "r_arm")]
    pub arm: String,
    /// Loop rate (Hz): targets sent (pose-stream: the rate `hold` re-sends at; leader: at
    /// least 100).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Jog speed of the keyboard and gamepad: linear (m/s), angular (rad/s).
    #[arg(long, num_args = 2, value_names = ["M_S", "RAD_S"], default_values_t = [0.05, 0.5])]
    pub speed: Vec<f32>,
    /// The leader arm's USB adapter (a Dynamixel bus, servo IDs as the URDF's servo map).
    #[arg(long, value_name = "PATH")]
    pub leader_port: Option<String>,
    /// The leader bus's baud rate.
    #[arg(long, default_value_t = 1_000_000)]
    pub leader_baud: u32,
    /// The leader's calibration (default: ~/.config/reachy/leader/ARM.json).
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<std::path::PathBuf>,
    /// Calibrate the leader again (and save it) even when a calibration exists.
    #[arg(long)]
    pub recalibrate: bool,
    /// pose-stream: read the lines from this zenoh key instead of stdin (a remote operator
    /// station publishes them; the answers go out on `KEY/answer`).
    #[arg(long, value_name = "KEY")]
    pub pose_key: Option<String>,
    /// webxr: where the page listens (`--listen IP:PORT`: a `--listen` without a zenoh
    /// `proto/` prefix).
    #[arg(skip)]
    pub xr_listen: Option<String>,
    /// TOML configuration with `[teleop.gamepad]` (default: the built-in config/reachy.toml).
    #[arg(long = "teleop-config", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// The sources.
pub const SOURCES: &str = "pose-stream, keyboard, gamepad, leader, webxr";

/// Take the webxr page's address out of the zenoh `--listen`s: the one without a `proto/`.
pub fn take_xr_listen(d: &mut DeviceArgs, robot: &mut super::args::RobotArgs) {
    let (xr, zenoh): (Vec<String>, Vec<String>) = std::mem::take(&mut robot.zenoh.listen)
        .into_iter()
        .partition(|l| !l.contains('/'));
    robot.zenoh.listen = zenoh;
    d.xr_listen = xr.into_iter().last();
}

/// Check a source's name and what it needs, before anything starts.
pub fn check_source(source: &str, d: &DeviceArgs) -> anyhow::Result<()> {
    match source {
        "pose-stream" | "keyboard" | "gamepad" => {}
        "leader" if d.leader_port.is_none() => {
            bail!("--source leader needs --leader-port PATH (the leader arm's USB adapter)")
        }
        "leader" | "webxr" => {}
        s => bail!("teleop source `{s}`: not one (known: {SOURCES})"),
    }
    if let [m, r] = d.speed[..] {
        if !(m > 0.0 && m <= 0.5 && r > 0.0 && r <= 3.0) {
            bail!("--speed {m} {r}: within 0..=0.5 m/s and 0..=3 rad/s");
        }
    }
    Ok(())
}

/// A source opened: its device, or the leader with its calibration, or the pose stream.
pub enum Opened {
    /// Keyboard or gamepad, through the jog loop.
    Jog(Box<dyn jog::Device + Send>, bool),
    /// A leader arm.
    Leader(Box<leader::Leader>, leader::Calibration),
    /// JSON lines on stdin.
    PoseStream,
    /// The WebXR page's server.
    WebXr(webxr::Server),
}

/// Open `source` (keyboard: raw mode on this terminal; leader: its bus, calibrating when there
/// is no calibration, on stdin).
pub fn open_source(
    source: &str,
    d: &DeviceArgs,
    model: &reachy_kinematics::model::RobotModel,
) -> anyhow::Result<Opened> {
    check_source(source, d)?;
    Ok(match source {
        "keyboard" => Opened::Jog(Box::new(keyboard::Keyboard::terminal()?), true),
        "gamepad" => {
            let cfg = match &d.config {
                Some(p) => reachy_daemon::config::Config::load(p)?,
                None => reachy_daemon::config::Config::default_config(),
            };
            let map = gamepad::Mapping::new(&cfg.teleop.gamepad)?;
            let pad = gamepad::Gilrs::open()?;
            eprintln!("gamepad: {}", pad.name);
            Opened::Jog(Box::new(gamepad::Gamepad::new(pad, map)), false)
        }
        "leader" => {
            let port = d.leader_port.as_deref().expect("checked");
            let map = leader::leader_map(model, &d.arm);
            if map.is_empty() {
                bail!(
                    "arm `{}` has no servos in the URDF's servo map (known arms: r_arm, l_arm)",
                    d.arm
                );
            }
            let mut l = leader::Leader::open(port, d.leader_baud, &map)?;
            let path = d
                .calibration
                .clone()
                .unwrap_or_else(|| leader::default_calibration_path(&d.arm));
            let cal = leader::calibration(
                &mut l,
                &d.arm,
                &map,
                &path,
                d.recalibrate,
                &mut std::io::stdin().lock(),
                &mut |m| eprintln!("{m}"),
            )?;
            Opened::Leader(Box::new(l), cal)
        }
        "webxr" => {
            let addr = d.xr_listen.as_deref().unwrap_or("0.0.0.0:8443");
            let server = webxr::Server::start(addr)?;
            eprintln!(
                "webxr page: {} {}",
                server.url(),
                if server.scheme == "https" {
                    "(a self-signed certificate: accept it once in the headset's browser)"
                } else {
                    "(plain HTTP: this machine only; a headset reaches it through `adb reverse`)"
                }
            );
            Opened::WebXr(server)
        }
        _ => Opened::PoseStream,
    })
}

/// Drive `client`'s robot from the opened source until it ends or `stop`; `table` draws the jog
/// loop's live table on stdout. Ok(false) when a line was bad or the device was lost.
pub fn drive(
    opened: Opened,
    d: &DeviceArgs,
    session: &zenoh::Session,
    client: &mut reachy_api::RobotClient,
    stop: &AtomicBool,
    table: bool,
    out: &mut dyn FnMut(String),
) -> anyhow::Result<bool> {
    Ok(match opened {
        Opened::Leader(mut l, cal) => {
            let cfg = leader::LeaderConfig {
                rate: d.rate.unwrap_or(100.0),
                ..Default::default()
            };
            let s = leader::mirror(client, &mut l, &cal, &cfg, stop, &mut |m| eprintln!("{m}"))?;
            out(serde_json::to_string(&s)?);
            true
        }
        Opened::Jog(mut dev, raw) => {
            let cfg = jog::JogConfig {
                arm: d.arm.clone(),
                rate: d.rate.unwrap_or(50.0),
                speed: d.speed[0],
                angular_speed: d.speed[1],
                ..Default::default()
            };
            let mut screen = table.then(|| Screen::new(raw));
            let s = jog::jog(client, dev.as_mut(), &cfg, stop, &mut |st| {
                if let Some(sc) = &mut screen {
                    sc.draw(st)
                }
            })?;
            drop(screen);
            // the terminal back to cooked mode before the summary
            drop(dev);
            out(serde_json::to_string(&s)?);
            !s.ended.starts_with("the device was lost")
        }
        Opened::WebXr(server) => {
            let camera = if client
                .info()
                .cameras
                .iter()
                .any(|c| c.name == "head_camera")
            {
                Some(client.camera("head_camera")?)
            } else {
                eprintln!("webxr: the robot publishes no head_camera: the page shows no camera");
                None
            };
            let s = webxr::run(
                client,
                &server,
                d.rate.unwrap_or(90.0),
                camera.as_ref(),
                stop,
                &mut |m| eprintln!("webxr: {m}"),
            )?;
            out(serde_json::to_string(&s)?);
            true
        }
        Opened::PoseStream => {
            let rate = d.rate.unwrap_or(50.0);
            let bad = match &d.pose_key {
                None => reachy_apps::teleop::pose_stream(
                    client,
                    std::io::stdin().lock(),
                    rate,
                    &mut |v| out(v.to_string()),
                )?,
                Some(key) => {
                    use zenoh::Wait;
                    let (lines, _sub) = reachy_apps::teleop::zenoh_lines(session, key, stop)?;
                    let answer = format!("{key}/answer");
                    eprintln!("pose stream from the zenoh key {key}; answers on {answer}");
                    reachy_apps::teleop::pose_lines(client, lines, rate, &mut |v| {
                        let line = v.to_string();
                        let _ = session.put(&answer, line.clone()).wait();
                        out(line)
                    })?
                }
            };
            bad == 0
        }
    })
}

/// Run `reachy teleop`; Ok(false) when a line was bad or the device was lost.
pub fn run(mut a: TeleopArgs, urdf: Option<&std::path::Path>) -> anyhow::Result<bool> {
    if let Some(i) = &a.input {
        if i != "stdin" {
            bail!("--input `{i}`: only `stdin` (JSON lines); it is --source pose-stream now");
        }
    }
    take_xr_listen(&mut a.device, &mut a.robot);
    let (_, model) = reachy_kinematics::model::RobotModel::load(urdf)?;
    // the device first: a missing gamepad or leader is said before the robot starts
    let opened = open_source(&a.source, &a.device, &model)?;
    let sink = a.rerun.sink()?;
    // the in-process sim renders the head camera for the webxr page
    let cameras = if a.source == "webxr" {
        reachy_sim::camera::CameraSpec::reachy(640, 480)
            .into_iter()
            .filter(|c| c.name == "head_camera")
            .collect()
    } else {
        Vec::new()
    };
    let mut robot =
        reachy_apps::inprocess::ClientRobot::open(&a.robot.options(), urdf, cameras, 15.0)?;
    let mut client = robot.connect("teleop", "teleop")?;
    robot.record_to(sink.as_ref(), reachy_viz::Layout::default())?;
    // Ctrl-C (and SIGTERM) ends the loop holding the pose; in raw mode it is the keyboard's key
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let ok = drive(
        opened,
        &a.device,
        &robot.session,
        &mut client,
        &stop,
        true,
        &mut |l| println!("{l}"),
    )?;
    drop(client);
    robot.stop()?;
    Ok(ok)
}

/// The live table, redrawn in place (at most 20 times a second).
struct Screen {
    raw: bool,
    last: Option<std::time::Instant>,
}

impl Screen {
    fn new(raw: bool) -> Self {
        print!("\x1b[2J");
        Self { raw, last: None }
    }

    fn draw(&mut self, st: &jog::Status) {
        use std::io::Write;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_millis(50))
        {
            return;
        }
        self.last = Some(now);
        let mut out = std::io::stdout().lock();
        // home, then each line cleared to its end; raw mode needs the carriage returns
        let mut text = String::from("\x1b[H");
        let mut lines = vec![format!("reachy teleop: {}", keyboard::HELP)];
        lines.extend(st.table());
        for l in lines {
            text.push_str(&l);
            text.push_str("\x1b[K");
            text.push_str(if self.raw { "\r\n" } else { "\n" });
        }
        text.push_str("\x1b[J");
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        println!();
    }
}
