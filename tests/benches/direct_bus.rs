//! The control core that drives servos straight from an adapter (`reachy daemon --backend
//! dynamixel`, and `reachy firmware run`: one `HostCore`), on 8 simulated servos on a pty: the
//! loop rate it achieves and its bus cycle (a sync write of the goals and a sync read of every
//! servo), against the wire limit of that cycle at 1 and 4 Mbaud, then the same behind a
//! simulated 16 ms USB latency timer (an FTDI adapter's default: what `reachy doctor` catches).
//! `cargo bench -p reachy-e2e --bench direct_bus` (after `cargo build -p reachy` in the same
//! profile; `--profile dev` uses the dev build).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use reachy_daemon::firmware_link::FirmwareLink;
use reachy_e2e::spawn_firmware_on_sim_servos_with;
use reachy_firmware::link::{Command, LoopStats, Telemetry};

/// Bytes on the wire per cycle for 8 servos: sync write of 4-byte goals (10 + 4 + 8 × 5 = 54),
/// sync read request (10 + 4 + 8 = 22), 8 status packets of 10 data bytes (8 × 21 = 168).
const CYCLE_BYTES: f64 = 244.0;

fn run(latency_ms: &str) -> (f64, LoopStats) {
    let tag = format!("dbus{latency_ms}");
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos_with(&tag, "1-8", &["--latency-ms", latency_ms], |bus| {
            format!("r_arm={}", bus.display())
        });
    let mut link = FirmwareLink::open(linkp.to_str().unwrap(), 1_000_000).unwrap();
    link.send(&Command::Torque {
        mask: 0xFF,
        on: true,
    })
    .unwrap();
    let goals: Vec<(u8, f32)> = (0..8).map(|j| (j, 0.0)).collect();
    let mut first: Option<(Instant, LoopStats)> = None;
    let mut last = None;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        link.send_goals(&goals).unwrap();
        for t in link.poll().unwrap() {
            if let Telemetry::State { stats, .. } = t {
                // the first second is the start (torque on, first reads)
                if t0.elapsed() > Duration::from_secs(1) {
                    first.get_or_insert((Instant::now(), stats));
                    last = Some((Instant::now(), stats));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ((ta, a), (tb, b)) = (first.expect("state"), last.expect("state"));
    let hz = b.cycles.wrapping_sub(a.cycles) as f64 / (tb - ta).as_secs_f64();
    (hz, b)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for baud in [1e6, 4e6] {
        println!(
            "wire limit of one cycle (8 servos, {CYCLE_BYTES} B) at {} Mbaud: {:.0} µs → at most {:.0} Hz",
            baud / 1e6,
            CYCLE_BYTES * 10.0 / baud * 1e6,
            baud / (CYCLE_BYTES * 10.0)
        );
    }
    for latency in ["0", "16"] {
        let (hz, s) = run(latency);
        println!(
            "pty, latency timer {latency:>2} ms: loop {hz:7.1} Hz (asked 1000), period mean {} µs, \
             bus cycle max {} µs, {} overruns, {} missed replies",
            s.period_mean_us, s.bus_max_us, s.overruns, s.bus_timeouts
        );
    }
}
