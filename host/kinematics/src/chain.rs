//! Serial kinematic chains built from any URDF: forward kinematics and the geometric Jacobian.
//!
//! The hot path uses fixed-size nalgebra types only: a chain has at most [`MAX_DOF`] joints,
//! joint vectors are `[f64; MAX_DOF]` on the stack, the Jacobian is a 6×[`MAX_DOF`] matrix whose
//! unused columns stay zero. Fixed joints are folded into the next joint's origin at build time.

use nalgebra::{Matrix3, SMatrix, UnitQuaternion, Vector3};

/// Largest number of moving joints in one chain.
pub const MAX_DOF: usize = 8;

/// A joint vector on the stack; entries past [`Chain::dof`] are ignored.
pub type JointVec = [f64; MAX_DOF];

/// Geometric Jacobian, rows (vx vy vz wx wy wz) in the chain's base frame.
pub type Jacobian = SMatrix<f64, 6, MAX_DOF>;

/// Errors while building a chain.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChainError {
    /// A link name that the URDF does not have.
    #[error("link `{0}` is not in the URDF")]
    UnknownLink(String),
    /// `tip` does not descend from `base`.
    #[error("link `{tip}` is not below `{base}`")]
    NotConnected {
        /// Base link.
        base: String,
        /// Tip link.
        tip: String,
    },
    /// Too many moving joints.
    #[error("chain has {0} moving joints; at most {MAX_DOF} are supported")]
    TooManyJoints(usize),
    /// A joint type kinematics does not handle (floating, planar).
    #[error("joint `{0}` is floating or planar, which a serial chain cannot contain")]
    Unsupported(String),
}

/// A rigid transform as rotation matrix + translation (cheaper to compose than quaternions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Rotation.
    pub r: Matrix3<f64>,
    /// Translation.
    pub t: Vector3<f64>,
}

impl Frame {
    /// The identity transform.
    pub fn identity() -> Self {
        Self {
            r: Matrix3::identity(),
            t: Vector3::zeros(),
        }
    }

    /// From a URDF origin: xyz and fixed-axis roll-pitch-yaw (R = Rz(y) Ry(p) Rx(r)).
    pub fn from_xyz_rpy(xyz: [f64; 3], rpy: [f64; 3]) -> Self {
        let r = nalgebra::Rotation3::from_euler_angles(rpy[0], rpy[1], rpy[2]);
        Self {
            r: *r.matrix(),
            t: Vector3::new(xyz[0], xyz[1], xyz[2]),
        }
    }

    /// `self * other`.
    #[inline(always)]
    pub fn compose(&self, other: &Frame) -> Frame {
        Frame {
            r: self.r * other.r,
            t: self.r * other.t + self.t,
        }
    }

    /// The rotation as a unit quaternion.
    pub fn quaternion(&self) -> UnitQuaternion<f64> {
        UnitQuaternion::from_matrix(&self.r)
    }

    /// Quaternion as `[x, y, z, w]` with `w >= 0`.
    pub fn quat_xyzw(&self) -> [f64; 4] {
        let q = self.quaternion();
        let c = q.coords;
        let s = if c.w < 0.0 { -1.0 } else { 1.0 };
        [s * c.x, s * c.y, s * c.z, s * c.w]
    }

    /// From a translation and a quaternion `[x, y, z, w]` (normalised here).
    pub fn from_t_quat(t: [f64; 3], q: [f64; 4]) -> Self {
        let q = UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(q[3], q[0], q[1], q[2]));
        Self {
            r: *q.to_rotation_matrix().matrix(),
            t: Vector3::new(t[0], t[1], t[2]),
        }
    }
}

/// Which way a joint moves; principal axes get a fast path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Motion {
    RotX,
    RotY,
    RotZ,
    Rot(Vector3<f64>),
    Slide(Vector3<f64>),
}

#[derive(Debug, Clone, Copy)]
struct JointData {
    /// Transform from the previous joint frame (fixed joints folded in); `None` rotation = identity.
    origin_r: Option<Matrix3<f64>>,
    origin_t: Vector3<f64>,
    motion: Motion,
}

/// A serial chain from `base_link` to `tip_link` with 1..=[`MAX_DOF`] moving joints.
#[derive(Debug, Clone)]
pub struct Chain {
    name: String,
    base_link: String,
    tip_link: String,
    joint_names: Vec<String>,
    n: usize,
    joints: [JointData; MAX_DOF],
    tip: Frame,
    lower: JointVec,
    upper: JointVec,
    velocity: JointVec,
}

/// Result of forward kinematics with the Jacobian.
#[derive(Debug, Clone, Copy)]
pub struct FkJacobian {
    /// Tip pose in the base frame.
    pub pose: Frame,
    /// Geometric Jacobian of the tip origin, base frame.
    pub jacobian: Jacobian,
}

#[inline(always)]
fn rotate_about(r: &mut Matrix3<f64>, motion: Motion, q: f64) {
    match motion {
        Motion::RotX => {
            let (s, c) = q.sin_cos();
            let c1 = r.column(1).into_owned();
            let c2 = r.column(2).into_owned();
            r.set_column(1, &(c1 * c + c2 * s));
            r.set_column(2, &(c2 * c - c1 * s));
        }
        Motion::RotY => {
            let (s, c) = q.sin_cos();
            let c0 = r.column(0).into_owned();
            let c2 = r.column(2).into_owned();
            r.set_column(0, &(c0 * c - c2 * s));
            r.set_column(2, &(c0 * s + c2 * c));
        }
        Motion::RotZ => {
            let (s, c) = q.sin_cos();
            let c0 = r.column(0).into_owned();
            let c1 = r.column(1).into_owned();
            r.set_column(0, &(c0 * c + c1 * s));
            r.set_column(1, &(c1 * c - c0 * s));
        }
        Motion::Rot(axis) => {
            let rot = nalgebra::Rotation3::from_axis_angle(&nalgebra::Unit::new_unchecked(axis), q);
            *r *= rot.matrix();
        }
        Motion::Slide(_) => {}
    }
}

impl Chain {
    /// Build the chain between two links of a parsed URDF.
    pub fn from_urdf(
        urdf: &urdf_rs::Robot,
        name: &str,
        base: &str,
        tip: &str,
    ) -> Result<Self, ChainError> {
        for l in [base, tip] {
            if !urdf.links.iter().any(|x| x.name == l) {
                return Err(ChainError::UnknownLink(l.to_string()));
            }
        }
        // walk from tip to base through parent joints
        let mut path = Vec::new();
        let mut link = tip.to_string();
        while link != base {
            let joint = urdf
                .joints
                .iter()
                .find(|j| j.child.link == link)
                .ok_or_else(|| ChainError::NotConnected {
                    base: base.to_string(),
                    tip: tip.to_string(),
                })?;
            path.push(joint);
            link = joint.parent.link.clone();
        }
        path.reverse();

        let mut joints = [JointData {
            origin_r: None,
            origin_t: Vector3::zeros(),
            motion: Motion::RotZ,
        }; MAX_DOF];
        let mut lower = [0.0; MAX_DOF];
        let mut upper = [0.0; MAX_DOF];
        let mut velocity = [0.0; MAX_DOF];
        let mut names = Vec::new();
        let mut pending = Frame::identity();
        for j in path {
            let origin = Frame::from_xyz_rpy(j.origin.xyz.0, j.origin.rpy.0);
            let at = pending.compose(&origin);
            let axis = Vector3::from(j.axis.xyz.0).normalize();
            let (motion, lim) = match j.joint_type {
                urdf_rs::JointType::Fixed => {
                    pending = at;
                    continue;
                }
                urdf_rs::JointType::Revolute => (rot_motion(axis), (j.limit.lower, j.limit.upper)),
                urdf_rs::JointType::Continuous => {
                    (rot_motion(axis), (f64::NEG_INFINITY, f64::INFINITY))
                }
                urdf_rs::JointType::Prismatic => {
                    (Motion::Slide(axis), (j.limit.lower, j.limit.upper))
                }
                _ => return Err(ChainError::Unsupported(j.name.clone())),
            };
            let i = names.len();
            if i == MAX_DOF {
                return Err(ChainError::TooManyJoints(i + 1));
            }
            let identity = (at.r - Matrix3::identity()).abs().max() < 1e-15;
            joints[i] = JointData {
                origin_r: if identity { None } else { Some(at.r) },
                origin_t: at.t,
                motion,
            };
            lower[i] = lim.0;
            upper[i] = lim.1;
            velocity[i] = j.limit.velocity;
            names.push(j.name.clone());
            pending = Frame::identity();
        }
        Ok(Self {
            name: name.to_string(),
            base_link: base.to_string(),
            tip_link: tip.to_string(),
            n: names.len(),
            joint_names: names,
            joints,
            tip: pending,
            lower,
            upper,
            velocity,
        })
    }

    /// Chain name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Base link name.
    pub fn base_link(&self) -> &str {
        &self.base_link
    }
    /// Tip link name.
    pub fn tip_link(&self) -> &str {
        &self.tip_link
    }
    /// Moving joint names, base to tip.
    pub fn joint_names(&self) -> &[String] {
        &self.joint_names
    }
    /// Number of moving joints.
    pub fn dof(&self) -> usize {
        self.n
    }
    /// Lower limits (first `dof()` entries).
    pub fn lower(&self) -> &[f64] {
        &self.lower[..self.n]
    }
    /// Upper limits (first `dof()` entries).
    pub fn upper(&self) -> &[f64] {
        &self.upper[..self.n]
    }
    /// Velocity limits (first `dof()` entries).
    pub fn velocity_limits(&self) -> &[f64] {
        &self.velocity[..self.n]
    }
    pub(crate) fn lower_arr(&self) -> &JointVec {
        &self.lower
    }
    pub(crate) fn upper_arr(&self) -> &JointVec {
        &self.upper
    }

    /// Copy a slice of `dof()` values into a stack joint vector.
    pub fn joint_vec(&self, q: &[f64]) -> Option<JointVec> {
        if q.len() != self.n {
            return None;
        }
        let mut v = [0.0; MAX_DOF];
        v[..self.n].copy_from_slice(q);
        Some(v)
    }

    /// Mid-range configuration (0 for unbounded joints).
    pub fn mid_range(&self) -> JointVec {
        let mut v = [0.0; MAX_DOF];
        for (i, x) in v.iter_mut().enumerate().take(self.n) {
            if self.lower[i].is_finite() && self.upper[i].is_finite() {
                *x = 0.5 * (self.lower[i] + self.upper[i]);
            }
        }
        v
    }

    /// Clamp into the joint limits.
    #[inline]
    pub fn clamp(&self, q: &mut JointVec) {
        for ((x, lo), hi) in q.iter_mut().zip(&self.lower).zip(&self.upper).take(self.n) {
            *x = x.clamp(*lo, *hi);
        }
    }

    /// Tip pose in the base frame. No allocation.
    #[inline]
    pub fn fk(&self, q: &JointVec) -> Frame {
        let mut r = Matrix3::identity();
        let mut t = Vector3::zeros();
        for (j, &qi) in self.joints.iter().zip(q.iter()).take(self.n) {
            t += r * j.origin_t;
            if let Some(or) = &j.origin_r {
                r *= or;
            }
            match j.motion {
                Motion::Slide(axis) => t += r * (axis * qi),
                m => rotate_about(&mut r, m, qi),
            }
        }
        t += r * self.tip.t;
        r *= self.tip.r;
        Frame { r, t }
    }

    /// Tip pose and geometric Jacobian. No allocation.
    #[inline]
    pub fn fk_jacobian(&self, q: &JointVec) -> FkJacobian {
        let mut r = Matrix3::identity();
        let mut t = Vector3::zeros();
        let mut axes = [Vector3::zeros(); MAX_DOF];
        let mut points = [Vector3::zeros(); MAX_DOF];
        for (i, (j, &qi)) in self.joints.iter().zip(q.iter()).take(self.n).enumerate() {
            t += r * j.origin_t;
            if let Some(or) = &j.origin_r {
                r *= or;
            }
            match j.motion {
                Motion::RotX => axes[i] = r.column(0).into_owned(),
                Motion::RotY => axes[i] = r.column(1).into_owned(),
                Motion::RotZ => axes[i] = r.column(2).into_owned(),
                Motion::Rot(a) | Motion::Slide(a) => axes[i] = r * a,
            }
            points[i] = t;
            match j.motion {
                Motion::Slide(axis) => t += r * (axis * qi),
                m => rotate_about(&mut r, m, qi),
            }
        }
        t += r * self.tip.t;
        r *= self.tip.r;
        let mut jac = Jacobian::zeros();
        for i in 0..self.n {
            let a = axes[i];
            if matches!(self.joints[i].motion, Motion::Slide(_)) {
                jac.fixed_view_mut::<3, 1>(0, i).copy_from(&a);
            } else {
                jac.fixed_view_mut::<3, 1>(0, i)
                    .copy_from(&a.cross(&(t - points[i])));
                jac.fixed_view_mut::<3, 1>(3, i).copy_from(&a);
            }
        }
        FkJacobian {
            pose: Frame { r, t },
            jacobian: jac,
        }
    }
}

fn rot_motion(axis: Vector3<f64>) -> Motion {
    let eps = 1e-12;
    if (axis - Vector3::x()).norm() < eps {
        Motion::RotX
    } else if (axis - Vector3::y()).norm() < eps {
        Motion::RotY
    } else if (axis - Vector3::z()).norm() < eps {
        Motion::RotZ
    } else {
        Motion::Rot(axis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RobotModel;

    fn fk_by_urdf_walk(urdf: &urdf_rs::Robot, names: &[String], q: &[f64], tip: &str) -> Frame {
        // reference: compose every joint on the path with nalgebra's Isometry3, independently
        use nalgebra::{Isometry3, Translation3, UnitQuaternion};
        let mut path = Vec::new();
        let mut link = tip.to_string();
        while let Some(j) = urdf.joints.iter().find(|j| j.child.link == link) {
            path.push(j);
            link = j.parent.link.clone();
        }
        path.reverse();
        let mut iso = Isometry3::identity();
        for j in path {
            let o = &j.origin;
            iso *= Isometry3::from_parts(
                Translation3::new(o.xyz[0], o.xyz[1], o.xyz[2]),
                UnitQuaternion::from_euler_angles(o.rpy[0], o.rpy[1], o.rpy[2]),
            );
            if let Some(k) = names.iter().position(|n| *n == j.name) {
                let axis = nalgebra::Unit::new_normalize(Vector3::from(j.axis.xyz.0));
                iso *= UnitQuaternion::from_axis_angle(&axis, q[k]);
            }
        }
        Frame {
            r: *iso.rotation.to_rotation_matrix().matrix(),
            t: iso.translation.vector,
        }
    }

    #[test]
    fn fk_matches_an_independent_isometry_walk() {
        let m = RobotModel::reachy().unwrap();
        let mut rng = 12345u64;
        for c in &m.chains {
            for _ in 0..50 {
                let mut q = [0.0; MAX_DOF];
                for i in 0..c.dof() {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
                    q[i] = c.lower()[i] + u * (c.upper()[i] - c.lower()[i]);
                }
                let a = c.fk(&q);
                let b = fk_by_urdf_walk(&m.urdf, c.joint_names(), &q[..c.dof()], c.tip_link());
                assert!((a.t - b.t).norm() < 1e-12);
                assert!((a.r - b.r).norm() < 1e-12);
            }
        }
    }

    #[test]
    fn jacobian_matches_finite_differences() {
        let m = RobotModel::reachy().unwrap();
        let c = m.chain("r_arm").unwrap();
        let q = [0.3, -0.7, 0.2, -1.1, 0.1, -0.2, 0.5, 0.0];
        let fj = c.fk_jacobian(&q);
        assert!((fj.pose.t - c.fk(&q).t).norm() < 1e-15);
        let h = 1e-7;
        for i in 0..7 {
            let mut qp = q;
            qp[i] += h;
            let p = c.fk(&qp);
            let dv = (p.t - fj.pose.t) / h;
            let dr = crate::rotation_log(&(p.r * fj.pose.r.transpose())) / h;
            let col = fj.jacobian.column(i);
            assert!((dv - col.fixed_rows::<3>(0)).norm() < 1e-5, "v col {i}");
            assert!((dr - col.fixed_rows::<3>(3)).norm() < 1e-5, "w col {i}");
        }
    }

    #[test]
    fn tip_offset_and_arm_lengths() {
        let m = RobotModel::reachy().unwrap();
        let c = m.chain("r_arm").unwrap();
        // elbow fully folded vs straight: distance shoulder->tcp = 0.28 + 0.28 + 0.10 straight
        let q = [0.0; MAX_DOF];
        let tip = c.fk(&q).t;
        let shoulder = Vector3::new(0.0, -0.2, 1.0);
        assert!(((tip - shoulder).norm() - 0.66).abs() < 1e-12);
    }

    #[test]
    fn errors_for_bad_links() {
        let m = RobotModel::reachy().unwrap();
        assert_eq!(
            Chain::from_urdf(&m.urdf, "x", "base_link", "nope").unwrap_err(),
            ChainError::UnknownLink("nope".into())
        );
        assert!(matches!(
            Chain::from_urdf(&m.urdf, "x", "r_tcp", "l_tcp").unwrap_err(),
            ChainError::NotConnected { .. }
        ));
    }
}
