//! Leader-arm teleoperation: a second Dynamixel bus (the leader, moved by hand with its torque
//! off) read with the firmware crate's bus master, mirrored joint to joint onto the robot's arm
//! and gripper through the daemon.
//!
//! Calibration, as LeRobot does it: torque off, the leader held in the middle of its range
//! (Enter), then moved through each joint's full range (Enter). It is saved as JSON
//! ([`default_calibration_path`]: `~/.config/reachy/leader/<arm>.json`) and reused next time;
//! `--recalibrate` redoes it. The mapping: an arm joint follows the leader's angle from its
//! middle, placed at the middle of the follower joint's range, times `direction` (1, or edit the
//! file to −1 for a leader servo mounted the other way), within the follower's limits; the
//! gripper maps its leader range onto the follower's.
//!
//! Safe start: the follower first moves to the leader's pose with a slow goto, never a jump, and
//! so again whenever the leader comes back after its servos stopped answering (the robot holds
//! meanwhile).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reachy_api::client::RobotClient;
use reachy_api::RobotIo;
use reachy_daemon::serial::{SerialIo, StdClock};
use reachy_firmware::dynamixel::control_table::{position_to_rad, regs};
use reachy_firmware::dynamixel::Master;
use serde::{Deserialize, Serialize};

/// The leader's servos: the arm's bus of the URDF's servo map (joint, ID).
pub type LeaderMap = Vec<(String, u8)>;

/// One leader joint's calibration (raw servo positions, 4096 per turn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointCalibration {
    /// The follower's joint.
    pub joint: String,
    /// Servo ID on the leader bus.
    pub id: u8,
    /// Raw position in the middle of the range.
    pub middle: i32,
    /// Lowest raw position seen while sweeping.
    pub min: i32,
    /// Highest.
    pub max: i32,
    /// 1, or −1 for a servo mounted the other way.
    pub direction: i8,
}

/// A leader arm's calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The follower arm (`r_arm`, `l_arm`).
    pub arm: String,
    /// Joints, the arm's then its gripper.
    pub joints: Vec<JointCalibration>,
}

/// Leader failures.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The port would not open.
    #[error("the leader bus {0}: {1}")]
    Port(String, String),
    /// Servos did not answer.
    #[error("leader servo(s) not answering: {0}")]
    Silent(String),
    /// The calibration file is unusable.
    #[error("the leader calibration {0}: {1}")]
    Calibration(String, String),
    /// The calibration was not finished.
    #[error("calibration: {0}")]
    Aborted(String),
}

/// Where an arm's calibration is kept by default: `$XDG_CONFIG_HOME/reachy/leader/<arm>.json`,
/// else `~/.config/reachy/leader/<arm>.json`.
pub fn default_calibration_path(arm: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("reachy")
        .join("leader")
        .join(format!("{arm}.json"))
}

impl Calibration {
    /// Read and check a calibration for `map`.
    pub fn load(path: &Path, arm: &str, map: &LeaderMap) -> Result<Self, LeaderError> {
        let bad = |m: String| LeaderError::Calibration(path.display().to_string(), m);
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let c: Calibration = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if c.arm != arm {
            return Err(bad(format!("it is for {}, not {arm}", c.arm)));
        }
        let want: Vec<(&str, u8)> = map.iter().map(|(j, id)| (j.as_str(), *id)).collect();
        let have: Vec<(&str, u8)> = c.joints.iter().map(|j| (j.joint.as_str(), j.id)).collect();
        if want != have {
            return Err(bad(format!(
                "its joints {have:?} are not the arm's {want:?}: recalibrate"
            )));
        }
        for j in &c.joints {
            let ordered = j.min <= j.middle && j.middle <= j.max;
            if !(ordered && matches!(j.direction, 1 | -1)) {
                return Err(bad(format!(
                    "{}: needs min ≤ middle ≤ max and direction 1 or -1",
                    j.joint
                )));
            }
        }
        Ok(c)
    }

    /// Write it (creating the folder).
    pub fn save(&self, path: &Path) -> Result<(), LeaderError> {
        let bad = |m: String| LeaderError::Calibration(path.display().to_string(), m);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| bad(e.to_string()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| bad(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| bad(e.to_string()))
    }
}

/// The leader bus.
pub struct Leader {
    master: Master<SerialIo, StdClock>,
    ids: Vec<u8>,
    buf: Vec<u8>,
    ok: Vec<bool>,
}

impl Leader {
    /// Open the leader's adapter at `baud` and turn its servos' torque off (moved by hand).
    pub fn open(port: &str, baud: u32, map: &LeaderMap) -> Result<Self, LeaderError> {
        let master = reachy_daemon::serial::open_master(port, baud, 5)
            .map_err(|e| LeaderError::Port(port.into(), e.to_string()))?;
        let ids: Vec<u8> = map.iter().map(|(_, id)| *id).collect();
        let mut l = Self {
            master,
            buf: vec![0; ids.len() * 4],
            ok: vec![false; ids.len()],
            ids,
        };
        let mut silent = Vec::new();
        for (j, id) in map {
            if l.master.write(*id, regs::TORQUE_ENABLE.addr, &[0]).is_err() {
                silent.push(format!("{j} (ID {id})"));
            }
        }
        if !silent.is_empty() {
            return Err(LeaderError::Silent(format!(
                "{} on {port} at {baud} baud",
                silent.join(", ")
            )));
        }
        Ok(l)
    }

    /// Raw present positions, or the IDs that did not answer.
    pub fn read(&mut self) -> Result<Vec<i32>, Vec<u8>> {
        let p = regs::PRESENT_POSITION;
        self.ok.iter_mut().for_each(|o| *o = false);
        let _ = self.master.sync_read(
            p.addr,
            p.size as u16,
            &self.ids,
            &mut self.buf,
            &mut self.ok,
        );
        let silent: Vec<u8> = self
            .ids
            .iter()
            .zip(&self.ok)
            .filter(|(_, ok)| !**ok)
            .map(|(id, _)| *id)
            .collect();
        if !silent.is_empty() {
            return Err(silent);
        }
        Ok(self
            .buf
            .chunks(4)
            .map(|b| p.decode(b).unwrap_or(0) as i32)
            .collect())
    }

    /// Read, retrying for up to 1 s.
    fn read_patiently(&mut self) -> Result<Vec<i32>, LeaderError> {
        let t0 = Instant::now();
        loop {
            match self.read() {
                Ok(v) => return Ok(v),
                Err(ids) if t0.elapsed() > Duration::from_secs(1) => {
                    return Err(LeaderError::Silent(format!("IDs {ids:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// LeRobot's calibration: the leader in the middle of its range (Enter on `input`), then
    /// through each joint's full range until Enter again. `say` prompts the operator.
    pub fn calibrate(
        &mut self,
        arm: &str,
        map: &LeaderMap,
        input: &mut dyn BufRead,
        say: &mut dyn FnMut(&str),
    ) -> Result<Calibration, LeaderError> {
        let mut line = String::new();
        let mut enter = |input: &mut dyn BufRead, what: &str| -> Result<(), LeaderError> {
            line.clear();
            match input.read_line(&mut line) {
                Ok(0) => Err(LeaderError::Aborted(format!("input ended before {what}"))),
                Ok(_) => Ok(()),
                Err(e) => Err(LeaderError::Aborted(e.to_string())),
            }
        };
        say(
            "calibrating the leader: its torque is off. Hold it in the middle of its range, \
             then press Enter",
        );
        enter(input, "the middle pose")?;
        let middle = self.read_patiently()?;
        say("now move every joint through its whole range, then press Enter");
        // sweep on a thread of our own while the operator's Enter is awaited
        let (mut lo, mut hi) = (middle.clone(), middle.clone());
        let done = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let sweep = s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if let Ok(v) = self.read() {
                        for (k, x) in v.iter().enumerate() {
                            lo[k] = lo[k].min(*x);
                            hi[k] = hi[k].max(*x);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let r = enter(input, "the end of the sweep");
            done.store(true, Ordering::Relaxed);
            let _ = sweep.join();
            r
        });
        result?;
        let joints = map
            .iter()
            .enumerate()
            .map(|(k, (joint, id))| JointCalibration {
                joint: joint.clone(),
                id: *id,
                middle: middle[k],
                min: lo[k],
                max: hi[k],
                direction: 1,
            })
            .collect::<Vec<_>>();
        let narrow: Vec<&str> = joints
            .iter()
            .filter(|j| j.max - j.min < 100)
            .map(|j| j.joint.as_str())
            .collect();
        if !narrow.is_empty() {
            say(&format!(
                "note: {} barely moved during the sweep (their range is under 9°)",
                narrow.join(", ")
            ));
        }
        Ok(Calibration {
            arm: arm.into(),
            joints,
        })
    }
}

/// Calibrated leader positions → follower joint targets (rad), given the follower's limits.
pub fn follower_targets(cal: &Calibration, raw: &[i32], limits: &[(f32, f32)]) -> Vec<f32> {
    cal.joints
        .iter()
        .zip(raw)
        .zip(limits)
        .map(|((j, &r), &(lo, hi))| {
            if j.joint.ends_with("gripper") {
                // the leader's gripper range onto the follower's
                let span = (j.max - j.min).max(1) as f32;
                let u = ((r - j.min) as f32 / span).clamp(0.0, 1.0);
                let u = if j.direction < 0 { 1.0 - u } else { u };
                lo + u * (hi - lo)
            } else {
                let a = position_to_rad(r) - position_to_rad(j.middle);
                ((lo + hi) / 2.0 + f32::from(j.direction) * a).clamp(lo, hi)
            }
        })
        .collect()
}

/// Missed reads in a row before the leader counts as not answering (the robot holds and, when
/// it answers again, approaches its pose anew): 5 at 100 Hz, 50 ms.
pub const SILENT_AFTER_MISSES: u32 = 5;

/// The leader loop's settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Read and mirror rate (Hz, at least 100).
    pub rate: f64,
    /// Speed of the safe-start goto (rad/s of the joint that moves most).
    pub approach_speed: f32,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            rate: 100.0,
            approach_speed: 0.5,
        }
    }
}

/// What a leader session did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeaderSummary {
    /// Ticks that mirrored the leader.
    pub mirrored: u64,
    /// Safe-start gotos (the first, and one per return of the leader).
    pub approaches: u64,
    /// Ticks the leader did not answer (the robot held).
    pub silent_ticks: u64,
    /// Why it ended.
    pub ended: String,
    /// Read → targets sent, p50 / p99 (ms).
    pub loop_ms: Option<(f64, f64)>,
}

/// Mirror `leader` onto `client`'s robot (its lease held) until `stop`; `say` gets the
/// operator's messages.
pub fn mirror(
    client: &mut RobotClient,
    leader: &mut Leader,
    cal: &Calibration,
    cfg: &LeaderConfig,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<LeaderSummary> {
    let names = client.joint_names();
    let mut idx = Vec::new();
    let mut limits = Vec::new();
    for j in &cal.joints {
        let i = names
            .iter()
            .position(|n| *n == j.joint)
            .ok_or_else(|| anyhow::anyhow!("the robot has no joint {}", j.joint))?;
        let info = client
            .info()
            .joints
            .iter()
            .find(|x| x.name == j.joint)
            .ok_or_else(|| anyhow::anyhow!("the daemon gives no limits for {}", j.joint))?;
        idx.push(i);
        limits.push((info.lower, info.upper));
    }
    let mut s = LeaderSummary::default();
    let mut approached = false;
    let mut last: Option<Vec<f32>> = None;
    let mut loop_ms = Vec::new();
    let mut pace = super::Pace::new(cfg.rate.clamp(100.0, 1000.0));
    let mut silent_since: Option<Instant> = None;
    let mut missed = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        match leader.read() {
            // one missed read (bus noise, a late reply): hold this tick, nothing more
            Err(_) if silent_since.is_none() && missed < SILENT_AFTER_MISSES => {
                missed += 1;
                if let Some(t) = &last {
                    client.command(&idx, t)?;
                }
            }
            Err(ids) => {
                s.silent_ticks += 1;
                if silent_since.is_none() {
                    say(&format!(
                        "leader servo(s) {ids:?} not answering: the robot holds until they do"
                    ));
                    silent_since = Some(t0);
                }
                approached = false;
                // hold: keep the last targets (the daemon would hold a silent stream too)
                if let Some(t) = &last {
                    client.command(&idx, t)?;
                }
            }
            Ok(raw) => {
                missed = 0;
                let t = follower_targets(cal, &raw, &limits);
                if !approached {
                    let state = client.state()?;
                    let far = idx
                        .iter()
                        .zip(&t)
                        .map(|(&i, x)| (state.position[i] - x).abs())
                        .fold(0.0f32, f32::max);
                    let dur = (far / cfg.approach_speed).max(1.0);
                    say(&format!(
                        "moving to the leader's pose ({far:.2} rad at most, {dur:.1} s)"
                    ));
                    let js: Vec<String> = cal.joints.iter().map(|j| j.joint.clone()).collect();
                    let r = client.goto(&js, &t, dur)?;
                    say(&format!(
                        "following the leader (the approach: {})",
                        r.status
                    ));
                    s.approaches += 1;
                    approached = true;
                    silent_since = None;
                    pace.restart();
                    continue;
                }
                client.command(&idx, &t)?;
                loop_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                s.mirrored += 1;
                last = Some(t);
            }
        }
        pace.wait();
    }
    s.ended = "stopped".into();
    s.loop_ms = super::p50_p99(&mut loop_ms);
    Ok(s)
}

/// The leader's servos for `arm`: the arm's bus in the URDF's servo map (its joints and
/// gripper, IDs from 1).
pub fn leader_map(model: &reachy_kinematics::model::RobotModel, arm: &str) -> LeaderMap {
    model
        .servo_map()
        .into_iter()
        .filter(|s| s.bus == arm && !s.joint.ends_with("_mimic"))
        .map(|s| (s.joint, s.id))
        .collect()
}

/// Load `path`'s calibration, or calibrate (and save it) when there is none or `recalibrate`.
pub fn calibration(
    leader: &mut Leader,
    arm: &str,
    map: &LeaderMap,
    path: &Path,
    recalibrate: bool,
    input: &mut dyn BufRead,
    say: &mut dyn FnMut(&str),
) -> Result<Calibration, LeaderError> {
    if !recalibrate && path.exists() {
        let c = Calibration::load(path, arm, map)?;
        say(&format!(
            "leader calibration from {} (--recalibrate redoes it)",
            path.display()
        ));
        return Ok(c);
    }
    let c = leader.calibrate(arm, map, input, say)?;
    c.save(path)?;
    say(&format!("leader calibration saved to {}", path.display()));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_positions_map_to_the_followers_range() {
        let cal = Calibration {
            arm: "r_arm".into(),
            joints: vec![
                JointCalibration {
                    joint: "r_elbow_pitch".into(),
                    id: 4,
                    middle: 2048,
                    min: 1000,
                    max: 3000,
                    direction: -1,
                },
                JointCalibration {
                    joint: "r_gripper".into(),
                    id: 8,
                    middle: 2000,
                    min: 1500,
                    max: 2500,
                    direction: 1,
                },
            ],
        };
        let lim = [(-2.0, 0.0), (-0.5, 0.5)];
        // middle → middle of the follower's range; 1024 steps = 90° the other way, clamped
        let t = follower_targets(&cal, &[2048, 1500], &lim);
        assert!(
            (t[0] + 1.0).abs() < 1e-6 && (t[1] + 0.5).abs() < 1e-6,
            "{t:?}"
        );
        let t = follower_targets(&cal, &[2048 - 512, 2250], &lim);
        assert!(
            (t[0] - (-1.0 + std::f32::consts::FRAC_PI_4)).abs() < 1e-3,
            "{t:?}"
        );
        assert!((t[1] - 0.25).abs() < 1e-6, "{t:?}");
        let t = follower_targets(&cal, &[0, 9000], &lim);
        assert_eq!(t, vec![0.0, 0.5], "clamped to the follower's limits");
    }
}
