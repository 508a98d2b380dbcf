//! A scripted pick-and-place: the arm on the cube's side grasps it from above with the IK and
//! the gripper, carries it and puts it down at a target spot on the table.
//!
//! The script runs against [`RobotIo`], so the same code drives the in-process simulator in
//! lock-step (tests, benchmarks) and a robot behind the zenoh API. Motion is Cartesian: every
//! control period the TCP target moves along a minimum-jerk profile and the IK (seeded by the
//! previous solution) turns it into joint targets.

use nalgebra::{Rotation3, Vector3};

use crate::kinematics::{self as ik, Chain, Frame, IkOptions, IkTarget, JointVec, MAX_DOF};
use crate::model::RobotModel;

/// What the script needs from a robot.
pub trait RobotIo {
    /// Actuated joint names, the order of [`Self::positions`].
    fn joint_names(&self) -> Vec<String>;
    /// Measured joint positions.
    fn positions(&mut self) -> anyhow::Result<Vec<f32>>;
    /// Position targets for the joints at `indices`.
    fn command(&mut self, indices: &[usize], targets: &[f32]) -> anyhow::Result<()>;
    /// Let `seconds` pass (simulated steps in lock-step, a sleep in real time).
    fn advance(&mut self, seconds: f64) -> anyhow::Result<()>;
    /// Pose of a scene object: position, quaternion xyzw, half edge.
    fn object(&mut self, name: &str) -> anyhow::Result<([f32; 3], [f32; 4], f32)>;
}

/// The in-process simulator as a [`RobotIo`] (lock-step: `advance` steps the physics).
impl RobotIo for reachy_sim::world::World {
    fn joint_names(&self) -> Vec<String> {
        reachy_sim::world::World::joint_names(self).to_vec()
    }
    fn positions(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.physics().positions())
    }
    fn command(&mut self, indices: &[usize], targets: &[f32]) -> anyhow::Result<()> {
        self.set_targets_at(indices, targets)?;
        Ok(())
    }
    fn advance(&mut self, seconds: f64) -> anyhow::Result<()> {
        reachy_sim::world::World::advance(self, seconds);
        Ok(())
    }
    fn object(&mut self, name: &str) -> anyhow::Result<([f32; 3], [f32; 4], f32)> {
        let half = self
            .physics()
            .objects()
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.half)
            .ok_or_else(|| anyhow::anyhow!("no object `{name}` in the scene"))?;
        let (_, p, q) = self
            .physics()
            .object_poses()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| anyhow::anyhow!("no object `{name}` in the scene"))?;
        Ok((p, q, half))
    }
}

/// The task.
#[derive(Debug, Clone)]
pub struct PickPlace {
    /// Object to move, e.g. `red_cube`.
    pub object: String,
    /// Where its centre must end, x and y on the table (m, base frame).
    pub place_xy: [f32; 2],
    /// Height of the table top (m).
    pub table_top: f32,
    /// Control period (s).
    pub period: f64,
    /// Accepted final error in x-y (m).
    pub tolerance: f32,
}

impl PickPlace {
    /// Move `object` to `place_xy` on Reachy's default table.
    pub fn new(object: &str, place_xy: [f32; 2]) -> Self {
        let scene = reachy_sim::physics::SceneConfig::default();
        Self {
            object: object.into(),
            place_xy,
            table_top: scene.table_center[2] + scene.table_half[2],
            period: 0.01,
            tolerance: 0.02,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct PickPlaceReport {
    /// Arm used (`r_arm` or `l_arm`).
    pub arm: String,
    /// Object position before (m).
    pub start: [f32; 3],
    /// Object position after (m).
    pub end: [f32; 3],
    /// Distance from the target in x-y (m).
    pub error_xy: f32,
    /// Whether the object was lifted off the table during the carry.
    pub lifted: bool,
    /// Within tolerance and resting on the table.
    pub success: bool,
    /// Simulated or wall time the script took (s).
    pub duration: f64,
}

struct Ctx<'a, R: RobotIo> {
    io: &'a mut R,
    chain: &'a Chain,
    arm_idx: Vec<usize>,
    gripper_idx: usize,
    q: JointVec,
    rot: Rotation3<f64>,
    tcp: Vector3<f64>,
    period: f64,
    elapsed: f64,
    progress: &'a mut dyn FnMut(&str),
}

const GRIPPER_OPEN: f32 = 1.0;
const GRIPPER_CLOSED: f32 = 0.0;

impl<R: RobotIo> Ctx<'_, R> {
    fn send_arm(&mut self) -> anyhow::Result<()> {
        let t: Vec<f32> = (0..self.chain.dof()).map(|i| self.q[i] as f32).collect();
        self.io.command(&self.arm_idx, &t)
    }

    /// Move the TCP in a straight line to `to` in `secs` (min-jerk), orientation fixed.
    fn line(&mut self, to: Vector3<f64>, secs: f64) -> anyhow::Result<()> {
        let from = self.tcp;
        let n = (secs / self.period).ceil().max(1.0) as usize;
        let opts = IkOptions {
            pos_tol: 1e-4,
            rot_tol: 1e-3,
            max_iters: 400,
            ..IkOptions::default()
        };
        for k in 1..=n {
            let s = k as f64 / n as f64;
            let m = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s);
            let p = from + (to - from) * m;
            let target = Frame {
                r: *self.rot.matrix(),
                t: p,
            };
            let sol = ik::solve(self.chain, &IkTarget::Pose(target), &self.q, &opts);
            if !sol.ok && (sol.pos_err > 0.01 || sol.rot_err > 0.1) {
                anyhow::bail!(
                    "IK failed on the way to [{:.3}, {:.3}, {:.3}]: position error {:.3} m, \
                     orientation error {:.3} rad",
                    p.x,
                    p.y,
                    p.z,
                    sol.pos_err,
                    sol.rot_err
                );
            }
            self.q = sol.q;
            self.send_arm()?;
            self.io.advance(self.period)?;
            self.elapsed += self.period;
        }
        self.tcp = to;
        Ok(())
    }

    fn gripper(&mut self, target: f32, secs: f64) -> anyhow::Result<()> {
        self.io.command(&[self.gripper_idx], &[target])?;
        self.wait(secs)
    }

    fn wait(&mut self, secs: f64) -> anyhow::Result<()> {
        let n = (secs / self.period).ceil() as usize;
        for _ in 0..n {
            self.io.advance(self.period)?;
            self.elapsed += self.period;
        }
        Ok(())
    }

    fn say(&mut self, s: &str) {
        (self.progress)(s)
    }
}

/// Yaw (about z) of a quaternion's x axis.
fn yaw_of(q: [f32; 4]) -> f64 {
    let [x, y, z, w] = q.map(|v| v as f64);
    (2.0 * (w * z + x * y)).atan2(1.0 - 2.0 * (y * y + z * z))
}

/// Run the script. `progress` receives one line per phase.
pub fn run<R: RobotIo>(
    io: &mut R,
    model: &RobotModel,
    task: &PickPlace,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<PickPlaceReport> {
    let names = io.joint_names();
    let (start, quat, half) = io.object(&task.object)?;
    let arm = if start[1] < 0.0 { "r_arm" } else { "l_arm" };
    let chain = model.chain(arm)?;
    let arm_idx: Vec<usize> = chain
        .joint_names()
        .iter()
        .map(|n| {
            names
                .iter()
                .position(|m| m == n)
                .ok_or_else(|| anyhow::anyhow!("the robot has no joint `{n}`"))
        })
        .collect::<anyhow::Result<_>>()?;
    let gripper = format!("{}_gripper", &arm[..1]);
    let gripper_idx = names
        .iter()
        .position(|m| *m == gripper)
        .ok_or_else(|| anyhow::anyhow!("the robot has no joint `{gripper}`"))?;

    let pos = io.positions()?;
    let mut q: JointVec = [0.0; MAX_DOF];
    for (k, &i) in arm_idx.iter().enumerate() {
        q[k] = pos[i] as f64;
    }
    let here = chain.fk(&q);

    // top-down grasp: the hand's −z (towards the fingers) points down, the fingers close along
    // the hand's y, across two faces of the cube: yaw = cube yaw modulo 90°, nearest to the arm's
    // natural yaw
    let cube_yaw = yaw_of(quat);
    let natural = here.r.column(0).y.atan2(here.r.column(0).x);
    let mut best = cube_yaw;
    for k in -4..=4 {
        let c = cube_yaw + k as f64 * std::f64::consts::FRAC_PI_2;
        let wrap = |a: f64| (a + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU) - std::f64::consts::PI;
        if wrap(c - natural).abs() < wrap(best - natural).abs() {
            best = c;
        }
    }
    let rot = Rotation3::from_axis_angle(&Vector3::z_axis(), best);

    let mut ctx = Ctx {
        io,
        chain,
        arm_idx,
        gripper_idx,
        q,
        rot,
        tcp: here.t,
        period: task.period,
        elapsed: 0.0,
        progress,
    };
    let h = half as f64;
    let top = task.table_top as f64;
    // grasp height: the finger pads (2-3 cm above the TCP) around the cube's upper half, the
    // finger tips clear of the table
    let grasp_z = (start[2] as f64 - 0.3 * h).max(top + 0.008);
    let above = |x: f64, y: f64| Vector3::new(x, y, top + 2.0 * h + 0.12);
    let (sx, sy) = (start[0] as f64, start[1] as f64);
    let (px, py) = (task.place_xy[0] as f64, task.place_xy[1] as f64);

    ctx.say(&format!(
        "{}: {} at [{:.3}, {:.3}, {:.3}], yaw {:.0}°; place at [{:.3}, {:.3}]",
        arm,
        task.object,
        start[0],
        start[1],
        start[2],
        cube_yaw.to_degrees(),
        px,
        py
    ));
    // the orientation changes from wherever the arm is: solve the first waypoint from the
    // current configuration and move there in joint space first
    ctx.say("opening the gripper, moving above the object");
    ctx.io.command(&[gripper_idx], &[GRIPPER_OPEN])?;
    let pre = above(sx, sy);
    let target = Frame {
        r: *rot.matrix(),
        t: pre,
    };
    let sol = ik::solve(chain, &IkTarget::Pose(target), &ctx.q, &IkOptions::default());
    anyhow::ensure!(
        sol.ok,
        "no top-down pose above the object: position error {:.3} m, orientation error {:.3} rad",
        sol.pos_err,
        sol.rot_err
    );
    let (q0, q1) = (ctx.q, sol.q);
    let n = (2.0 / ctx.period).ceil() as usize;
    for k in 1..=n {
        let s = k as f64 / n as f64;
        let m = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s);
        for i in 0..chain.dof() {
            ctx.q[i] = q0[i] + (q1[i] - q0[i]) * m;
        }
        ctx.send_arm()?;
        ctx.io.advance(ctx.period)?;
        ctx.elapsed += ctx.period;
    }
    ctx.tcp = pre;
    ctx.wait(0.3)?;
    ctx.say("descending");
    ctx.line(Vector3::new(sx, sy, grasp_z), 1.5)?;
    ctx.wait(0.3)?;
    ctx.say("closing the gripper");
    ctx.gripper(GRIPPER_CLOSED, 0.8)?;
    ctx.say("lifting");
    ctx.line(above(sx, sy), 1.5)?;
    let (lifted_at, _, _) = ctx.io.object(&task.object)?;
    let lifted = lifted_at[2] > start[2] + 0.05;
    ctx.say(&format!(
        "object at z {:.3} ({})",
        lifted_at[2],
        if lifted { "lifted" } else { "not lifted" }
    ));
    ctx.say("carrying");
    ctx.line(above(px, py), 2.0)?;
    ctx.say("putting down");
    let place_z = top + h - 0.3 * h + 0.003;
    ctx.line(Vector3::new(px, py, place_z.max(top + 0.008)), 1.5)?;
    ctx.wait(0.2)?;
    ctx.say("releasing");
    ctx.gripper(GRIPPER_OPEN, 0.6)?;
    ctx.say("retreating");
    ctx.line(above(px, py), 1.2)?;
    ctx.wait(0.5)?;
    let (end, _, _) = ctx.io.object(&task.object)?;
    let error_xy = (end[0] - task.place_xy[0]).hypot(end[1] - task.place_xy[1]);
    let resting = (end[2] - (task.table_top + half)).abs() < 0.01;
    let success = lifted && resting && error_xy <= task.tolerance;
    ctx.say(&format!(
        "{} at [{:.3}, {:.3}, {:.3}]: {:.1} mm from the target, {} — {}",
        task.object,
        end[0],
        end[1],
        end[2],
        error_xy * 1000.0,
        if resting { "on the table" } else { "not resting on the table" },
        if success { "success" } else { "FAILED" }
    ));
    Ok(PickPlaceReport {
        arm: arm.into(),
        start,
        end,
        error_xy,
        lifted,
        success,
        duration: ctx.elapsed,
    })
}
