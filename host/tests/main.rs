//! The `reachy` binary's integration tests, one binary (one link of zenoh, rerun, candle and
//! rapier) with a module per area.

mod cli_kin;
mod cli_policy;
mod common;
mod daemon_api;
mod demo;
mod doctor;
mod dynamixel_sdk;
mod faults;
mod pinocchio;
mod policy_run;
mod python_example;
mod python_sdk;
mod readme;
mod record;
mod replay;
mod secure_zenoh;
mod servos;
mod sim_zenoh;
mod teleop;
mod teleop_devices;
