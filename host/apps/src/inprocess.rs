//! The simulated robot in this process: the sim engine behind its zenoh bridge and the daemon on
//! the sim backend, on one in-process zenoh session (no router, no listener unless asked). What
//! `reachy demo` and every client command's `--backend sim` start; clients then talk to it
//! through the daemon's API exactly as to a real robot.

use std::time::Duration;

use reachy_api::net::ZenohOptions;
use reachy_api::schema::{self, keys};
use reachy_daemon::{Daemon, DaemonConfig, SimBackend};
use reachy_kinematics::model::RobotModel;

use crate::sim_bridge::{BridgeConfig, Observer, SimBridge};

/// Whether a client command starts the simulated robot itself: `--backend sim`, or no
/// `--connect` to a running daemon.
pub fn wants_in_process(backend: Option<&str>, zenoh: &ZenohOptions) -> anyhow::Result<bool> {
    match backend {
        Some("sim" | "firmware" | "qemu") => Ok(true),
        None => Ok(zenoh.connect.is_empty()),
        Some(other) => anyhow::bail!(
            "--backend `{other}`: `sim` starts the simulated robot here, `firmware` the same \
             through the firmware's control cores and servo buses, `qemu` through the firmware \
             images in QEMU (a board per limb); a real robot is reached with --connect to its \
             daemon"
        ),
    }
}

/// How the in-process daemon reaches the simulated robot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Through {
    /// The sim backend over zenoh.
    #[default]
    Sim,
    /// The physics robot's joints as servo buses on ptys (one per limb), the firmware's control
    /// core on each, the daemon on their host links.
    Firmware {
        /// The `reachy` binary whose `reachy firmware run` hosts each limb's core as a process
        /// between the ptys (what `reachy demo --backend firmware` does); `None`: the same core
        /// on a thread of this process.
        program: Option<std::path::PathBuf>,
    },
    /// The same buses, each driven by its limb's firmware image in QEMU (a board per limb: the
    /// arms' `image` and the head's beside it), the daemon on the boards' host links.
    Qemu {
        /// The arms' image (see [`crate::qemu::default_image`]).
        image: std::path::PathBuf,
    },
}

impl Through {
    /// From a `--backend` value (`sim`, `firmware`, `qemu`; none: `sim`), with the arms' image
    /// for `qemu` (default: [`crate::qemu::default_image`]) and the `reachy` binary that runs
    /// the firmware's cores as processes for `firmware` (see [`Through::Firmware`]).
    pub fn from_backend(
        backend: Option<&str>,
        image: Option<std::path::PathBuf>,
        program: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        Ok(match backend.unwrap_or("sim") {
            "sim" => Self::Sim,
            "firmware" => Self::Firmware { program },
            "qemu" => Self::Qemu {
                image: image.unwrap_or_else(crate::qemu::default_image),
            },
            other => anyhow::bail!("--backend `{other}`: expected sim, firmware or qemu"),
        })
    }

    /// How a run says what it goes through ("" for the sim backend).
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Sim => "",
            Self::Firmware { program: None } => {
                " (through the firmware's control cores and Dynamixel buses)"
            }
            Self::Firmware { program: Some(_) } => {
                " (through the firmware's control cores as `reachy firmware run` processes, one \
                 per limb, and Dynamixel buses)"
            }
            Self::Qemu { .. } => {
                " (through the firmware images in QEMU, a board per limb, and Dynamixel buses)"
            }
        }
    }
}

/// Where a client command (teleop, record, replay, policy run) finds its robot.
#[derive(Debug, Clone)]
pub struct RobotOptions {
    /// `sim`: start the simulated robot in this process (the default without `connect`);
    /// `firmware`: the same, driven through the firmware's control cores and servo buses.
    pub backend: Option<String>,
    /// Robot name.
    pub name: String,
    /// Scene seed of the in-process sim.
    pub seed: u64,
    /// Zenoh endpoints: `connect` reaches a running daemon.
    pub zenoh: ZenohOptions,
    /// `firmware`: the `reachy` binary whose `reachy firmware run` hosts each limb's control
    /// core as a process; `None`: the cores on threads of this process.
    pub firmware_program: Option<std::path::PathBuf>,
}

/// The robot a client command works on: the simulated robot started in this process
/// (`--backend sim`, or no `--connect`) or a running daemon, and its rerun recording if asked.
/// Fields drop in order: the recording stops before the sim.
pub struct ClientRobot {
    /// The session to use.
    pub session: zenoh::Session,
    /// Robot name.
    pub name: String,
    urdf: String,
    viz: Option<reachy_viz::ApiViz>,
    sim: Option<SimRobot>,
}

impl ClientRobot {
    /// Start the in-process robot (with `cameras` rendered at `camera_fps`) or open the session
    /// to a running daemon.
    pub fn open(
        a: &RobotOptions,
        urdf: Option<&std::path::Path>,
        cameras: Vec<reachy_sim::camera::CameraSpec>,
        camera_fps: f64,
    ) -> anyhow::Result<Self> {
        let in_process = wants_in_process(a.backend.as_deref(), &a.zenoh)?;
        let (urdf, model) = RobotModel::load(urdf)?;
        let (session, sim) = if in_process {
            let world = SimRobot::world(&urdf, a.seed, cameras)?;
            let sim = SimRobot::start(
                world,
                model,
                SimRobotOptions {
                    robot: a.name.clone(),
                    camera_fps,
                    zenoh: a.zenoh.clone(),
                    observer: None,
                    through: Through::from_backend(
                        a.backend.as_deref(),
                        None,
                        a.firmware_program.clone(),
                    )?,
                    daemon: None,
                },
            )?;
            (sim.session.clone(), Some(sim))
        } else {
            (a.zenoh.open()?, None)
        };
        Ok(Self {
            session,
            name: a.name.clone(),
            urdf,
            viz: None,
            sim,
        })
    }

    /// The in-process sim, if this command started one.
    pub fn sim(&self) -> Option<&SimRobot> {
        self.sim.as_ref()
    }

    /// Take the lease as `client` (the process id is appended) with `priority`.
    pub fn connect(
        &self,
        client: &str,
        priority: &str,
    ) -> anyhow::Result<reachy_api::client::RobotClient> {
        Ok(reachy_api::client::RobotClient::connect(
            &self.session,
            &self.name,
            &format!("{client}-{}", std::process::id()),
            priority,
            Duration::from_secs(10),
        )?)
    }

    /// Record the robot (and the layout's cameras) to `sink` until [`ClientRobot::stop`];
    /// nothing when `sink` is `None`.
    pub fn record_to(
        &mut self,
        sink: Option<&reachy_viz::RerunSink>,
        layout: reachy_viz::Layout,
    ) -> anyhow::Result<()> {
        if let Some(s) = sink {
            self.viz = Some(reachy_viz::ApiViz::spawn(
                &self.session,
                &self.name,
                &self.urdf,
                layout,
                s,
                25.0,
            )?);
        }
        Ok(())
    }

    /// Logs policy chunks and episode events into the recording, if there is one.
    pub fn annotator(&self) -> Option<reachy_viz::Annotator> {
        self.viz.as_ref().map(reachy_viz::ApiViz::annotator)
    }

    /// Flush the recording, then stop the in-process robot.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(v) = self.viz.take() {
            v.stop()?;
        }
        match self.sim.take() {
            Some(s) => s.stop(),
            None => Ok(()),
        }
    }
}

/// The sim's `reset` queryable, in this process or behind `reachy sim`: the scene rebuilt from
/// `seed`, the robot teleported home.
pub fn reset_sim(session: &zenoh::Session, robot: &str, seed: u64) -> anyhow::Result<()> {
    let request = schema::encode(&schema::ResetRequest {
        v: schema::SIM_SCHEMA_VERSION,
        seed: Some(seed),
    });
    let _: schema::SimReply = reachy_api::net::get(
        session,
        &keys::sim_query(robot, "reset"),
        Some(request),
        Duration::from_secs(5),
        schema::decode_sim,
    )?;
    Ok(())
}

/// What to start.
pub struct SimRobotOptions {
    /// Robot name (the `<robot>` key segment).
    pub robot: String,
    /// Camera frames per second.
    pub camera_fps: f64,
    /// Zenoh endpoints of the in-process session (empty: in-process only).
    pub zenoh: ZenohOptions,
    /// Called by the sim thread after every control period (recording).
    pub observer: Option<Observer>,
    /// How the daemon reaches the physics: the sim backend over zenoh, or servo buses driven
    /// by the firmware (its control cores, or its images in QEMU).
    pub through: Through,
    /// The daemon's configuration (its `robot` is replaced by [`SimRobotOptions::robot`]);
    /// `None`: the limits of `reachy daemon`'s built-in configuration.
    pub daemon: Option<DaemonConfig>,
}

impl Default for SimRobotOptions {
    fn default() -> Self {
        Self {
            robot: "reachy".into(),
            camera_fps: 30.0,
            zenoh: ZenohOptions::default(),
            observer: None,
            through: Through::Sim,
            daemon: None,
        }
    }
}

/// A running simulated robot; dropping it stops the daemon, then the sim.
pub struct SimRobot {
    /// The session both run on; clients in this process use it too.
    pub session: zenoh::Session,
    /// Robot name.
    pub robot: String,
    daemon: Option<Daemon>,
    bridge: Option<SimBridge>,
    /// The servo buses' pty threads (through the firmware), stopped after the daemon and sim.
    servers: Option<crate::servo_buses::BusServers>,
}

/// What [`firmware_buses`] starts: the observer, the buses as (name, pty), their servers.
type FirmwareBuses = (
    Observer,
    Vec<(String, String)>,
    crate::servo_buses::BusServers,
);

/// The physics robot's servo buses (every chain's) on fresh ptys, and the observer that syncs
/// them with the physics every control period, then calls `then`; the buses as (name, pty).
fn firmware_buses(
    world: &reachy_sim::world::World,
    model: &RobotModel,
    mut then: Option<Observer>,
) -> anyhow::Result<FirmwareBuses> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let buses: Vec<(String, std::path::PathBuf)> = model
        .chains
        .iter()
        .map(|c| {
            let path = std::env::temp_dir().join(format!(
                "reachy-physbus-{}-{n}-{}",
                std::process::id(),
                c.name()
            ));
            (c.name().to_string(), path)
        })
        .collect();
    let (mut servos, servers) =
        crate::servo_buses::serve(world, model, &buses, Default::default())?;
    let observer: Observer = Box::new(move |w| {
        servos.sync(w);
        if let Some(t) = &mut then {
            t(w);
        }
    });
    let buses = buses
        .into_iter()
        .map(|(b, p)| (b, p.to_string_lossy().into_owned()))
        .collect();
    Ok((observer, buses, servers))
}

impl SimRobot {
    /// Put `world` (see [`SimRobot::world`]) on zenoh and start the daemon on it.
    pub fn start(
        world: reachy_sim::world::World,
        model: RobotModel,
        opts: SimRobotOptions,
    ) -> anyhow::Result<Self> {
        let session = opts.zenoh.open()?;
        let mut observer = opts.observer;
        let mut buses = None;
        let mut servers = None;
        if opts.through != Through::Sim {
            let (o, b, s) = firmware_buses(&world, &model, observer.take())?;
            observer = Some(o);
            buses = Some(b);
            servers = Some(s);
        }
        let bridge = SimBridge::spawn_observed(
            session.clone(),
            world,
            BridgeConfig {
                robot: opts.robot.clone(),
                camera_fps: opts.camera_fps,
                ..Default::default()
            },
            observer,
        )?;
        let backend: Box<dyn reachy_daemon::Backend> = match (&opts.through, &buses) {
            (Through::Qemu { image }, Some(b)) => {
                crate::direct::open_qemu_boards(b, image, &model)?
            }
            (
                Through::Firmware {
                    program: Some(program),
                },
                Some(b),
            ) => crate::direct::open_firmware_processes(b, program, &model)?,
            (_, Some(b)) => crate::direct::open_buses(
                b,
                1_000_000,
                reachy_firmware::dynamixel::Model::Xm430W350,
                &model,
                &Default::default(),
            )?,
            (_, None) => Box::new(SimBackend::connect(
                &session,
                &opts.robot,
                Duration::from_secs(5),
            )?),
        };
        let daemon = Daemon::spawn(
            session.clone(),
            model,
            backend,
            DaemonConfig {
                robot: opts.robot.clone(),
                ..opts.daemon.unwrap_or_else(|| {
                    // the limits of `reachy daemon`'s built-in configuration
                    DaemonConfig::from_config(&reachy_daemon::config::Config::default_config())
                })
            },
        )?;
        Ok(Self {
            session,
            robot: opts.robot,
            daemon: Some(daemon),
            bridge: Some(bridge),
            servers,
        })
    }

    /// The world of `urdf`: the scene placed from `seed`, the robot at home, `cameras` rendered.
    pub fn world(
        urdf: &str,
        seed: u64,
        cameras: Vec<reachy_sim::camera::CameraSpec>,
    ) -> anyhow::Result<reachy_sim::world::World> {
        let mut cfg = reachy_sim::world::WorldConfig::new(urdf);
        if let Some(s) = &mut cfg.scene {
            s.seed = seed;
        }
        cfg.cameras = cameras;
        Ok(reachy_sim::world::World::new(cfg)?)
    }

    /// The daemon (its counters).
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running until stopped")
    }

    /// Rebuild the scene with `seed` (objects re-placed, robot teleported home).
    pub fn reset_scene(&self, seed: u64) -> anyhow::Result<()> {
        reset_sim(&self.session, &self.robot, seed)
    }

    /// Stop the daemon, then the sim; errors of either.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let d = self.daemon.take().map(|d| d.stop());
        let b = self.bridge.take().map(|b| b.stop());
        drop(self.servers.take());
        d.transpose()?;
        b.transpose()?;
        Ok(())
    }
}

impl Drop for SimRobot {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().ok();
        }
        if let Some(b) = self.bridge.take() {
            b.stop().ok();
        }
        drop(self.servers.take());
    }
}
