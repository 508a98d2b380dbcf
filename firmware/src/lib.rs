//! Firmware core of the Reachy control stack, `#![no_std]` and heap-free on the control path.
//!
//! - [`dynamixel`]: Dynamixel Protocol 2.0 bus master, control table, codec.
//! - [`link`]: the host link protocol (COBS frames, CRC, versioned postcard messages); the host
//!   uses this very module through the `std` feature.
//! - [`control`]: the control loop and the on-board safety (watchdog, limits, e-stop latch).
//!
//! Everything takes `embedded-io` ports and a [`dynamixel::Clock`], so the same code runs on a
//! board, in QEMU and inside host tests.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod control;
pub mod dynamixel;
pub mod link;
