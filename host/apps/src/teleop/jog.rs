//! The jog loop that the hand-held sources share (keyboard, gamepad): a device says, tick by
//! tick, which way the operator pushes ([`Intent`]); the loop integrates that into a TCP target
//! for the selected arm (or look angles for the head) and streams it to the daemon, which solves
//! it with its IK and applies its limits. The loop keeps the target on a leash around the
//! measured TCP (a target the arm cannot follow does not run away), goes back to the last target
//! the daemon accepted when it answers `unreachable`, and holds the pose when the device says
//! nothing, loses its dead-man, or is lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nalgebra::{UnitQuaternion, Vector3};
use reachy_api::client::RobotClient;
use reachy_api::schema::RobotState;
use reachy_api::RobotIo;

/// How far the target may run ahead of the measured TCP (m): far enough that it never pulls the
/// target while the arm follows (a leash that tight feeds the arm's lag back into its target),
/// near enough that an arm held back (by an obstacle) does not leave its target running off.
pub const LEASH_M: f32 = 0.15;
/// How far the target's orientation may run ahead of the measured TCP's (rad).
pub const LEASH_RAD: f32 = 0.6;

/// What the operator asks for at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intent {
    /// Linear jog per base axis x (forward), y (left), z (up), each within [−1, 1] of the speed.
    pub linear: [f32; 3],
    /// Rotation about the TCP's own x, y, z axes, each within [−1, 1] of the angular speed.
    pub angular: [f32; 3],
    /// The gripper.
    pub gripper: Gripper,
    /// Next part (r_arm → l_arm → head).
    pub switch: bool,
    /// Send the selected arm home (a goto).
    pub home: bool,
    /// End teleoperation, holding the pose.
    pub quit: bool,
    /// The dead-man is held: motion only while true (keyboard: always).
    pub deadman: bool,
    /// Something to tell the operator (an unknown key, a lost device).
    pub message: Option<String>,
}

/// What the device asks of the gripper.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Gripper {
    /// Leave it.
    #[default]
    Keep,
    /// Open if closed, close if open.
    Toggle,
    /// This opening, 0 (closed) to 1 (open).
    Set(f32),
    /// Open (+) or close (−) at this fraction of full travel per second.
    Rate(f32),
}

/// An input device, polled once per tick.
pub trait Device {
    /// What the operator asks for now. An error means the device is gone: the loop holds the
    /// pose and ends with it.
    fn intent(&mut self, now: Instant) -> Result<Intent, DeviceError>;
}

/// A device that stopped working.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

/// The jog loop's settings.
#[derive(Debug, Clone)]
pub struct JogConfig {
    /// The arm selected first (`r_arm`, `l_arm`).
    pub arm: String,
    /// Loop rate (Hz).
    pub rate: f64,
    /// Linear jog speed (m/s).
    pub speed: f32,
    /// Angular jog speed (rad/s), also the head's.
    pub angular_speed: f32,
    /// Goto duration of `home` (s).
    pub home_s: f32,
}

impl Default for JogConfig {
    fn default() -> Self {
        Self {
            arm: "r_arm".into(),
            rate: 50.0,
            speed: 0.05,
            angular_speed: 0.5,
            home_s: 2.0,
        }
    }
}

/// The loop's view, for a live display.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The selected part (`r_arm`, `l_arm`, `head`).
    pub part: String,
    /// Its joints and their measured positions.
    pub joints: Vec<(String, f32)>,
    /// The measured TCP (position, xyzw) of the selected arm.
    pub tcp: Option<([f32; 3], [f32; 4])>,
    /// The target being streamed.
    pub target: Option<([f32; 3], [f32; 4])>,
    /// The gripper opening asked for.
    pub gripper: Option<f32>,
    /// The daemon's verdict on the last target: `ok`, `clamped`, `unreachable`, and why.
    pub verdict: Option<(String, Option<String>)>,
    /// Moving now (the device pushes and the dead-man is held).
    pub moving: bool,
    /// The dead-man is held.
    pub deadman: bool,
    /// Ticks per second over the last second.
    pub rate_hz: f64,
    /// Target sent → the state acknowledging it (ms), the latest.
    pub latency_ms: Option<f64>,
    /// The latest message for the operator.
    pub message: Option<String>,
    /// Faults the daemon reports.
    pub faults: Vec<String>,
}

impl Status {
    /// The status as the lines of a table (for a terminal redrawn in place).
    pub fn table(&self) -> Vec<String> {
        let mut l = Vec::new();
        let f3 = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{x:+.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        l.push(format!(
            "part {:<6} {}  dead-man {}  {:.0} Hz  latency {}",
            self.part,
            if self.moving { "moving" } else { "holding" },
            if self.deadman { "held" } else { "released" },
            self.rate_hz,
            self.latency_ms
                .map(|ms| format!("{ms:.1} ms"))
                .unwrap_or_else(|| "-".into())
        ));
        if let Some((p, q)) = self.tcp {
            l.push(format!("tcp     xyz {}  q {}", f3(&p), f3(&q)));
        }
        if let Some((p, q)) = self.target {
            l.push(format!("target  xyz {}  q {}", f3(&p), f3(&q)));
        }
        if let Some(g) = self.gripper {
            l.push(format!("gripper {:.0} %", g * 100.0));
        }
        if let Some((v, why)) = &self.verdict {
            l.push(format!(
                "IK      {v}{}",
                why.as_ref().map(|w| format!(": {w}")).unwrap_or_default()
            ));
        }
        for (n, p) in &self.joints {
            l.push(format!("  {n:<18} {p:+.3} rad"));
        }
        if !self.faults.is_empty() {
            l.push(format!("faults  {}", self.faults.join(", ")));
        }
        if let Some(m) = &self.message {
            l.push(format!("> {m}"));
        }
        l
    }
}

/// What a jog session did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JogSummary {
    /// Ticks run.
    pub ticks: u64,
    /// Targets streamed.
    pub targets: u64,
    /// Verdicts of the daemon on them, by kind.
    pub verdicts: std::collections::BTreeMap<String, u64>,
    /// Why it ended (`quit`, `stopped`, or the device's error).
    pub ended: String,
    /// Target sent → acknowledged, p50 and p99 (ms).
    pub latency_ms: Option<(f64, f64)>,
}

/// One arm's streamed target and what the daemon said of it.
struct ArmTarget {
    p: Vector3<f32>,
    q: UnitQuaternion<f32>,
    gripper: f32,
    /// The last target the daemon did not answer `unreachable`.
    good: (Vector3<f32>, UnitQuaternion<f32>),
    /// The operator rotated it: the orientation is part of the target (until then the IK solves
    /// the position alone, and the wrist keeps where it is, which near the hanging home pose is
    /// far better conditioned than holding the measured orientation exactly).
    oriented: bool,
}

fn measured(s: &RobotState, arm: &str) -> Option<(Vector3<f32>, UnitQuaternion<f32>)> {
    let p = s.tcp.iter().find(|p| p.name == arm)?;
    let [x, y, z, w] = p.pose.orientation;
    Some((
        Vector3::from(p.pose.position),
        UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(w, x, y, z)),
    ))
}

fn gripper_of(s: &RobotState, arm: &str) -> f32 {
    // `r_gripper` then `l_gripper`
    let i = usize::from(arm.starts_with('l'));
    s.gripper.get(i).copied().unwrap_or(0.0)
}

fn xyzw(q: &UnitQuaternion<f32>) -> [f32; 4] {
    [q.i, q.j, q.k, q.w]
}

/// Run the jog loop on `client`'s robot (its lease held) from `device` until it quits, `stop`
/// is set, or it fails; `ui` sees the status every tick.
pub fn jog(
    client: &mut RobotClient,
    device: &mut dyn Device,
    cfg: &JogConfig,
    stop: &AtomicBool,
    ui: &mut dyn FnMut(&Status),
) -> anyhow::Result<JogSummary> {
    if !(cfg.rate > 0.0 && cfg.rate <= 1000.0) {
        anyhow::bail!("--rate must be within 0..=1000 Hz");
    }
    let speeds_ok =
        cfg.speed > 0.0 && cfg.speed <= 0.5 && cfg.angular_speed > 0.0 && cfg.angular_speed <= 3.0;
    if !speeds_ok {
        anyhow::bail!("the jog speed must be within 0..=0.5 m/s and 0..=3 rad/s");
    }
    let chains = client.info().chains.clone();
    let mut parts: Vec<String> = chains
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n.ends_with("_arm"))
        .collect();
    let Some(first) = parts.iter().position(|p| *p == cfg.arm) else {
        anyhow::bail!(
            "arm `{}` is not an arm of this robot (known: {})",
            cfg.arm,
            parts.join(", ")
        );
    };
    parts.rotate_left(first);
    let head: Vec<String> = chains
        .iter()
        .find(|(n, _)| n == "head")
        .map(|(_, j)| j.clone())
        .unwrap_or_default();
    if !head.is_empty() {
        parts.push("head".into());
    }
    let names = client.joint_names();
    let idx = |n: &str| names.iter().position(|m| m == n);
    let joints_of = |part: &str| -> Vec<String> {
        chains
            .iter()
            .find(|(n, _)| n == part)
            .map(|(_, j)| j.clone())
            .unwrap_or_default()
    };
    let mut part = 0usize;
    let mut arms: std::collections::BTreeMap<String, ArmTarget> = Default::default();
    // head look angles: neck joint → target
    let mut look: Vec<(usize, f32)> = Vec::new();
    let mut status = Status::default();
    let mut summary = JogSummary::default();
    // Targets sent and not yet acknowledged: (arm, the daemon's count of that arm's targets
    // when it was sent, when). The daemon takes the latest target each period (a stream sent
    // faster than it runs is thinned), so the first state whose count passes a target's base
    // shows the newest target sent before it: that one's latency counts, older ones were
    // superseded.
    let mut pending: VecDeque<(String, u64, Instant)> = VecDeque::new();
    let mut latencies: Vec<f64> = Vec::new();
    let mut ticks_window: VecDeque<Instant> = VecDeque::new();
    let mut last = Instant::now();
    let mut pace = super::Pace::new(cfg.rate);
    loop {
        if stop.load(Ordering::Relaxed) {
            summary.ended = "stopped".into();
            break;
        }
        let now = Instant::now();
        let dt = (now - last).as_secs_f32().min(0.1);
        last = now;
        let s = client.state()?;
        let intent = match device.intent(now) {
            Ok(i) => i,
            Err(e) => {
                summary.ended = format!("the device was lost: {e}");
                status.message = Some(summary.ended.clone());
                ui(&status);
                break;
            }
        };
        if intent.message.is_some() {
            status.message = intent.message.clone();
        }
        if intent.quit {
            summary.ended = "quit".into();
            break;
        }
        if intent.switch {
            part = (part + 1) % parts.len();
            // the next part starts from where it is
            arms.remove(&parts[part]);
            look.clear();
            status.verdict = None;
            status.message = Some(format!("now driving {}", parts[part]));
        }
        let name = parts[part].clone();
        if intent.home && name != "head" {
            let js = joints_of(&name);
            let refs: Vec<&str> = js.iter().map(String::as_str).collect();
            let home = reachy_sim::physics::home_pose(&refs);
            status.message = Some(format!("{name}: going home"));
            ui(&status);
            let r = client.goto(&js, &home, cfg.home_s)?;
            status.message = Some(format!("{name}: home ({})", r.status));
            arms.remove(&name);
            pending.clear();
        }
        // the daemon's answers to the targets sent so far
        for c in &s.cartesian {
            let newest = pending
                .iter()
                .filter(|(a, base, _)| *a == c.arm && *base < c.count)
                .map(|(_, _, at)| *at)
                .max();
            if let Some(at) = newest {
                pending.retain(|(a, base, _)| !(*a == c.arm && *base < c.count));
                latencies.push(now.duration_since(at).as_secs_f64() * 1e3);
                status.latency_ms = latencies.last().copied();
            }
            if c.arm == name {
                status.verdict = Some((c.status.clone(), c.reason.clone()));
            }
        }
        let push = intent.deadman
            && (intent
                .linear
                .iter()
                .chain(&intent.angular)
                .any(|v| *v != 0.0)
                || intent.gripper != Gripper::Keep);
        if name == "head" {
            if look.is_empty() {
                look = head
                    .iter()
                    .filter_map(|j| idx(j).map(|i| (i, s.position[i])))
                    .collect();
            }
            if intent.deadman {
                let w = cfg.angular_speed * dt;
                for (i, t) in &mut look {
                    let v = match names[*i].as_str() {
                        // left/right and about the TCP's z: yaw; up/down and about y: pitch
                        "neck_yaw" => intent.linear[1] + intent.angular[2],
                        "neck_pitch" => -intent.linear[2] + intent.angular[1],
                        "neck_roll" => intent.angular[0],
                        _ => 0.0,
                    };
                    *t += v.clamp(-1.0, 1.0) * w;
                    // within the joint's limits and a leash of the measured angle
                    if let Some(j) = client.info().joints.iter().find(|j| j.name == names[*i]) {
                        *t = t.clamp(j.lower, j.upper);
                    }
                    *t = t.clamp(s.position[*i] - LEASH_RAD, s.position[*i] + LEASH_RAD);
                }
            }
            let (ix, tx): (Vec<usize>, Vec<f32>) = look.iter().copied().unzip();
            client.command(&ix, &tx)?;
            status.tcp = None;
            status.target = None;
            status.gripper = None;
            status.verdict = None;
        } else {
            let Some((mp, mq)) = measured(&s, &name) else {
                anyhow::bail!("the daemon's state has no TCP for {name}");
            };
            let t = arms.entry(name.clone()).or_insert_with(|| ArmTarget {
                p: mp,
                q: mq,
                gripper: gripper_of(&s, &name),
                good: (mp, mq),
                oriented: false,
            });
            if let Some((v, _)) = &status.verdict {
                if v == "unreachable" {
                    // the daemon holds the last target it could solve: so does the jog
                    (t.p, t.q) = t.good;
                } else {
                    t.good = (t.p, t.q);
                }
            }
            if !t.oriented {
                // rotation starts from where the wrist is
                t.q = mq;
            }
            if intent.deadman {
                let lin = Vector3::from(intent.linear.map(|v| v.clamp(-1.0, 1.0)));
                t.p += lin * cfg.speed * dt;
                let ang = Vector3::from(intent.angular.map(|v| v.clamp(-1.0, 1.0)));
                t.oriented |= ang.norm() > 0.0;
                t.q *= UnitQuaternion::from_scaled_axis(ang * cfg.angular_speed * dt);
                match intent.gripper {
                    Gripper::Keep => {}
                    Gripper::Toggle => t.gripper = if t.gripper > 0.5 { 0.0 } else { 1.0 },
                    Gripper::Set(g) => t.gripper = g.clamp(0.0, 1.0),
                    Gripper::Rate(r) => t.gripper = (t.gripper + r * dt).clamp(0.0, 1.0),
                }
            }
            // on a leash around the measured TCP
            let d = t.p - mp;
            if d.norm() > LEASH_M {
                t.p = mp + d.normalize() * LEASH_M;
            }
            if let Some((axis, a)) = (mq.inverse() * t.q).axis_angle() {
                if a > LEASH_RAD {
                    t.q = mq * UnitQuaternion::from_axis_angle(&axis, LEASH_RAD);
                }
            }
            let q = t.oriented.then(|| xyzw(&t.q));
            client.cartesian(&name, t.p.into(), q, Some(t.gripper))?;
            let base = s
                .cartesian
                .iter()
                .find(|c| c.arm == name)
                .map_or(0, |c| c.count);
            pending.push_back((name.clone(), base, now));
            if pending.len() > 1000 {
                pending.pop_front();
            }
            summary.targets += 1;
            status.tcp = Some((mp.into(), xyzw(&mq)));
            status.target = Some((t.p.into(), xyzw(&t.q)));
            status.gripper = Some(t.gripper);
        }
        if let Some((v, _)) = &status.verdict {
            if push {
                *summary.verdicts.entry(v.clone()).or_default() += 1;
            }
        }
        summary.ticks += 1;
        ticks_window.push_back(now);
        while ticks_window
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            ticks_window.pop_front();
        }
        status.rate_hz = ticks_window.len() as f64;
        status.part = name.clone();
        status.moving = push;
        status.deadman = intent.deadman;
        status.joints = joints_of(&name)
            .iter()
            .filter_map(|j| idx(j).map(|i| (j.clone(), s.position[i])))
            .collect();
        status.faults = s
            .faults
            .iter()
            .map(|f| format!("{} {}", f.joint, f.fault))
            .collect();
        ui(&status);
        pace.wait();
    }
    summary.latency_ms = super::p50_p99(&mut latencies);
    Ok(summary)
}
