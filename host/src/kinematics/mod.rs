//! Kinematics on any URDF serial chain: forward kinematics, the geometric Jacobian, inverse
//! kinematics (damped least squares with limits and restarts) and `look_at` for a camera chain.

mod chain;
mod ik;

pub use chain::{Chain, ChainError, FkJacobian, Frame, Jacobian, JointVec, MAX_DOF};
pub use ik::{look_at, rotation_log, solve, IkOptions, IkSolution, IkTarget, LookAtSolution};
