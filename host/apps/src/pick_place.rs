//! A scripted pick-and-place: the arm on the cube's side grasps it from above with the IK and
//! the gripper, carries it and puts it down at a target spot on the table.
//!
//! The script runs against [`RobotIo`], so the same code drives the in-process simulator in
//! lock-step (tests, benchmarks) and a robot behind the zenoh API. Motion is Cartesian: every
//! control period the TCP target moves along a minimum-jerk profile and the IK (seeded by the
//! previous solution) turns it into joint targets.

use nalgebra::{Rotation3, Vector3};

use reachy_api::RobotIo;
use reachy_kinematics::model::RobotModel;
use reachy_kinematics::{self as ik, Chain, Frame, IkOptions, IkTarget, JointVec, MAX_DOF};

/// The in-process simulator as a [`RobotIo`], in lock-step: `advance` steps the physics.
pub struct LockStep<'a>(pub &'a mut reachy_sim::world::World);

/// What the lock-step simulator can refuse.
#[derive(Debug, thiserror::Error)]
pub enum LockStepError {
    /// The world refused the command.
    #[error(transparent)]
    World(#[from] reachy_sim::world::WorldError),
    /// No such object in the scene.
    #[error("no object `{0}` in the scene")]
    NoObject(String),
}

impl RobotIo for LockStep<'_> {
    type Error = LockStepError;
    fn joint_names(&self) -> Vec<String> {
        self.0.joint_names().to_vec()
    }
    fn positions(&mut self) -> Result<Vec<f32>, LockStepError> {
        Ok(self.0.physics().positions())
    }
    fn command(&mut self, indices: &[usize], targets: &[f32]) -> Result<(), LockStepError> {
        self.0.set_targets_at(indices, targets)?;
        Ok(())
    }
    fn advance(&mut self, seconds: f64) -> Result<(), LockStepError> {
        self.0.advance(seconds);
        Ok(())
    }
    fn object(&mut self, name: &str) -> Result<([f32; 3], [f32; 4], f32), LockStepError> {
        let physics = self.0.physics();
        let half = physics
            .objects()
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.half)
            .ok_or_else(|| LockStepError::NoObject(name.into()))?;
        let (_, p, q) = physics
            .object_poses()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| LockStepError::NoObject(name.into()))?;
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

/// A free spot for `obj` on its own side of the table, within easy reach, at least 9 cm from
/// every object (itself included, so that it really moves). `objects`: ground-truth poses as
/// [`reachy_sim::physics::RobotPhysics::object_poses`] gives them.
pub fn free_spot(objects: &[(String, [f32; 3], [f32; 4])], obj: &str) -> Option<[f32; 2]> {
    let me = objects.iter().find(|p| p.0 == obj)?.1;
    let side = if me[1] < 0.0 { -1.0 } else { 1.0 };
    let mut best = ([0.4, side * 0.2], 0.0f32);
    for ix in 0..5 {
        for iy in 0..6 {
            let c = [0.44 + 0.02 * ix as f32, side * (0.10 + 0.04 * iy as f32)];
            let d = objects
                .iter()
                .map(|(_, p, _)| (p[0] - c[0]).hypot(p[1] - c[1]))
                .fold(f32::MAX, f32::min);
            if d > best.1 {
                best = (c, d);
            }
        }
    }
    (best.1 > 0.09).then_some(best.0)
}

/// What happened.
#[derive(Debug, Clone)]
pub struct PickPlaceReport {
    /// Arm used (`r_arm` or `l_arm`).
    pub arm: String,
    /// Tilt of the hand below horizontal at the grasp (degrees).
    pub tilt_deg: f64,
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
    tcp: Vector3<f64>,
    period: f64,
    elapsed: f64,
    progress: &'a mut dyn FnMut(&str),
}

impl<R: RobotIo> Ctx<'_, R> {
    fn send_arm(&mut self) -> anyhow::Result<()> {
        let t: Vec<f32> = (0..self.chain.dof()).map(|i| self.q[i] as f32).collect();
        Ok(self.io.command(&self.arm_idx, &t)?)
    }

    /// Move the arm to `q` in `secs`, min-jerk in joint space (between waypoints solved
    /// together, so the path stays on one IK branch).
    fn joints(&mut self, q: JointVec, secs: f64) -> anyhow::Result<()> {
        let q0 = self.q;
        let n = (secs / self.period).ceil().max(1.0) as usize;
        for k in 1..=n {
            let s = k as f64 / n as f64;
            let m = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s);
            for i in 0..self.chain.dof() {
                self.q[i] = q0[i] + (q[i] - q0[i]) * m;
            }
            self.send_arm()?;
            self.io.advance(self.period)?;
            self.elapsed += self.period;
        }
        self.tcp = self.chain.fk(&q).t;
        Ok(())
    }

    /// Move the TCP in a straight line to `to` in `secs` (min-jerk), the orientation following
    /// wherever the IK keeps it.
    fn line(&mut self, to: Vector3<f64>, secs: f64) -> anyhow::Result<()> {
        let from = self.tcp;
        let n = (secs / self.period).ceil().max(1.0) as usize;
        // no random restarts: each tick stays on the branch of the previous one
        let opts = IkOptions {
            pos_tol: 1e-4,
            rot_tol: 1e-3,
            iters_per_attempt: 100,
            max_iters: 100,
            ..IkOptions::default()
        };
        for k in 1..=n {
            let s = k as f64 / n as f64;
            let m = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s);
            let p = from + (to - from) * m;
            let sol = ik::solve(self.chain, &IkTarget::Position(p), &self.q, &opts);
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
            let jump = (0..self.chain.dof())
                .map(|i| (sol.q[i] - self.q[i]).abs())
                .fold(0.0, f64::max);
            if jump > 0.15 {
                anyhow::bail!(
                    "the IK jumped {jump:.2} rad in one period on the way to [{:.3}, {:.3}, {:.3}] \
                     (a singularity or a joint limit on the path)",
                    p.x,
                    p.y,
                    p.z
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

    /// Hold the commanded pose until the measured TCP is within `tol` metres of it, for at
    /// most `max_secs`: a backend whose joints lag their goals (the firmware in QEMU, ~100 Hz
    /// boards) arrives before the next phase starts from the wrong place. Returns at once on
    /// the sim, whose joints track within ~2 mm.
    fn settle(&mut self, tol: f64, max_secs: f64) -> anyhow::Result<()> {
        let mut waited = 0.0;
        while waited < max_secs {
            if (self.measured_tcp()? - self.tcp).norm() <= tol {
                break;
            }
            self.io.advance(self.period)?;
            self.elapsed += self.period;
            waited += self.period;
        }
        Ok(())
    }

    /// The TCP position forward kinematics gives for the measured arm joints.
    fn measured_tcp(&mut self) -> anyhow::Result<Vector3<f64>> {
        let pos = self.io.positions()?;
        let mut q = self.q;
        for (k, &i) in self.arm_idx.iter().enumerate() {
            q[k] = pos[i] as f64;
        }
        Ok(self.chain.fk(&q).t)
    }

    /// TCP position from the measured joints, and its distance to the commanded one.
    fn tracking(&mut self) -> anyhow::Result<String> {
        let t = self.measured_tcp()?;
        Ok(format!(
            "TCP at [{:.3}, {:.3}, {:.3}], {:.1} mm from its target",
            t.x,
            t.y,
            t.z,
            (t - self.tcp).norm() * 1000.0
        ))
    }

    fn say(&mut self, s: &str) {
        (self.progress)(s)
    }
}

/// How close the measured TCP must come to a phase's end before the next phase (metres), and
/// the longest it waits (seconds).
const SETTLE_TOL: f64 = 0.005;
const SETTLE_MAX: f64 = 3.0;

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
    // open and closed are the gripper joint's limits (closed: the fingertips converge, so a
    // squeezed object is drawn towards the palm)
    let gj = model
        .joints
        .iter()
        .find(|j| j.name == gripper)
        .ok_or_else(|| anyhow::anyhow!("the model has no joint `{gripper}`"))?;
    let (gripper_closed, gripper_open) = (gj.lower as f32, gj.upper as f32);

    let pos = io.positions()?;
    let mut q: JointVec = [0.0; MAX_DOF];
    for (k, &i) in arm_idx.iter().enumerate() {
        q[k] = pos[i] as f64;
    }
    let here = chain.fk(&q);

    // side grasp: the hand horizontal, its −z (towards the fingertips) along the approach
    // direction, the fingers closing along its y across two faces of the cube. The wrist cannot
    // point the hand down at table height, and a horizontal approach reaches the whole table.
    // Approach yaw: the cube's yaw modulo 90°, nearest to the direction from the shoulder.
    let shoulder_y = if arm == "r_arm" { -0.2 } else { 0.2 };
    let natural = (start[1] as f64 - shoulder_y).atan2(start[0] as f64);
    let cube_yaw = yaw_of(quat);
    let h = half as f64;
    let top = task.table_top as f64;
    let (sx, sy) = (start[0] as f64, start[1] as f64);
    let (px, py) = (task.place_xy[0] as f64, task.place_xy[1] as f64);
    let lift = 0.10;
    // the cube's centre between the finger pads, 9 cm from the hand along the fingers: the TCP
    // (10 cm) 1 cm beyond it; the TCP high enough that the hand's body (box ±3 cm, wrist sphere
    // 3 cm, fingers ±1 cm around the TCP's height, all tilted) clears the table by 15 mm (tracking errors of a few degrees included)
    let grasp_z = |tilt: f64| {
        let (s, c) = tilt.sin_cos();
        let body = (0.03 * c - 0.045 * s).max(0.035 - 0.1 * s).max(0.01) + 0.015;
        top + h.max(body)
    };
    // candidate grasps: approach yaw ψ ≡ cube yaw (mod 90°) within 60° of the direction from
    // the shoulder, the hand tilted down by 25° (else 15°, 35°, 0°) so the forearm stays above
    // the table; the first whose every waypoint the IK reaches wins
    let mut candidates = Vec::new();
    for tilt in [25.0f64, 15.0, 35.0, 0.0] {
        let mut yaws: Vec<f64> = (-3..=3)
            .map(|k| cube_yaw + k as f64 * std::f64::consts::FRAC_PI_2)
            .filter(|y| (y - natural).abs() <= 60f64.to_radians())
            .collect();
        yaws.sort_by(|a, b| (a - natural).abs().total_cmp(&(b - natural).abs()));
        for psi in yaws {
            candidates.push((psi, tilt.to_radians()));
        }
    }
    let grasp_frame = |psi: f64, tilt: f64| {
        let d = Vector3::new(tilt.cos() * psi.cos(), tilt.cos() * psi.sin(), -tilt.sin());
        let hand_z = -d;
        let hand_y = Vector3::new(-psi.sin(), psi.cos(), 0.0);
        let hand_x = hand_y.cross(&hand_z);
        (
            d,
            Rotation3::from_matrix_unchecked(nalgebra::Matrix3::from_columns(&[
                hand_x, hand_y, hand_z,
            ])),
        )
    };
    // the object turns with the hand on the way: at the place, the hand faces away from the
    // shoulder again, whatever the grasp's yaw was
    let place_natural = (py - shoulder_y).atan2(px);
    let waypoints = |psi: f64, tilt: f64, place_psi: f64| {
        let z = grasp_z(tilt);
        let (d, rot) = grasp_frame(psi, tilt);
        let (d2, rot2) = grasp_frame(place_psi, tilt);
        let g = |x: f64, y: f64, d: Vector3<f64>| Vector3::new(x, y, z) + d * 0.01;
        let up = Vector3::new(0.0, 0.0, lift);
        [
            (g(sx, sy, d) - d * 0.12 + Vector3::new(0.0, 0.0, 0.04), rot),
            (g(sx, sy, d) - d * 0.12, rot),
            (g(sx, sy, d), rot),
            (g(sx, sy, d) + up, rot),
            (g(px, py, d2) + up, rot2),
            (g(px, py, d2) + Vector3::new(0.0, 0.0, 0.004), rot2),
            (
                g(px, py, d2) - d2 * 0.12 + Vector3::new(0.0, 0.0, 0.02),
                rot2,
            ),
        ]
    };
    // the forearm must stay above the table: its start (the elbow) checked on a sub-chain
    let elbow_chain = Chain::from_urdf(
        &model.urdf,
        "elbow",
        chain.base_link(),
        &format!("{}_forearm", &arm[..1]),
    )?;
    let clear = |q: &JointVec| elbow_chain.fk(q).t.z > top + 0.05;
    // from the home pose the hand hangs below the table top, behind its edge: it rises straight
    // up first, to here
    let raise_pt = Vector3::new(0.2, shoulder_y * 1.6, top + 0.12);
    let q_raise = ik::solve(
        chain,
        &IkTarget::Position(raise_pt),
        &q,
        &IkOptions::default(),
    )
    .q;
    // the wrist cannot tilt a hand that points straight ahead: a place yaw other than the
    // grasp's is 30° off the shoulder's direction, outwards first
    let outwards = if arm == "r_arm" { -1.0 } else { 1.0 };
    let feasible = |psi: f64, tilt: f64, place_psi: f64| -> Option<Vec<JointVec>> {
        let mut seed = q_raise;
        let mut all = Vec::new();
        for (p, rot) in waypoints(psi, tilt, place_psi) {
            let target = IkTarget::Pose(Frame {
                r: *rot.matrix(),
                t: p,
            });
            // the elbow's swivel is free: try the previous solution, then other seeds
            let sol = (0..1u64).find_map(|k| {
                let opts = IkOptions {
                    rng_seed: 0x5eed + k,
                    ..IkOptions::default()
                };
                let s = if k == 0 {
                    seed
                } else {
                    let mut s = chain.mid_range();
                    s[2] = -1.5 + 0.6 * k as f64;
                    s
                };
                let sol = ik::solve(chain, &target, &s, &opts);
                (sol.ok && clear(&sol.q)).then_some(sol)
            })?;
            seed = sol.q;
            all.push(sol.q);
        }
        Some(all)
    };
    let (psi, tilt, qs) = candidates
        .iter()
        .find_map(|&(p, t)| {
            // keep the grasp's yaw if the place allows it (no turn in the hand), else turn
            std::iter::once(p)
                .chain(
                    [30f64, -30.0, 0.0]
                        .iter()
                        .map(|off| place_natural + outwards * off.to_radians()),
                )
                .find_map(|pp| feasible(p, t, pp).map(|q| (p, t, q)))
        })
        .ok_or_else(|| anyhow::anyhow!("no reachable grasp of {} for {arm}", task.object))?;
    let [q_pre, q_approach, q_grasp, q_lift, q_carry, q_place, q_retreat] =
        <[JointVec; 7]>::try_from(qs).map_err(|_| anyhow::anyhow!("waypoint count"))?;

    let mut ctx = Ctx {
        io,
        chain,
        arm_idx,
        gripper_idx,
        q,
        tcp: here.t,
        period: task.period,
        elapsed: 0.0,
        progress,
    };
    ctx.say(&format!(
        "{}: {} at [{:.3}, {:.3}, {:.3}], yaw {:.0}°; approach yaw {:.0}°, tilt {:.0}°; place at [{:.3}, {:.3}]",
        arm,
        task.object,
        start[0],
        start[1],
        start[2],
        cube_yaw.to_degrees(),
        psi.to_degrees(),
        tilt.to_degrees(),
        px,
        py
    ));
    // the orientation changes from wherever the arm is: solve the first waypoint from the
    // current configuration and move there in joint space
    ctx.say("raising the hand above the table");
    ctx.line(raise_pt, 1.5)?;
    ctx.settle(SETTLE_TOL, SETTLE_MAX)?;
    let tr = ctx.tracking()?;
    ctx.say(&format!(
        "opening the gripper, moving behind the object; {tr}"
    ));
    ctx.io.command(&[gripper_idx], &[gripper_open])?;
    ctx.joints(q_pre, 2.0)?;
    ctx.settle(SETTLE_TOL, SETTLE_MAX)?;
    ctx.wait(0.3)?;
    let tr = ctx.tracking()?;
    ctx.say(&format!("approaching; {tr}"));
    ctx.joints(q_approach, 0.6)?;
    ctx.settle(SETTLE_TOL, SETTLE_MAX)?;
    let tr = ctx.tracking()?;
    ctx.say(&format!("at the approach point; {tr}"));
    ctx.joints(q_grasp, 1.2)?;
    ctx.settle(SETTLE_TOL, SETTLE_MAX)?;
    ctx.wait(0.2)?;
    let tr = ctx.tracking()?;
    ctx.say(&format!("closing the gripper; {tr}"));
    ctx.gripper(gripper_closed, 0.8)?;
    ctx.say("lifting");
    ctx.joints(q_lift, 1.2)?;
    let (lifted_at, _, _) = ctx.io.object(&task.object)?;
    let lifted = lifted_at[2] > start[2] + 0.05;
    let tr = ctx.tracking()?;
    ctx.say(&format!(
        "object at z {:.3} ({}); {tr}",
        lifted_at[2],
        if lifted { "lifted" } else { "not lifted" }
    ));
    ctx.say("carrying");
    ctx.joints(q_carry, 3.0)?;
    ctx.say("putting down");
    ctx.joints(q_place, 1.2)?;
    ctx.settle(SETTLE_TOL, SETTLE_MAX)?;
    ctx.wait(0.2)?;
    ctx.say("releasing");
    ctx.gripper(gripper_open, 0.6)?;
    ctx.say("retreating");
    ctx.joints(q_retreat, 1.0)?;
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
        if resting {
            "on the table"
        } else {
            "not resting on the table"
        },
        if success { "success" } else { "FAILED" }
    ));
    Ok(PickPlaceReport {
        arm: arm.into(),
        tilt_deg: tilt.to_degrees(),
        start,
        end,
        error_xy,
        lifted,
        success,
        duration: ctx.elapsed,
    })
}
