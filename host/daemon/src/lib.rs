//! `reachy daemon`: the robot behind one zenoh API, whatever drives its joints.
//!
//! - [`core`]: the pure control core: leases, limits, ramps, gotos, streaming and Cartesian
//!   targets, e-stop and compliant mode; inputs in, targets and replies out; no transport, no
//!   runtime, no clock of its own.
//! - [`backend`]: the [`backend::Backend`] trait and its implementations: the simulator over
//!   zenoh, the firmware over its host link.
//! - [`server`]: the zenoh server around the core ([`server::Daemon`]).
//! - [`config`]: the TOML configuration (`config/reachy.toml`).
//! - [`firmware_link`]: the host end of the firmware link (the serial backend's transport).
//! - [`serial`]: serial ports as `embedded-io` for the firmware crate's code.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod core;
pub mod firmware_link;
pub mod serial;
pub mod server;

pub use backend::{Backend, Measured, MultiBackend, SerialBackend, SimBackend};
pub use server::{Daemon, DaemonConfig};

/// Errors of the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The zenoh API failed.
    #[error(transparent)]
    Api(#[from] reachy_api::ApiError),
    /// The firmware link failed.
    #[error(transparent)]
    Link(#[from] firmware_link::FirmwareLinkError),
    /// The configuration is not acceptable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The configured limits leave a joint no range, or name no joint.
    #[error(transparent)]
    Limits(#[from] core::LimitsError),
    /// A backend cannot serve this robot.
    #[error("{0}")]
    Backend(String),
    /// The daemon's thread panicked.
    #[error(transparent)]
    Panicked(#[from] reachy_api::worker::Panicked),
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}
