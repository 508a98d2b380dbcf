//! Replaying a recorded episode of a LeRobot v3 dataset on the robot through the daemon's API:
//! the episode's `action` rows (read from `data/chunk-*/file-*.parquet`, several episodes per
//! file allowed) mapped onto joints by the names in `meta/info.json`, streamed at the dataset's
//! fps after a smooth approach to the first frame.

use std::time::{Duration, Instant};

use anyhow::bail;
use reachy_api::client::RobotClient;
use reachy_api::RobotIo;
use reachy_dataset::Episode;
use serde::Serialize;

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Episode index.
    pub episode: i64,
    /// Frames streamed.
    pub frames: usize,
    /// Dataset fps.
    pub fps: f64,
    /// Wall time of the streaming (s).
    pub wall_s: f64,
    /// Control steps that started more than one period late.
    pub late_steps: u64,
    /// Last action sent, by name.
    pub last_action: Vec<(String, f32)>,
    /// Largest distance between measured joints and the last action after a short hold (rad).
    pub final_error: f32,
}

/// Replay `ep` on the robot of `client`: go to the first frame in `approach_s`, stream the rest at
/// the dataset's fps times `speed`, hold the last frame for half a second.
pub fn replay(
    client: &mut RobotClient,
    ep: &Episode,
    speed: f64,
    approach_s: f32,
) -> anyhow::Result<ReplayReport> {
    if !(speed > 0.0 && speed <= 10.0) {
        bail!("--speed must be within 0..=10");
    }
    let joints = client.joint_names();
    let idx = ep
        .names
        .iter()
        .map(|n| reachy_dataset::joint_of(n, &joints))
        .collect::<Result<Vec<usize>, _>>()?;
    let first = &ep.actions[0];
    let names: Vec<String> = idx.iter().map(|&i| joints[i].clone()).collect();
    let r = client.goto(&names, first, approach_s)?;
    if r.status != "ok" && r.status != "clamped" {
        bail!("going to the first frame: {} {:?}", r.status, r.reason);
    }
    let period = Duration::from_secs_f64(1.0 / (ep.fps * speed));
    let t0 = Instant::now();
    let mut late = 0;
    for (k, a) in ep.actions.iter().enumerate() {
        let due = t0 + period * k as u32;
        match due.checked_duration_since(Instant::now()) {
            Some(d) => std::thread::sleep(d),
            None if Instant::now() - due > period => late += 1,
            None => {}
        }
        client.command(&idx, a)?;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let last = ep.actions.last().expect("non-empty");
    // hold the last frame (a silent stream would hold wherever the robot is)
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_millis(500) {
        client.command(&idx, last)?;
        std::thread::sleep(period.min(Duration::from_millis(20)));
    }
    let measured = client.positions()?;
    let final_error = idx
        .iter()
        .zip(last)
        .map(|(&i, v)| measured.get(i).map_or(f32::INFINITY, |m| (m - v).abs()))
        .fold(0.0, f32::max);
    Ok(ReplayReport {
        episode: ep.index,
        frames: ep.actions.len(),
        fps: ep.fps,
        wall_s,
        late_steps: late,
        last_action: ep.names.iter().cloned().zip(last.iter().copied()).collect(),
        final_error,
    })
}
