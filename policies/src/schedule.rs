//! Action-chunk scheduling for running a chunking policy on a robot without stalls at chunk
//! boundaries (LeRobot's most reported real-robot problem).
//!
//! Every chunk carries the timestamp of the observation it was computed from; action `i` of a
//! chunk is meant for `t_obs + i / fps`. The scheduler keeps a time-indexed queue:
//! - steps whose time has already passed when a chunk arrives (inference latency) are skipped;
//! - steps that overlap what is queued are cross-faded from the old plan to the new one, so the
//!   command never jumps at a chunk boundary;
//! - a chunk computed from an older observation than one already applied is stale and dropped;
//! - [`ChunkScheduler::wants_chunk`] asks for the next chunk early enough (measured latency plus a
//!   margin) that it arrives before the queue runs dry — the async mode.

use std::collections::VecDeque;

/// Settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleConfig {
    /// Control rate (Hz): one action per step.
    pub fps: f64,
    /// Actions used from each chunk (LeRobot's `n_action_steps`).
    pub n_action_steps: usize,
    /// Request the next chunk when this many steps (beyond the measured latency) remain.
    pub margin_steps: usize,
    /// Synchronous mode: ask for a chunk only when the queue is empty (LeRobot's default).
    pub synchronous: bool,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Chunks accepted.
    pub chunks: u64,
    /// Chunks dropped as stale.
    pub stale_dropped: u64,
    /// Steps skipped because their time had passed on arrival.
    pub late_steps: u64,
    /// Steps cross-faded between two chunks.
    pub blended_steps: u64,
    /// Control steps with no action available (the robot would stall).
    pub stalls: u64,
}

/// Time-indexed action queue.
#[derive(Debug, Clone)]
pub struct ChunkScheduler {
    cfg: ScheduleConfig,
    /// (global step index, action), increasing step indices.
    queue: VecDeque<(i64, Vec<f32>)>,
    last_obs_t: f64,
    in_flight: Option<f64>,
    latency_s: f64,
    /// Counters.
    pub stats: ScheduleStats,
}

impl ChunkScheduler {
    /// An empty scheduler.
    pub fn new(cfg: ScheduleConfig) -> Self {
        Self {
            cfg,
            queue: VecDeque::new(),
            last_obs_t: f64::NEG_INFINITY,
            in_flight: None,
            latency_s: 0.0,
            stats: ScheduleStats::default(),
        }
    }

    fn step_of(&self, t: f64) -> i64 {
        (t * self.cfg.fps).round() as i64
    }

    /// Steps queued from `now` on.
    pub fn depth(&self, now: f64) -> usize {
        let k = self.step_of(now);
        self.queue.iter().filter(|(s, _)| *s >= k).count()
    }

    /// Smoothed inference latency (s), from request to arrival.
    pub fn latency(&self) -> f64 {
        self.latency_s
    }

    /// Whether to start computing a chunk now (an observation taken at `now`). Marks a request
    /// in flight when it says yes.
    pub fn wants_chunk(&mut self, now: f64) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        let depth = self.depth(now);
        let want = if self.cfg.synchronous {
            depth == 0
        } else {
            let lead = (self.latency_s * self.cfg.fps).ceil() as usize + self.cfg.margin_steps;
            depth <= lead
        };
        if want {
            self.in_flight = Some(now);
        }
        want
    }

    /// A chunk computed from the observation taken at `t_obs` arrived at `now`.
    /// Returns whether it was used.
    pub fn push(&mut self, t_obs: f64, actions: &[Vec<f32>], now: f64) -> bool {
        if let Some(t_req) = self.in_flight.take() {
            let l = (now - t_req).max(0.0);
            self.latency_s = if self.stats.chunks == 0 {
                l
            } else {
                0.7 * self.latency_s + 0.3 * l
            };
        }
        if t_obs <= self.last_obs_t {
            self.stats.stale_dropped += 1;
            return false;
        }
        self.last_obs_t = t_obs;
        self.stats.chunks += 1;
        let first = self.step_of(t_obs);
        let now_k = self.step_of(now);
        // forget the past
        while self.queue.front().is_some_and(|(s, _)| *s < now_k) {
            self.queue.pop_front();
        }
        let n = actions.len().min(self.cfg.n_action_steps.max(1));
        // overlap with the queued plan: cross-fade from old to new across it
        let overlap_end = self.queue.back().map(|(s, _)| *s).unwrap_or(i64::MIN);
        let overlap: Vec<i64> = (0..n as i64)
            .map(|i| first + i)
            .filter(|s| *s >= now_k && *s <= overlap_end)
            .collect();
        let m = overlap.len();
        for (i, a) in actions.iter().take(n).enumerate() {
            let s = first + i as i64;
            if s < now_k {
                self.stats.late_steps += 1;
                continue;
            }
            if let Some(pos) = self.queue.iter().position(|(q, _)| *q == s) {
                // weight of the new chunk rises linearly over the overlap
                let j = overlap.iter().position(|o| *o == s).unwrap_or(0);
                let w = (j + 1) as f32 / (m + 1) as f32;
                let old = &mut self.queue[pos].1;
                for (o, v) in old.iter_mut().zip(a) {
                    *o = (1.0 - w) * *o + w * v;
                }
                self.stats.blended_steps += 1;
            } else {
                self.queue.push_back((s, a.clone()));
            }
        }
        true
    }

    /// The action for the control step at `now`, or `None` (a stall) when nothing is planned.
    pub fn next(&mut self, now: f64) -> Option<Vec<f32>> {
        let k = self.step_of(now);
        while let Some((s, _)) = self.queue.front() {
            if *s < k {
                self.queue.pop_front();
            } else {
                break;
            }
        }
        match self.queue.front() {
            Some((s, _)) if *s == k => self.queue.pop_front().map(|(_, a)| a),
            _ => {
                self.stats.stalls += 1;
                None
            }
        }
    }

    /// The chunk asked for will not come (inference failed): allow a new request.
    pub fn cancel_request(&mut self) {
        self.in_flight = None;
    }

    /// Forget the plan (new episode).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.in_flight = None;
        self.last_obs_t = f64::NEG_INFINITY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "policy" whose chunk from time t is the ramp value(t + i/fps) = t + i/fps, plus an offset
    /// per chunk so that boundaries would show as jumps.
    fn chunk(t: f64, fps: f64, n: usize, offset: f32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| vec![(t + i as f64 / fps) as f32 + offset])
            .collect()
    }

    /// Simulate `steps` control steps with an inference latency of `latency_steps`.
    fn run(cfg: ScheduleConfig, latency_steps: usize, steps: usize) -> (ScheduleStats, f32) {
        let fps = cfg.fps;
        let mut s = ChunkScheduler::new(cfg);
        let mut pending: Option<(f64, usize)> = None; // (t_obs, ready at step)
        let mut max_jump = 0.0f32;
        let mut prev: Option<f32> = None;
        let mut offset = 0.0;
        for k in 0..steps {
            let now = k as f64 / fps;
            if let Some((t_obs, ready)) = pending {
                if k >= ready {
                    offset = if offset == 0.0 { 0.02 } else { 0.0 };
                    s.push(t_obs, &chunk(t_obs, fps, 50, offset), now);
                    pending = None;
                }
            }
            if pending.is_none() && s.wants_chunk(now) {
                pending = Some((now, k + latency_steps));
            }
            if let Some(a) = s.next(now) {
                if let Some(p) = prev {
                    // the ramp itself moves 1/fps per step
                    max_jump = max_jump.max((a[0] - p - (1.0 / fps) as f32).abs());
                }
                prev = Some(a[0]);
            } else {
                prev = None;
            }
        }
        (s.stats, max_jump)
    }

    #[test]
    fn async_mode_never_stalls_after_the_first_chunk() {
        let cfg = ScheduleConfig {
            fps: 30.0,
            n_action_steps: 50,
            margin_steps: 2,
            synchronous: false,
        };
        let (stats, max_jump) = run(cfg, 6, 600);
        // only the steps before the very first chunk arrives can stall
        assert!(stats.stalls <= 6, "{stats:?}");
        assert!(stats.chunks > 10);
        assert!(stats.blended_steps > 0);
        // chunk offsets of 0.02 are cross-faded, never applied as one jump
        assert!(max_jump < 0.011, "jump {max_jump}");
    }

    #[test]
    fn synchronous_mode_stalls_at_every_boundary() {
        let cfg = ScheduleConfig {
            fps: 30.0,
            n_action_steps: 50,
            margin_steps: 2,
            synchronous: true,
        };
        let (stats, _) = run(cfg, 6, 600);
        assert!(stats.stalls > 40, "{stats:?}");
    }

    #[test]
    fn stale_and_late_chunks() {
        let cfg = ScheduleConfig {
            fps: 10.0,
            n_action_steps: 10,
            margin_steps: 1,
            synchronous: false,
        };
        let mut s = ChunkScheduler::new(cfg);
        assert!(s.push(1.0, &chunk(1.0, 10.0, 10, 0.0), 1.3));
        assert_eq!(s.stats.late_steps, 3, "steps for 1.0, 1.1, 1.2 have passed");
        assert!(
            !s.push(0.9, &chunk(0.9, 10.0, 10, 0.0), 1.35),
            "older observation: stale"
        );
        assert_eq!(s.stats.stale_dropped, 1);
        let a = s.next(1.3).unwrap();
        assert!((a[0] - 1.3).abs() < 1e-6);
        assert!(s.next(5.0).is_none());
    }
}
