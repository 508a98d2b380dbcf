//! Zenoh session setup shared by every `reachy` process: `--listen` / `--connect` endpoints,
//! multicast scouting off, loopback-only listening unless a zenoh config file secures it.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use zenoh::Wait;

/// Zenoh options of a command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ZenohArgs {
    /// Zenoh endpoint to listen on, e.g. `tcp/127.0.0.1:7447` (repeatable). Addresses other than
    /// loopback need --zenoh-config with authentication or TLS.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen: Vec<String>,
    /// Zenoh endpoint (a router or another process) to connect to (repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Vec<String>,
    /// A zenoh JSON5 config file applied first (user-password authentication, TLS certificates);
    /// --listen / --connect are added to it. Multicast scouting stays off unless it turns it on.
    #[arg(long, value_name = "FILE")]
    pub zenoh_config: Option<PathBuf>,
}

/// Whether a zenoh endpoint (`proto/address:port…`) listens on loopback only.
pub fn is_loopback_endpoint(endpoint: &str) -> bool {
    let Some((proto, rest)) = endpoint.split_once('/') else {
        return false;
    };
    if matches!(proto, "unixsock-stream" | "unixpipe") {
        return true;
    }
    let addr = rest.split(['#', '?']).next().unwrap_or("");
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ZenohArgs {
    /// The zenoh config: peer mode, multicast scouting off, the endpoints given.
    pub fn config(&self) -> anyhow::Result<zenoh::Config> {
        let mut c = match &self.zenoh_config {
            Some(p) => zenoh::Config::from_file(p)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("reading zenoh config {}", p.display()))?,
            None => {
                let mut c = zenoh::Config::default();
                set(&mut c, "scouting/multicast/enabled", "false")?;
                c
            }
        };
        if self.zenoh_config.is_none() {
            if let Some(e) = self.listen.iter().find(|e| !is_loopback_endpoint(e)) {
                bail!(
                    "refusing to listen on `{e}` without authentication: pass --zenoh-config \
                     with user-password or TLS settings (see docs/zenoh-api.md), or listen on \
                     127.0.0.1"
                );
            }
        }
        if !self.listen.is_empty() {
            set(
                &mut c,
                "listen/endpoints",
                &serde_json::to_string(&self.listen)?,
            )?;
        } else if self.zenoh_config.is_none() {
            // no listener at all: the session talks in-process and to what it connects to
            set(&mut c, "listen/endpoints", "[]")?;
        }
        if !self.connect.is_empty() {
            set(
                &mut c,
                "connect/endpoints",
                &serde_json::to_string(&self.connect)?,
            )?;
        }
        Ok(c)
    }

    /// Open the session.
    pub fn open(&self) -> anyhow::Result<zenoh::Session> {
        let c = self.config()?;
        zenoh::open(c)
            .wait()
            .map_err(|e| anyhow::anyhow!("opening the zenoh session: {e}"))
    }
}

/// The latest message on `key`, as `decode` turns it (messages it refuses are skipped).
pub type Latest<T> = std::sync::Arc<std::sync::Mutex<Option<T>>>;

/// Subscribe to `key`, keeping only the latest message `decode` accepts; the subscriber lives
/// as long as the returned handle.
pub fn subscribe_latest<T: Send + 'static>(
    session: &zenoh::Session,
    key: &str,
    decode: impl Fn(&[u8]) -> Option<T> + Send + Sync + 'static,
) -> anyhow::Result<(Latest<T>, zenoh::pubsub::Subscriber<()>)> {
    let latest: Latest<T> = Default::default();
    let slot = latest.clone();
    let sub = session
        .declare_subscriber(key.to_string())
        .callback(move |s| {
            if let Some(m) = decode(&s.payload().to_bytes()) {
                if let Ok(mut l) = slot.lock() {
                    *l = Some(m);
                }
            }
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("subscribing to {key}: {e}"))?;
    Ok((latest, sub))
}

fn set(c: &mut zenoh::Config, key: &str, value: &str) -> anyhow::Result<()> {
    c.insert_json5(key, value)
        .map_err(|e| anyhow::anyhow!("zenoh config {key} = {value}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_endpoint("tcp/127.0.0.1:7447"));
        assert!(is_loopback_endpoint("tcp/[::1]:7447"));
        assert!(is_loopback_endpoint("tcp/localhost:7447"));
        assert!(is_loopback_endpoint("unixsock-stream//tmp/z.sock"));
        assert!(!is_loopback_endpoint("tcp/0.0.0.0:7447"));
        assert!(!is_loopback_endpoint("tcp/192.168.1.3:7447"));
        assert!(!is_loopback_endpoint("tcp/[::]:7447"));
        assert!(!is_loopback_endpoint("garbage"));
    }

    #[test]
    fn remote_listen_needs_a_config() {
        let a = ZenohArgs {
            listen: vec!["tcp/0.0.0.0:7447".into()],
            ..Default::default()
        };
        assert!(a.config().is_err());
        let a = ZenohArgs {
            listen: vec!["tcp/127.0.0.1:7447".into()],
            connect: vec!["tcp/127.0.0.1:7448".into()],
            ..Default::default()
        };
        a.config().unwrap();
    }
}
