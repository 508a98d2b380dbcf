//! Inverse kinematics: damped least squares with error-adaptive damping, joint-limit handling by
//! clamping plus an active set (joints pinned at a limit and pushed outward are frozen for the
//! step), stall detection and random restarts within an iteration / time budget.
//!
//! Everything on the solve path is fixed-size and on the stack.

use std::time::{Duration, Instant};

use nalgebra::{Matrix3, SMatrix, SVector, Vector3};
use rand::{Rng, SeedableRng};

use super::chain::{Chain, Frame, JointVec, MAX_DOF};

/// What the tip must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IkTarget {
    /// Position and orientation of the tip frame, in the chain's base frame.
    Pose(Frame),
    /// Position only; orientation is free.
    Position(Vector3<f64>),
}

/// Solver settings.
#[derive(Debug, Clone, Copy)]
pub struct IkOptions {
    /// Position tolerance (m).
    pub pos_tol: f64,
    /// Orientation tolerance (rad).
    pub rot_tol: f64,
    /// Iterations per attempt before a restart.
    pub iters_per_attempt: u32,
    /// Total iteration budget over all attempts.
    pub max_iters: u32,
    /// Optional wall-clock budget.
    pub time_budget: Option<Duration>,
    /// Seed of the restart generator (results are deterministic for a given seed).
    pub rng_seed: u64,
}

impl Default for IkOptions {
    fn default() -> Self {
        Self {
            pos_tol: 1e-5,
            rot_tol: 1e-5,
            iters_per_attempt: 60,
            max_iters: 3000,
            time_budget: None,
            rng_seed: 0x5eed,
        }
    }
}

/// Outcome of a solve. When `ok` is false, `q` is the best configuration found.
#[derive(Debug, Clone, Copy)]
pub struct IkSolution {
    /// Both tolerances met.
    pub ok: bool,
    /// Joint values (first `dof()` entries), always within limits.
    pub q: JointVec,
    /// Remaining position error (m).
    pub pos_err: f64,
    /// Remaining orientation error (rad); 0 for position-only targets.
    pub rot_err: f64,
    /// Iterations used, all attempts together.
    pub iters: u32,
    /// Random restarts used.
    pub restarts: u32,
}

/// Rotation vector (axis × angle) of a rotation matrix.
#[inline]
pub fn rotation_log(r: &Matrix3<f64>) -> Vector3<f64> {
    let cos = ((r.trace() - 1.0) * 0.5).clamp(-1.0, 1.0);
    let v = Vector3::new(
        r[(2, 1)] - r[(1, 2)],
        r[(0, 2)] - r[(2, 0)],
        r[(1, 0)] - r[(0, 1)],
    );
    if cos > 1.0 - 1e-6 {
        // θ/sin θ ≈ 1 + θ²/6 with θ² ≈ 2(1 − cos θ)
        return v * (0.5 * (1.0 + (1.0 - cos) / 3.0));
    }
    let theta = cos.acos();
    let s = theta.sin();
    if s > 1e-5 {
        v * (theta / (2.0 * s))
    } else {
        nalgebra::Rotation3::from_matrix_unchecked(*r).scaled_axis()
    }
}

#[inline]
fn errors(target: &IkTarget, pose: &Frame) -> (Vector3<f64>, Vector3<f64>) {
    match target {
        IkTarget::Pose(t) => (t.t - pose.t, rotation_log(&(t.r * pose.r.transpose()))),
        IkTarget::Position(p) => (p - pose.t, Vector3::zeros()),
    }
}

fn random_config<R: Rng>(chain: &Chain, rng: &mut R) -> JointVec {
    let mut q = [0.0; MAX_DOF];
    let (lo, hi) = (chain.lower_arr(), chain.upper_arr());
    for i in 0..chain.dof() {
        let (a, b) = if lo[i].is_finite() && hi[i].is_finite() {
            (lo[i], hi[i])
        } else {
            (-std::f64::consts::PI, std::f64::consts::PI)
        };
        q[i] = if b > a { rng.gen_range(a..=b) } else { a };
    }
    q
}

/// Solve IK for `target` starting from `seed` (clamped into the limits first).
pub fn solve(chain: &Chain, target: &IkTarget, seed: &JointVec, opts: &IkOptions) -> IkSolution {
    let start = Instant::now();
    let n = chain.dof();
    let position_only = matches!(target, IkTarget::Position(_));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(opts.rng_seed);
    let (lo, hi) = (*chain.lower_arr(), *chain.upper_arr());

    let mut q = *seed;
    for x in q.iter_mut().skip(n) {
        *x = 0.0;
    }
    chain.clamp(&mut q);
    let mut best = IkSolution {
        ok: false,
        q,
        pos_err: f64::INFINITY,
        rot_err: f64::INFINITY,
        iters: 0,
        restarts: 0,
    };
    let mut best_cost = f64::INFINITY;
    let mut iters = 0u32;
    let mut restarts = 0u32;
    let mut attempt_iters = 0u32;
    let mut prev_cost = f64::INFINITY;
    let mut stall = 0u32;

    loop {
        let fj = chain.fk_jacobian(&q);
        let (ep, er) = errors(target, &fj.pose);
        let (pe, re) = (ep.norm(), er.norm());
        let cost = pe * pe + re * re;
        if cost < best_cost {
            best_cost = cost;
            best.q = q;
            best.pos_err = pe;
            best.rot_err = re;
        }
        if pe <= opts.pos_tol && re <= opts.rot_tol {
            best.ok = true;
            break;
        }
        if iters >= opts.max_iters {
            break;
        }
        if let Some(budget) = opts.time_budget {
            if iters.is_multiple_of(8) && start.elapsed() > budget {
                break;
            }
        }
        // stall detection → random restart
        if cost > 0.98 * prev_cost {
            stall += 1;
        } else {
            stall = 0;
        }
        prev_cost = cost;
        if stall >= 6 || attempt_iters >= opts.iters_per_attempt {
            q = random_config(chain, &mut rng);
            restarts += 1;
            attempt_iters = 0;
            stall = 0;
            prev_cost = f64::INFINITY;
            continue;
        }
        iters += 1;
        attempt_iters += 1;

        let mut e = SVector::<f64, 6>::zeros();
        e.fixed_rows_mut::<3>(0).copy_from(&ep);
        let mut jac = fj.jacobian;
        if position_only {
            jac.fixed_rows_mut::<3>(3).fill(0.0);
        } else {
            e.fixed_rows_mut::<3>(3).copy_from(&er);
        }
        // error-adaptive damping (Sugihara): large steps far away, Gauss-Newton near the goal
        let lambda = 0.5 * cost + 1e-9;
        let mut dq = SVector::<f64, MAX_DOF>::zeros();
        for _pass in 0..3 {
            let mut a: SMatrix<f64, 6, 6> = jac * jac.transpose();
            for k in 0..6 {
                a[(k, k)] += lambda;
            }
            if position_only {
                for k in 3..6 {
                    a[(k, k)] = 1.0;
                }
            }
            let Some(chol) = a.cholesky() else { break };
            dq = jac.transpose() * chol.solve(&e);
            // active set: freeze joints that sit on a limit and would be pushed past it
            let mut frozen = false;
            for i in 0..n {
                let at_lo = q[i] <= lo[i] + 1e-12 && dq[i] < 0.0;
                let at_hi = q[i] >= hi[i] - 1e-12 && dq[i] > 0.0;
                if (at_lo || at_hi) && jac.column(i).norm_squared() > 0.0 {
                    jac.column_mut(i).fill(0.0);
                    frozen = true;
                }
            }
            if !frozen {
                break;
            }
        }
        for i in 0..n {
            q[i] = (q[i] + dq[i]).clamp(lo[i], hi[i]);
        }
    }
    best.iters = iters;
    best.restarts = restarts;
    if position_only {
        best.rot_err = 0.0;
    }
    best
}

/// Outcome of [`look_at`].
#[derive(Debug, Clone, Copy)]
pub struct LookAtSolution {
    /// The optical axis points at the target within the tolerance.
    pub ok: bool,
    /// Joint values (first `dof()` entries), within limits.
    pub q: JointVec,
    /// Angle between the optical axis and the direction to the point (rad).
    pub angle_err: f64,
    /// Iterations used.
    pub iters: u32,
}

/// Point the tip frame's +z axis (a camera's optical axis, optical convention) at `point`
/// (base frame). Roll about the axis is left as close to the seed as damping keeps it.
pub fn look_at(chain: &Chain, point: &Vector3<f64>, seed: &JointVec, tol: f64) -> LookAtSolution {
    let n = chain.dof();
    let (lo, hi) = (*chain.lower_arr(), *chain.upper_arr());
    let mut q = *seed;
    chain.clamp(&mut q);
    let mut best = LookAtSolution {
        ok: false,
        q,
        angle_err: f64::INFINITY,
        iters: 0,
    };
    for it in 0..200u32 {
        let fj = chain.fk_jacobian(&q);
        let to = point - fj.pose.t;
        let dist = to.norm();
        if dist < 1e-9 {
            break;
        }
        let d = to / dist;
        let z = fj.pose.r.column(2).into_owned();
        let w = z.cross(&d);
        let angle = w.norm().atan2(z.dot(&d));
        if angle < best.angle_err {
            best.angle_err = angle;
            best.q = q;
        }
        best.iters = it;
        if angle <= tol {
            best.ok = true;
            break;
        }
        let e = if w.norm() > 1e-12 {
            w * (angle / w.norm())
        } else {
            // pointing exactly away: any perpendicular axis
            let p = if z.x.abs() < 0.9 {
                Vector3::x()
            } else {
                Vector3::y()
            };
            z.cross(&p).normalize() * angle
        };
        let mut jw: SMatrix<f64, 3, MAX_DOF> = fj.jacobian.fixed_rows::<3>(3).into_owned();
        let lambda = 0.5 * angle * angle + 1e-9;
        let mut dq = SVector::<f64, MAX_DOF>::zeros();
        for _pass in 0..3 {
            let mut a: SMatrix<f64, 3, 3> = jw * jw.transpose();
            for k in 0..3 {
                a[(k, k)] += lambda;
            }
            let Some(chol) = a.cholesky() else { break };
            dq = jw.transpose() * chol.solve(&e);
            let mut frozen = false;
            for i in 0..n {
                if ((q[i] <= lo[i] + 1e-12 && dq[i] < 0.0)
                    || (q[i] >= hi[i] - 1e-12 && dq[i] > 0.0))
                    && jw.column(i).norm_squared() > 0.0
                {
                    jw.column_mut(i).fill(0.0);
                    frozen = true;
                }
            }
            if !frozen {
                break;
            }
        }
        let mut moved = 0.0f64;
        for i in 0..n {
            let nq = (q[i] + dq[i]).clamp(lo[i], hi[i]);
            moved = moved.max((nq - q[i]).abs());
            q[i] = nq;
        }
        if moved < 1e-12 {
            break; // pinned by limits: best effort
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RobotModel;

    fn rand_q(c: &Chain, rng: &mut rand::rngs::SmallRng) -> JointVec {
        random_config(c, rng)
    }

    #[test]
    fn log_map_round_trips() {
        for (axis, angle) in [
            (Vector3::x(), 1e-9),
            (Vector3::new(1.0, 2.0, 3.0).normalize(), 0.3),
            (Vector3::y(), 3.1),
            (Vector3::z(), std::f64::consts::PI),
        ] {
            let r =
                nalgebra::Rotation3::from_axis_angle(&nalgebra::Unit::new_unchecked(axis), angle);
            let v = rotation_log(r.matrix());
            assert!((v.norm() - angle).abs() < 1e-9, "{angle}");
            assert!((v.normalize() - axis).norm() < 1e-6 || (v.normalize() + axis).norm() < 1e-6);
        }
    }

    #[test]
    fn solves_random_reachable_poses_on_every_chain() {
        let m = RobotModel::reachy().unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let opts = IkOptions::default();
        for c in &m.chains {
            let mut ok = 0;
            for _ in 0..100 {
                let goal = c.fk(&rand_q(c, &mut rng));
                let s = solve(c, &IkTarget::Pose(goal), &c.mid_range(), &opts);
                if s.ok {
                    ok += 1;
                    let got = c.fk(&s.q);
                    assert!((got.t - goal.t).norm() <= 1e-5);
                    for i in 0..c.dof() {
                        assert!(s.q[i] >= c.lower()[i] && s.q[i] <= c.upper()[i]);
                    }
                }
            }
            assert!(ok >= 99, "{}: {ok}/100", c.name());
        }
    }

    #[test]
    fn position_only_and_unreachable() {
        let m = RobotModel::reachy().unwrap();
        let c = m.chain("r_arm").unwrap();
        let opts = IkOptions::default();
        let p = Vector3::new(0.35, -0.3, 0.9);
        let s = solve(c, &IkTarget::Position(p), &c.mid_range(), &opts);
        assert!(s.ok && s.rot_err == 0.0 && (c.fk(&s.q).t - p).norm() <= 1e-5);
        // 3 m away: best effort, not ok, bounded time
        let far = Vector3::new(3.0, 0.0, 1.0);
        let s = solve(c, &IkTarget::Position(far), &c.mid_range(), &opts);
        assert!(!s.ok);
        assert!(s.pos_err > 2.0 && s.pos_err < 2.7, "{}", s.pos_err);
        assert!(s.iters <= opts.max_iters);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let m = RobotModel::reachy().unwrap();
        let c = m.chain("l_arm").unwrap();
        let goal = Frame::from_t_quat([0.4, 0.25, 0.85], [0.0, 0.5, 0.0, 0.8]);
        let a = solve(
            c,
            &IkTarget::Pose(goal),
            &c.mid_range(),
            &IkOptions::default(),
        );
        let b = solve(
            c,
            &IkTarget::Pose(goal),
            &c.mid_range(),
            &IkOptions::default(),
        );
        assert_eq!(a.q, b.q);
        assert_eq!(a.iters, b.iters);
    }

    #[test]
    fn look_at_points_the_head_camera() {
        let m = RobotModel::reachy().unwrap();
        let c = m.chain("head").unwrap();
        for p in [
            Vector3::new(1.0, 0.0, 1.1),
            Vector3::new(0.6, 0.4, 1.0),
            Vector3::new(0.5, -0.5, 1.3),
        ] {
            let s = look_at(c, &p, &c.mid_range(), 1e-6);
            assert!(s.ok, "{p:?}: {}", s.angle_err);
            let f = c.fk(&s.q);
            let z = f.r.column(2).into_owned();
            assert!(z.dot(&(p - f.t).normalize()) > 1.0 - 1e-9);
        }
        // behind the robot: out of the neck's range, best effort
        let s = look_at(c, &Vector3::new(-1.0, 0.0, 1.1), &c.mid_range(), 1e-6);
        assert!(!s.ok && s.angle_err > 0.5);
    }
}

#[cfg(test)]
mod other_robots {
    use super::*;

    /// A SCARA-like arm with a skewed revolute axis, a continuous joint and a prismatic joint:
    /// kinematics is not specific to Reachy.
    const URDF: &str = r#"<robot name="other">
      <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/><link name="l4"/><link name="tool"/>
      <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
        <origin xyz="0 0 0.3" rpy="0 0 0"/><axis xyz="0 0 1"/><limit lower="-2.5" upper="2.5" effort="1" velocity="1"/></joint>
      <joint name="j2" type="continuous"><parent link="l1"/><child link="l2"/>
        <origin xyz="0.4 0 0" rpy="0 0 0"/><axis xyz="0 0 1"/></joint>
      <joint name="j3" type="prismatic"><parent link="l2"/><child link="l3"/>
        <origin xyz="0.3 0 0" rpy="0 0 0"/><axis xyz="0 0 -1"/><limit lower="0" upper="0.25" effort="1" velocity="1"/></joint>
      <joint name="j4" type="revolute"><parent link="l3"/><child link="l4"/>
        <origin xyz="0 0 0" rpy="0.3 0 0"/><axis xyz="0.6 0 0.8"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
      <joint name="tool_fixed" type="fixed"><parent link="l4"/><child link="tool"/><origin xyz="0 0 -0.05" rpy="0 0 0"/></joint>
    </robot>"#;

    #[test]
    fn fk_and_ik_on_a_scara_with_prismatic_and_continuous_joints() {
        let urdf = urdf_rs::read_from_string(URDF).unwrap();
        let c = Chain::from_urdf(&urdf, "scara", "base", "tool").unwrap();
        assert_eq!(c.dof(), 4);
        assert!(c.lower()[1].is_infinite(), "continuous joint is unbounded");
        // FK at zero: 0.3 up, 0.7 out, tool 0.05 further along the tilted axis's frame
        let f = c.fk(&[0.0; MAX_DOF]);
        assert!(
            (f.t.x - 0.7).abs() < 1e-12 && (f.t.z - 0.3 - (-0.05 * 0.3f64.cos())).abs() < 1e-12
        );
        // prismatic joint moves the tool straight down
        let mut q = [0.0; MAX_DOF];
        q[2] = 0.1;
        assert!((c.fk(&q).t.z - f.t.z + 0.1).abs() < 1e-12);
        // position IK to FK'd targets
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        for _ in 0..50 {
            let goal = c.fk(&random_config(&c, &mut rng)).t;
            let s = solve(
                &c,
                &IkTarget::Position(goal),
                &c.mid_range(),
                &IkOptions::default(),
            );
            assert!(s.ok, "{goal:?}: {}", s.pos_err);
        }
    }
}
