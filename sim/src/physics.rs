//! Rigid-body physics of the robot: rapier3d **multibody** joints built from the URDF
//! (`rapier3d-urdf`), position-controlled joint motors with per-joint gains and effort limits,
//! gravity along −z, joint limits, and URDF mimic joints (the second gripper finger) driven from
//! their leader. Fixed base. Deterministic: the same commands give the same trajectory, bit for bit.

use std::path::Path;

use rapier3d::prelude::*;
use rapier3d_urdf::{UrdfLoaderOptions, UrdfMultibodyOptions, UrdfRobot};

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

/// The robot in a rapier world.
pub struct RobotPhysics {
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
            ..UrdfLoaderOptions::default()
        };
        let (robot, desc) = UrdfRobot::from_str(urdf, options, Path::new("."))
            .map_err(|e| PhysicsError::Urdf(e.to_string()))?;
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
        let handles = robot.insert_using_multibody_joints(
            &mut world.bodies,
            &mut world.colliders,
            &mut world.multibody_joints,
            UrdfMultibodyOptions::DISABLE_SELF_CONTACTS,
        );
        let mut joints = Vec::new();
        for ((urdf_index, _), h) in joint_meta.iter().zip(&handles.joints) {
            let j = &desc.joints[*urdf_index];
            let axis = match j.joint_type {
                urdf_rs::JointType::Revolute | urdf_rs::JointType::Continuous => JointAxis::AngX,
                urdf_rs::JointType::Prismatic => JointAxis::LinX,
                _ => continue,
            };
            let Some(handle) = h.joint else { continue };
            let (lower, upper) = match j.joint_type {
                urdf_rs::JointType::Continuous => (f32::NEG_INFINITY, f32::INFINITY),
                _ => (j.limit.lower as f32, j.limit.upper as f32),
            };
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
        let actuated: Vec<usize> = (0..joints.len())
            .filter(|&k| joints[k].mimic.is_none())
            .collect();
        let n = actuated.len();
        let mut s = Self {
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

    /// Set one joint's motor gains.
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
            j.target = v.clamp(j.lower, j.upper);
        }
        self.apply_motors();
        Ok(())
    }

    fn apply_motors(&mut self) {
        let targets: Vec<f32> = self.joints.iter().map(|j| j.target).collect();
        for j in &self.joints {
            let target = match j.mimic {
                Some((leader, mult, off)) => targets[leader] * mult + off,
                None => j.target,
            };
            if let Some((mb, link)) = self.world.multibody_joints.get_mut(j.handle) {
                if let Some(l) = mb.link_mut(link) {
                    l.joint
                        .data
                        .set_motor_model(j.axis, MotorModel::AccelerationBased)
                        .set_motor_position(j.axis, target, j.gains.stiffness, j.gains.damping)
                        .set_motor_max_force(j.axis, j.effort);
                }
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
                let idx = match j.axis {
                    JointAxis::LinX => 0,
                    _ => 3,
                };
                self.world
                    .multibody_joints
                    .get(j.handle)
                    .and_then(|(mb, link)| mb.link(link).map(|l| l.joint().coords()[idx]))
                    .unwrap_or(f32::NAN)
            })
            .collect()
    }

    /// Joint velocities (finite difference over the last step).
    pub fn velocities(&self) -> &[f32] {
        &self.velocity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URDF: &str = include_str!("../../urdf/reachy.urdf");

    fn home(names: &[&str]) -> Vec<f32> {
        names
            .iter()
            .map(|n| match *n {
                "r_shoulder_roll" => -1.309,
                "l_shoulder_roll" => 1.309,
                "r_elbow_pitch" | "l_elbow_pitch" => -0.5,
                _ => 0.0,
            })
            .collect()
    }

    #[test]
    fn holds_and_tracks_under_gravity() {
        let mut p = RobotPhysics::from_urdf_str(URDF, 0.001).unwrap();
        let names: Vec<String> = p.joint_names().iter().map(|s| s.to_string()).collect();
        let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), 21, "{names:?}");
        let mut q = home(&names);
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
    fn deterministic_bit_for_bit() {
        let run = || {
            let mut p = RobotPhysics::from_urdf_str(URDF, 0.001).unwrap();
            let mut q = home(&p.joint_names());
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
