//! Rerun logging (`--rerun spawn | save FILE | connect ADDR`): the robot and the scene as
//! coloured primitives posed from the measured joints, TCP poses and targets, commanded vs
//! measured joint plots, camera images. The rerun crate is built with its `sdk` feature only.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::path::PathBuf;

use reachy_api::schema::{self, keys};
use reachy_api::worker::Worker;
use reachy_sim::physics::Shape;
use reachy_sim::world::World;

/// Where the recording goes.
#[derive(Debug, Clone, PartialEq)]
pub enum RerunSink {
    /// Spawn a viewer (`rerun` must be on PATH).
    Spawn,
    /// Write an `.rrd` file.
    Save(PathBuf),
    /// Stream to a viewer, e.g. `rerun+http://127.0.0.1:9876/proxy`.
    Connect(String),
}

impl RerunSink {
    /// The value of a `--rerun` flag, if given.
    pub fn from_flag(args: Option<&[String]>) -> anyhow::Result<Option<Self>> {
        args.map(Self::parse).transpose()
    }

    /// Parse `spawn`, `save FILE` or `connect ADDR`.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        match args {
            [m] if m == "spawn" => Ok(Self::Spawn),
            [m, f] if m == "save" => Ok(Self::Save(PathBuf::from(f))),
            [m, a] if m == "connect" => Ok(Self::Connect(a.clone())),
            _ => {
                anyhow::bail!("--rerun takes `spawn`, `save FILE` or `connect ADDR`, got {args:?}")
            }
        }
    }
}

/// A recording.
pub struct Viz {
    rec: rerun::RecordingStream,
}

fn quat(q: [f32; 4]) -> rerun::Quaternion {
    rerun::Quaternion::from_xyzw(q)
}

impl Viz {
    /// Open the recording.
    pub fn open(sink: &RerunSink) -> anyhow::Result<Self> {
        let b = rerun::RecordingStreamBuilder::new("reachy");
        let rec = match sink {
            RerunSink::Spawn => b.spawn()?,
            RerunSink::Save(p) => b.save(p)?,
            RerunSink::Connect(a) => b.connect_grpc_opts(a.clone())?,
        };
        Ok(Self { rec })
    }

    /// Log the world at its current time: every primitive (robot links, table, cubes), the TCPs
    /// and joint positions and targets.
    pub fn log_world(&self, world: &World) -> anyhow::Result<()> {
        let p = world.physics();
        self.rec.set_duration_secs("sim_time", p.time());
        self.log_geometry(p)?;
        let tcps: Vec<(String, [f32; 3])> = ["r_tcp", "l_tcp"]
            .iter()
            .filter_map(|t| {
                let v = p.link_pose(t)?.translation;
                Some((t.to_string(), [v.x, v.y, v.z]))
            })
            .collect();
        self.log_tcps(&tcps)?;
        self.log_joints(world.joint_names(), &p.positions(), &p.targets())
    }

    /// Every primitive of `p` (robot links posed from its joints, and the scene if it has one).
    pub fn log_geometry(&self, p: &reachy_sim::physics::RobotPhysics) -> anyhow::Result<()> {
        let (mut boxes, mut spheres, mut cyls) = (Vec::new(), Vec::new(), Vec::new());
        for prim in p.primitives() {
            let t = prim.pose.translation;
            let r = prim.pose.rotation;
            let c = prim.color.map(|x| (x.clamp(0.0, 1.0) * 255.0) as u8);
            let entry = (
                [t.x, t.y, t.z],
                [r.x, r.y, r.z, r.w],
                rerun::Color::from_rgb(c[0], c[1], c[2]),
            );
            match prim.shape {
                Shape::Box(h) => boxes.push((entry, h)),
                Shape::Sphere(rad) => spheres.push((entry, rad)),
                Shape::Cylinder(rad, hl) => cyls.push((entry, rad, hl)),
            }
        }
        self.rec.log(
            "scene/boxes",
            &rerun::Boxes3D::from_centers_and_half_sizes(
                boxes.iter().map(|((c, _, _), _)| *c),
                boxes.iter().map(|(_, h)| *h),
            )
            .with_quaternions(boxes.iter().map(|((_, q, _), _)| quat(*q)))
            .with_colors(boxes.iter().map(|((_, _, c), _)| *c))
            .with_fill_mode(rerun::FillMode::Solid),
        )?;
        self.rec.log(
            "scene/spheres",
            &rerun::Ellipsoids3D::from_centers_and_radii(
                spheres.iter().map(|((c, _, _), _)| *c),
                spheres.iter().map(|(_, r)| *r),
            )
            .with_colors(spheres.iter().map(|((_, _, c), _)| *c))
            .with_fill_mode(rerun::FillMode::Solid),
        )?;
        self.rec.log(
            "scene/cylinders",
            &rerun::Cylinders3D::from_lengths_and_radii(
                cyls.iter().map(|(_, _, hl)| 2.0 * hl),
                cyls.iter().map(|(_, r, _)| *r),
            )
            .with_centers(cyls.iter().map(|((c, _, _), _, _)| *c))
            .with_quaternions(cyls.iter().map(|((_, q, _), _, _)| quat(*q)))
            .with_colors(cyls.iter().map(|((_, _, c), _, _)| *c))
            .with_fill_mode(rerun::FillMode::Solid),
        )?;
        Ok(())
    }

    /// TCP positions.
    pub fn log_tcps(&self, tcps: &[(String, [f32; 3])]) -> anyhow::Result<()> {
        for (name, t) in tcps {
            self.rec.log(
                format!("tcp/{name}"),
                &rerun::Points3D::new([*t]).with_radii([0.008]),
            )?;
        }
        Ok(())
    }

    /// Measured and commanded position of every joint, one plot per joint.
    pub fn log_joints(
        &self,
        names: &[String],
        measured: &[f32],
        target: &[f32],
    ) -> anyhow::Result<()> {
        for ((name, q), t) in names.iter().zip(measured).zip(target) {
            self.rec.log(
                format!("joints/{name}/measured"),
                &rerun::Scalars::single(*q as f64),
            )?;
            self.rec.log(
                format!("joints/{name}/target"),
                &rerun::Scalars::single(*t as f64),
            )?;
        }
        Ok(())
    }

    /// One camera frame as received on zenoh.
    pub fn log_frame(&self, f: &schema::CameraFrame) -> anyhow::Result<()> {
        if f.encoding != "rgb8" || f.data.len() != (f.width * f.height * 3) as usize {
            anyhow::bail!(
                "camera {}: not a {}x{} rgb8 frame",
                f.camera,
                f.width,
                f.height
            );
        }
        self.rec.log(
            format!("cameras/{}", f.camera),
            &rerun::Image::from_rgb24(f.data.clone(), [f.width, f.height]),
        )?;
        Ok(())
    }

    /// Set the recording's clock to the robot's time (s).
    pub fn set_robot_time(&self, t: f64) {
        self.rec.set_duration_secs("robot_time", t);
    }

    /// Log camera images.
    pub fn log_images(&self, images: &[reachy_sim::world::CameraImage]) -> anyhow::Result<()> {
        for img in images {
            self.rec.log(
                format!("cameras/{}", img.name),
                &rerun::Image::from_rgb24(img.rgb.clone(), [img.width, img.height]),
            )?;
        }
        Ok(())
    }

    /// Flush to the sink.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.rec.flush_blocking()?;
        Ok(())
    }
}

/// A rerun recording of a robot seen through the daemon's zenoh API, on its own thread: the
/// robot's links posed from the measured joints (the URDF's geometry), TCPs, commanded vs
/// measured joints, and camera frames. Works the same for every backend.
pub struct ApiViz {
    worker: Option<Worker<anyhow::Error>>,
}

impl ApiViz {
    /// Start logging robot `robot` on `session` to `sink`, at most `hz` times per second.
    pub fn spawn(
        session: &zenoh::Session,
        robot: &str,
        urdf: &str,
        cameras: &[String],
        sink: &RerunSink,
        hz: f64,
    ) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let viz = Viz::open(sink)?;
        // the URDF's geometry, posed kinematically from the measured joints (no scene)
        let mut cfg = reachy_sim::world::WorldConfig::new(urdf);
        cfg.scene = None;
        let mut geometry = World::new(cfg)?;
        let model = reachy_kinematics::model::RobotModel::from_urdf_str(urdf)?;
        let (state, state_sub) =
            reachy_api::net::subscribe_latest(session, &keys::state(robot), |b| {
                schema::decode_robot::<schema::RobotState>(b).ok()
            })?;
        let mut frames = Vec::new();
        let mut subs = vec![state_sub];
        for c in cameras {
            let (latest, sub) =
                reachy_api::net::subscribe_latest(session, &keys::camera(robot, c), |b| {
                    schema::decode_robot::<schema::CameraFrame>(b).ok()
                })?;
            frames.push(latest);
            subs.push(sub);
        }
        let period = std::time::Duration::from_secs_f64(1.0 / hz.clamp(1.0, 200.0));
        let worker = Worker::spawn(
            "rerun",
            move |flag: &std::sync::atomic::AtomicBool| -> anyhow::Result<()> {
                let _subs = subs;
                let names: Vec<String> = geometry.joint_names().to_vec();
                let mut last_seq = u64::MAX;
                let mut frame_seq = vec![u64::MAX; frames.len()];
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(period);
                    let Some(s) = state.lock().ok().and_then(|l| l.clone()) else {
                        continue;
                    };
                    if s.seq == last_seq {
                        continue;
                    }
                    last_seq = s.seq;
                    viz.set_robot_time(s.t);
                    // joints the state does not carry (a one-bus serial backend) stay at home
                    let mut q = geometry.physics().positions();
                    for (n, v) in s.names.iter().zip(&s.position) {
                        if let Some(i) = names.iter().position(|m| m == n) {
                            q[i] = *v;
                        }
                    }
                    geometry.physics_mut().set_positions(&q);
                    viz.log_geometry(geometry.physics())?;
                    let tcps: Vec<(String, [f32; 3])> = s
                        .tcp
                        .iter()
                        .map(|p| (p.name.clone(), p.pose.position))
                        .collect();
                    viz.log_tcps(&tcps)?;
                    // where the commanded joints put each TCP: the target next to the pose
                    let targets: Vec<(String, [f32; 3])> = model
                        .chains
                        .iter()
                        .filter(|c| c.name().ends_with("_arm"))
                        .filter_map(|c| {
                            let mut q = [0.0; reachy_kinematics::MAX_DOF];
                            for (k, n) in c.joint_names().iter().enumerate() {
                                let i = s.names.iter().position(|m| m == n)?;
                                q[k] = *s.target.get(i)? as f64;
                            }
                            let t = c.fk(&q).t;
                            Some((
                                format!("{}_target", c.name()),
                                [t.x as f32, t.y as f32, t.z as f32],
                            ))
                        })
                        .collect();
                    viz.log_tcps(&targets)?;
                    viz.log_joints(&s.names, &s.position, &s.target)?;
                    for (latest, seen) in frames.iter().zip(frame_seq.iter_mut()) {
                        if let Some(f) = latest.lock().ok().and_then(|l| l.clone()) {
                            if f.seq != *seen {
                                *seen = f.seq;
                                viz.log_frame(&f)?;
                            }
                        }
                    }
                }
                viz.flush()
            },
        )?;
        Ok(Self {
            worker: Some(worker),
        })
    }

    /// Stop and flush the recording.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.worker.take().map_or(Ok(()), Worker::stop)
    }
}

impl Drop for ApiViz {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("rerun: {e:#}");
        }
    }
}
