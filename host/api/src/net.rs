//! Zenoh session setup shared by every `reachy` process: `--listen` / `--connect` endpoints,
//! multicast scouting off, loopback-only listening unless a zenoh config file secures it.

use std::net::IpAddr;
use std::path::PathBuf;

use zenoh::Wait;

use crate::schema::{self, SchemaError};
use crate::ApiError;

/// Where a process's zenoh session listens and connects (the `reachy` binary's `--listen`,
/// `--connect` and `--zenoh-config`).
#[derive(Debug, Clone, Default)]
pub struct ZenohOptions {
    /// Endpoints to listen on, e.g. `tcp/127.0.0.1:7447`. Addresses other than loopback need
    /// `zenoh_config` with authentication or TLS.
    pub listen: Vec<String>,
    /// Endpoints (a router or another process) to connect to.
    pub connect: Vec<String>,
    /// A zenoh JSON5 config file applied first (user-password authentication, TLS
    /// certificates); `listen` / `connect` are added to it. Multicast scouting stays off
    /// unless it turns it on.
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

impl ZenohOptions {
    /// The zenoh config: peer mode, multicast scouting off, the endpoints given.
    pub fn config(&self) -> Result<zenoh::Config, ApiError> {
        let mut c = match &self.zenoh_config {
            Some(p) => zenoh::Config::from_file(p).map_err(|e| {
                ApiError::Config(format!("reading zenoh config {}: {e}", p.display()))
            })?,
            None => {
                let mut c = zenoh::Config::default();
                set(&mut c, "scouting/multicast/enabled", "false")?;
                c
            }
        };
        if !self.listen.is_empty() {
            set(&mut c, "listen/endpoints", &json_list(&self.listen))?;
        } else if self.zenoh_config.is_none() {
            // no listener at all: the session talks in-process and to what it connects to
            set(&mut c, "listen/endpoints", "[]")?;
            if !self.connect.is_empty() {
                // reachable only through what it connects to (a router, or a peer that
                // listens): a client session, routed by that peer, whatever the topology
                set(&mut c, "mode", "\"client\"")?;
                // start order does not matter: wait up to 10 s for the endpoint to come up
                set(&mut c, "connect/timeout_ms", "10000")?;
            }
        }
        if !self.connect.is_empty() {
            set(&mut c, "connect/endpoints", &json_list(&self.connect))?;
        }
        // listening beyond loopback: only with user-password authentication (a dictionary of
        // accepted users) or on TLS / QUIC links with a certificate
        let listen_endpoints: Vec<String> = c
            .get_json("listen/endpoints")
            .ok()
            .and_then(|j| serde_json::from_str::<ListenEndpoints>(&j).ok())
            .map(ListenEndpoints::all)
            .unwrap_or_default();
        let usrpwd = configured(&c, "transport/auth/usrpwd/dictionary_file");
        let tls_cert = configured(&c, "transport/link/tls/listen_certificate");
        for e in listen_endpoints.iter().filter(|e| !is_loopback_endpoint(e)) {
            let tls = (e.starts_with("tls/") || e.starts_with("quic/")) && tls_cert;
            if !usrpwd && !tls {
                return Err(ApiError::Config(format!(
                    "refusing to listen on `{e}` without authentication: pass --zenoh-config \
                     with user-password authentication (transport.auth.usrpwd.dictionary_file) \
                     or a tls/ endpoint with a certificate (see docs/zenoh-api.md), or listen \
                     on 127.0.0.1"
                )));
            }
        }
        Ok(c)
    }

    /// Open the session.
    pub fn open(&self) -> Result<zenoh::Session, ApiError> {
        let c = self.config()?;
        zenoh::open(c).wait().map_err(|e| {
            // nothing listens where --connect points (zenoh says so with its source paths)
            if !self.connect.is_empty() && e.to_string().contains("Unable to connect") {
                ApiError::Timeout(format!(
                    "nothing answered at {} within 10 s: start what should listen there \
                     (`reachy daemon --listen {e0}`, `reachy sim --listen {e0}` or `reachy router \
                     --listen {e0}`) or fix --connect",
                    self.connect.join(", "),
                    e0 = self.connect[0]
                ))
            } else {
                ApiError::zenoh("opening the zenoh session")(e)
            }
        })
    }

    /// Open a zenoh router on the `listen` endpoints (the same authentication rules as every
    /// other session: beyond loopback only with user-password or TLS). It routes until the
    /// session is closed.
    pub fn open_router(&self) -> Result<zenoh::Session, ApiError> {
        if self.listen.is_empty() && self.zenoh_config.is_none() {
            return Err(ApiError::Config(
                "a router needs --listen ENDPOINT (e.g. tcp/127.0.0.1:7447)".into(),
            ));
        }
        let mut c = self.config()?;
        set(&mut c, "mode", "\"router\"")?;
        zenoh::open(c)
            .wait()
            .map_err(ApiError::zenoh("opening the zenoh router"))
    }
}

/// The endpoints `session` listens on, as connectable strings: a `:0` port as the port the OS
/// gave, an unspecified address (`0.0.0.0`) as the machine's addresses (loopback left out).
pub fn listening(session: &zenoh::Session) -> Vec<String> {
    session
        .info()
        .locators()
        .wait()
        .into_iter()
        .map(|l| l.to_string())
        .collect()
}

/// `; listening on A, B` for a ready line, or nothing when `session` listens nowhere.
pub fn listening_note(session: &zenoh::Session) -> String {
    let l = listening(session);
    if l.is_empty() {
        String::new()
    } else {
        format!("; listening on {}", l.join(", "))
    }
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).expect("a list of strings is JSON")
}

/// One query: the decoded reply, or the error reply's reason (an [`schema::ErrorReply`] when
/// it is one).
pub fn get<T>(
    session: &zenoh::Session,
    key: &str,
    payload: Option<Vec<u8>>,
    timeout: std::time::Duration,
    decode: fn(&[u8]) -> Result<T, SchemaError>,
) -> Result<T, ApiError> {
    let mut get = session.get(key).timeout(timeout);
    if let Some(p) = payload {
        get = get.payload(p);
    }
    let replies = get
        .wait()
        .map_err(ApiError::zenoh(format!("querying {key}")))?;
    let r = replies
        .recv()
        .map_err(|_| ApiError::Timeout(format!("no reply from {key} within {timeout:?}")))?;
    match r.result() {
        Ok(s) => decode(&s.payload().to_bytes()).map_err(|source| ApiError::Schema {
            what: format!("reply of {key}"),
            source,
        }),
        Err(e) => {
            let why = schema::decode::<schema::ErrorReply>(&e.payload().to_bytes())
                .map(|r| r.error)
                .unwrap_or_else(|_| format!("error reply ({} bytes)", e.payload().len()));
            Err(ApiError::Refused(format!("{key}: {why}")))
        }
    }
}

/// Call `f` every 100 ms until it succeeds or `timeout` passes (then its last error, after
/// `what` and `: `): for finding a peer that may still be starting.
pub fn retry<T>(
    timeout: std::time::Duration,
    what: impl FnOnce() -> String,
    mut f: impl FnMut() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut last = None;
    wait_until(timeout, std::time::Duration::from_millis(100), || {
        let r = f();
        let ok = r.is_ok();
        last = Some(r);
        ok
    });
    match last.expect("tried at least once") {
        Ok(v) => Ok(v),
        Err(e) => Err(ApiError::Timeout(format!("{}: {e}", what()))),
    }
}

/// Wait until `ready` holds, checking every `every`; `false` when `timeout` passed first.
pub fn wait_until(
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let t0 = std::time::Instant::now();
    while !ready() {
        if t0.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}

/// The latest message on `key`, as `decode` turns it (messages it refuses are skipped).
pub type Latest<T> = std::sync::Arc<std::sync::Mutex<Option<T>>>;

/// Subscribe to `key`, keeping only the latest message `decode` accepts; the subscriber lives
/// as long as the returned handle.
pub fn subscribe_latest<T: Send + 'static>(
    session: &zenoh::Session,
    key: &str,
    decode: impl Fn(&[u8]) -> Option<T> + Send + Sync + 'static,
) -> Result<(Latest<T>, zenoh::pubsub::Subscriber<()>), ApiError> {
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
        .map_err(ApiError::zenoh(format!("subscribing to {key}")))?;
    Ok((latest, sub))
}

/// `listen/endpoints` of a zenoh config: a list, or a map per mode.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ListenEndpoints {
    List(Vec<String>),
    PerMode(std::collections::BTreeMap<String, Vec<String>>),
}

impl ListenEndpoints {
    fn all(self) -> Vec<String> {
        match self {
            Self::List(v) => v,
            Self::PerMode(m) => m.into_values().flatten().collect(),
        }
    }
}

/// Whether a config key holds a value (not null, not empty).
fn configured(c: &zenoh::Config, key: &str) -> bool {
    c.get_json(key)
        .map(|v| v != "null" && v != "\"\"" && !v.is_empty())
        .unwrap_or(false)
}

fn set(c: &mut zenoh::Config, key: &str, value: &str) -> Result<(), ApiError> {
    c.insert_json5(key, value)
        .map_err(|e| ApiError::Config(format!("zenoh config {key} = {value}: {e}")))
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
        let a = ZenohOptions {
            listen: vec!["tcp/0.0.0.0:7447".into()],
            ..Default::default()
        };
        assert!(a.config().is_err());
        // a config file without authentication does not make it acceptable
        let dir = std::env::temp_dir().join(format!("reachy-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain.json5");
        std::fs::write(&plain, "{ mode: \"peer\" }").unwrap();
        let a = ZenohOptions {
            listen: vec!["tcp/0.0.0.0:7447".into()],
            zenoh_config: Some(plain.clone()),
            ..Default::default()
        };
        let e = a.config().unwrap_err().to_string();
        assert!(e.contains("without authentication"), "{e}");
        // nor a non-loopback listener written in the file itself
        std::fs::write(
            &plain,
            "{ mode: \"peer\", listen: { endpoints: [\"tcp/0.0.0.0:7447\"] } }",
        )
        .unwrap();
        let a = ZenohOptions {
            zenoh_config: Some(plain),
            ..Default::default()
        };
        assert!(a.config().is_err());
        // user-password authentication does
        let users = dir.join("users.txt");
        std::fs::write(&users, "reachy:secret\n").unwrap();
        let auth = dir.join("auth.json5");
        std::fs::write(
            &auth,
            format!(
                "{{ transport: {{ auth: {{ usrpwd: {{ dictionary_file: {:?} }} }} }} }}",
                users.display().to_string()
            ),
        )
        .unwrap();
        let a = ZenohOptions {
            listen: vec!["tcp/0.0.0.0:7447".into()],
            zenoh_config: Some(auth),
            ..Default::default()
        };
        a.config().unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let a = ZenohOptions {
            listen: vec!["tcp/127.0.0.1:7447".into()],
            connect: vec!["tcp/127.0.0.1:7448".into()],
            ..Default::default()
        };
        a.config().unwrap();
    }
}
