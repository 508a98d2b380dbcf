//! Rerun logging (`--rerun spawn | save FILE | connect ADDR`) and the layout a user opens it
//! with. The robot is logged as rerun expects a URDF: each link's geometry once (static) under
//! its entity in the URDF tree (`robot/<root>/…/<link>`), a `Transform3D` per link when it moves.
//! TCP targets are axes beside the TCP links' axes, the grasp state a labelled marker; joints
//! are plotted target over measured, with the grippers' openings and the TCP errors; a policy's
//! chunk is the TCPs' future path, its latency a plot; episode boundaries are events. A
//! blueprint goes with every recording. The rerun crate is built with its `sdk` feature only;
//! [`inspect`] reads a recording back with rerun's decoder.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use reachy_api::schema::{self, keys};
use reachy_api::worker::Worker;
use reachy_kinematics::model::RobotModel;
use reachy_sim::physics::{Pose, Primitive, RobotPhysics, Shape};
use reachy_sim::world::World;
use rerun::blueprint::components::PanelState;
use rerun::blueprint::{
    Blueprint, BlueprintActivation, BlueprintPanel, ContainerLike, Grid, Horizontal,
    SelectionPanel, Spatial2DView, Spatial3DView, Tabs, TextLogView, TimePanel, TimeSeriesView,
    Vertical,
};

pub mod inspect;

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

/// What the recording is about: it decides the blueprint (the layout the viewer opens with).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    /// The arm the task uses (`r_arm` or `l_arm`; `r_arm` when empty): its joint plots are the
    /// tab shown, the other limbs' tabs are collapsed behind it.
    pub active_arm: String,
    /// Cameras whose images sit under the 3D view.
    pub cameras: Vec<String>,
    /// A policy drives the robot: its inference latency gets a plot (the chunk it executes is
    /// drawn in the 3D view as the TCP's future path).
    pub policy: bool,
    /// Episodes are recorded: their boundaries are listed in an event log (and are events on
    /// the timeline).
    pub episodes: bool,
}

impl Layout {
    /// The active arm, `r_arm` unless set.
    pub fn arm(&self) -> &str {
        if self.active_arm.is_empty() {
            "r_arm"
        } else {
            &self.active_arm
        }
    }
}

/// The limb a joint belongs to: `r_arm`, `l_arm` (gripper included) or `head` (neck and
/// antennas).
pub fn limb_of(joint: &str) -> &'static str {
    if joint.contains("antenna") || joint.starts_with("neck") {
        "head"
    } else if joint.starts_with("r_") {
        "r_arm"
    } else if joint.starts_with("l_") {
        "l_arm"
    } else {
        "head"
    }
}

/// The blueprint: a large 3D view of the workspace with the camera images under it; beside it
/// one plot per joint of the active arm (target over measured), the other limbs in tabs behind
/// it, the grippers' openings and the TCP error; the inference latency and the event log when
/// the layout has them.
pub fn blueprint(layout: &Layout, joints: &[String], timeline: &str) -> Blueprint {
    let arm = layout.arm();
    let mut limbs: Vec<&str> = vec![arm];
    for l in ["r_arm", "l_arm", "head"] {
        if !limbs.contains(&l) {
            limbs.push(l);
        }
    }
    let tabs: Vec<ContainerLike> = limbs
        .iter()
        .filter(|l| joints.iter().any(|j| limb_of(j) == **l))
        .map(|l| {
            let plots: Vec<ContainerLike> = joints
                .iter()
                .filter(|j| limb_of(j) == *l)
                .map(|j| {
                    TimeSeriesView::new(j.as_str())
                        .with_origin(format!("joints/{j}"))
                        .into()
                })
                .collect();
            Grid::new(plots).with_name(*l).into()
        })
        .collect();
    let mut right: Vec<ContainerLike> = vec![
        Tabs::new(tabs).with_active_tab(arm).into(),
        TimeSeriesView::new("gripper opening (0 closed, 1 open)")
            .with_origin("grippers")
            .into(),
        TimeSeriesView::new("TCP error: target − measured (mm)")
            .with_origin("tcp_error")
            .into(),
    ];
    let mut shares = vec![5.0, 1.0, 1.0];
    if layout.policy {
        right.push(
            TimeSeriesView::new("policy inference latency (ms)")
                .with_origin("policy/latency_ms")
                .into(),
        );
        shares.push(1.0);
    }
    if layout.episodes {
        right.push(TextLogView::new("episodes").with_origin("events").into());
        shares.push(1.0);
    }
    let scene = Spatial3DView::new("robot and workspace")
        .with_origin("/")
        .with_contents(["/**", "- /cameras/**"]);
    let left: ContainerLike = if layout.cameras.is_empty() {
        scene.into()
    } else {
        let cams: Vec<ContainerLike> = layout
            .cameras
            .iter()
            .map(|c| {
                Spatial2DView::new(c.as_str())
                    .with_origin(format!("cameras/{c}"))
                    .into()
            })
            .collect();
        Vertical::new([scene.into(), Horizontal::new(cams).into()])
            .with_row_shares([3.0, 1.0])
            .into()
    };
    Blueprint::new(
        Horizontal::new([left, Vertical::new(right).with_row_shares(shares).into()])
            .with_column_shares([3.0, 2.0]),
    )
    .with_auto_views(false)
    // the views get the window: the blueprint and selection panels start collapsed, the time
    // panel as its bar
    .with_blueprint_panel(BlueprintPanel::new().with_state(PanelState::Collapsed))
    .with_selection_panel(SelectionPanel::new().with_state(PanelState::Collapsed))
    .with_time_panel(
        TimePanel::new()
            .with_timeline(timeline)
            .with_state(PanelState::Collapsed),
    )
}

/// The robot's links as rerun entities: the URDF tree as entity paths
/// (`robot/<root>/<child>/…`), each link's parent, each arm's TCP link; the scene's objects.
struct Tree {
    paths: Vec<String>,
    parents: Vec<Option<usize>>,
    /// Arm (`r_arm`) → the entity path of its TCP link (`…/r_tcp`).
    tcps: BTreeMap<String, String>,
    /// The scene's objects, in [`RobotPhysics::objects`] order.
    objects: Vec<String>,
}

impl Tree {
    fn new(p: &RobotPhysics) -> Self {
        let names = p.link_names();
        let parents = p.link_parents();
        let paths = (0..names.len())
            .map(|i| {
                let mut chain = vec![names[i].as_str()];
                let mut k = i;
                while let Some(up) = parents[k] {
                    chain.push(names[up].as_str());
                    k = up;
                }
                chain.reverse();
                format!("robot/{}", chain.join("/"))
            })
            .collect::<Vec<String>>();
        let tcps = names
            .iter()
            .zip(&paths)
            .filter_map(|(n, path)| {
                Some((format!("{}_arm", n.strip_suffix("_tcp")?), path.clone()))
            })
            .collect();
        let objects = p.objects().iter().map(|o| o.name.clone()).collect();
        Self {
            paths,
            parents,
            tcps,
            objects,
        }
    }
}

fn rgb(c: [f32; 3]) -> rerun::Color {
    let c = c.map(|x| (x.clamp(0.0, 1.0) * 255.0) as u8);
    rerun::Color::from_rgb(c[0], c[1], c[2])
}

/// A rigid transform as rerun logs it: only the translation and the quaternion (the other
/// transform components are never set, so they need no clearing row after row).
fn transform(t: [f32; 3], q: [f32; 4]) -> rerun::Transform3D {
    rerun::Transform3D::update_fields()
        .with_translation(t)
        .with_quaternion(quat(q))
}

fn parts(p: &Pose) -> ([f32; 3], [f32; 4]) {
    let (t, r) = (p.translation, p.rotation);
    ([t.x, t.y, t.z], [r.x, r.y, r.z, r.w])
}

/// What each posed entity was last logged with: a transform is logged again only when it moved
/// (by more than 0.1 mm or 1e-4 in its quaternion), so still limbs cost nothing per frame.
#[derive(Default)]
struct Logged {
    poses: BTreeMap<String, ([f32; 3], [f32; 4])>,
    labels: BTreeMap<String, String>,
}

impl Logged {
    fn moved(&mut self, path: &str, t: [f32; 3], q: [f32; 4]) -> bool {
        // q and −q are the same rotation
        let same = |a: &([f32; 3], [f32; 4])| {
            let dq = (0..4).map(|k| (a.1[k] - q[k]).abs()).fold(0.0, f32::max);
            let dn = (0..4).map(|k| (a.1[k] + q[k]).abs()).fold(0.0, f32::max);
            (0..3).all(|k| (a.0[k] - t[k]).abs() < 1e-4) && dq.min(dn) < 1e-4
        };
        if self.poses.get(path).is_some_and(same) {
            return false;
        }
        self.poses.insert(path.to_string(), (t, q));
        true
    }

    fn relabelled(&mut self, path: &str, label: &str) -> bool {
        if self.labels.get(path).is_some_and(|l| l == label) {
            return false;
        }
        self.labels.insert(path.to_string(), label.to_string());
        true
    }
}

fn quat(q: [f32; 4]) -> rerun::Quaternion {
    rerun::Quaternion::from_xyzw(q)
}

/// Log `prims` (each in the entity's frame) at `path`: boxes, spheres and cylinders as
/// children of their own.
fn log_primitives(
    rec: &rerun::RecordingStream,
    path: &str,
    prims: &[Primitive],
) -> anyhow::Result<()> {
    let c = |p: &Primitive| {
        let t = p.pose.translation;
        [t.x, t.y, t.z]
    };
    let q = |p: &Primitive| {
        let r = p.pose.rotation;
        quat([r.x, r.y, r.z, r.w])
    };
    let boxes: Vec<(&Primitive, [f32; 3])> = prims
        .iter()
        .filter_map(|p| match p.shape {
            Shape::Box(h) => Some((p, h)),
            _ => None,
        })
        .collect();
    if !boxes.is_empty() {
        rec.log_static(
            format!("{path}/boxes"),
            &rerun::Boxes3D::from_centers_and_half_sizes(
                boxes.iter().map(|(p, _)| c(p)),
                boxes.iter().map(|(_, h)| *h),
            )
            .with_quaternions(boxes.iter().map(|(p, _)| q(p)))
            .with_colors(boxes.iter().map(|(p, _)| rgb(p.color)))
            .with_fill_mode(rerun::FillMode::Solid),
        )?;
    }
    let spheres: Vec<(&Primitive, f32)> = prims
        .iter()
        .filter_map(|p| match p.shape {
            Shape::Sphere(r) => Some((p, r)),
            _ => None,
        })
        .collect();
    if !spheres.is_empty() {
        rec.log_static(
            format!("{path}/spheres"),
            &rerun::Ellipsoids3D::from_centers_and_radii(
                spheres.iter().map(|(p, _)| c(p)),
                spheres.iter().map(|(_, r)| *r),
            )
            .with_colors(spheres.iter().map(|(p, _)| rgb(p.color)))
            .with_fill_mode(rerun::FillMode::Solid),
        )?;
    }
    let cyls: Vec<(&Primitive, f32, f32)> = prims
        .iter()
        .filter_map(|p| match p.shape {
            Shape::Cylinder(r, hl) => Some((p, r, hl)),
            _ => None,
        })
        .collect();
    if !cyls.is_empty() {
        rec.log_static(
            format!("{path}/cylinders"),
            &rerun::Cylinders3D::from_lengths_and_radii(
                cyls.iter().map(|(_, _, hl)| 2.0 * hl),
                cyls.iter().map(|(_, r, _)| *r),
            )
            .with_centers(cyls.iter().map(|(p, _, _)| c(p)))
            .with_quaternions(cyls.iter().map(|(p, _, _)| q(p)))
            .with_colors(cyls.iter().map(|(p, _, _)| rgb(p.color)))
            .with_fill_mode(rerun::FillMode::Solid),
        )?;
    }
    Ok(())
}

/// What the gripper does, from its measured and commanded openings (0 closed, 1 open).
pub fn grasp_state(measured: f32, target: f32) -> &'static str {
    if target < 0.15 && measured > target + 0.08 {
        // commanded shut, held open by something between the fingers
        "holding"
    } else if measured < 0.15 {
        "closed"
    } else {
        "open"
    }
}

/// A recording: the robot as a URDF transform tree (each link's geometry logged once, a
/// transform per link when it moves), the scene, TCPs and targets as axes, the grippers' grasp
/// state, target-over-measured joint plots, gripper openings, TCP errors, camera images, policy
/// chunks and latencies, episode events, and the blueprint that lays them out.
pub struct Viz {
    rec: rerun::RecordingStream,
    model: RobotModel,
    layout: Layout,
    timeline: &'static str,
    tree: OnceLock<Tree>,
    logged: Mutex<Logged>,
}

/// One frame of the robot: its joints (names, measured, commanded) and the world pose of each
/// link (from the physics, or posed kinematically from the measured joints).
pub struct RobotFrame<'a> {
    /// Time on the recording's timeline (s).
    pub t: f64,
    /// Joint names.
    pub names: &'a [String],
    /// Measured positions.
    pub measured: &'a [f32],
    /// Commanded positions.
    pub target: &'a [f32],
    /// The physics whose link poses (and scene objects, if any) are drawn.
    pub physics: &'a RobotPhysics,
}

impl Viz {
    /// Open the recording of a simulated world (timeline `sim_time`) for robot `urdf`.
    pub fn open(sink: &RerunSink, urdf: &str, layout: Layout) -> anyhow::Result<Self> {
        Self::open_on(sink, urdf, layout, "sim_time")
    }

    fn open_on(
        sink: &RerunSink,
        urdf: &str,
        layout: Layout,
        timeline: &'static str,
    ) -> anyhow::Result<Self> {
        let b = rerun::RecordingStreamBuilder::new("reachy");
        let rec = match sink {
            RerunSink::Spawn => b.spawn()?,
            // a file is read after the run: rows batched over 5 s make a few large chunks
            // instead of one per entity per 200 ms (each chunk carries its own schema)
            RerunSink::Save(p) => b
                .batcher_config(rerun::log::ChunkBatcherConfig {
                    flush_tick: std::time::Duration::from_secs(5),
                    flush_num_bytes: 8 << 20,
                    ..rerun::log::ChunkBatcherConfig::DEFAULT
                })
                .save(p)?,
            RerunSink::Connect(a) => b.connect_grpc_opts(a.clone())?,
        };
        let model = RobotModel::from_urdf_str(urdf)?;
        Ok(Self {
            rec,
            model,
            layout,
            timeline,
            tree: OnceLock::new(),
            logged: Mutex::new(Logged::default()),
        })
    }

    /// Log the world at its current time: the robot's links, the scene's objects, TCPs, joint
    /// positions and targets.
    pub fn log_world(&self, world: &World) -> anyhow::Result<()> {
        let p = world.physics();
        self.log_frame_of(&RobotFrame {
            t: p.time(),
            names: world.joint_names(),
            measured: &p.positions(),
            target: &p.targets(),
            physics: p,
        })
    }

    /// Everything logged once: the view coordinates, each link's geometry under its entity,
    /// axes on the TCPs, the floor and table, the plots' styles, the blueprint.
    fn log_static(&self, p: &RobotPhysics, names: &[String]) -> anyhow::Result<Tree> {
        let rec = &self.rec;
        let tree = Tree::new(p);
        rec.log_static("/", &rerun::ViewCoordinates::RIGHT_HAND_Z_UP())?;
        let mut per_link: BTreeMap<usize, Vec<Primitive>> = BTreeMap::new();
        for (link, v) in p.link_visuals() {
            per_link.entry(link).or_default().push(v);
        }
        for (link, prims) in &per_link {
            log_primitives(rec, &format!("{}/visual", tree.paths[*link]), prims)?;
        }
        for path in tree.tcps.values() {
            rec.log_static(path.as_str(), &rerun::TransformAxes3D::new(0.08))?;
        }
        // the floor as a 2 m patch around the robot and its table: the viewer frames its 3D
        // view on the scene's bounds, and a 6 m floor left the robot tiny in the middle
        let mut fixed = p.fixed_primitives();
        let table_x = fixed.get(1).map_or(0.3, |t| t.pose.translation.x);
        if let Some(floor) = fixed.first_mut() {
            floor.shape = Shape::Box([0.9, 0.9, 0.005]);
            floor.pose = Pose::translation(table_x / 2.0, 0.0, -0.005);
        }
        log_primitives(rec, "scene/fixed", &fixed)?;
        for (name, mut prim) in tree.objects.iter().zip(p.object_primitives()) {
            prim.pose = Pose::IDENTITY;
            log_primitives(rec, &format!("scene/objects/{name}"), &[prim])?;
        }
        let series = |path: String, name: &str, color: [u8; 3], width: f32| {
            rec.log_static(
                path,
                &rerun::SeriesLines::new()
                    .with_names([name])
                    .with_colors([rerun::Color::from_rgb(color[0], color[1], color[2])])
                    .with_widths([width]),
            )
        };
        // `<base>/measured` (thick, blue) and `<base>/target` (thin, orange) in one plot
        let measured_and_target = |base: &str, prefix: &str| -> anyhow::Result<()> {
            series(
                format!("{base}/measured"),
                &format!("{prefix}measured"),
                [31, 119, 180],
                2.0,
            )?;
            series(
                format!("{base}/target"),
                &format!("{prefix}target"),
                [255, 127, 14],
                1.0,
            )?;
            Ok(())
        };
        for j in names {
            measured_and_target(&format!("joints/{j}"), "")?;
        }
        for arm in self.arms() {
            let side = &arm[..1];
            measured_and_target(
                &format!("grippers/{side}_gripper"),
                &format!("{side}_gripper "),
            )?;
            series(
                format!("tcp_error/{arm}"),
                arm,
                if side == "r" {
                    [214, 39, 40]
                } else {
                    [44, 160, 44]
                },
                2.0,
            )?;
            rec.log_static(
                format!("tcp/{arm}/target"),
                &rerun::TransformAxes3D::new(0.05),
            )?;
        }
        if self.layout.policy {
            series(
                "policy/latency_ms".into(),
                "observation → chunk",
                [148, 103, 189],
                2.0,
            )?;
        }
        blueprint(&self.layout, names, self.timeline).send(rec, BlueprintActivation::default())?;
        Ok(tree)
    }

    fn arms(&self) -> Vec<&str> {
        self.model
            .chains
            .iter()
            .map(|c| c.name())
            .filter(|n| n.ends_with("_arm"))
            .collect()
    }

    /// FK of the arm chains for the joint vector `q` (named by `names`): (arm, position, xyzw).
    fn tcps(&self, names: &[String], q: &[f32]) -> Vec<(String, [f32; 3], [f32; 4])> {
        self.model
            .chains
            .iter()
            .filter(|c| c.name().ends_with("_arm"))
            .filter_map(|c| {
                let mut v = [0.0; reachy_kinematics::MAX_DOF];
                for (k, n) in c.joint_names().iter().enumerate() {
                    let i = names.iter().position(|m| m == n)?;
                    v[k] = *q.get(i)? as f64;
                }
                let f = c.fk(&v);
                Some((
                    c.name().to_string(),
                    [f.t.x as f32, f.t.y as f32, f.t.z as f32],
                    f.quat_xyzw().map(|x| x as f32),
                ))
            })
            .collect()
    }

    /// Log one frame: a transform per link that moved (relative to its parent), the objects,
    /// the TCP targets as axes, the grasp state, the joint, gripper and TCP-error plots.
    pub fn log_frame_of(&self, f: &RobotFrame<'_>) -> anyhow::Result<()> {
        let rec = &self.rec;
        let tree = match self.tree.get() {
            Some(t) => t,
            None => {
                let t = self.log_static(f.physics, f.names)?;
                self.tree.get_or_init(|| t)
            }
        };
        rec.set_duration_secs(self.timeline, f.t);
        let mut logged = self
            .logged
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let poses = f.physics.link_poses();
        for (i, path) in tree.paths.iter().enumerate() {
            let Some(pose) = poses[i] else { continue };
            let local = match tree.parents[i].and_then(|up| poses[up]) {
                Some(up) => up.inverse() * pose,
                None => pose,
            };
            let (t, q) = parts(&local);
            if logged.moved(path, t, q) {
                rec.log(path.as_str(), &transform(t, q))?;
            }
        }
        for (name, prim) in tree.objects.iter().zip(f.physics.object_primitives()) {
            let path = format!("scene/objects/{name}");
            let (t, q) = parts(&prim.pose);
            if logged.moved(&path, t, q) {
                rec.log(path, &transform(t, q))?;
            }
        }
        for ((name, q), t) in f.names.iter().zip(f.measured).zip(f.target) {
            rec.log(
                format!("joints/{name}/measured"),
                &rerun::Scalars::single(*q as f64),
            )?;
            rec.log(
                format!("joints/{name}/target"),
                &rerun::Scalars::single(*t as f64),
            )?;
        }
        let measured = self.tcps(f.names, f.measured);
        let target = self.tcps(f.names, f.target);
        for ((arm, p, _), (_, pt, qt)) in measured.iter().zip(&target) {
            let path = format!("tcp/{arm}/target");
            if logged.moved(&path, *pt, *qt) {
                rec.log(path, &transform(*pt, *qt))?;
            }
            let err = (0..3).map(|k| (p[k] - pt[k]).powi(2)).sum::<f32>().sqrt();
            rec.log(
                format!("tcp_error/{arm}"),
                &rerun::Scalars::single(err as f64 * 1e3),
            )?;
            // the grasp state, as a labelled marker at the measured TCP
            let gripper = format!("{}_gripper", &arm[..1]);
            let Some(i) = f.names.iter().position(|n| *n == gripper) else {
                continue;
            };
            let Some(j) = self.model.joints.iter().find(|j| j.name == gripper) else {
                continue;
            };
            let span = (j.upper - j.lower).max(1e-6);
            let open = |q: f32| ((q as f64 - j.lower) / span) as f32;
            let (om, ot) = (open(f.measured[i]), open(f.target[i]));
            rec.log(
                format!("grippers/{gripper}/measured"),
                &rerun::Scalars::single(om as f64),
            )?;
            rec.log(
                format!("grippers/{gripper}/target"),
                &rerun::Scalars::single(ot as f64),
            )?;
            let state = grasp_state(om, ot);
            let color = match state {
                "holding" => rerun::Color::from_rgb(255, 160, 0),
                "closed" => rerun::Color::from_rgb(200, 40, 40),
                _ => rerun::Color::from_rgb(60, 180, 75),
            };
            // a marker on the TCP link (it moves with it), logged when its label changes
            let label = format!("{gripper} {state} ({:.0} %)", om * 100.0);
            if let Some(tcp) = tree.tcps.get(arm.as_str()) {
                let path = format!("{tcp}/grasp");
                if logged.relabelled(&path, &label) {
                    rec.log(
                        path,
                        &rerun::Points3D::new([[0.0, 0.0, 0.0]])
                            .with_radii([0.012])
                            .with_colors([color])
                            .with_labels([label]),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// A policy's chunk, drawn as the future path of each arm's TCP from where the robot is
    /// (`names` / `measured` the joints now; `action` the joint index of each action column),
    /// and the observation-to-chunk latency.
    pub fn log_chunk(
        &self,
        t: f64,
        names: &[String],
        measured: &[f32],
        action: &[usize],
        chunk: &[Vec<f32>],
        latency_ms: f64,
    ) -> anyhow::Result<()> {
        self.rec.set_duration_secs(self.timeline, t);
        let mut paths: BTreeMap<String, Vec<[f32; 3]>> = BTreeMap::new();
        for row in chunk {
            let mut q = measured.to_vec();
            for (&i, v) in action.iter().zip(row) {
                if let Some(x) = q.get_mut(i) {
                    *x = *v;
                }
            }
            for (arm, p, _) in self.tcps(names, &q) {
                paths.entry(arm).or_default().push(p);
            }
        }
        for (arm, path) in &paths {
            self.rec.log(
                format!("policy/chunk/{arm}"),
                &rerun::LineStrips3D::new([path.clone()])
                    .with_radii([0.004])
                    .with_colors([rerun::Color::from_rgb(148, 103, 189)]),
            )?;
        }
        self.rec
            .log("policy/latency_ms", &rerun::Scalars::single(latency_ms))?;
        Ok(())
    }

    /// An event on the timeline (an episode starting or ending), in the event log.
    pub fn log_event(&self, t: f64, text: &str) -> anyhow::Result<()> {
        self.rec.set_duration_secs(self.timeline, t);
        self.rec.log("events", &rerun::TextLog::new(text))?;
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

    /// One camera frame as received on zenoh, at its own time on this recording's timeline (a
    /// sim's frames carry sim time).
    pub fn log_frame_at_its_time(&self, f: &schema::CameraFrame) -> anyhow::Result<()> {
        self.rec.set_duration_secs(self.timeline, f.t);
        self.log_frame(f)
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

/// A rerun recording of a robot seen through the daemon's zenoh API, on its own thread (timeline
/// `robot_time`, the daemon's clock): the robot's links posed from the measured joints (the
/// URDF's tree), TCPs and targets, commanded vs measured joints, and camera frames. Works the
/// same for every backend.
pub struct ApiViz {
    worker: Option<Worker<anyhow::Error>>,
    annotator: Annotator,
}

/// Logs what a client knows and the robot's state does not (a policy's chunks, episode
/// boundaries) into an [`ApiViz`]'s recording, at the robot's latest time.
#[derive(Clone)]
pub struct Annotator {
    viz: Arc<Viz>,
    state: reachy_api::net::Latest<schema::RobotState>,
}

impl Annotator {
    /// A policy's chunk (rows of actions; `action[k]` the state joint of column k) drawn as the
    /// TCPs' future path from where the robot is, and its latency.
    pub fn chunk(&self, action: &[usize], chunk: &[Vec<f32>], latency_ms: f64) {
        let Some(s) = self.state.lock().ok().and_then(|l| l.clone()) else {
            return;
        };
        if let Err(e) = self
            .viz
            .log_chunk(s.t, &s.names, &s.position, action, chunk, latency_ms)
        {
            tracing::warn!("rerun: {e:#}");
        }
    }

    /// An event (an episode starting, its reset) on the timeline.
    pub fn event(&self, text: &str) {
        let t = self.state.lock().ok().and_then(|l| l.as_ref().map(|s| s.t));
        if let Err(e) = self.viz.log_event(t.unwrap_or(0.0), text) {
            tracing::warn!("rerun: {e:#}");
        }
    }
}

impl ApiViz {
    /// Start logging robot `robot` on `session` to `sink`, laid out by `layout` (its cameras'
    /// frames are logged too), at most `hz` times per second.
    pub fn spawn(
        session: &zenoh::Session,
        robot: &str,
        urdf: &str,
        layout: Layout,
        sink: &RerunSink,
        hz: f64,
    ) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let cameras = layout.cameras.clone();
        let viz = Arc::new(Viz::open_on(sink, urdf, layout, "robot_time")?);
        // the URDF's geometry, posed kinematically from the measured joints (no scene)
        let mut cfg = reachy_sim::world::WorldConfig::new(urdf);
        cfg.scene = None;
        let mut geometry = World::new(cfg)?;
        let (state, state_sub) =
            reachy_api::net::subscribe_latest(session, &keys::state(robot), |b| {
                schema::decode_robot::<schema::RobotState>(b).ok()
            })?;
        let mut frames = Vec::new();
        let mut subs = vec![state_sub];
        for c in &cameras {
            let (latest, sub) =
                reachy_api::net::subscribe_latest(session, &keys::camera(robot, c), |b| {
                    schema::decode_robot::<schema::CameraFrame>(b).ok()
                })?;
            frames.push(latest);
            subs.push(sub);
        }
        let annotator = Annotator {
            viz: viz.clone(),
            state: state.clone(),
        };
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
                    // joints the state does not carry (a one-bus serial backend) stay at home
                    let mut q = geometry.physics().positions();
                    let mut target = q.clone();
                    for (k, n) in s.names.iter().enumerate() {
                        if let Some(i) = names.iter().position(|m| m == n) {
                            q[i] = s.position.get(k).copied().unwrap_or(q[i]);
                            target[i] = s.target.get(k).copied().unwrap_or(q[i]);
                        }
                    }
                    geometry.physics_mut().set_positions(&q);
                    viz.log_frame_of(&RobotFrame {
                        t: s.t,
                        names: &names,
                        measured: &q,
                        target: &target,
                        physics: geometry.physics(),
                    })?;
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
            annotator,
        })
    }

    /// What a client logs beside the robot's state (policy chunks, episode events).
    pub fn annotator(&self) -> Annotator {
        self.annotator.clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use reachy_kinematics::model::REACHY_URDF;

    /// A sim recording read back with rerun's decoder: the blueprint's views, the URDF tree
    /// (geometry static under the links, a transform per link when it moves), the TCP targets,
    /// plots, the policy chunk and the events.
    #[test]
    fn a_recording_holds_the_blueprint_and_the_urdf_tree() {
        let path = std::env::temp_dir().join(format!("reachy-viz-{}.rrd", std::process::id()));
        let mut world = World::new(reachy_sim::world::WorldConfig::new(REACHY_URDF)).unwrap();
        let layout = Layout {
            active_arm: "l_arm".into(),
            cameras: vec!["head_camera".into()],
            policy: true,
            episodes: true,
        };
        let viz = Viz::open(&RerunSink::Save(path.clone()), REACHY_URDF, layout).unwrap();
        const FRAMES: usize = 5;
        // the right elbow bends; everything else holds home
        let bend = world
            .joint_names()
            .iter()
            .position(|n| n == "r_elbow_pitch")
            .unwrap();
        world.set_targets_at(&[bend], &[-0.6]).unwrap();
        for _ in 0..FRAMES {
            world.advance(0.04);
            viz.log_world(&world).unwrap();
        }
        let names = world.joint_names().to_vec();
        let q = world.physics().positions();
        let elbow = names.iter().position(|n| n == "r_elbow_pitch").unwrap();
        let chunk: Vec<Vec<f32>> = (0..10).map(|k| vec![-0.1 * k as f32]).collect();
        viz.log_chunk(0.2, &names, &q, &[elbow], &chunk, 12.5)
            .unwrap();
        viz.log_event(0.2, "episode 1/1: start").unwrap();
        viz.flush().unwrap();
        drop(viz);
        let s = inspect::summarize(&path).unwrap();
        std::fs::remove_file(&path).ok();

        assert!(s.blueprint_activated);
        let view = |class: &str, origin: &str| {
            s.views
                .iter()
                .any(|v| v.class == class && v.origin == origin)
        };
        assert!(view("3D", ""), "{:#?}", s.views);
        assert!(view("2D", "cameras/head_camera"), "{:#?}", s.views);
        for j in &names {
            assert!(view("TimeSeries", &format!("joints/{j}")), "no plot of {j}");
        }
        for o in ["grippers", "tcp_error", "policy/latency_ms"] {
            assert!(view("TimeSeries", o), "no {o} plot: {:#?}", s.views);
        }
        assert!(view("TextLog", "events"));

        // the URDF tree: every link an entity under its parent, posed when it moves
        let links: Vec<&String> = s
            .temporal_rows
            .keys()
            .filter(|e| e.starts_with("robot/") && !e.ends_with("/grasp"))
            .collect();
        let p = world.physics();
        assert_eq!(links.len(), p.link_names().len(), "{links:?}");
        assert!(links.iter().all(|l| s.temporal_rows[*l] <= FRAMES));
        // the bending arm is posed as it moves, the still left arm once
        let row =
            |suffix: &str| s.temporal_rows[*links.iter().find(|l| l.ends_with(suffix)).unwrap()];
        assert!(row("/r_elbow") > 1, "{:?}", s.temporal_rows);
        assert_eq!(row("/l_forearm"), 1, "{:?}", s.temporal_rows);
        let r_tcp = links.iter().find(|l| l.ends_with("/r_tcp")).unwrap();
        assert!(r_tcp.contains("/r_wrist"), "{r_tcp} is not under the wrist");
        assert!(s.static_entities.contains(r_tcp.as_str()), "TCP axes");
        assert!(
            s.temporal_rows.contains_key(&format!("{r_tcp}/grasp")),
            "grasp marker"
        );
        // geometry once, under the links; nothing re-logs primitives per frame
        let visuals: Vec<&String> = s
            .static_entities
            .iter()
            .filter(|e| e.starts_with("robot/") && e.contains("/visual/"))
            .collect();
        assert!(visuals.len() > 10, "{visuals:?}");
        assert!(s
            .temporal_rows
            .keys()
            .all(|e| !e.contains("/visual/") && !e.ends_with("boxes")));
        for e in [
            "tcp/r_arm/target",
            "tcp_error/r_arm",
            "grippers/l_gripper/measured",
            "joints/r_elbow_pitch/target",
            "scene/objects/red_cube",
            "policy/chunk/r_arm",
            "policy/latency_ms",
            "events",
        ] {
            assert!(
                s.temporal_rows.contains_key(e),
                "no {e}: {:?}",
                s.temporal_rows
            );
        }
        assert!(s.static_entities.contains("scene/objects/red_cube/boxes"));
        assert!(s.static_entities.contains("scene/fixed/boxes"));
        assert!(s.timelines.contains("sim_time"), "{:?}", s.timelines);
    }
}
