//! WebXR teleoperation: a headset's browser, no app to install. [`Server`] serves a page
//! (`webxr.html`) and a WebSocket on one address — HTTPS with a self-signed certificate made at
//! start (WebXR needs a secure context), or plain HTTP on a loopback address (a browser on this
//! machine, or a headset behind `adb reverse`). The page sends the headset's and controllers'
//! poses every XR frame (72–90 Hz) and shows the robot's head camera; [`run`] turns them into
//! motion:
//!
//! - squeezing a controller's grip is the dead-man of its hand (right → `r_arm`, left →
//!   `l_arm`): while held, the TCP follows the controller *relative to where both were when the
//!   grip was squeezed*; let go and the arm holds;
//! - the trigger closes that hand's gripper (released: open);
//! - the headset's orientation points the head (neck yaw and pitch).
//!
//! A stream that goes quiet for [`STALE`] holds the robot (and needs a new squeeze).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nalgebra::{Matrix3, Rotation3, UnitQuaternion, Vector3};
use reachy_api::client::RobotClient;
use reachy_api::RobotIo;
use serde::Deserialize;

/// The page.
pub const PAGE: &str = include_str!("webxr.html");

/// Poses older than this hold the robot.
pub const STALE: Duration = Duration::from_millis(300);

/// A pose as WebXR gives it (metres, quaternion x y z w), in its `local-floor` space: y up,
/// −z forward, x right.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct XrPose {
    /// Position.
    pub position: [f32; 3],
    /// Orientation.
    pub orientation: [f32; 4],
}

/// One controller.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct XrHand {
    /// `left` or `right`.
    pub hand: String,
    /// The trigger, 0..1.
    #[serde(default)]
    pub trigger: f32,
    /// The grip is squeezed.
    #[serde(default)]
    pub grip: bool,
    /// The grip's pose.
    #[serde(flatten)]
    pub pose: XrPose,
}

/// What the page sends every XR frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct XrFrame {
    /// The page's clock (ms).
    #[serde(default)]
    pub t: f64,
    /// The headset.
    #[serde(default)]
    pub head: Option<XrPose>,
    /// The controllers.
    #[serde(default)]
    pub hands: Vec<XrHand>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PageMessage {
    Hello { hello: serde_json::Value },
    Error { error: String },
    Frame(XrFrame),
}

/// The server's failures.
#[derive(Debug, thiserror::Error)]
pub enum XrError {
    /// The address would not bind.
    #[error("listening on {0}: {1}")]
    Bind(String, std::io::Error),
    /// The certificate.
    #[error("making the self-signed certificate: {0}")]
    Tls(String),
}

struct Shared {
    latest: Mutex<Option<(Instant, XrFrame)>>,
    /// The head camera, downscaled: [u16 w, u16 h, RGB…], and its number.
    camera: Mutex<(u64, Arc<Vec<u8>>)>,
    events: Mutex<VecDeque<String>>,
    frames: AtomicU64,
    bad: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn new() -> Self {
        Self {
            latest: Mutex::new(None),
            camera: Mutex::new((0, Arc::new(Vec::new()))),
            events: Mutex::new(VecDeque::new()),
            frames: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }
    fn say(&self, m: String) {
        if let Ok(mut e) = self.events.lock() {
            if e.len() < 100 {
                e.push_back(m);
            }
        }
    }
    fn on_text(&self, text: &str) {
        match serde_json::from_str::<PageMessage>(text) {
            Ok(PageMessage::Frame(f)) => {
                let ok = f
                    .hands
                    .iter()
                    .flat_map(|h| h.pose.position.iter().chain(&h.pose.orientation))
                    .chain(
                        f.head
                            .iter()
                            .flat_map(|h| h.position.iter().chain(&h.orientation)),
                    )
                    .all(|x| x.is_finite());
                if !ok {
                    self.bad.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.frames.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = self.latest.lock() {
                    *l = Some((Instant::now(), f));
                }
            }
            Ok(PageMessage::Hello { hello }) => self.say(format!(
                "page connected: webxr {}, script errors: {}",
                if hello["xr"] == true {
                    "available"
                } else {
                    "not available"
                },
                match hello["errors"].as_array() {
                    Some(e) if !e.is_empty() => format!("{e:?}"),
                    _ => "none".into(),
                }
            )),
            Ok(PageMessage::Error { error }) => self.say(format!("page error: {error}")),
            Err(e) => {
                if self.bad.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.say(format!(
                        "a message from the page is not a pose frame ({e}); dropped"
                    ));
                }
            }
        }
    }
}

/// The page's server.
pub struct Server {
    shared: Arc<Shared>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
}

impl Server {
    /// Listen on `addr`: HTTPS with a fresh self-signed certificate unless it is a loopback
    /// address (plain HTTP there).
    pub fn start(addr: &str) -> Result<Self, XrError> {
        let listener = TcpListener::bind(addr).map_err(|e| XrError::Bind(addr.into(), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| XrError::Bind(addr.into(), e))?;
        let tls = if local.ip().is_loopback() {
            None
        } else {
            Some(Arc::new(tls_config(local)?))
        };
        let shared = Arc::new(Shared::new());
        let sh = shared.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::Builder::new()
            .name("webxr server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if sh.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let (sh, tls) = (sh.clone(), tls.clone());
                    let _ = std::thread::Builder::new()
                        .name("webxr connection".into())
                        .spawn(move || connection(stream, tls, &sh));
                }
            })
            .map_err(|e| XrError::Bind(addr.into(), e))?;
        Ok(Self {
            shared,
            addr: local,
            scheme,
        })
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.addr)
    }

    /// The latest pose frame and its age.
    pub fn latest(&self) -> Option<(Duration, XrFrame)> {
        let l = self.shared.latest.lock().ok()?;
        l.as_ref().map(|(t, f)| (t.elapsed(), f.clone()))
    }

    /// Messages for the operator since the last call (page connected, page errors, bad input).
    pub fn events(&self) -> Vec<String> {
        self.shared
            .events
            .lock()
            .map(|mut e| e.drain(..).collect())
            .unwrap_or_default()
    }

    /// Pose frames received, and messages dropped as malformed.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.frames.load(Ordering::Relaxed),
            self.shared.bad.load(Ordering::Relaxed),
        )
    }

    /// Show this camera frame on the page (downscaled to at most 320 pixels wide).
    pub fn set_camera(&self, f: &reachy_api::schema::CameraFrame) {
        if !f.is_rgb8() {
            return;
        }
        let step = f.width.div_ceil(320).max(1);
        let (w, h) = (f.width / step, f.height / step);
        let mut out = Vec::with_capacity(4 + (w * h * 3) as usize);
        out.extend_from_slice(&(w as u16).to_le_bytes());
        out.extend_from_slice(&(h as u16).to_le_bytes());
        for y in 0..h {
            for x in 0..w {
                let i = (((y * step) * f.width + x * step) * 3) as usize;
                out.extend_from_slice(&f.data[i..i + 3]);
            }
        }
        if let Ok(mut c) = self.shared.camera.lock() {
            *c = (c.0 + 1, Arc::new(out));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // wake the acceptor
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn tls_config(addr: SocketAddr) -> Result<rustls::ServerConfig, XrError> {
    let mut names = vec!["localhost".to_string(), addr.ip().to_string()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        names.push(h.trim().to_string());
    }
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| XrError::Tls(e.to_string()))?;
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| XrError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| XrError::Tls(e.to_string()))
}

fn connection(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, sh: &Shared) {
    let _ = stream.set_nodelay(true);
    // reads wake every 20 ms, so the socket also sends camera frames and sees `stop`
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    match tls {
        None => serve_stream(stream, sh),
        Some(cfg) => {
            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                return;
            };
            serve_stream(rustls::StreamOwned::new(conn, stream), sh)
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One HTTP request: the page, or the WebSocket.
fn serve_stream<S: Read + Write>(mut s: S, sh: &Shared) {
    // the request head, up to 16 KiB, within 5 s
    let mut head = Vec::new();
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || t0.elapsed() > Duration::from_secs(5) {
            return;
        }
        match s.read(&mut b) {
            Ok(0) => return,
            Ok(_) => head.push(b[0]),
            Err(e) if would_block(&e) => continue,
            Err(_) => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or("");
    let path = request.split(' ').nth(1).unwrap_or("");
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let reply = |s: &mut S, status: &str, kind: &str, body: &[u8]| {
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
        let _ = s.flush();
    };
    match (request.split(' ').next(), path) {
        (Some("GET"), "/" | "/index.html") => reply(
            &mut s,
            "200 OK",
            "text/html; charset=utf-8",
            PAGE.as_bytes(),
        ),
        (Some("GET"), "/ws") => {
            let Some(key) = header("sec-websocket-key") else {
                reply(
                    &mut s,
                    "400 Bad Request",
                    "text/plain",
                    b"a WebSocket upgrade\n",
                );
                return;
            };
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let _ = write!(
                s,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let _ = s.flush();
            websocket(
                tungstenite::WebSocket::from_raw_socket(
                    s,
                    tungstenite::protocol::Role::Server,
                    None,
                ),
                sh,
            );
        }
        _ => reply(
            &mut s,
            "404 Not Found",
            "text/plain",
            b"not here: / or /ws\n",
        ),
    }
}

fn websocket<S: Read + Write>(mut ws: tungstenite::WebSocket<S>, sh: &Shared) {
    use tungstenite::{Error, Message};
    let mut sent_camera = 0u64;
    let mut last_camera = Instant::now() - Duration::from_secs(1);
    while !sh.stop.load(Ordering::Relaxed) {
        match ws.read() {
            Ok(Message::Text(t)) => sh.on_text(t.as_str()),
            Ok(Message::Binary(_)) => {
                sh.bad.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(Error::Io(e)) if would_block(&e) => {}
            Err(_) => break,
        }
        // the head camera at up to 15 fps
        if last_camera.elapsed() >= Duration::from_millis(66) {
            let frame = sh.camera.lock().ok().map(|c| (c.0, c.1.clone()));
            if let Some((n, bytes)) = frame {
                if n != sent_camera && !bytes.is_empty() {
                    match ws.send(Message::Binary(bytes.as_ref().clone().into())) {
                        Ok(()) => {}
                        Err(Error::Io(e)) if would_block(&e) => {}
                        Err(_) => break,
                    }
                    sent_camera = n;
                    last_camera = Instant::now();
                }
            }
        }
    }
    let _ = ws.close(None);
}

/// WebXR's `local-floor` axes (x right, y up, −z forward) → the robot's (x forward, y left,
/// z up).
fn xr_to_robot() -> Rotation3<f32> {
    Rotation3::from_matrix_unchecked(Matrix3::new(
        0.0, 0.0, -1.0, //
        -1.0, 0.0, 0.0, //
        0.0, 1.0, 0.0,
    ))
}

fn quat([x, y, z, w]: [f32; 4]) -> UnitQuaternion<f32> {
    UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(w, x, y, z))
}

/// A squeezed grip: where the controller and the TCP were when it began.
#[derive(Debug, Clone, Copy)]
struct Grip {
    ctrl: (Vector3<f32>, UnitQuaternion<f32>),
    tcp: (Vector3<f32>, UnitQuaternion<f32>),
}

/// The TCP target for controller pose `ctrl` during `grip`: the controller's motion since the
/// squeeze, in the robot's axes, applied to the TCP's pose at the squeeze.
fn follow(
    grip: &Grip,
    ctrl: (Vector3<f32>, UnitQuaternion<f32>),
) -> (Vector3<f32>, UnitQuaternion<f32>) {
    let m = xr_to_robot();
    let mq = UnitQuaternion::from_rotation_matrix(&m);
    let dp = m * (ctrl.0 - grip.ctrl.0);
    let dq = mq * (ctrl.1 * grip.ctrl.1.inverse()) * mq.inverse();
    (grip.tcp.0 + dp, dq * grip.tcp.1)
}

/// Neck yaw and pitch that point the head where the headset looks.
fn look(head: &XrPose) -> (f32, f32) {
    let f = xr_to_robot() * (quat(head.orientation) * Vector3::new(0.0, 0.0, -1.0));
    let yaw = f.y.atan2(f.x);
    // neck_pitch > 0 looks down
    let pitch = -f.z.atan2((f.x * f.x + f.y * f.y).sqrt());
    (yaw, pitch)
}

/// What a WebXR session did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct XrSummary {
    /// Pose frames received.
    pub frames: u64,
    /// Messages dropped as malformed.
    pub bad: u64,
    /// TCP targets sent.
    pub targets: u64,
    /// Squeezes (grips begun).
    pub grips: u64,
    /// Times a quiet stream held the robot.
    pub stale_holds: u64,
}

/// Drive `client`'s robot (its lease held) from `server`'s poses at `rate` Hz until `stop`;
/// `say` gets the operator's messages. With `camera`, its frames go to the page.
pub fn run(
    client: &mut RobotClient,
    server: &Server,
    rate: f64,
    camera: Option<&reachy_api::net::Latest<reachy_api::schema::CameraFrame>>,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<XrSummary> {
    let names = client.joint_names();
    let neck: Vec<(usize, f32, f32)> = ["neck_yaw", "neck_pitch"]
        .iter()
        .filter_map(|n| {
            let i = names.iter().position(|m| m == n)?;
            let j = client.info().joints.iter().find(|j| j.name == *n)?;
            Some((i, j.lower, j.upper))
        })
        .collect();
    let mut grips: std::collections::BTreeMap<String, Grip> = Default::default();
    let mut held: std::collections::BTreeMap<String, ([f32; 3], [f32; 4], f32)> =
        Default::default();
    let mut summary = XrSummary::default();
    let mut was_stale = true;
    let mut camera_seq = u64::MAX;
    let mut pace = super::Pace::new(rate.clamp(1.0, 1000.0));
    while !stop.load(Ordering::Relaxed) {
        for e in server.events() {
            say(&e);
        }
        if let Some(c) = camera {
            let f = c.lock().ok().and_then(|l| l.clone());
            if let Some(f) = f.filter(|f| f.seq != camera_seq) {
                camera_seq = f.seq;
                server.set_camera(&f);
            }
        }
        let latest = server.latest().filter(|(age, _)| *age < STALE);
        match latest {
            None => {
                if !was_stale {
                    summary.stale_holds += 1;
                    say("the headset's stream went quiet: holding (squeeze again to drive)");
                }
                was_stale = true;
                grips.clear();
            }
            Some((_, frame)) => {
                was_stale = false;
                let s = client.state()?;
                for h in &frame.hands {
                    let arm = match h.hand.as_str() {
                        "right" => "r_arm",
                        "left" => "l_arm",
                        _ => continue,
                    };
                    let ctrl = (Vector3::from(h.pose.position), quat(h.pose.orientation));
                    if !h.grip {
                        grips.remove(arm);
                        continue;
                    }
                    let grip = match grips.get(arm) {
                        Some(g) => *g,
                        None => {
                            let Some(p) = s.tcp.iter().find(|p| p.name == arm) else {
                                continue;
                            };
                            let g = Grip {
                                ctrl,
                                tcp: (Vector3::from(p.pose.position), quat(p.pose.orientation)),
                            };
                            summary.grips += 1;
                            grips.insert(arm.to_string(), g);
                            g
                        }
                    };
                    let (p, q) = follow(&grip, ctrl);
                    let gripper = 1.0 - h.trigger.clamp(0.0, 1.0);
                    held.insert(arm.to_string(), (p.into(), [q.i, q.j, q.k, q.w], gripper));
                }
                if let Some(head) = &frame.head {
                    let (yaw, pitch) = look(head);
                    let (ix, tx): (Vec<usize>, Vec<f32>) = neck
                        .iter()
                        .zip([yaw, pitch])
                        .map(|(&(i, lo, hi), v)| (i, v.clamp(lo, hi)))
                        .unzip();
                    client.command(&ix, &tx)?;
                }
            }
        }
        // every arm driven so far gets its target (the last one while its grip is let go:
        // the lease stays alive and the arm holds)
        for (arm, (p, q, g)) in &held {
            client.cartesian(arm, *p, Some(*q), Some(*g))?;
            summary.targets += 1;
        }
        pace.wait();
    }
    (summary.frames, summary.bad) = server.counts();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_motion_maps_to_the_robots_axes() {
        let id = UnitQuaternion::identity();
        let g = Grip {
            ctrl: (Vector3::new(0.1, 1.2, -0.3), id),
            tcp: (Vector3::new(0.3, -0.2, 0.9), id),
        };
        // 10 cm forward (−z in WebXR), 5 cm up, 2 cm right
        let (p, q) = follow(&g, (Vector3::new(0.12, 1.25, -0.4), id));
        assert!((p - Vector3::new(0.4, -0.22, 0.95)).norm() < 1e-5, "{p}");
        assert!(q.angle() < 1e-6);
        // turning the controller left (about WebXR's +y) turns the TCP about the robot's +z
        let yaw = UnitQuaternion::from_axis_angle(&Vector3::y_axis(), 0.3);
        let (_, q) = follow(&g, (g.ctrl.0, yaw));
        let (axis, angle) = q.axis_angle().unwrap();
        assert!(
            (angle - 0.3).abs() < 1e-5 && (axis.z - 1.0).abs() < 1e-5,
            "{axis:?} {angle}"
        );
    }

    #[test]
    fn the_headset_points_the_head() {
        let ahead = XrPose {
            position: [0.0, 1.6, 0.0],
            orientation: [0.0, 0.0, 0.0, 1.0],
        };
        let (y, p) = look(&ahead);
        assert!(y.abs() < 1e-6 && p.abs() < 1e-6);
        // looking 0.4 rad left and 0.3 rad down
        let q = UnitQuaternion::from_axis_angle(&Vector3::y_axis(), 0.4)
            * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), -0.3);
        let (y, p) = look(&XrPose {
            position: [0.0, 1.6, 0.0],
            orientation: [q.i, q.j, q.k, q.w],
        });
        assert!((y - 0.4).abs() < 1e-4 && (p - 0.3).abs() < 1e-4, "{y} {p}");
    }

    #[test]
    fn page_messages_are_checked_at_the_edge() {
        let sh = Shared::new();
        sh.on_text("garbage");
        sh.on_text(
            r#"{"hands": [{"hand": "right", "position": [0, 0], "orientation": [0, 0, 0, 1]}]}"#,
        );
        sh.on_text(r#"{"hands": [{"hand": "right", "grip": true, "position": [1e39, 0, 0], "orientation": [0, 0, 0, 1]}]}"#);
        assert_eq!(sh.bad.load(Ordering::Relaxed), 3);
        assert!(sh.latest.lock().unwrap().is_none());
        sh.on_text(r#"{"t": 5, "hands": [{"hand": "right", "grip": true, "trigger": 0.5, "position": [0, 1, 0], "orientation": [0, 0, 0, 1]}]}"#);
        assert_eq!(sh.frames.load(Ordering::Relaxed), 1);
        sh.on_text(r#"{"hello": {"xr": false, "errors": []}}"#);
        let e = sh.events.lock().unwrap().clone();
        assert!(e.iter().any(|m| m.contains("page connected")), "{e:?}");
    }
}
