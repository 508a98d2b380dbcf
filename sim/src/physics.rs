//! Rigid-body physics of the robot: rapier3d **multibody** joints built from the URDF (one
//! multibody per limb on the fixed trunk)
//! (`rapier3d-urdf`), position-controlled joint motors with per-joint gains and effort limits,
//! gravity along −z, joint limits, and URDF mimic joints (the second gripper finger) driven from
//! their leader. Fixed base. Deterministic: the same commands give the same trajectory, bit for bit.

use std::path::Path;

use rapier3d::prelude::*;

/// A rigid transform (rapier's): translation and unit quaternion.
pub use rapier3d::prelude::Pose;
use rapier3d_urdf::{UrdfLoaderOptions, UrdfRobot};

/// Errors while building the physics model.
#[derive(Debug, thiserror::Error)]
pub enum PhysicsError {
    /// The URDF could not be parsed.
    #[error("invalid URDF: {0}")]
    Urdf(String),
    /// A commanded vector has the wrong length or a non-finite value.
    #[error("bad command: {0}")]
    Command(String),
}

/// Motor gains of one joint (acceleration-based: independent of the link inertia).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gains {
    /// Stiffness (1/s²).
    pub stiffness: f32,
    /// Damping (1/s).
    pub damping: f32,
}

impl Default for Gains {
    fn default() -> Self {
        // ≈ 50 Hz natural frequency, critically damped
        Self {
            stiffness: 100_000.0,
            damping: 632.0,
        }
    }
}

#[derive(Debug, Clone)]
struct SimJoint {
    name: String,
    handle: MultibodyJointHandle,
    axis: JointAxis,
    lower: f32,
    upper: f32,
    effort: f32,
    gains: Gains,
    target: f32,
    /// (leader index, multiplier, offset) for mimic joints.
    mimic: Option<(usize, f32, f32)>,
}

impl SimJoint {
    /// Index of this joint's coordinate in rapier's 6-vector of joint coordinates.
    fn coord(&self) -> usize {
        match self.axis {
            JointAxis::LinX => 0,
            _ => 3,
        }
    }
}

/// The manipulation scene: a table in front of the robot and cubes placed from a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    /// Centre of the table top's box (m, robot base frame).
    pub table_center: [f32; 3],
    /// Half extents of the table top's box (m).
    pub table_half: [f32; 3],
    /// Cubes: (name, half edge in m, RGB colour).
    pub cubes: Vec<(String, f32, [f32; 3])>,
    /// Region of the table where cubes are placed: x range, y range (m).
    pub area: ([f32; 2], [f32; 2]),
    /// Seed of the placement.
    pub seed: u64,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            table_center: [0.55, 0.0, 0.62],
            table_half: [0.30, 0.50, 0.02],
            cubes: vec![
                ("red_cube".into(), 0.025, [0.85, 0.15, 0.15]),
                ("green_cube".into(), 0.030, [0.15, 0.75, 0.25]),
                ("blue_cube".into(), 0.035, [0.15, 0.30, 0.85]),
            ],
            area: ([0.42, 0.54], [-0.35, 0.35]),
            seed: 0,
        }
    }
}

/// A cube of the scene.
#[derive(Debug, Clone)]
pub struct SceneObject {
    /// Name, e.g. `red_cube`.
    pub name: String,
    /// Half edge (m).
    pub half: f32,
    /// RGB colour in [0, 1].
    pub color: [f32; 3],
    body: RigidBodyHandle,
}

fn splitmix(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

/// Reachy's home pose for `names` (e.g. [`RobotPhysics::joint_names`]): upper arms hanging
/// (`r_shoulder_roll = −75°`, left mirrored — the URDF's shoulder frames make all-zeros point
/// the arms across the chest), elbows bent by 0.5 rad, the head pitched down 0.3 rad towards
/// the table, everything else at zero.
pub fn home_pose(names: &[&str]) -> Vec<f32> {
    names
        .iter()
        .map(|n| match *n {
            "r_shoulder_roll" => -1.309,
            "l_shoulder_roll" => 1.309,
            "r_elbow_pitch" | "l_elbow_pitch" => -0.5,
            // the head looks down at the table
            "neck_pitch" => 0.3,
            _ => 0.0,
        })
        .collect()
}

/// Shape of a visual primitive, in its own frame (centred on the origin; cylinders along z).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Box with these half extents (m).
    Box([f32; 3]),
    /// Cylinder along z: radius, half length (m).
    Cylinder(f32, f32),
    /// Sphere: radius (m).
    Sphere(f32),
}

/// A coloured shape placed in the world, for renderers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Primitive {
    /// The shape.
    pub shape: Shape,
    /// World-from-shape pose.
    pub pose: Pose,
    /// Linear RGB in [0, 1].
    pub color: [f32; 3],
}

/// A URDF `<visual>` fixed to a link.
#[derive(Debug, Clone)]
struct LinkVisual {
    link: usize,
    origin: Pose,
    shape: Shape,
    color: [f32; 3],
}

/// Pose of a URDF origin (xyz, fixed-axis roll-pitch-yaw).
pub fn urdf_pose(xyz: [f64; 3], rpy: [f64; 3]) -> Pose {
    let r = Rotation::from_rotation_z(rpy[2] as f32)
        * Rotation::from_rotation_y(rpy[1] as f32)
        * Rotation::from_rotation_x(rpy[0] as f32);
    Pose::from_parts(Vector::new(xyz[0] as f32, xyz[1] as f32, xyz[2] as f32), r)
}

/// A link's mass properties from its URDF `<inertial>`: the inertia tensor is rotated by the
/// inertial origin's rpy and diagonalised here, in f64, into principal moments and a proper
/// rotation. (rapier3d-urdf goes through parry 0.31's `MassProperties::with_inertia_matrix`,
/// which permuted the moments of the gripper fingers' diagonal 1e-6 kg·m² tensor — the same
/// tensor at unit scale comes out right; the Pinocchio cross-check of the dynamics found it.)
/// `None` without mass.
fn urdf_mass_properties(inertial: &urdf_rs::Inertial) -> Option<MassProperties> {
    let mass = inertial.mass.value;
    if mass <= 0.0 || !mass.is_finite() {
        return None;
    }
    let i = &inertial.inertia;
    #[rustfmt::skip]
    let tensor = nalgebra::Matrix3::new(
        i.ixx, i.ixy, i.ixz,
        i.ixy, i.iyy, i.iyz,
        i.ixz, i.iyz, i.izz,
    );
    let [roll, pitch, yaw] = inertial.origin.rpy.0;
    // URDF rpy: R = Rz(yaw)·Ry(pitch)·Rx(roll), nalgebra's Euler convention
    let r = nalgebra::Rotation3::from_euler_angles(roll, pitch, yaw);
    let tensor = r.matrix() * tensor * r.matrix().transpose();
    let eigen = tensor.symmetric_eigen();
    let mut axes = eigen.eigenvectors;
    if axes.determinant() < 0.0 {
        axes.column_mut(2).neg_mut();
    }
    let q = nalgebra::UnitQuaternion::from_matrix(&axes);
    let frame = Rotation::from_xyzw(q.i as f32, q.j as f32, q.k as f32, q.w as f32).normalize();
    let moments = eigen.eigenvalues.map(|e| e.max(0.0) as f32);
    let [x, y, z] = inertial.origin.xyz.0;
    Some(MassProperties::with_principal_inertia_frame(
        Vector::new(x as f32, y as f32, z as f32),
        mass as f32,
        Vector::new(moments[0], moments[1], moments[2]),
        frame,
    ))
}

/// The robot in a rapier world.
pub struct RobotPhysics {
    objects: Vec<SceneObject>,
    /// Names of the URDF links, in URDF order.
    link_names: Vec<String>,
    /// Rigid body of each URDF link (`None` for empty frames squeezed by the loader).
    link_bodies: Vec<Option<RigidBodyHandle>>,
    /// Parent link and joint origin of each URDF link (None for the root).
    link_parent: Vec<Option<(usize, Pose)>>,
    visuals: Vec<LinkVisual>,
    table: Option<([f32; 3], [f32; 3])>,
    compliant: bool,
    world: PhysicsWorld,
    joints: Vec<SimJoint>,
    actuated: Vec<usize>,
    last_q: Vec<f32>,
    velocity: Vec<f32>,
    time: f64,
}

impl RobotPhysics {
    /// Build from URDF text with a physics step of `dt` seconds.
    pub fn from_urdf_str(urdf: &str, dt: f32) -> Result<Self, PhysicsError> {
        let options = UrdfLoaderOptions {
            make_roots_fixed: true,
            // rubber-like finger pads and links: grasps hold by friction
            collider_blueprint: ColliderBuilder::default().density(0.0).friction(1.2),
            ..UrdfLoaderOptions::default()
        };
        let (robot, desc) = UrdfRobot::from_str(urdf, options, Path::new("."))
            .map_err(|e| PhysicsError::Urdf(e.to_string()))?;
        let link_names: Vec<String> = desc.links.iter().map(|l| l.name.clone()).collect();
        let mut link_bodies = vec![None; desc.links.len()];
        let link_index = |name: &str| link_names.iter().position(|n| n == name);
        let link_parent: Vec<Option<(usize, Pose)>> = link_names
            .iter()
            .map(|n| {
                let j = desc.joints.iter().find(|j| &j.child.link == n)?;
                Some((
                    link_index(&j.parent.link)?,
                    urdf_pose(j.origin.xyz.0, j.origin.rpy.0),
                ))
            })
            .collect();
        let material_color = |m: &Option<urdf_rs::Material>| -> [f32; 3] {
            let named = m.as_ref().and_then(|m| {
                m.color.clone().or_else(|| {
                    desc.materials
                        .iter()
                        .find(|g| g.name == m.name)
                        .and_then(|g| g.color.clone())
                })
            });
            match named {
                Some(c) => [c.rgba.0[0] as f32, c.rgba.0[1] as f32, c.rgba.0[2] as f32],
                None => [0.7, 0.7, 0.7],
            }
        };
        let mut visuals = Vec::new();
        for (li, l) in desc.links.iter().enumerate() {
            for v in &l.visual {
                let shape = match &v.geometry {
                    urdf_rs::Geometry::Box { size } => Shape::Box([
                        size.0[0] as f32 / 2.0,
                        size.0[1] as f32 / 2.0,
                        size.0[2] as f32 / 2.0,
                    ]),
                    urdf_rs::Geometry::Cylinder { radius, length } => {
                        Shape::Cylinder(*radius as f32, *length as f32 / 2.0)
                    }
                    urdf_rs::Geometry::Sphere { radius } => Shape::Sphere(*radius as f32),
                    // meshes and capsules are not drawn (the shipped URDF has none)
                    _ => continue,
                };
                visuals.push(LinkVisual {
                    link: li,
                    origin: urdf_pose(v.origin.xyz.0, v.origin.rpy.0),
                    shape,
                    color: material_color(&v.material),
                });
            }
        }
        let urdf_of_link: Vec<usize> = robot.links.iter().map(|l| l.urdf_link_index).collect();
        let mut world = PhysicsWorld::new();
        world.gravity = Vector::new(0.0, 0.0, -9.81);
        world.integration_parameters.dt = dt;
        // one solver iteration per 1 ms step: the motors are implicit and the arms touch nothing
        // but the scene, so more iterations only re-run the 23-DoF multibody's dynamics
        world.integration_parameters.num_solver_iterations = 1;
        let joint_meta: Vec<(usize, Option<usize>)> = robot
            .joints
            .iter()
            .map(|j| (j.source_urdf_joint_index(), None))
            .collect();
        // The trunk (the root and what hangs on it by fixed joints) is fixed. Each limb is its own
        // multibody on a fixed anchor at its trunk link's pose: rapier's multibody cost grows with
        // links × dofs², so three small trees (9 + 9 + 5 dofs) step several times faster than
        // one 23-dof tree, with the same dynamics since the trunk does not move.
        let n_links = robot.links.len();
        let is_fixed_joint = |j: &rapier3d_urdf::UrdfJoint| {
            matches!(
                desc.joints[j.source_urdf_joint_index()].joint_type,
                urdf_rs::JointType::Fixed
            )
        };
        let mut has_parent = vec![false; n_links];
        for j in &robot.joints {
            has_parent[j.link2] = true;
        }
        let mut trunk: Vec<bool> = has_parent.iter().map(|p| !p).collect();
        loop {
            let mut grew = false;
            for j in &robot.joints {
                if trunk[j.link1] && !trunk[j.link2] && is_fixed_joint(j) {
                    trunk[j.link2] = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let joint_edges: Vec<(usize, usize, bool)> = robot
            .joints
            .iter()
            .map(|j| (j.link1, j.link2, is_fixed_joint(j)))
            .collect();
        let mut link_handles: Vec<(RigidBodyHandle, Vec<ColliderHandle>)> = Vec::new();
        let mut poses = Vec::new();
        for (k, link) in robot.links.into_iter().enumerate() {
            let mut body = link.body;
            if trunk[k] {
                body.set_body_type(RigidBodyType::Fixed, false);
            }
            if let Some(mp) = urdf_of_link
                .get(k)
                .and_then(|&u| urdf_mass_properties(&desc.links[u].inertial))
            {
                body.set_additional_mass_properties(mp, false);
            }
            poses.push(*body.position());
            let h = world.bodies.insert(body);
            let cols = link
                .colliders
                .into_iter()
                .map(|c| {
                    world
                        .colliders
                        .insert_with_parent(c.collider, h, &mut world.bodies)
                })
                .collect();
            link_handles.push((h, cols));
        }
        let mut joint_handles: Vec<Option<MultibodyJointHandle>> = Vec::new();
        for ((l1, l2, _fixed), j) in joint_edges.iter().zip(robot.joints) {
            if trunk[*l2] {
                joint_handles.push(None);
                continue;
            }
            let parent = if trunk[*l1] {
                let anchor = RigidBodyBuilder::fixed().pose(poses[*l1]).build();
                world.bodies.insert(anchor)
            } else {
                link_handles[*l1].0
            };
            joint_handles.push(world.multibody_joints.insert(
                parent,
                link_handles[*l2].0,
                j.joint,
                false,
            ));
        }
        // a limb's multibody starts with its root at the origin: take the anchor's pose
        for h in joint_handles.iter().flatten() {
            if let Some((mb, _)) = world.multibody_joints.get_mut(*h) {
                mb.forward_kinematics(&world.bodies, true);
                mb.update_rigid_bodies(&mut world.bodies, true);
            }
        }
        // the robot never collides with itself (overlapping neighbour links would only feed the
        // narrow phase pairs to discard): its colliders share a group that filters itself out
        let robot_group = InteractionGroups::new(
            Group::GROUP_1,
            Group::ALL.difference(Group::GROUP_1),
            InteractionTestMode::And,
        );
        for (k, (body, cols)) in link_handles.iter().enumerate() {
            if let Some(&u) = urdf_of_link.get(k) {
                link_bodies[u] = Some(*body);
            }
            for c in cols {
                if let Some(col) = world.colliders.get_mut(*c) {
                    col.set_collision_groups(robot_group);
                    col.set_solver_groups(robot_group);
                }
            }
        }
        let mut joints = Vec::new();
        for ((urdf_index, _), h) in joint_meta.iter().zip(&joint_handles) {
            let j = &desc.joints[*urdf_index];
            let axis = match j.joint_type {
                urdf_rs::JointType::Revolute | urdf_rs::JointType::Continuous => JointAxis::AngX,
                urdf_rs::JointType::Prismatic => JointAxis::LinX,
                _ => continue,
            };
            let Some(handle) = *h else { continue };
            let (lower, upper) = match j.joint_type {
                urdf_rs::JointType::Continuous => (f32::NEG_INFINITY, f32::INFINITY),
                _ => (j.limit.lower as f32, j.limit.upper as f32),
            };
            // the URDF's <dynamics>: viscous damping (N·m·s/rad, implicit in rapier's multibody)
            // and dry friction (N·m, a friction constraint per dof); rapier's own default is a
            // damping of 0.1 on every revolute dof whatever the URDF says
            if let Some((mb, link)) = world.multibody_joints.get_mut(handle) {
                if let Some(dof) = mb.link(link).map(|l| l.assembly_id()) {
                    let (damping, friction) = j
                        .dynamics
                        .as_ref()
                        .map_or((0.0, 0.0), |d| (d.damping as f32, d.friction as f32));
                    mb.damping_mut()[dof] = damping.max(0.0);
                    mb.frictions_mut()[dof] = friction.max(0.0);
                }
            }
            joints.push(SimJoint {
                name: j.name.clone(),
                handle,
                axis,
                lower,
                upper,
                effort: if j.limit.effort > 0.0 {
                    j.limit.effort as f32
                } else {
                    f32::MAX
                },
                gains: Gains::default(),
                target: 0.0f32.clamp(lower, upper),
                mimic: None,
            });
        }
        // mimic joints follow their leader
        for k in 0..joints.len() {
            let Some(m) = desc
                .joints
                .iter()
                .find(|j| j.name == joints[k].name)
                .and_then(|j| j.mimic.clone())
            else {
                continue;
            };
            if let Some(leader) = joints.iter().position(|j| j.name == m.joint) {
                let mult = m.multiplier.unwrap_or(1.0) as f32;
                let off = m.offset.unwrap_or(0.0) as f32;
                joints[k].mimic = Some((leader, mult, off));
            }
        }
        // grippers: softer than the arm (≈ 22 Hz) under the URDF cap of 2 N·m (≈ 40 N at the finger
        // pads), so a grasp holds a cube by friction instead of crushing it out of the contact
        // solver, yet stiff enough to beat the URDF's 0.01 N·m of joint friction (a free finger
        // stops within 6 mrad of its target; the earlier 2 500 1/s² left it 0.1 rad short)
        for j in joints.iter_mut() {
            if j.name.ends_with("gripper") || j.name.ends_with("gripper_mimic") {
                j.gains = Gains {
                    stiffness: 20_000.0,
                    damping: 283.0,
                };
                j.effort = j.effort.min(2.0);
            }
        }
        let actuated: Vec<usize> = (0..joints.len())
            .filter(|&k| joints[k].mimic.is_none())
            .collect();
        let n = actuated.len();
        let mut s = Self {
            objects: Vec::new(),
            link_names,
            link_bodies,
            link_parent,
            visuals,
            table: None,
            compliant: false,
            world,
            joints,
            actuated,
            last_q: vec![0.0; n],
            velocity: vec![0.0; n],
            time: 0.0,
        };
        s.apply_motors();
        s.last_q = s.positions();
        Ok(s)
    }

    /// Add the table and the cubes, placed on the table from `cfg.seed` at least 12 cm apart.
    pub fn add_scene(&mut self, cfg: &SceneConfig) {
        let [cx, cy, cz] = cfg.table_center;
        let [hx, hy, hz] = cfg.table_half;
        let table = ColliderBuilder::cuboid(hx, hy, hz)
            .translation(Vector::new(cx, cy, cz))
            .friction(0.8)
            .build();
        self.world.colliders.insert(table);
        // a solid cabinet under the top, down to the floor: a cube squeezed against the top
        // is pushed back up instead of tunnelling through a thin board
        let under = (cz - hz) / 2.0;
        if under > 0.0 {
            let cabinet = ColliderBuilder::cuboid(hx, hy, under)
                .translation(Vector::new(cx, cy, under))
                .friction(0.8)
                .build();
            self.world.colliders.insert(cabinet);
        }
        self.table = Some((cfg.table_center, cfg.table_half));
        let top = cz + hz;
        let mut rng = cfg.seed ^ 0x5EED_5EED;
        let mut placed: Vec<(f32, f32)> = Vec::new();
        for (name, half, color) in &cfg.cubes {
            let (mut x, mut y) = (0.0, 0.0);
            for _ in 0..100 {
                x = cfg.area.0[0] + splitmix(&mut rng) * (cfg.area.0[1] - cfg.area.0[0]);
                y = cfg.area.1[0] + splitmix(&mut rng) * (cfg.area.1[1] - cfg.area.1[0]);
                if placed.iter().all(|(px, py)| (px - x).hypot(py - y) > 0.12) {
                    break;
                }
            }
            placed.push((x, y));
            let yaw = (splitmix(&mut rng) - 0.5) * std::f32::consts::FRAC_PI_2;
            let body = RigidBodyBuilder::dynamic()
                .translation(Vector::new(x, y, top + half + 1e-4))
                .rotation(Vector::new(0.0, 0.0, yaw))
                .can_sleep(false)
                .ccd_enabled(true)
                .build();
            let h = self.world.bodies.insert(body);
            // 2-6 cm wooden-ish cubes: density 600 kg/m³, high friction for grasping
            let col = ColliderBuilder::cuboid(*half, *half, *half)
                .density(600.0)
                .friction(1.0)
                .build();
            self.world
                .colliders
                .insert_with_parent(col, h, &mut self.world.bodies);
            self.objects.push(SceneObject {
                name: name.clone(),
                half: *half,
                color: *color,
                body: h,
            });
        }
    }

    /// The scene's cubes.
    pub fn objects(&self) -> &[SceneObject] {
        &self.objects
    }

    /// Ground-truth pose of each cube: (name, position, quaternion xyzw).
    pub fn object_poses(&self) -> Vec<(String, [f32; 3], [f32; 4])> {
        self.objects
            .iter()
            .filter_map(|o| {
                let b = self.world.bodies.get(o.body)?;
                let t = b.translation();
                let r = b.rotation();
                Some((o.name.clone(), [t.x, t.y, t.z], [r.x, r.y, r.z, r.w]))
            })
            .collect()
    }

    /// Actuated joint names (mimic joints excluded), in URDF order.
    pub fn joint_names(&self) -> Vec<&str> {
        self.actuated
            .iter()
            .map(|&k| self.joints[k].name.as_str())
            .collect()
    }

    /// Simulated time (s).
    pub fn time(&self) -> f64 {
        self.time
    }

    /// The position-control gains of actuated joint `joint`.
    pub fn gains(&self, joint: usize) -> Option<Gains> {
        self.actuated.get(joint).map(|&k| self.joints[k].gains)
    }

    /// Set the position-control gains of actuated joint `joint`.
    pub fn set_gains(&mut self, joint: usize, gains: Gains) {
        if let Some(&k) = self.actuated.get(joint) {
            self.joints[k].gains = gains;
        }
    }

    /// Position targets for every actuated joint (clamped into the joint limits).
    pub fn set_targets(&mut self, q: &[f32]) -> Result<(), PhysicsError> {
        if q.len() != self.actuated.len() {
            return Err(PhysicsError::Command(format!(
                "{} targets for {} joints",
                q.len(),
                self.actuated.len()
            )));
        }
        if let Some(i) = q.iter().position(|x| !x.is_finite()) {
            return Err(PhysicsError::Command(format!("target {i} is not finite")));
        }
        for (&k, &v) in self.actuated.iter().zip(q) {
            let j = &mut self.joints[k];
            // a motor driving into a limit fights the limit constraint: aim 5 mrad inside
            let eps = 0.005f32.min((j.upper - j.lower) / 4.0);
            j.target = v.clamp(j.lower + eps, j.upper - eps);
        }
        self.apply_motors();
        Ok(())
    }

    fn apply_motors(&mut self) {
        // a robot holding still falls asleep; new targets must wake it or it ignores them
        for h in self.link_bodies.iter().flatten() {
            self.world.wake_up(*h, true);
        }
        let targets: Vec<f32> = self.joints.iter().map(|j| j.target).collect();
        for j in &self.joints {
            let target = match j.mimic {
                Some((leader, mult, off)) => targets[leader] * mult + off,
                None => j.target,
            };
            if let Some((mb, link)) = self.world.multibody_joints.get_mut(j.handle) {
                // not `link_mut`, which marks the links moved and costs a forward kinematics
                // at the next step (vendored rapier, see sim/vendor/rapier3d/PATCHES.md)
                mb.set_link_motor(
                    link,
                    j.axis,
                    MotorModel::AccelerationBased,
                    target,
                    j.gains.stiffness,
                    j.gains.damping,
                    if self.compliant { 0.0 } else { j.effort },
                );
            }
        }
    }

    /// Advance one physics step.
    pub fn step(&mut self) {
        self.world.step();
        self.time += self.world.integration_parameters.dt as f64;
        let q = self.positions();
        let dt = self.world.integration_parameters.dt;
        for ((v, a), b) in self.velocity.iter_mut().zip(&q).zip(&self.last_q) {
            *v = (a - b) / dt;
        }
        self.last_q = q;
    }

    /// Joint positions (rad or m), actuated joints in order.
    pub fn positions(&self) -> Vec<f32> {
        self.actuated
            .iter()
            .map(|&k| {
                let j = &self.joints[k];
                let idx = j.coord();
                self.world
                    .multibody_joints
                    .get(j.handle)
                    .and_then(|(mb, link)| mb.link(link).map(|l| l.joint().coords()[idx]))
                    .unwrap_or(f32::NAN)
            })
            .collect()
    }

    /// Every moving joint, actuated and mimic (whose motion is free when the robot is compliant):
    /// name, position and velocity (rad or m, rad/s or m/s; the multibody's generalized
    /// velocity, not a finite difference), in URDF order.
    pub fn joint_states(&self) -> Vec<(String, f32, f32)> {
        self.joints
            .iter()
            .filter_map(|j| {
                let (mb, link) = self.world.multibody_joints.get(j.handle)?;
                let l = mb.link(link)?;
                let idx = j.coord();
                let v = mb.joint_velocity(l).get(0).copied()?;
                Some((j.name.clone(), l.joint().coords()[idx], v))
            })
            .collect()
    }

    /// Joint velocities (finite difference over the last step).
    pub fn velocities(&self) -> &[f32] {
        &self.velocity
    }

    /// Teleport the actuated joints (and their mimics) to `q` at rest, e.g. to start at home
    /// instead of swinging there. Lengths or values that do not fit are ignored.
    pub fn set_positions(&mut self, q: &[f32]) {
        if q.len() != self.actuated.len() || q.iter().any(|x| !x.is_finite()) {
            return;
        }
        let mut want = vec![f32::NAN; self.joints.len()];
        for (i, &k) in self.actuated.iter().enumerate() {
            let j = &self.joints[k];
            want[k] = q[i].clamp(j.lower, j.upper);
        }
        for k in 0..self.joints.len() {
            if let Some((leader, mult, off)) = self.joints[k].mimic {
                want[k] = want[leader] * mult + off;
            }
        }
        // one displacement vector per multibody (each limb is its own), keyed by its root body
        let mut disp: Vec<(RigidBodyHandle, MultibodyJointHandle, Vec<f32>)> = Vec::new();
        for (k, j) in self.joints.iter().enumerate() {
            let Some((mb, link)) = self.world.multibody_joints.get(j.handle) else {
                continue;
            };
            let Some(l) = mb.link(link) else { continue };
            let root = mb.root().rigid_body_handle();
            let slot = match disp.iter().position(|(r, _, _)| *r == root) {
                Some(i) => i,
                None => {
                    disp.push((root, j.handle, vec![0.0; mb.ndofs()]));
                    disp.len() - 1
                }
            };
            let idx = j.coord();
            let now = l.joint().coords()[idx];
            if let Some(x) = disp[slot].2.get_mut(l.assembly_id()) {
                *x = want[k] - now;
            }
        }
        for (_, handle, d) in disp {
            if let Some((mb, _)) = self.world.multibody_joints.get_mut(handle) {
                mb.apply_displacements(&d);
                mb.generalized_velocity_mut().fill(0.0);
                mb.forward_kinematics(&self.world.bodies, true);
                mb.update_rigid_bodies(&mut self.world.bodies, true);
            }
        }
        self.last_q = self.positions();
        self.velocity.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Compliant (torque off: the motors exert nothing, the robot falls under gravity) or not.
    pub fn set_compliant(&mut self, compliant: bool) {
        if self.compliant != compliant {
            self.compliant = compliant;
            self.apply_motors();
        }
    }

    /// Whether the motors are off.
    pub fn is_compliant(&self) -> bool {
        self.compliant
    }

    /// Lower and upper limits of the actuated joints.
    pub fn limits(&self) -> (Vec<f32>, Vec<f32>) {
        self.actuated
            .iter()
            .map(|&k| (self.joints[k].lower, self.joints[k].upper))
            .unzip()
    }

    /// Current position targets of the actuated joints (after clamping).
    pub fn targets(&self) -> Vec<f32> {
        self.actuated
            .iter()
            .map(|&k| self.joints[k].target)
            .collect()
    }

    /// Joint efforts (N·m or N) of the actuated joints: the motor law's acceleration times the
    /// joint's apparent inertia at the current configuration, saturated at the URDF effort limit.
    pub fn efforts(&mut self) -> Vec<f32> {
        let q = self.positions();
        let mut out = vec![0.0; self.actuated.len()];
        // one mass-matrix factorisation per multibody (limb) serves its joints
        let mut inv: Vec<(RigidBodyHandle, Vec<f32>)> = Vec::new();
        let mut dofs: Vec<Option<(usize, usize)>> = Vec::with_capacity(self.actuated.len());
        for &k in &self.actuated {
            let Some((mb, link)) = self.world.multibody_joints.get_mut(self.joints[k].handle)
            else {
                dofs.push(None);
                continue;
            };
            let Some(dof) = mb.link(link).map(|l| l.assembly_id()) else {
                dofs.push(None);
                continue;
            };
            let root = mb.root().rigid_body_handle();
            let slot = match inv.iter().position(|(r, _)| *r == root) {
                Some(i) => i,
                None => {
                    let v = mb.dof_inverse_inertia(&self.world.bodies);
                    inv.push((root, v.iter().copied().collect()));
                    inv.len() - 1
                }
            };
            dofs.push(Some((slot, dof)));
        }
        for (i, &k) in self.actuated.iter().enumerate() {
            let j = &self.joints[k];
            let Some(w) = dofs[i].and_then(|(m, d)| inv[m].1.get(d).copied()) else {
                continue;
            };
            let accel = j.gains.stiffness * (j.target - q[i]) - j.gains.damping * self.velocity[i];
            let tau = if w > 0.0 { accel / w } else { 0.0 };
            out[i] = tau.clamp(-j.effort, j.effort);
        }
        out
    }

    /// What touches what now: pairs of names (URDF links, scene objects, `table`) with the
    /// contact impulse of the last step (N·s).
    pub fn contacts(&self) -> Vec<(String, String, f32)> {
        let name = |c: ColliderHandle| -> String {
            let Some(parent) = self.world.colliders.get(c).and_then(|c| c.parent()) else {
                return "table".into();
            };
            if let Some(i) = self.link_bodies.iter().position(|b| *b == Some(parent)) {
                return self.link_names[i].clone();
            }
            if let Some(o) = self.objects.iter().find(|o| o.body == parent) {
                return o.name.clone();
            }
            "body".into()
        };
        self.world
            .narrow_phase
            .contact_pairs()
            .filter(|p| p.has_any_active_contact())
            .map(|p| {
                (
                    name(p.collider1),
                    name(p.collider2),
                    p.total_impulse_magnitude(),
                )
            })
            .collect()
    }

    /// World bounding boxes (min, max) of a link's colliders, for diagnosing contacts.
    pub fn link_aabbs(&self, name: &str) -> Vec<([f32; 3], [f32; 3])> {
        let Some(i) = self.link_names.iter().position(|n| n == name) else {
            return Vec::new();
        };
        let Some(body) = self.link_bodies[i].and_then(|h| self.world.bodies.get(h)) else {
            return Vec::new();
        };
        body.colliders()
            .iter()
            .filter_map(|c| self.world.colliders.get(*c))
            .map(|c| {
                let a = c.compute_aabb();
                (a.mins.into(), a.maxs.into())
            })
            .collect()
    }

    /// Names of the URDF links, in URDF order.
    pub fn link_names(&self) -> &[String] {
        &self.link_names
    }

    /// World pose of a URDF link (frames without a body, like cameras and TCPs, from their
    /// parent's pose and the fixed joint's origin).
    pub fn link_pose(&self, name: &str) -> Option<Pose> {
        let i = self.link_names.iter().position(|n| n == name)?;
        self.link_pose_index(i)
    }

    fn link_pose_index(&self, i: usize) -> Option<Pose> {
        if let Some(b) = self.link_bodies[i].and_then(|h| self.world.bodies.get(h)) {
            return Some(*b.position());
        }
        match self.link_parent[i] {
            Some((p, origin)) => Some(self.link_pose_index(p)? * origin),
            None => Some(Pose::IDENTITY),
        }
    }

    /// The parent of each URDF link (its index in [`Self::link_names`]), `None` for the root.
    pub fn link_parents(&self) -> Vec<Option<usize>> {
        self.link_parent.iter().map(|p| p.map(|(i, _)| i)).collect()
    }

    /// World pose of every URDF link, in [`Self::link_names`] order.
    pub fn link_poses(&self) -> Vec<Option<Pose>> {
        (0..self.link_names.len())
            .map(|i| self.link_pose_index(i))
            .collect()
    }

    /// The robot's URDF visuals: the link each is fixed to (an index in [`Self::link_names`])
    /// and the primitive in that link's frame.
    pub fn link_visuals(&self) -> Vec<(usize, Primitive)> {
        self.visuals
            .iter()
            .map(|v| {
                (
                    v.link,
                    Primitive {
                        shape: v.shape,
                        pose: v.origin,
                        color: v.color,
                    },
                )
            })
            .collect()
    }

    /// The floor (a 6 m square), and the table with its cabinet and the cubes if there is a
    /// scene, in world coordinates.
    pub fn scene_primitives(&self) -> Vec<Primitive> {
        let mut out = self.fixed_primitives();
        out.extend(self.object_primitives());
        out
    }

    /// What never moves: the floor (a 6 m square), and the table and its cabinet if there is a
    /// scene, in world coordinates.
    pub fn fixed_primitives(&self) -> Vec<Primitive> {
        let mut out = vec![Primitive {
            shape: Shape::Box([3.0, 3.0, 0.005]),
            pose: Pose::translation(0.0, 0.0, -0.005),
            color: [0.55, 0.52, 0.48],
        }];
        if let Some((c, h)) = self.table {
            out.push(Primitive {
                shape: Shape::Box(h),
                pose: Pose::translation(c[0], c[1], c[2]),
                color: [0.62, 0.45, 0.28],
            });
            // the cabinet under it, down to the floor
            let under = (c[2] - h[2]) / 2.0;
            out.push(Primitive {
                shape: Shape::Box([h[0] - 0.01, h[1] - 0.01, under]),
                pose: Pose::translation(c[0], c[1], under),
                color: [0.45, 0.32, 0.2],
            });
        }
        out
    }

    /// The scene's objects (the cubes) where they are now, in [`Self::objects`] order.
    pub fn object_primitives(&self) -> Vec<Primitive> {
        self.objects
            .iter()
            .filter_map(|o| {
                let b = self.world.bodies.get(o.body)?;
                Some(Primitive {
                    shape: Shape::Box([o.half; 3]),
                    pose: *b.position(),
                    color: o.color,
                })
            })
            .collect()
    }

    /// Everything to draw, in world coordinates: the floor, the robot's URDF visuals posed
    /// from its links, the table and the cubes.
    pub fn primitives(&self) -> Vec<Primitive> {
        let mut scene = self.scene_primitives();
        let rest = scene.split_off(1);
        let poses = self.link_poses();
        for (link, v) in self.link_visuals() {
            if let Some(p) = poses[link] {
                scene.push(Primitive {
                    pose: p * v.pose,
                    ..v
                });
            }
        }
        scene.extend(rest);
        scene
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URDF: &str = include_str!("../../urdf/reachy.urdf");

    #[test]
    fn holds_and_tracks_under_gravity() {
        let mut p = RobotPhysics::from_urdf_str(URDF, 0.001).unwrap();
        let names: Vec<String> = p.joint_names().iter().map(|s| s.to_string()).collect();
        let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), 21, "{names:?}");
        let mut q = home_pose(&names);
        p.set_targets(&q).unwrap();
        for _ in 0..4000 {
            p.step();
        }
        let errs: Vec<(&str, f32)> = names
            .iter()
            .zip(p.positions().iter().zip(&q))
            .map(|(n, (a, b))| (*n, (a - b).abs()))
            .collect();
        let err = errs.iter().map(|e| e.1).fold(0.0f32, f32::max);
        assert!(err < 0.02, "holding error under gravity {err}: {errs:?}");
        // move the right elbow and shoulder
        let i = names.iter().position(|n| *n == "r_elbow_pitch").unwrap();
        q[i] = -1.2;
        q[0] = 0.4;
        p.set_targets(&q).unwrap();
        for _ in 0..1500 {
            p.step();
        }
        let pos = p.positions();
        assert!((pos[i] + 1.2).abs() < 0.02, "{}", pos[i]);
        assert!((pos[0] - 0.4).abs() < 0.02, "{}", pos[0]);
        assert!(p.set_targets(&[0.0]).is_err());
        let mut bad = q.clone();
        bad[3] = f32::NAN;
        assert!(p.set_targets(&bad).is_err());
    }

    #[test]
    fn cubes_are_placed_from_the_seed_and_rest_on_the_table() {
        let cfg = SceneConfig::default();
        let poses = |seed: u64, steps: usize| {
            let mut p = RobotPhysics::from_urdf_str(URDF, 0.001).unwrap();
            p.add_scene(&SceneConfig {
                seed,
                ..cfg.clone()
            });
            let q = home_pose(&p.joint_names());
            p.set_targets(&q).unwrap();
            for _ in 0..steps {
                p.step();
            }
            p.object_poses()
        };
        let a = poses(1, 0);
        assert_eq!(a.len(), 3);
        assert_eq!(a, poses(1, 0), "same seed, same scene");
        assert_ne!(a, poses(2, 0), "another seed, another scene");
        let settled = poses(1, 1000);
        let top = cfg.table_center[2] + cfg.table_half[2];
        for ((name, t, _), (_, half, _)) in settled.iter().zip(&cfg.cubes) {
            assert!(
                (t[2] - (top + half)).abs() < 2e-3,
                "{name} rests on the table: z {}",
                t[2]
            );
            assert!(
                t[0] >= cfg.area.0[0] - 0.01 && t[0] <= cfg.area.0[1] + 0.01,
                "{name} x {}",
                t[0]
            );
        }
        let bits = |v: &[(String, [f32; 3], [f32; 4])]| {
            v.iter()
                .flat_map(|(_, t, q)| t.iter().chain(q).map(|x| x.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bits(&settled),
            bits(&poses(1, 1000)),
            "contacts are deterministic too"
        );
    }

    #[test]
    fn deterministic_bit_for_bit() {
        let run = || {
            let mut p = RobotPhysics::from_urdf_str(URDF, 0.001).unwrap();
            let mut q = home_pose(&p.joint_names());
            let mut out = Vec::new();
            for k in 0..600 {
                q[0] = 0.3 * (k as f32 * 0.01).sin();
                p.set_targets(&q).unwrap();
                p.step();
                out.extend(p.positions().iter().map(|x| x.to_bits()));
            }
            out
        };
        assert_eq!(run(), run());
    }
}
