//! Firmware in the loop across processes and pseudo-terminals:
//! host serial backend → link pty → `reachy firmware run` → bus pty → `reachy sim servos` and back.

use std::time::{Duration, Instant};

use reachy_daemon::firmware_link::FirmwareLink;
use reachy_e2e::spawn_firmware_on_sim_servos;
use reachy_firmware::link::{
    joint_flags, state_flags, Command, JointState, SafetyConfig, Telemetry,
};

fn state(link: &mut FirmwareLink) -> (u8, Vec<JointState>) {
    match link.next_state(Duration::from_secs(2)).unwrap() {
        Some(Telemetry::State { flags, joints, .. }) => (flags, joints.to_vec()),
        _ => panic!("no telemetry from the firmware process"),
    }
}

/// Stream goals for `ms` milliseconds at ~200 Hz.
fn stream(link: &mut FirmwareLink, goals: &[(u8, f32)], ms: u64) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(ms) {
        link.send_goals(goals).unwrap();
        let _ = link.poll().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn serial_backend_drives_simulated_servos_through_the_firmware() {
    let _cores = reachy_e2e::beside_others();
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos("fw", "1-3", |bus| format!("{}:1-3", bus.display()));
    let mut link = FirmwareLink::open(linkp.to_str().unwrap(), 1_000_000).unwrap();
    link.send(&Command::Safety(SafetyConfig {
        hold_after_ms: 150,
        torque_off_after_ms: 600,
        telemetry_every: 10,
        temperature_limit_c: 70,
    }))
    .unwrap();

    // telemetry flows and the servos answer
    let (_, j) = state(&mut link);
    assert_eq!(j.len(), 3);
    // give the bus a few cycles to read every servo
    std::thread::sleep(Duration::from_millis(100));
    let (_, j) = state(&mut link);
    assert!(
        j.iter().all(|s| s.flags & joint_flags::NO_REPLY == 0),
        "{j:?}"
    );

    // torque on, goals tracked
    link.send(&Command::Torque {
        mask: 0b111,
        on: true,
    })
    .unwrap();
    stream(&mut link, &[(0, 0.5), (1, -0.3), (2, 0.2)], 1200);
    let (flags, j) = state(&mut link);
    assert_eq!(flags, 0);
    for (k, g) in [0.5f32, -0.3, 0.2].iter().enumerate() {
        assert!(
            (j[k].position - g).abs() < 0.02,
            "joint {k}: {} vs {g}",
            j[k].position
        );
        assert!(j[k].flags & joint_flags::TORQUE_ON != 0);
    }

    // watchdog: the host goes silent → hold, then torque off
    std::thread::sleep(Duration::from_millis(300));
    let (flags, _) = state(&mut link);
    assert!(flags & state_flags::HOLD != 0, "flags {flags:#x}");
    std::thread::sleep(Duration::from_millis(600));
    let (flags, j) = state(&mut link);
    assert!(
        flags & state_flags::WATCHDOG_TORQUE_OFF != 0,
        "flags {flags:#x}"
    );
    assert!(j.iter().all(|s| s.flags & joint_flags::TORQUE_ON == 0));

    // e-stop latches: torque-on refused until cleared
    link.send(&Command::Torque {
        mask: 0b111,
        on: true,
    })
    .unwrap();
    stream(&mut link, &[(0, 0.0)], 200);
    let (_, j) = state(&mut link);
    assert!(j[0].flags & joint_flags::TORQUE_ON != 0);
    link.send(&Command::EStop).unwrap();
    stream(&mut link, &[(0, 0.4)], 200);
    link.send(&Command::Torque {
        mask: 0b111,
        on: true,
    })
    .unwrap();
    stream(&mut link, &[(0, 0.4)], 200);
    let (flags, j) = state(&mut link);
    assert!(flags & state_flags::ESTOP != 0);
    assert!(j.iter().all(|s| s.flags & joint_flags::TORQUE_ON == 0));
    link.send(&Command::ClearEStop).unwrap();
    link.send(&Command::Torque {
        mask: 0b111,
        on: true,
    })
    .unwrap();
    stream(&mut link, &[(0, 0.4)], 800);
    let (flags, j) = state(&mut link);
    assert_eq!(flags & state_flags::ESTOP, 0);
    assert!((j[0].position - 0.4).abs() < 0.02, "{}", j[0].position);
    assert_eq!(link.errors(), 0);
    if let Some(dir) = linkp.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
