//! Firmware in the loop across processes and pseudo-terminals:
//! host serial backend → link pty → `reachy firmware run` → bus pty → `reachy sim servos` and back.

use std::time::{Duration, Instant};

use reachy_daemon::firmware_link::FirmwareLink;
use reachy_e2e::spawn_firmware_on_sim_servos;
use reachy_firmware::link::{
    joint_flags, state_flags, Command, JointState, SafetyConfig, Telemetry,
};

/// The next state frame: (host sequence applied, flags, joints).
fn state(link: &mut FirmwareLink) -> (u32, u8, Vec<JointState>) {
    match link.next_state(Duration::from_secs(2)).unwrap() {
        Some(Telemetry::State {
            host_seq,
            flags,
            joints,
            ..
        }) => (host_seq, flags, joints.to_vec()),
        _ => panic!("no telemetry from the firmware process"),
    }
}

/// Stream `goals` (none: the host silent) a frame at a time, paced by the firmware's
/// telemetry, until a state satisfies `done`; panics with the last state after 20 s.
fn until(
    link: &mut FirmwareLink,
    goals: &[(u8, f32)],
    what: &str,
    done: impl Fn(u8, &[JointState]) -> bool,
) -> (u8, Vec<JointState>) {
    let t0 = Instant::now();
    loop {
        if !goals.is_empty() {
            link.send_goals(goals).unwrap();
        }
        let (_, flags, j) = state(link);
        if done(flags, &j) {
            return (flags, j);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: last state flags {flags:#x}, {j:?}"
        );
    }
}

/// Send `cmd`, then goals, and return the frames from the first that applied those goals
/// (the firmware handles the link in order, so `cmd` was handled before them) through `n`
/// more: what the firmware did with `cmd`, frame by frame.
fn after(
    link: &mut FirmwareLink,
    cmd: &Command,
    goals: &[(u8, f32)],
    n: usize,
) -> Vec<(u8, Vec<JointState>)> {
    link.send(cmd).unwrap();
    let seq = link.send_goals(goals).unwrap();
    let t0 = Instant::now();
    loop {
        let (applied, flags, j) = state(link);
        if applied >= seq {
            let mut frames = vec![(flags, j)];
            for _ in 0..n {
                link.send_goals(goals).unwrap();
                let (_, flags, j) = state(link);
                frames.push((flags, j));
            }
            return frames;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "goals {seq} never applied"
        );
    }
}

fn torque_on(j: &[JointState]) -> bool {
    j.iter().all(|s| s.flags & joint_flags::TORQUE_ON != 0)
}

fn torque_off(j: &[JointState]) -> bool {
    j.iter().all(|s| s.flags & joint_flags::TORQUE_ON == 0)
}

fn at(j: &[JointState], goals: &[f32]) -> bool {
    goals
        .iter()
        .enumerate()
        .all(|(k, g)| (j[k].position - g).abs() < 0.02)
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
    let (_, _, j) = state(&mut link);
    assert_eq!(j.len(), 3);
    until(&mut link, &[], "every servo answering", |_, j| {
        j.iter().all(|s| s.flags & joint_flags::NO_REPLY == 0)
    });

    // torque on, goals tracked
    let torque = Command::Torque {
        mask: 0b111,
        on: true,
    };
    link.send(&torque).unwrap();
    let goals = [(0, 0.5), (1, -0.3), (2, 0.2)];
    let (flags, _) = until(&mut link, &goals, "tracking the goals", |_, j| {
        torque_on(j) && at(j, &[0.5, -0.3, 0.2])
    });
    assert_eq!(flags, 0);

    // watchdog: the host goes silent → hold (torque kept), then torque off
    let (_, j) = until(&mut link, &[], "the watchdog's hold", |f, _| {
        f & state_flags::HOLD != 0
    });
    assert!(at(&j, &[0.5, -0.3, 0.2]), "the hold keeps the pose: {j:?}");
    until(&mut link, &[], "the watchdog's torque off", |f, j| {
        f & state_flags::WATCHDOG_TORQUE_OFF != 0 && torque_off(j)
    });

    // e-stop latches: torque-on refused until cleared
    link.send(&torque).unwrap();
    until(&mut link, &[(0, 0.0)], "torque back on", |_, j| {
        torque_on(j)
    });
    let frames = after(&mut link, &Command::EStop, &[(0, 0.4)], 0);
    assert!(frames[0].0 & state_flags::ESTOP != 0, "{:#x}", frames[0].0);
    until(&mut link, &[(0, 0.4)], "the e-stop's torque off", |_, j| {
        torque_off(j)
    });
    for (flags, j) in after(&mut link, &torque, &[(0, 0.4)], 10) {
        assert!(flags & state_flags::ESTOP != 0, "{flags:#x}");
        assert!(torque_off(&j), "torque came on under the e-stop: {j:?}");
    }
    link.send(&Command::ClearEStop).unwrap();
    link.send(&torque).unwrap();
    let (flags, _) = until(&mut link, &[(0, 0.4)], "moving once cleared", |_, j| {
        torque_on(j) && at(j, &[0.4])
    });
    assert_eq!(flags & state_flags::ESTOP, 0);
    assert_eq!(link.errors(), 0);
    if let Some(dir) = linkp.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
