//! The firmware's host watchdog, measured across processes: `reachy firmware run` between a link
//! pty and simulated servos, the host streaming goals with torque on, then going silent (as a
//! killed daemon does). Timed from the host's last frame: the telemetry's HOLD flag and its
//! WATCHDOG_TORQUE_OFF flag with every servo's torque off, against the configured 150 ms and
//! 600 ms. `cargo bench -p reachy-e2e --bench watchdog` (after `cargo build -p reachy` in the
//! same profile; `--profile dev` uses the dev build).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use reachy_daemon::firmware_link::FirmwareLink;
use reachy_e2e::spawn_firmware_on_sim_servos;
use reachy_firmware::link::{joint_flags, state_flags, Command, SafetyConfig, Telemetry};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (hold_ms, off_ms) = (150u32, 600u32);
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos("watchdog", "1-3", |bus| format!("{}:1-3", bus.display()));
    let mut link = FirmwareLink::open(linkp.to_str().unwrap(), 1_000_000).unwrap();
    link.send(&Command::Safety(SafetyConfig {
        hold_after_ms: hold_ms,
        torque_off_after_ms: off_ms,
        telemetry_every: 1,
        temperature_limit_c: 70,
    }))
    .unwrap();
    let runs = 5;
    let (mut holds, mut offs) = (Vec::new(), Vec::new());
    for run in 0..runs {
        link.send(&Command::Torque {
            mask: 0b111,
            on: true,
        })
        .unwrap();
        // stream until every servo reports torque on
        let t0 = Instant::now();
        let mut last_sent;
        loop {
            link.send_goals(&[(0, 0.1 * run as f32), (1, 0.0), (2, 0.0)])
                .unwrap();
            last_sent = Instant::now();
            if let Ok(Some(Telemetry::State { flags, joints, .. })) =
                link.next_state(Duration::from_millis(50))
            {
                let on = joints.iter().all(|j| j.flags & joint_flags::TORQUE_ON != 0);
                if on && flags == 0 && t0.elapsed() > Duration::from_millis(300) {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "torque never came on"
            );
        }
        // the host goes silent: watch the telemetry
        let (mut hold, mut off) = (None, None);
        while off.is_none() {
            match link.next_state(Duration::from_secs(2)).unwrap() {
                Some(Telemetry::State { flags, joints, .. }) => {
                    let t = last_sent.elapsed().as_secs_f64() * 1000.0;
                    if hold.is_none() && flags & state_flags::HOLD != 0 {
                        hold = Some(t);
                    }
                    let all_off = joints.iter().all(|j| j.flags & joint_flags::TORQUE_ON == 0);
                    if flags & state_flags::WATCHDOG_TORQUE_OFF != 0 && all_off {
                        off = Some(t);
                    }
                }
                _ => panic!("no telemetry while the host is silent"),
            }
        }
        holds.push(hold.expect("HOLD before torque off"));
        offs.push(off.unwrap());
    }
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    let ((h50, hmax), (o50, omax)) = (stat(&mut holds), stat(&mut offs));
    println!(
        "firmware watchdog over {runs} silences (configured hold {hold_ms} ms, torque off {off_ms} ms): \
         HOLD after p50 {h50:.0} ms (max {hmax:.0}), every servo's torque off after p50 {o50:.0} ms (max {omax:.0})"
    );
    if let Some(dir) = linkp.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
