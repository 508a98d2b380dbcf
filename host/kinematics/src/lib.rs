//! The robot model and its kinematics, with no transport: the URDF loaded once ([`model`]:
//! actuated joints, named chains `r_arm`, `l_arm`, `head`, the servo map), and on any URDF serial
//! chain forward kinematics, the geometric Jacobian, inverse kinematics (damped least squares with
//! limits and restarts) and `look_at` for a camera chain.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod chain;
mod ik;
pub mod model;

pub use chain::{Chain, ChainError, FkJacobian, Frame, Jacobian, JointVec, MAX_DOF};
pub use ik::{look_at, rotation_log, solve, IkOptions, IkSolution, IkTarget, LookAtSolution};
