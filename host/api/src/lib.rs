//! The robot's zenoh API, for every process of the stack and for Rust clients: a program that
//! only reads the robot's state or sends it goals depends on this crate alone (zenoh + serde; no
//! physics, rendering, learning or logging crates).
//!
//! - [`schema`]: key expressions and CBOR messages with their schema versions, the one schema
//!   the sim bridge, the daemon, the policy server and every client use.
//! - [`net`]: zenoh session options (`listen` / `connect` endpoints, no multicast, loopback
//!   unless secured), the security policy for listening beyond loopback, query helpers.
//! - [`client`]: [`client::RobotClient`], a client of the daemon (lease, state, streaming
//!   targets, goto, Cartesian targets, cameras), and the [`client::RobotIo`] trait that scripts
//!   run against (the client, or the simulator in lock-step).
//! - [`worker`]: a named thread with a stop flag that stops and joins when dropped.
//! - [`ApiError`]: what can go wrong, typed.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod net;
pub mod schema;
pub mod worker;

pub use client::{RobotClient, RobotIo};
pub use net::ZenohOptions;
/// The zenoh crate this API speaks (sessions are `zenoh::Session`).
pub use zenoh;

/// Errors of the API: transport, decoding, replies, refusals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Zenoh failed (opening a session, declaring, putting, querying).
    #[error("{what}: {source}")]
    Zenoh {
        /// What was being done.
        what: String,
        /// Zenoh's error.
        source: zenoh::Error,
    },
    /// A message or reply did not decode.
    #[error("{what}: {source}")]
    Schema {
        /// Which message.
        what: String,
        /// Why.
        source: schema::SchemaError,
    },
    /// Nobody answered in time.
    #[error("{0}")]
    Timeout(String),
    /// The peer answered with an error, or refused (lease, unknown camera…).
    #[error("{0}")]
    Refused(String),
    /// The session options are not acceptable (security policy, bad config file).
    #[error("{0}")]
    Config(String),
}

impl ApiError {
    /// A zenoh error while doing `what`.
    pub fn zenoh(what: impl Into<String>) -> impl FnOnce(zenoh::Error) -> Self {
        let what = what.into();
        move |source| Self::Zenoh { what, source }
    }
}

/// Results of this crate.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
