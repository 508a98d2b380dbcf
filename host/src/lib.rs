//! The Reachy control stack's host side: the robot model loaded from `urdf/reachy.urdf`,
//! kinematics, and the command-line tools of the `reachy` binary.
//!
//! - [`model`]: the URDF, its actuated joints and named chains (`r_arm`, `l_arm`, `head`).
//! - [`kinematics`]: FK, Jacobian, IK and `look_at` on any chain.
//! - [`cli`]: the subcommands of `reachy`.
#![warn(missing_docs)]

pub mod cli;
pub mod kinematics;
pub mod model;
pub mod serial;
