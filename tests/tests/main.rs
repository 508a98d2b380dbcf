//! End-to-end tests across crates and processes, one binary with a module per area.

mod daemon_serial;
mod firmware_loop;
mod firmware_process;
mod pick_place;
mod qemu_firmware;
