//! `reachy daemon` and `reachy demo`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};

use super::args::ZenohArgs;
use reachy_apps::inprocess::{SimRobot, SimRobotOptions};
use reachy_daemon::{Daemon, DaemonConfig, SimBackend};
use reachy_kinematics::model::RobotModel;

/// `reachy daemon`
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// TOML configuration (default: the built-in config/reachy.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Robot name: keys are `reachy/<robot>/…`.
    #[arg(long)]
    pub robot: Option<String>,
    /// Control rate (Hz).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Backend: `sim` (a `reachy sim` reached through the zenoh endpoints), `serial` (the
    /// firmware's host link at --link, the joints of --bus) or `dynamixel` (servos straight
    /// from a USB adapter, `--bus r_arm=/dev/ttyUSB0`: the firmware's control core runs in this
    /// process over it).
    #[arg(long)]
    pub backend: Option<String>,
    /// Serial backend: the firmware's host link (a USB serial device, or the pty of
    /// `reachy firmware run`); one board per limb: `BUS=PATH` once per board (`--link
    /// r_arm=/dev/ttyACM0 --link head=/dev/ttyACM1`, `--bus` then unused).
    #[arg(long)]
    pub link: Vec<String>,
    /// Serial backend: the servo bus the firmware drives (`r_arm`, `l_arm`, `head`); dynamixel
    /// backend: BUS=PORT, the bus and its adapter, once per bus (`--bus r_arm=/dev/ttyUSB0
    /// --bus head=/dev/ttyUSB1`: a control core on a thread per bus).
    #[arg(long)]
    pub bus: Vec<String>,
    /// Serial and dynamixel backends: baud rate.
    #[arg(long)]
    pub baud: Option<u32>,
    #[command(flatten)]
    pub rerun: super::args::RerunArgs,
    /// Zenoh endpoints.
    #[command(flatten)]
    pub zenoh: ZenohArgs,
}

/// `reachy demo`
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// Scene seed (object placement). Real time is not lock-step: the default case succeeds
    /// every time it was run; other seeds succeed about two times in three.
    #[arg(long, default_value_t = 3)]
    pub seed: u64,
    /// Cube to move: red_cube, green_cube or blue_cube.
    #[arg(long, default_value = "green_cube")]
    pub object: String,
    /// Where to write the run's summary (demo.json).
    #[arg(long, default_value = "demo-out")]
    pub out: std::path::PathBuf,
    /// `sim` (the daemon's sim backend over zenoh), `firmware` (daemon → host link → the
    /// firmware's control core, a `reachy firmware run` process per limb → Dynamixel buses on
    /// ptys → the physics robot's joints as servos) or `qemu` (the same with the firmware's
    /// Cortex-M4 images in QEMU, a board per limb: needs qemu-system-arm and the images, see
    /// --image).
    #[arg(long, default_value = "sim", value_parser = ["sim", "firmware", "qemu"])]
    pub backend: String,
    /// `--backend qemu`: the arms' firmware image (the head's, `…-head`, beside it). Default:
    /// $REACHY_FW_IMAGE, else the board crate's release build (`cd firmware/boards/mps2-an386 &&
    /// cargo build --release`).
    #[arg(long)]
    pub image: Option<std::path::PathBuf>,
}

/// Run `reachy daemon` until Ctrl-C.
pub fn run_daemon(urdf: &str, model: RobotModel, a: DaemonArgs) -> anyhow::Result<()> {
    let sink = a.rerun.sink()?;
    let mut cfg = match &a.config {
        Some(p) => reachy_daemon::config::Config::load(p)?,
        None => reachy_daemon::config::Config::default_config(),
    };
    // flags override the file
    if let Some(v) = a.robot {
        cfg.robot = v;
    }
    if let Some(v) = a.rate {
        cfg.rate_hz = v;
    }
    if let Some(v) = a.backend {
        cfg.backend = v;
    }
    if !a.link.is_empty() {
        cfg.serial.link = a.link.join(",");
    }
    if !a.bus.is_empty() {
        cfg.serial.bus = a.bus.join(",");
    }
    if let Some(v) = a.baud {
        cfg.serial.baud = v;
    }
    let session = a.zenoh.open()?;
    let backend: Box<dyn reachy_daemon::Backend> = match cfg.backend.as_str() {
        "sim" => Box::new(SimBackend::connect(
            &session,
            &cfg.robot,
            Duration::from_secs(10),
        )?),
        // one board per limb: `--link r_arm=/dev/ttyACM0 --link head=/dev/ttyACM1`
        "serial" if cfg.serial.link.contains('=') => {
            let mut parts: Vec<Box<dyn reachy_daemon::Backend>> = Vec::new();
            for (bus, link) in
                reachy_apps::direct::parse_buses(&cfg.serial.link).context("--link BUS=PATH")?
            {
                parts.push(Box::new(reachy_daemon::SerialBackend::open(
                    &link,
                    cfg.serial.baud,
                    &model,
                    &bus,
                    &cfg.servos,
                )?));
            }
            if parts.len() == 1 {
                parts.remove(0)
            } else {
                Box::new(reachy_daemon::MultiBackend::new(parts)?)
            }
        }
        "serial" => Box::new(reachy_daemon::SerialBackend::open(
            &cfg.serial.link,
            cfg.serial.baud,
            &model,
            &cfg.serial.bus,
            &cfg.servos,
        )?),
        "dynamixel" => reachy_apps::direct::open_buses(
            &reachy_apps::direct::parse_buses(&cfg.serial.bus)?,
            cfg.serial.baud,
            reachy_firmware::dynamixel::Model::Xm430W350,
            &model,
            &cfg.servos,
        )?,
        other => return Err(anyhow!("backend `{other}`: sim, serial or dynamixel")),
    };
    let backend_name = backend.name();
    let cameras: Vec<String> = backend.cameras().into_iter().map(|c| c.name).collect();
    let d = Daemon::spawn(
        session.clone(),
        model,
        backend,
        DaemonConfig::from_config(&cfg),
    )?;
    let viz = match &sink {
        Some(s) => Some(reachy_viz::ApiViz::spawn(
            &session,
            &cfg.robot,
            urdf,
            reachy_viz::Layout {
                cameras: cameras.clone(),
                ..Default::default()
            },
            s,
            25.0,
        )?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed)).context("Ctrl-C handler")?;
    println!(
        "daemon ready: reachy/{}/** (backend {backend_name}, {} Hz){}",
        cfg.robot,
        cfg.rate_hz,
        reachy_api::net::listening_note(&session)
    );
    use std::io::Write;
    std::io::stdout().flush().ok();
    while !stop.load(Ordering::Relaxed) && !d.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(v) = viz {
        v.stop()?;
    }
    Ok(d.stop()?)
}

/// Run the demo: sim + daemon in this process on one zenoh session, a scripted pick-and-place
/// through the daemon's API. Ok(true) when the cube ended where it was meant to.
pub fn run_demo(urdf: &str, model: RobotModel, a: DemoArgs) -> anyhow::Result<bool> {
    let robot = "reachy";
    let through = reachy_apps::inprocess::Through::from_backend(
        Some(&a.backend),
        a.image.clone(),
        // `firmware`: this binary's `reachy firmware run`, a process per limb
        std::env::current_exe().ok(),
    )?;
    let world = SimRobot::world(urdf, a.seed, Vec::new())?;
    let objects = world.physics().object_poses();
    anyhow::ensure!(
        objects.iter().any(|o| o.0 == a.object),
        "no `{}` in the scene (red_cube, green_cube, blue_cube)",
        a.object
    );
    let place = reachy_apps::pick_place::free_spot(&objects, &a.object)
        .ok_or_else(|| anyhow!("no free spot for {} with seed {}", a.object, a.seed))?;
    // the recording: the whole scene at 25 Hz of simulated time, from the sim thread
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let rrd = a.out.join("demo.rrd");
    // the arm on the cube's side does the task: its joints are the plots shown first
    let side = objects
        .iter()
        .find(|o| o.0 == a.object)
        .map_or(0.0, |o| o.1[1]);
    let viz = std::sync::Arc::new(reachy_viz::Viz::open(
        &reachy_viz::RerunSink::Save(rrd.clone()),
        urdf,
        reachy_viz::Layout {
            active_arm: if side < 0.0 { "r_arm" } else { "l_arm" }.into(),
            ..Default::default()
        },
    )?);
    let observer: reachy_apps::sim_bridge::Observer = {
        let viz = viz.clone();
        let mut k = 0u64;
        Box::new(move |w| {
            if k.is_multiple_of(4) {
                if let Err(e) = viz.log_world(w) {
                    tracing::warn!("rerun: {e}");
                }
            }
            k += 1;
        })
    };
    // one in-process session: no router, no listener
    let sim = SimRobot::start(
        world,
        model.clone(),
        SimRobotOptions {
            robot: robot.into(),
            observer: Some(observer),
            through: through.clone(),
            ..Default::default()
        },
    )?;
    let session = sim.session.clone();
    let mut client = reachy_api::client::RobotClient::connect(
        &session,
        robot,
        "demo",
        "script",
        Duration::from_secs(5),
    )?;
    // the robot ready: fresh states with every servo answering and torque on (through the
    // firmware, the boards first read their servos; a board in QEMU takes a moment to boot)
    client
        .wait_for_state(Duration::from_secs(30), |s| !s.stale && s.faults.is_empty())
        .context("the robot never reported every servo ready")?;
    println!(
        "demo: sim and daemon running in this process{}; moving {} to [{:.2}, {:.2}]",
        through.describe(),
        a.object,
        place[0],
        place[1]
    );
    // the sim settles the cubes for a moment
    std::thread::sleep(Duration::from_millis(300));
    let task = reachy_apps::pick_place::PickPlace::new(&a.object, place);
    let t0 = std::time::Instant::now();
    let report =
        reachy_apps::pick_place::run(&mut client, &model, &task, &mut |s| println!("  {s}"));
    let wall = t0.elapsed().as_secs_f64();
    drop(client);
    sim.stop()?;
    viz.flush()?;
    let report = report?;
    let summary = serde_json::json!({
        "seed": a.seed,
        "object": a.object,
        "arm": report.arm,
        "start": report.start,
        "target": place,
        "end": report.end,
        "error_mm": report.error_xy * 1000.0,
        "lifted": report.lifted,
        "success": report.success,
        "wall_s": wall,
        "recording": rrd,
    });
    let path = a.out.join("demo.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    println!(
        "demo: {} — {:.1} mm from the target in {wall:.1} s; summary in {}, recording in {} \
         (view it with `rerun {}`)",
        if report.success { "success" } else { "FAILED" },
        report.error_xy * 1000.0,
        path.display(),
        rrd.display(),
        rrd.display()
    );
    Ok(report.success)
}
