//! Rerun logging (`--rerun spawn | save FILE | connect ADDR`): the robot and the scene as
//! coloured primitives posed from the measured joints, TCP poses and targets, commanded vs
//! measured joint plots, camera images. The rerun crate is built with its `sdk` feature only.

use std::path::PathBuf;

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
        for tcp in ["r_tcp", "l_tcp"] {
            if let Some(pose) = p.link_pose(tcp) {
                let t = pose.translation;
                self.rec.log(
                    format!("tcp/{tcp}"),
                    &rerun::Points3D::new([[t.x, t.y, t.z]]).with_radii([0.008]),
                )?;
            }
        }
        let (q, target) = (p.positions(), p.targets());
        for ((name, q), t) in world.joint_names().iter().zip(q).zip(target) {
            self.rec.log(
                format!("joints/{name}/measured"),
                &rerun::Scalars::single(q as f64),
            )?;
            self.rec.log(
                format!("joints/{name}/target"),
                &rerun::Scalars::single(t as f64),
            )?;
        }
        Ok(())
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
