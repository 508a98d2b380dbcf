//! Teleoperation from a Cartesian pose stream, the way a VR headset bridge or a space-mouse
//! driver delivers it: one JSON object per line,
//!
//! ```text
//! {"arm": "r_arm", "position": [0.35, -0.25, 0.85], "orientation": [0, 0, 0, 1], "gripper": 0.8}
//! {"hold": 1.5}
//! ```
//!
//! Each target goes to the daemon as it arrives (its IK solves it); `hold` keeps streaming the last
//! targets for that many seconds (a silent stream holds the robot after 0.5 s), and so does the end
//! of the input until the arms are within 1 cm of their last targets (5 s at most). Every line gets
//! one JSON line back: the daemon's verdict (`ok`, `clamped`, `unreachable` with the reason) and
//! the measured TCP, or the error in the line; the last line is a summary. `reachy teleop` and
//! `reachy record --teleop pose-stream` run it, on stdin or, for a remote operator station, on
//! a zenoh key (`--pose-key KEY`: the same lines as payloads; the answers are published on
//! `KEY/answer`).

use std::io::BufRead;
use std::time::{Duration, Instant};

use zenoh::Wait;

use reachy_api::client::RobotClient;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    arm: String,
    position: [f32; 3],
    #[serde(default)]
    orientation: Option<[f32; 4]>,
    #[serde(default)]
    gripper: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Line {
    Hold { hold: f64 },
    Target(Target),
}

/// Drive `client`'s robot from the pose stream `input` (its lease held), re-sending held targets
/// at `rate` Hz; each answer line goes to `out_line`. Returns the number of bad lines.
pub fn pose_stream(
    client: &RobotClient,
    input: impl BufRead,
    rate: f64,
    out_line: &mut dyn FnMut(serde_json::Value),
) -> anyhow::Result<u64> {
    pose_lines(client, input.lines(), rate, out_line)
}

/// The lines of a pose stream published on the zenoh key `key` (UTF-8 payloads, one message or
/// several lines each, as a remote operator station sends them), until `stop` is set.
pub fn zenoh_lines<'a>(
    session: &zenoh::Session,
    key: &str,
    stop: &'a std::sync::atomic::AtomicBool,
) -> anyhow::Result<(
    impl Iterator<Item = std::io::Result<String>> + 'a,
    zenoh::pubsub::Subscriber<()>,
)> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    let sub = session
        .declare_subscriber(key)
        .callback(move |s| {
            let text = String::from_utf8_lossy(&s.payload().to_bytes()).into_owned();
            if let Ok(tx) = tx.lock() {
                for l in text.lines() {
                    let _ = tx.send(l.to_string());
                }
            }
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("subscribing to {key}: {e}"))?;
    let it = std::iter::from_fn(move || loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => return Some(Ok(l)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    });
    Ok((it, sub))
}

/// [`pose_stream`] over any source of lines.
pub fn pose_lines(
    client: &RobotClient,
    input: impl Iterator<Item = std::io::Result<String>>,
    rate: f64,
    out_line: &mut dyn FnMut(serde_json::Value),
) -> anyhow::Result<u64> {
    if !(rate > 0.0 && rate <= 1000.0) {
        anyhow::bail!("--rate must be within 0..=1000 Hz");
    }
    let first = client.state()?;
    let arms: Vec<String> = client
        .info()
        .chains
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| name.ends_with("_arm"))
        .collect();
    let mut counts: std::collections::BTreeMap<String, u64> = first
        .cartesian
        .iter()
        .map(|c| (c.arm.clone(), c.count))
        .collect();
    let mut last: std::collections::BTreeMap<String, Target> = Default::default();
    let mut tally = std::collections::BTreeMap::<String, u64>::new();
    let mut bad = 0u64;
    for (n, line) in input.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let out = match serde_json::from_str::<Line>(&line) {
            Err(e) => {
                bad += 1;
                serde_json::json!({"line": n + 1, "error": format!("not a target or a hold: {e}")})
            }
            Ok(Line::Hold { hold }) if !(0.0..=3600.0).contains(&hold) => {
                bad += 1;
                serde_json::json!({"line": n + 1, "error": "hold must be within 0..=3600 s"})
            }
            Ok(Line::Hold { hold }) => {
                let t0 = Instant::now();
                let period = Duration::from_secs_f64(1.0 / rate);
                while t0.elapsed().as_secs_f64() < hold {
                    for t in last.values() {
                        client.cartesian(&t.arm, t.position, t.orientation, t.gripper)?;
                        *counts.entry(t.arm.clone()).or_default() += 1;
                    }
                    std::thread::sleep(period);
                }
                let s = client.state()?;
                serde_json::json!({"line": n + 1, "held_s": hold, "tcp": tcps(&s)})
            }
            Ok(Line::Target(t)) if !arms.contains(&t.arm) => {
                bad += 1;
                serde_json::json!({"line": n + 1, "error": format!(
                    "arm `{}` is not an arm of this robot (known: {})", t.arm, arms.join(", "))})
            }
            Ok(Line::Target(t)) => {
                client.cartesian(&t.arm, t.position, t.orientation, t.gripper)?;
                // targets of this arm sent so far: the daemon counts them as it solves them
                let want = counts.get(&t.arm).copied().unwrap_or(0) + 1;
                counts.insert(t.arm.clone(), want);
                // the daemon acknowledges every target with a state at once
                let t0 = Instant::now();
                let verdict = loop {
                    let s = client.state()?;
                    if let Some(c) = s.cartesian.iter().find(|c| c.arm == t.arm) {
                        if c.count >= want {
                            break Some((c.clone(), s));
                        }
                    }
                    if t0.elapsed() > Duration::from_secs(1) {
                        break None;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                };
                match verdict {
                    Some((c, s)) => {
                        *tally.entry(c.status.clone()).or_default() += 1;
                        let o = serde_json::json!({"line": n + 1, "arm": t.arm,
                            "status": c.status, "reason": c.reason, "tcp": tcps(&s)});
                        if c.status != "unreachable" {
                            last.insert(t.arm.clone(), t);
                        }
                        o
                    }
                    None => {
                        bad += 1;
                        // the daemon rejected it (unknown arm, lease lost): say why if it can
                        serde_json::json!({"line": n + 1, "error": format!(
                            "no verdict from the daemon for {} (unknown arm, or the lease \
                             was taken; rejected commands: {})", t.arm, client.state()?.rejected)})
                    }
                }
            }
        };
        out_line(out);
    }
    // the stream ended: keep the last targets streaming until the arms get there (or 5 s), so a
    // short stream moves the arm as far as it asked instead of stopping where it got to
    let t0 = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    while !last.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        let s = client.state()?;
        let arrived = last.values().all(|t| {
            s.tcp.iter().any(|p| {
                p.name == t.arm
                    && p.pose
                        .position
                        .iter()
                        .zip(&t.position)
                        .map(|(x, y)| (x - y) * (x - y))
                        .sum::<f32>()
                        .sqrt()
                        < 0.01
            })
        });
        if arrived {
            break;
        }
        for t in last.values() {
            client.cartesian(&t.arm, t.position, t.orientation, t.gripper)?;
        }
        std::thread::sleep(period);
    }
    let s = client.state()?;
    out_line(
        serde_json::json!({"summary": {"verdicts": tally, "bad_lines": bad, "tcp": tcps(&s),
        "faults": s.faults}}),
    );
    Ok(bad)
}

fn tcps(s: &reachy_api::schema::RobotState) -> serde_json::Value {
    s.tcp
        .iter()
        .map(|p| (p.name.clone(), serde_json::json!(p.pose.position)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
