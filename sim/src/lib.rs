//! Simulation engine of the Reachy stack, with no zenoh and no tokio: a Rust API drives it.
//!
//! - [`physics`]: rapier3d multibody physics of the robot from the URDF.
//! - [`servo`]: simulated Dynamixel X-series servos and the bus they share.
//! - [`servo_port`]: that bus as an in-process `embedded-io` port.
//! - [`servo_pty`]: that bus served on a pseudo-terminal, for any Dynamixel client.
#![warn(missing_docs)]

pub mod physics;
pub mod servo;
pub mod servo_port;
pub mod servo_pty;

pub use servo::{Faults, SimBus, SimServo};
pub use servo_port::SimPort;
