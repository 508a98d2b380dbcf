//! `reachy sim …`: simulation services.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use reachy_firmware::dynamixel::Model;
use reachy_sim::servo_pty::{self, PtyEndpoint};
use reachy_sim::SimBus;
use zenoh::Wait;

/// `reachy sim [OPTIONS]` runs the simulated robot on zenoh; `reachy sim servos` serves
/// simulated servos on a pty.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// Other simulation services.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// Options of the simulated robot.
    #[command(flatten)]
    pub run: SimRunArgs,
}

/// Options of `reachy sim` (the simulated robot on zenoh, headless).
#[derive(Debug, clap::Args)]
pub struct SimRunArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// Robot name: keys are `reachy/<robot>/sim/…`.
    #[arg(long, default_value = "reachy")]
    pub robot: String,
    /// Lock-step: time advances only on `step` queries (for tests and data generation).
    #[arg(long)]
    pub lockstep: bool,
    /// Seed of the scene (object placement).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Control and state publication rate (Hz), up to 1000.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Physics steps per second (the physics step is its inverse).
    #[arg(long, default_value_t = 1000.0)]
    pub physics_hz: f64,
    /// Render and publish the cameras (head, both wrists).
    #[arg(long)]
    pub cameras: bool,
    /// Camera image size, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x480")]
    pub camera_size: String,
    /// Camera frames per second (simulated time).
    #[arg(long, default_value_t = 30.0)]
    pub camera_fps: f64,
    /// No table and cubes: the robot alone.
    #[arg(long)]
    pub no_scene: bool,
    /// The physics robot's joints as Dynamixel 2.0 servos on a pseudo-terminal, `BUS=PATH`
    /// once per bus (`r_arm`, `l_arm`, `head`; IDs from the URDF's servo map): present
    /// position, velocity and current from the physics, goal position and torque drive the
    /// joints (the control table, EEPROM lock, hardware errors and temperature of `reachy sim
    /// servos`). Use `--rate 1000` for servo state at the firmware's 1 kHz.
    #[arg(long, value_name = "BUS=PATH")]
    pub servo_bus: Vec<String>,
    /// The servo buses take a wire's time at this baud rate (10 bits a byte, half duplex: a
    /// reply is written once its last byte would have arrived), as a real bus at that rate
    /// does; default: instant, as a pty is.
    #[arg(long, value_name = "BAUD", value_parser = parse_wire_baud)]
    pub wire_baud: Option<u32>,
    #[command(flatten)]
    pub rerun: super::args::RerunArgs,
    /// Zenoh endpoints.
    #[command(flatten)]
    pub zenoh: super::args::ZenohArgs,
}

/// A `--wire-baud` value: a Dynamixel bus rate, 9600 … 10.5 Mbaud.
fn parse_wire_baud(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(b) if (9_600..=10_500_000).contains(&b) => Ok(b),
        _ => Err(format!(
            "`{s}`: a baud rate from 9600 to 10500000, e.g. 1000000 or 4000000"
        )),
    }
}

/// The wire of `--wire-baud` and `--latency-ms`.
fn wire(baud: Option<u32>, latency_ms: f64) -> servo_pty::Wire {
    servo_pty::Wire {
        baud,
        latency: std::time::Duration::from_secs_f64(latency_ms / 1e3),
    }
}

/// Parse `WIDTHxHEIGHT`.
pub fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow!("size `{s}` is not WIDTHxHEIGHT"))?;
    let w: u32 = w
        .trim()
        .parse()
        .map_err(|_| anyhow!("bad width in `{s}`"))?;
    let h: u32 = h
        .trim()
        .parse()
        .map_err(|_| anyhow!("bad height in `{s}`"))?;
    if !(16..=4096).contains(&w) || !(16..=4096).contains(&h) {
        return Err(anyhow!(
            "size `{s}`: width and height must be within 16..=4096"
        ));
    }
    Ok((w, h))
}

/// The world of `reachy sim` options.
pub fn world_config(urdf: &str, a: &SimRunArgs) -> anyhow::Result<reachy_sim::world::WorldConfig> {
    if !(a.physics_hz >= 100.0 && a.physics_hz <= 10_000.0) {
        return Err(anyhow!("--physics-hz must be within 100..=10000"));
    }
    if !(a.rate >= 1.0 && a.rate <= 1000.0) {
        return Err(anyhow!("--rate must be within 1..=1000 Hz"));
    }
    if a.rate > a.physics_hz {
        return Err(anyhow!("--rate cannot exceed --physics-hz"));
    }
    let mut cfg = reachy_sim::world::WorldConfig::new(urdf);
    cfg.physics_dt = (1.0 / a.physics_hz) as f32;
    if a.no_scene {
        cfg.scene = None;
    } else if let Some(s) = &mut cfg.scene {
        s.seed = a.seed;
    }
    if a.cameras {
        let (w, h) = parse_size(&a.camera_size)?;
        cfg.cameras = reachy_sim::camera::CameraSpec::reachy(w, h);
    }
    Ok(cfg)
}

/// Run `reachy sim` until Ctrl-C.
pub fn run_sim(urdf: &str, a: SimRunArgs) -> anyhow::Result<()> {
    let cfg = world_config(urdf, &a)?;
    if !(a.camera_fps > 0.0 && a.camera_fps <= 1000.0) {
        return Err(anyhow!("--camera-fps must be within 0..=1000"));
    }
    let world = reachy_sim::world::World::new(cfg).context("building the simulated world")?;
    // the servo buses: parsed, mapped and on their ptys before anything starts
    let mut servos = None;
    let mut _servers = None;
    if !a.servo_bus.is_empty() {
        let buses: Vec<(String, PathBuf)> =
            reachy_apps::direct::parse_buses(&a.servo_bus.join(","))
                .context("--servo-bus BUS=PATH")?
                .into_iter()
                .map(|(b, p)| (b, PathBuf::from(p)))
                .collect();
        let model = reachy_kinematics::model::RobotModel::from_urdf_str(urdf)?;
        let (s, srv) =
            reachy_apps::servo_buses::serve(&world, &model, &buses, wire(a.wire_baud, 0.0))?;
        servos = Some(s);
        _servers = Some(srv);
    }
    let camera_names: Vec<String> = world.cameras().iter().map(|c| c.name.clone()).collect();
    if let Some(info) = world.renderer_info() {
        tracing::info!("cameras rendered on {info}");
    }
    let viz = match a.rerun.sink()? {
        Some(sink) => Some(Arc::new(reachy_viz::Viz::open(
            &sink,
            urdf,
            reachy_viz::Layout {
                cameras: camera_names.clone(),
                ..Default::default()
            },
        )?)),
        None => None,
    };
    let observer: Option<reachy_apps::sim_bridge::Observer> = if viz.is_none() && servos.is_none() {
        None
    } else {
        let every = (a.rate / 25.0).round().max(1.0) as u64;
        let mut k = 0u64;
        let viz = viz.clone();
        let mut servos = servos.take();
        Some(Box::new(move |w: &mut reachy_sim::world::World| {
            if let Some(s) = &mut servos {
                s.sync(w);
            }
            if let Some(viz) = &viz {
                if k.is_multiple_of(every) {
                    if let Err(e) = viz.log_world(w) {
                        tracing::warn!("rerun: {e}");
                    }
                }
            }
            k += 1;
        }) as reachy_apps::sim_bridge::Observer)
    };
    let session = a.zenoh.open()?;
    let bridge = reachy_apps::sim_bridge::SimBridge::spawn_observed(
        session.clone(),
        world,
        reachy_apps::sim_bridge::BridgeConfig {
            robot: a.robot.clone(),
            rate_hz: a.rate,
            lockstep: a.lockstep,
            camera_fps: a.camera_fps,
        },
        observer,
    )?;
    // the frames the bridge publishes go into the recording too, at their sim time
    let mut _frame_subs = Vec::new();
    if let Some(viz) = &viz {
        for c in &camera_names {
            let viz = viz.clone();
            let sub = session
                .declare_subscriber(reachy_api::schema::keys::sim_camera(&a.robot, c))
                .callback(move |s| {
                    let bytes = s.payload().to_bytes();
                    if let Ok(f) =
                        reachy_api::schema::decode_robot::<reachy_api::schema::CameraFrame>(&bytes)
                    {
                        if let Err(e) = viz.log_frame_at_its_time(&f) {
                            tracing::warn!("rerun: {e}");
                        }
                    }
                })
                .wait()
                .map_err(|e| anyhow!("subscribing to camera {c}: {e}"))?;
            _frame_subs.push(sub);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, std::sync::atomic::Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    // one line on stdout when the keys are declared: scripts wait for it
    println!(
        "sim ready: {}/sim/** ({}, {} Hz){}",
        reachy_api::schema::keys::robot(&a.robot),
        if a.lockstep { "lock-step" } else { "real time" },
        a.rate,
        reachy_api::net::listening_note(&session)
    );
    use std::io::Write;
    std::io::stdout().flush().ok();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && !bridge.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stats = bridge.stats.clone();
    bridge.stop()?;
    drop(_servers);
    if let Some(v) = viz {
        v.flush()?;
    }
    tracing::info!(
        ticks = stats.ticks.load(std::sync::atomic::Ordering::Relaxed),
        accepted = stats.accepted.load(std::sync::atomic::Ordering::Relaxed),
        rejected = stats.rejected.load(std::sync::atomic::Ordering::Relaxed),
        overruns = stats.overruns.load(std::sync::atomic::Ordering::Relaxed),
        "sim stopped"
    );
    let _ = session.close().wait();
    Ok(())
}

/// `reachy sim …` subcommands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Simulated Dynamixel servos on a pseudo-terminal: creates a symlink at --pty that any
    /// Dynamixel 2.0 client (ROBOTIS SDK, `reachy bus`, the firmware) opens as a serial port.
    /// Runs until interrupted.
    Servos {
        /// Where to create the symlink to the pty, e.g. /tmp/reachy-bus.
        #[arg(long)]
        pty: PathBuf,
        /// Servo IDs, e.g. `1-6` or `1,2,5`.
        #[arg(long, default_value = "1-6")]
        ids: String,
        /// Servo model: xm430-w350, xm430-w210, xl330-m288.
        #[arg(long, default_value = "xm430-w350")]
        model: String,
        /// Drop this fraction of replies (fault injection).
        #[arg(long, default_value_t = 0.0)]
        drop_rate: f32,
        /// IDs that never answer (fault injection), e.g. `3`.
        #[arg(long)]
        dead: Option<String>,
        /// Hold every reply back this long (ms), as a USB adapter's latency timer does (FTDI's
        /// default: 16).
        #[arg(long, default_value_t = 0.0)]
        latency_ms: f64,
        /// Take a wire's time at this baud rate (10 bits a byte, half duplex), as a real bus
        /// does; default: instant, as a pty is.
        #[arg(long, value_name = "BAUD", value_parser = parse_wire_baud)]
        wire_baud: Option<u32>,
        /// Raise hardware error bits on a servo from the start (fault injection), `ID=BITS`,
        /// e.g. `3=0x20` (overload: with the default shutdown mask, torque off until a reboot);
        /// once per servo.
        #[arg(long, value_name = "ID=BITS")]
        hardware_error: Vec<String>,
        /// Make a servo work against a constant load torque (fault injection), `ID=NM`, e.g.
        /// `4=3.5`: its current and temperature rise until its over-temperature shutdown
        /// (seconds at 3.5 N·m); once per servo.
        #[arg(long, value_name = "ID=NM")]
        load: Vec<String>,
    },
}

/// Run `reachy sim`.
pub fn run(urdf: &str, args: SimArgs) -> anyhow::Result<()> {
    let Some(cmd) = args.command else {
        return run_sim(urdf, args.run);
    };
    match cmd {
        SimCommand::Servos {
            pty,
            ids,
            model,
            drop_rate,
            dead,
            latency_ms,
            wire_baud,
            hardware_error,
            load,
        } => {
            if !(0.0..=1000.0).contains(&latency_ms) {
                return Err(anyhow!("--latency-ms must be within 0..=1000"));
            }
            let ids = super::bus::parse_ids(&ids)?;
            let model = Model::from_name(&model).ok_or_else(|| {
                anyhow!("unknown model `{model}` (xm430-w350, xm430-w210, xl330-m288)")
            })?;
            if !(0.0..=1.0).contains(&drop_rate) {
                return Err(anyhow!("--drop-rate must be within 0..1"));
            }
            let mut bus = SimBus::new(&ids, model);
            for s in &mut bus.servos {
                s.faults.drop_rate = drop_rate;
            }
            if let Some(d) = dead {
                for id in super::bus::parse_ids(&d)? {
                    if let Some(s) = bus.servo_mut(id) {
                        s.faults.dead = true;
                    }
                }
            }
            for h in &hardware_error {
                let parsed = h.split_once('=').and_then(|(id, bits)| {
                    let bits = match bits.strip_prefix("0x") {
                        Some(hex) => u8::from_str_radix(hex, 16).ok(),
                        None => bits.parse().ok(),
                    };
                    Some((id.parse::<u8>().ok()?, bits?))
                });
                let Some((id, bits)) = parsed else {
                    return Err(anyhow!(
                        "--hardware-error `{h}`: ID=BITS, e.g. 3=0x20 (overload)"
                    ));
                };
                bus.servo_mut(id)
                    .ok_or_else(|| anyhow!("--hardware-error {h}: no servo {id} in --ids"))?
                    .inject_hardware_error(bits);
            }
            for l in &load {
                let parsed = l.split_once('=').and_then(|(id, nm)| {
                    let nm = nm
                        .parse::<f32>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0)?;
                    Some((id.parse::<u8>().ok()?, nm))
                });
                let Some((id, nm)) = parsed else {
                    return Err(anyhow!(
                        "--load `{l}`: ID=NM with a load torque ≥ 0, e.g. 4=3.5"
                    ));
                };
                bus.servo_mut(id)
                    .ok_or_else(|| anyhow!("--load {l}: no servo {id} in --ids"))?
                    .faults
                    .load_nm = nm;
            }
            let mut ep = PtyEndpoint::create(&pty).context("starting the simulated bus")?;
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            ctrlc::set_handler(move || s2.store(true, std::sync::atomic::Ordering::Relaxed))
                .context("installing the Ctrl-C handler")?;
            tracing::info!(pty = %pty.display(), ?ids, model = model.name(), "simulated servos ready");
            servo_pty::serve_with(
                &mut bus,
                &mut ep,
                &stop,
                wire(wire_baud, latency_ms),
                &mut |_| {},
            )?;
            Ok(())
        }
    }
}
