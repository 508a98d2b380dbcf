//! Simulation engine of the Reachy stack, with no zenoh and no tokio: a Rust API drives it.
//!
//! - [`world`]: the robot in its scene with its cameras, stepped by the caller.
//! - [`camera`]: wgpu offscreen rendering of the cameras (headless; GPU or Mesa's lavapipe).
//! - [`physics`]: rapier3d multibody physics of the robot from the URDF.
//! - [`servo`]: simulated Dynamixel X-series servos and the bus they share.
//! - [`servo_port`]: that bus as an in-process `embedded-io` port.
//! - [`servo_pty`]: that bus served on a pseudo-terminal, for any Dynamixel client.
//! - [`servo_bus`]: the physics robot's joints as such servos, one bus per limb.
#![warn(missing_docs)]

pub mod camera;
pub mod physics;
pub mod servo;
pub mod servo_bus;
pub mod servo_port;
pub mod servo_pty;
pub mod world;

pub use servo::{Faults, SimBus, SimServo};
pub use servo_port::SimPort;
