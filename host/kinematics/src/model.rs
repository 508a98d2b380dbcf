//! The robot model: the URDF loaded once, its actuated joints, and the named kinematic chains.
//!
//! `urdf/reachy.urdf` is the single source of truth for joint names, their order (which later
//! gives servo IDs and dataset feature names) and limits; everything here derives from it.

use std::collections::HashMap;
use std::path::Path;

use crate::{Chain, ChainError};

/// The URDF shipped in the repository, embedded so the binary works from any directory.
pub const REACHY_URDF: &str = include_str!("../../../urdf/reachy.urdf");

/// Errors while loading a robot description.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read URDF {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The XML is not a valid URDF.
    #[error("invalid URDF: {0}")]
    Parse(String),
    /// A chain could not be built.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A chain name that this model does not have.
    #[error("unknown chain `{0}` (known: {1})")]
    UnknownChain(String, String),
}

/// One actuated joint (not fixed, not a mimic), in URDF order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JointInfo {
    /// URDF joint name, e.g. `r_shoulder_pitch`.
    pub name: String,
    /// `revolute`, `continuous` or `prismatic`.
    pub kind: &'static str,
    /// Lower position limit (rad or m); `-inf` for continuous joints.
    pub lower: f64,
    /// Upper position limit (rad or m); `+inf` for continuous joints.
    pub upper: f64,
    /// Velocity limit (rad/s or m/s).
    pub velocity: f64,
    /// Effort limit (N·m or N).
    pub effort: f64,
}

/// The loaded robot: URDF, actuated joints and named chains.
#[derive(Debug, Clone)]
pub struct RobotModel {
    /// The parsed URDF.
    pub urdf: urdf_rs::Robot,
    /// Actuated joints in URDF order.
    pub joints: Vec<JointInfo>,
    /// Named chains (`r_arm`, `l_arm`, `head` for Reachy; any others a caller adds).
    pub chains: Vec<Chain>,
}

/// The chains Reachy's URDF defines: (name, tip link).
pub const REACHY_CHAINS: [(&str, &str); 3] = [
    ("r_arm", "r_tcp"),
    ("l_arm", "l_tcp"),
    ("head", "head_camera"),
];

impl RobotModel {
    /// The embedded Reachy model with its three chains.
    pub fn reachy() -> Result<Self, ModelError> {
        Self::from_urdf_str(REACHY_URDF)
    }

    /// Load a URDF file; the Reachy chains are built when their tip links exist.
    pub fn from_urdf_file(path: &Path) -> Result<Self, ModelError> {
        Ok(Self::load(Some(path))?.1)
    }

    /// The URDF text and its model: the file at `urdf`, else the built-in robot.
    pub fn load(urdf: Option<&Path>) -> Result<(String, Self), ModelError> {
        let text = match urdf {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ModelError::Io {
                path: path.display().to_string(),
                source,
            })?,
            None => REACHY_URDF.to_string(),
        };
        let model = Self::from_urdf_str(&text)?;
        Ok((text, model))
    }

    /// Parse a URDF string; builds every chain of [`REACHY_CHAINS`] whose tip link is present.
    pub fn from_urdf_str(text: &str) -> Result<Self, ModelError> {
        let urdf = urdf_rs::read_from_string(text).map_err(|e| ModelError::Parse(e.to_string()))?;
        let joints = urdf
            .joints
            .iter()
            .filter(|j| j.mimic.is_none())
            .filter_map(|j| {
                let (kind, lower, upper) = match j.joint_type {
                    urdf_rs::JointType::Revolute => ("revolute", j.limit.lower, j.limit.upper),
                    urdf_rs::JointType::Prismatic => ("prismatic", j.limit.lower, j.limit.upper),
                    urdf_rs::JointType::Continuous => {
                        ("continuous", f64::NEG_INFINITY, f64::INFINITY)
                    }
                    _ => return None,
                };
                Some(JointInfo {
                    name: j.name.clone(),
                    kind,
                    lower,
                    upper,
                    velocity: j.limit.velocity,
                    effort: j.limit.effort,
                })
            })
            .collect();
        let root = root_link(&urdf)?;
        let mut chains = Vec::new();
        for (name, tip) in REACHY_CHAINS {
            if urdf.links.iter().any(|l| l.name == tip) {
                chains.push(Chain::from_urdf(&urdf, name, &root, tip)?);
            }
        }
        Ok(Self {
            urdf,
            joints,
            chains,
        })
    }

    /// The root link of the tree.
    pub fn root_link(&self) -> String {
        // from_urdf_str already checked that a unique root exists
        root_link(&self.urdf).unwrap_or_default()
    }

    /// Add a chain from `base` to `tip` under `name` (any URDF, any chain).
    pub fn add_chain(&mut self, name: &str, base: &str, tip: &str) -> Result<&Chain, ModelError> {
        let chain = Chain::from_urdf(&self.urdf, name, base, tip)?;
        self.chains.retain(|c| c.name() != name);
        self.chains.push(chain);
        Ok(self.chains.last().expect("just pushed"))
    }

    /// Look a chain up by name.
    pub fn chain(&self, name: &str) -> Result<&Chain, ModelError> {
        self.chains
            .iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.chains.iter().map(|c| c.name()).collect();
                ModelError::UnknownChain(name.to_string(), known.join(", "))
            })
    }

    /// Index of an actuated joint by name.
    pub fn joint_index(&self, name: &str) -> Option<usize> {
        self.joints.iter().position(|j| j.name == name)
    }

    /// Where every actuated joint's servo sits, derived from the URDF alone: one servo bus per
    /// chain (a limb), holding the chain's joints and every other actuated joint mounted beyond
    /// the chain's first joint (the gripper on the arm, the antennas on the head); servo IDs
    /// count from 1 in URDF order on each bus. Joints on no chain get a last bus of their own.
    pub fn servo_map(&self) -> Vec<ServoAssignment> {
        // links that sit beyond each chain's first moving joint
        let beyond: Vec<std::collections::HashSet<String>> = self
            .chains
            .iter()
            .map(|c| {
                let first = c.joint_names().first().cloned().unwrap_or_default();
                let mut set = std::collections::HashSet::new();
                let mut link = c.tip_link().to_string();
                while let Some(j) = self.urdf.joints.iter().find(|j| j.child.link == link) {
                    set.insert(link.clone());
                    if j.name == first {
                        break;
                    }
                    link = j.parent.link.clone();
                }
                set
            })
            .collect();
        let mut next_id = vec![1u8; self.chains.len() + 1];
        self.joints
            .iter()
            .map(|j| {
                let parent = self
                    .urdf
                    .joints
                    .iter()
                    .find(|u| u.name == j.name)
                    .map(|u| u.parent.link.clone())
                    .unwrap_or_default();
                let bus = self
                    .chains
                    .iter()
                    .position(|c| c.joint_names().contains(&j.name))
                    .or_else(|| beyond.iter().position(|set| set.contains(&parent)))
                    .unwrap_or(self.chains.len());
                let id = next_id[bus];
                next_id[bus] = id.saturating_add(1);
                ServoAssignment {
                    joint: j.name.clone(),
                    bus: self
                        .chains
                        .get(bus)
                        .map(|c| c.name().to_string())
                        .unwrap_or_else(|| "other".into()),
                    id,
                }
            })
            .collect()
    }
}

/// One joint's servo: bus name (the chain's) and Dynamixel ID on that bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServoAssignment {
    /// Joint name.
    pub joint: String,
    /// Bus (chain) name.
    pub bus: String,
    /// Servo ID on the bus.
    pub id: u8,
}

fn root_link(urdf: &urdf_rs::Robot) -> Result<String, ModelError> {
    let children: HashMap<&str, ()> = urdf
        .joints
        .iter()
        .map(|j| (j.child.link.as_str(), ()))
        .collect();
    let roots: Vec<&str> = urdf
        .links
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| !children.contains_key(n))
        .collect();
    match roots.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => Err(ModelError::Parse(
            "no root link (the joint graph has a cycle)".into(),
        )),
        many => Err(ModelError::Parse(format!(
            "several root links: {}",
            many.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachy_has_the_reachy2_joint_list() {
        let m = RobotModel::reachy().unwrap();
        let names: Vec<&str> = m.joints.iter().map(|j| j.name.as_str()).collect();
        for side in ["r", "l"] {
            for j in [
                "shoulder_pitch",
                "shoulder_roll",
                "elbow_yaw",
                "elbow_pitch",
                "wrist_roll",
                "wrist_pitch",
                "wrist_yaw",
                "gripper",
            ] {
                assert!(
                    names.contains(&format!("{side}_{j}").as_str()),
                    "{side}_{j}"
                );
            }
        }
        for j in [
            "neck_yaw",
            "neck_pitch",
            "neck_roll",
            "l_antenna",
            "r_antenna",
        ] {
            assert!(names.contains(&j));
        }
        assert_eq!(names.len(), 21, "mimic fingers are not actuated joints");
        assert_eq!(m.root_link(), "base_link");
        let r = m.chain("r_arm").unwrap();
        assert_eq!(r.dof(), 7);
        assert_eq!(m.chain("head").unwrap().dof(), 3);
        let l = m.chain("l_arm").unwrap();
        // mirrored limits: right shoulder roll [-pi, 0], left [0, pi]
        assert!((r.lower()[1] + std::f64::consts::PI).abs() < 1e-9 && r.upper()[1] == 0.0);
        assert!(l.lower()[1] == 0.0 && (l.upper()[1] - std::f64::consts::PI).abs() < 1e-9);
        assert!(m.chain("torso").is_err());
    }

    #[test]
    fn servo_map_follows_the_urdf() {
        let m = RobotModel::reachy().unwrap();
        let map = m.servo_map();
        assert_eq!(map.len(), m.joints.len());
        let get = |n: &str| map.iter().find(|a| a.joint == n).unwrap().clone();
        assert_eq!(
            (
                get("r_shoulder_pitch").bus.as_str(),
                get("r_shoulder_pitch").id
            ),
            ("r_arm", 1)
        );
        assert_eq!(
            (get("r_wrist_yaw").bus.as_str(), get("r_wrist_yaw").id),
            ("r_arm", 7)
        );
        assert_eq!(
            (get("r_gripper").bus.as_str(), get("r_gripper").id),
            ("r_arm", 8)
        );
        assert_eq!(
            (get("l_gripper").bus.as_str(), get("l_gripper").id),
            ("l_arm", 8)
        );
        assert_eq!(
            (get("neck_roll").bus.as_str(), get("neck_roll").id),
            ("head", 3)
        );
        assert_eq!(get("l_antenna").bus, "head");
        assert_eq!(get("r_antenna").bus, "head");
        let head: Vec<u8> = map
            .iter()
            .filter(|a| a.bus == "head")
            .map(|a| a.id)
            .collect();
        assert_eq!(head, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn every_joint_has_velocity_and_effort_limits() {
        let m = RobotModel::reachy().unwrap();
        for j in &m.joints {
            assert!(j.velocity > 0.0 && j.effort > 0.0, "{}", j.name);
        }
        for l in &m.urdf.links {
            if !l.visual.is_empty() {
                assert!(l.inertial.mass.value > 0.0, "{}", l.name);
            }
        }
    }

    #[test]
    fn broken_urdf_is_a_clear_error() {
        let e = RobotModel::from_urdf_str("<robot name='x'><link name='a'/>").unwrap_err();
        assert!(e.to_string().contains("invalid URDF"), "{e}");
        let e = RobotModel::from_urdf_file(Path::new("/nonexistent.urdf")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent.urdf"), "{e}");
    }
}
