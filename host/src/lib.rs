//! The Reachy control stack's host side: the robot model loaded from `urdf/reachy.urdf`,
//! kinematics, and the command-line tools of the `reachy` binary.
//!
//! - [`model`]: the URDF, its actuated joints and named chains (`r_arm`, `l_arm`, `head`).
//! - [`kinematics`]: FK, Jacobian, IK and `look_at` on any chain.
//! - [`firmware_link`]: the host end of the firmware link (serial backend transport).
//! - [`serial`]: serial ports as `embedded-io` for the firmware crate's code.
//! - [`schema`]: zenoh key expressions and CBOR messages, the one schema every process uses.
//! - [`net`]: zenoh session options (`--listen`, `--connect`, no multicast, loopback default).
//! - [`pick_place`]: a scripted pick-and-place with the IK and the gripper.
//! - [`sim_bridge`]: the simulator on zenoh.
//! - [`daemon`]: `reachy daemon`, the robot behind one zenoh API, with its backends.
//! - [`client`]: a client of the daemon's API (lease, state, targets, goto).
//! - [`config`]: the daemon's TOML configuration (`config/reachy.toml`).
//! - [`viz`]: rerun logging of the scene, joints, TCPs and cameras.
//! - [`cli`]: the subcommands of `reachy`.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod firmware_link;
pub mod inprocess;
pub mod kinematics;
pub mod model;
pub mod net;
pub mod pick_place;
pub mod policy_run;
pub mod policy_serve;
pub mod record;
pub mod replay;
pub mod schema;
pub mod serial;
pub mod sim_bridge;
pub mod viz;
