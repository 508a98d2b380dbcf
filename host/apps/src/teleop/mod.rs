//! Teleoperation sources, all through the daemon's API with the `teleop` lease (so all motion
//! passes the daemon's limits): a Cartesian pose stream ([`pose_stream`]), the terminal's keys
//! ([`keyboard`]) and a gamepad ([`gamepad`]) through one jog loop ([`jog`]), and a leader arm
//! mirrored joint to joint ([`leader`]), a WebXR headset's browser ([`webxr`]).

pub mod gamepad;
pub mod jog;
pub mod keyboard;
pub mod leader;
mod pose_stream;
pub mod webxr;

pub use pose_stream::{pose_lines, pose_stream, zenoh_lines};

use std::time::{Duration, Instant};

/// A loop's pace: ticks `1/rate` apart; a late tick is not made up with a burst.
pub(crate) struct Pace {
    period: Duration,
    next: Instant,
}

impl Pace {
    pub(crate) fn new(rate: f64) -> Self {
        Self {
            period: Duration::from_secs_f64(1.0 / rate),
            next: Instant::now(),
        }
    }

    /// Sleep until the next tick.
    pub(crate) fn wait(&mut self) {
        self.next += self.period;
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        } else {
            self.next = now;
        }
    }

    /// Count the next tick from now (after something that blocked, e.g. a goto).
    pub(crate) fn restart(&mut self) {
        self.next = Instant::now();
    }
}

/// p50 and p99 of `v` (sorted in place), none when it is empty.
pub(crate) fn p50_p99(v: &mut [f64]) -> Option<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    (!v.is_empty()).then(|| (q(0.5), q(0.99)))
}
