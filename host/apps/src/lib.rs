//! The applications of the host side, on top of the API, the daemon, the simulator and the
//! policies; the `reachy` binary is a thin command line over them.
//!
//! - [`sim_bridge`]: the simulator on zenoh (`reachy sim`).
//! - [`inprocess`]: the simulated robot in this process (sim + daemon on one session), and the
//!   robot a client command works on (in-process or `--connect`).
//! - [`pick_place`]: a scripted pick-and-place with the IK and the gripper (`reachy demo`), on
//!   any [`reachy_api::RobotIo`], and [`pick_place::LockStep`], the simulator in lock-step.
//! - [`policy_run`]: a chunking policy (LeRobot ACT) on the robot through the daemon's API.
//! - [`policy_serve`]: a policy served over zenoh to several robots.
//! - [`qemu`]: the firmware's Cortex-M images in QEMU with their UARTs wired.
//! - [`replay`]: an episode of a LeRobot dataset replayed on the robot.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod direct;
pub mod doctor;
pub mod inprocess;
pub mod pick_place;
pub mod policy_run;
pub mod policy_serve;
pub mod qemu;
pub mod record;
pub mod replay;
pub mod servo_buses;
pub mod servos;
pub mod sim_bridge;
pub mod teleop;
