//! The firmware core (bus master, control loop, safety) against simulated servos, in memory and
//! deterministic: link → firmware → Dynamixel bus → simulated servos and back.

use std::cell::RefCell;
use std::rc::Rc;

use reachy_e2e::{pipe, PipeEnd, TestClock};
use reachy_firmware::control::{Controller, JointMap};
use reachy_firmware::dynamixel::control_table::{hardware_error, rad_to_position, regs};
use reachy_firmware::dynamixel::{Master, Model, PingInfo};
use reachy_firmware::link::{
    self, joint_flags, state_flags, Command, FrameDecoder, JointGoal, JointLimits, SafetyConfig,
    Telemetry, MAX_FRAME,
};
use reachy_sim::{SimBus, SimPort};

fn bus(ids: &[u8]) -> Rc<RefCell<SimBus>> {
    Rc::new(RefCell::new(SimBus::new(ids, Model::Xm430W350)))
}

#[test]
fn master_transactions_against_simulated_servos() {
    let b = bus(&[1, 2, 3, 4]);
    let mut m = Master::new(SimPort::new(b.clone()), TestClock::new(1));
    let mut found = [PingInfo::default(); 8];
    assert_eq!(m.broadcast_ping(&mut found).unwrap(), 4);
    assert_eq!(
        found[2],
        PingInfo {
            id: 3,
            model: 1020,
            firmware: 46
        }
    );
    assert_eq!(m.ping(2).unwrap().model, 1020);
    // write + read
    m.write(1, regs::GOAL_POSITION.addr, &1234i32.to_le_bytes())
        .unwrap();
    let mut v = [0u8; 4];
    m.read(1, regs::GOAL_POSITION.addr, &mut v).unwrap();
    assert_eq!(i32::from_le_bytes(v), 1234);
    // EEPROM lock surfaces as a status error
    m.write(1, regs::TORQUE_ENABLE.addr, &[1]).unwrap();
    let e = m.write(1, regs::OPERATING_MODE.addr, &[1]).unwrap_err();
    assert!(e.to_string().contains("EEPROM"), "{e}");
    // sync write / sync read / fast sync read / bulk
    let ids = [1, 2, 3, 4];
    let mut data = [0u8; 16];
    for (k, g) in [100i32, 200, 300, 400].iter().enumerate() {
        data[4 * k..4 * k + 4].copy_from_slice(&g.to_le_bytes());
    }
    m.sync_write(regs::GOAL_POSITION.addr, 4, &ids, &data)
        .unwrap();
    let mut out = [0u8; 16];
    let mut ok = [false; 4];
    assert_eq!(
        m.sync_read(regs::GOAL_POSITION.addr, 4, &ids, &mut out, &mut ok)
            .unwrap(),
        4
    );
    assert_eq!(out, data);
    let mut out2 = [0u8; 16];
    assert_eq!(
        m.fast_sync_read(regs::GOAL_POSITION.addr, 4, &ids, &mut out2, &mut ok)
            .unwrap(),
        4
    );
    assert_eq!(out2, data);
    m.bulk_write(&[
        (2, regs::LED.addr, &[1]),
        (3, regs::GOAL_POSITION.addr, &777i32.to_le_bytes()),
    ])
    .unwrap();
    let mut bo = [0u8; 5];
    let mut bok = [false; 2];
    assert_eq!(
        m.bulk_read(
            &[(2, regs::LED.addr, 1), (3, regs::GOAL_POSITION.addr, 4)],
            &mut bo,
            &mut bok
        )
        .unwrap(),
        2
    );
    assert_eq!(bo, [1, 0x09, 0x03, 0, 0]);
    // a dead servo is reported and does not stop the others
    b.borrow_mut().servo_mut(2).unwrap().faults.dead = true;
    let n = m
        .sync_read(regs::GOAL_POSITION.addr, 4, &ids, &mut out, &mut ok)
        .unwrap();
    assert_eq!((n, ok), (3, [true, false, true, true]));
    let n = m
        .fast_sync_read(regs::GOAL_POSITION.addr, 4, &ids, &mut out2, &mut ok)
        .unwrap();
    assert_eq!((n, ok), (3, [true, false, true, true]));
    assert!(m.ping(2).is_err());
    assert!(m.stats.timeouts > 0 && m.stats.retries > 0);
}

struct Rig {
    host: PipeEnd,
    clock: TestClock,
    bus: Rc<RefCell<SimBus>>,
    ctl: Controller<PipeEnd, SimPort, TestClock>,
    dec: FrameDecoder,
    seq: u32,
}

impl Rig {
    fn new(n: u8) -> Self {
        let ids: Vec<u8> = (1..=n).collect();
        let b = bus(&ids);
        let (host, fw) = pipe();
        let clock = TestClock::new(1);
        let joints: Vec<JointMap> = ids.iter().map(|&id| JointMap { bus: 0, id }).collect();
        let ctl = Controller::new(
            fw,
            [SimPort::new(b.clone())],
            clock.clone(),
            &joints,
            Model::Xm430W350,
            1000,
        )
        .unwrap();
        Self {
            host,
            clock,
            bus: b,
            ctl,
            dec: FrameDecoder::new(),
            seq: 0,
        }
    }
    fn send(&mut self, c: &Command) {
        let mut buf = [0u8; MAX_FRAME];
        let n = link::encode(c, &mut buf).unwrap();
        self.host.send(&buf[..n]);
    }
    fn goals(&mut self, g: &[(u8, f32)]) {
        self.seq += 1;
        self.send(&Command::position_goals(self.seq, g).unwrap());
    }
    /// Run `ms` control cycles at 1 kHz, servos stepping in lock-step; returns all telemetry.
    fn run(&mut self, ms: u32) -> Vec<Telemetry> {
        let mut out = Vec::new();
        for _ in 0..ms {
            let t = self.clock.peek();
            self.ctl.tick();
            self.bus.borrow_mut().step(0.001);
            let used = self.clock.peek() - t;
            self.clock.advance(1000u64.saturating_sub(used));
            for b in self.host.take() {
                if let Some(Ok(m)) = self.dec.push::<Telemetry>(b) {
                    out.push(m);
                }
            }
        }
        out
    }
    fn last_state(tel: &[Telemetry]) -> (u8, Vec<link::JointState>) {
        tel.iter()
            .rev()
            .find_map(|t| match t {
                Telemetry::State { flags, joints, .. } => Some((*flags, joints.to_vec())),
                _ => None,
            })
            .expect("telemetry")
    }
}

#[test]
fn goals_are_tracked_clamped_and_rate_limited() {
    let mut r = Rig::new(3);
    let limits = (0..3u8)
        .map(|j| JointLimits {
            joint: j,
            lower: -1.0,
            upper: 1.0,
            max_velocity: 2.0,
        })
        .collect();
    r.send(&Command::Limits(limits));
    r.send(&Command::Torque {
        mask: 0b111,
        on: true,
    });
    r.run(20);
    let mut max_step = 0.0f32;
    let mut prev = 0.0f32;
    for i in 0..600 {
        r.goals(&[(0, 0.8), (1, -3.0), (2, 0.2)]);
        let tel = r.run(1);
        if i % 10 == 9 {
            let (_, j) = Rig::last_state(&tel);
            max_step = max_step.max((j[0].position - prev).abs());
            prev = j[0].position;
        }
    }
    let (flags, j) = Rig::last_state(&r.run(10));
    assert_eq!(flags, 0);
    assert!((j[0].position - 0.8).abs() < 0.01, "{}", j[0].position);
    assert!(
        (j[1].position + 1.0).abs() < 0.01,
        "clamped to the lower limit: {}",
        j[1].position
    );
    assert!((j[2].position - 0.2).abs() < 0.01);
    // 2 rad/s over 10 ms = 0.02 rad between telemetry samples (+ sim lag slack)
    assert!(max_step <= 0.025, "velocity limit on board: {max_step}");
    assert!(j.iter().all(|s| s.flags & joint_flags::TORQUE_ON != 0));
    let servo = r.bus.borrow();
    let g = servo.servo(2).unwrap().get(&regs::GOAL_POSITION);
    assert_eq!(g, rad_to_position(-1.0) as i64);
}

#[test]
fn watchdog_holds_then_turns_torque_off() {
    let mut r = Rig::new(2);
    r.send(&Command::Safety(SafetyConfig {
        hold_after_ms: 50,
        torque_off_after_ms: 200,
        telemetry_every: 5,
        temperature_limit_c: 70,
    }));
    r.send(&Command::Torque {
        mask: 0b11,
        on: true,
    });
    r.run(5);
    for _ in 0..100 {
        r.goals(&[(0, 1.0), (1, -1.0)]);
        r.run(1);
    }
    // host goes silent mid-motion
    let tel = r.run(100);
    let (flags, j) = Rig::last_state(&tel);
    assert_eq!(flags & state_flags::HOLD, state_flags::HOLD);
    assert!(
        j[0].position < 0.5,
        "held short of the goal: {}",
        j[0].position
    );
    let held = j[0].position;
    let (flags, j) = Rig::last_state(&r.run(50));
    assert!((j[0].position - held).abs() < 0.02, "holding still");
    assert!(flags & state_flags::HOLD != 0);
    let (flags, j) = Rig::last_state(&r.run(200));
    assert_eq!(
        flags & state_flags::WATCHDOG_TORQUE_OFF,
        state_flags::WATCHDOG_TORQUE_OFF
    );
    assert!(j.iter().all(|s| s.flags & joint_flags::TORQUE_ON == 0));
    assert!(!r.bus.borrow().servo(1).unwrap().torque_enabled());
    // the host comes back: watchdog clears, torque stays off until asked for
    r.send(&Command::Heartbeat { seq: 1 });
    let (flags, j) = Rig::last_state(&r.run(10));
    assert_eq!(flags, 0);
    assert!(j[0].flags & joint_flags::TORQUE_ON == 0);
}

#[test]
fn estop_latches_until_cleared() {
    let mut r = Rig::new(2);
    r.send(&Command::Torque {
        mask: 0b11,
        on: true,
    });
    r.run(5);
    r.send(&Command::EStop);
    let (flags, j) = Rig::last_state(&r.run(20));
    assert_eq!(flags & state_flags::ESTOP, state_flags::ESTOP);
    assert!(j.iter().all(|s| s.flags & joint_flags::TORQUE_ON == 0));
    assert!(!r.bus.borrow().servo(1).unwrap().torque_enabled());
    // goals and torque-on are refused while latched
    let rejected = r.ctl.stats().rejected;
    r.send(&Command::Torque {
        mask: 0b11,
        on: true,
    });
    r.goals(&[(0, 0.5)]);
    r.run(20);
    assert_eq!(r.ctl.stats().rejected, rejected + 2);
    assert!(!r.bus.borrow().servo(1).unwrap().torque_enabled());
    r.send(&Command::ClearEStop);
    r.send(&Command::Torque {
        mask: 0b11,
        on: true,
    });
    let (flags, j) = Rig::last_state(&r.run(20));
    assert_eq!(flags & state_flags::ESTOP, 0);
    assert!(j.iter().all(|s| s.flags & joint_flags::TORQUE_ON != 0));
    assert!(r.bus.borrow().servo(1).unwrap().torque_enabled());
}

#[test]
fn overheating_and_dead_servos_are_reported_without_stopping_the_rest() {
    let mut r = Rig::new(3);
    r.send(&Command::Torque {
        mask: 0b111,
        on: true,
    });
    r.run(20);
    r.bus
        .borrow_mut()
        .servo_mut(2)
        .unwrap()
        .inject_hardware_error(hardware_error::OVERHEATING);
    r.bus.borrow_mut().servo_mut(3).unwrap().faults.dead = true;
    let tel = r.run(50);
    assert!(tel.iter().any(|t| matches!(t, Telemetry::Shutdown { joint: 1, hardware_error: e, .. } if e & hardware_error::OVERHEATING != 0)));
    for _ in 0..300 {
        r.goals(&[(0, 0.4), (1, 0.4), (2, 0.4)]);
        r.run(1);
    }
    let (_, j) = Rig::last_state(&r.run(10));
    assert!(
        (j[0].position - 0.4).abs() < 0.01,
        "healthy joint keeps working"
    );
    assert!(j[1].flags & joint_flags::SHUTDOWN != 0);
    assert!(j[1].flags & joint_flags::TORQUE_ON == 0);
    assert!(j[2].flags & joint_flags::NO_REPLY != 0);
    assert!(r.ctl.stats().bus_timeouts > 0);
    // the host reboots the servo: the shutdown clears
    r.send(&Command::Reboot { joint: 1 });
    let (_, j) = Rig::last_state(&r.run(20));
    assert!(j[1].flags & joint_flags::SHUTDOWN == 0);
}

/// Whether any state frame in `tel` flags servo 2 (joint 1) `NO_REPLY`.
fn servo2_no_reply(tel: &[Telemetry]) -> bool {
    tel.iter().any(|t| {
        matches!(t, Telemetry::State { joints, .. }
            if joints[1].flags & joint_flags::NO_REPLY != 0)
    })
}

/// A servo that misses a reply now and then (bus noise; in QEMU, a reply the emulated UART
/// delivered after the read's timeout) is not reported dead: only `MISSES_FOR_NO_REPLY` misses
/// in a row are. Every miss is counted.
#[test]
fn single_missed_replies_are_counted_not_reported() {
    use reachy_firmware::control::MISSES_FOR_NO_REPLY;
    let mut r = Rig::new(3);
    // telemetry every cycle: a one-cycle flag cannot hide between two reports
    r.send(&Command::Safety(SafetyConfig {
        telemetry_every: 1,
        ..SafetyConfig::default()
    }));
    r.run(20);
    let timeouts0 = r.ctl.stats().bus_timeouts;
    // silent for one cycle less than the bound, then answering, a few times over
    for _ in 0..5 {
        r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = true;
        let tel = r.run(MISSES_FOR_NO_REPLY as u32 - 1);
        r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = false;
        let mut tel2 = r.run(5);
        tel2.extend(tel);
        assert!(
            !servo2_no_reply(&tel2),
            "a short silence reported as a dead servo"
        );
    }
    assert!(
        r.ctl.stats().bus_timeouts > timeouts0,
        "the misses are counted"
    );
    // silent for the bound: reported, and cleared by the first answer
    r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = true;
    let tel = r.run(MISSES_FOR_NO_REPLY as u32 + 2);
    assert!(servo2_no_reply(&tel));
    r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = false;
    let (_, j) = Rig::last_state(&r.run(5));
    assert!(j[1].flags & joint_flags::NO_REPLY == 0);
}

#[test]
fn link_noise_is_counted_and_dropped() {
    let mut r = Rig::new(1);
    r.host.send(&[1, 2, 3, 0, 0xFF, 0x13, 0x37, 0]);
    r.send(&Command::Torque { mask: 1, on: true });
    let bad = Command::Goals {
        seq: 1,
        goals: [JointGoal {
            joint: 0,
            position: f32::NAN,
            velocity: None,
            current: None,
        }]
        .into_iter()
        .collect(),
    };
    r.send(&bad);
    r.goals(&[(9, 0.1)]);
    r.run(20);
    let s = r.ctl.stats();
    assert_eq!(s.link_errors, 2);
    assert_eq!(s.rejected, 2);
    assert!(
        r.bus.borrow().servo(1).unwrap().torque_enabled(),
        "valid frames after noise still apply"
    );
}

/// A dead servo is left out of the bus reads after `SILENT_AFTER_MISSES` misses (each read of a
/// bus with one would wait out its whole deadline), probed every `PROBE_SILENT_EVERY` cycles,
/// still reported, and read every cycle again once a probe finds it answering.
#[test]
fn a_dead_servo_is_probed_not_waited_for() {
    use reachy_firmware::control::{PROBE_SILENT_EVERY, SILENT_AFTER_MISSES};
    let mut r = Rig::new(3);
    r.send(&Command::Safety(SafetyConfig {
        telemetry_every: 1,
        ..SafetyConfig::default()
    }));
    r.run(20);
    r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = true;
    r.run(SILENT_AFTER_MISSES as u32 + PROBE_SILENT_EVERY);
    // from now on a whole probe period costs about one probe's misses, not one per cycle
    let t0 = r.ctl.stats().bus_timeouts;
    let tel = r.run(2 * PROBE_SILENT_EVERY);
    let missed = r.ctl.stats().bus_timeouts - t0;
    assert!(
        (1..=6).contains(&missed),
        "{missed} missed reads in {} cycles",
        2 * PROBE_SILENT_EVERY
    );
    let (_, j) = Rig::last_state(&tel);
    assert!(j[1].flags & joint_flags::NO_REPLY != 0, "still reported");
    // it answers again: the next probe brings it back
    r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = false;
    r.run(PROBE_SILENT_EVERY + 1);
    let (_, j) = Rig::last_state(&r.run(5));
    assert!(j[1].flags & joint_flags::NO_REPLY == 0, "back in the reads");
}

/// A board whose buses are host processes (QEMU's ptys) sets a silence time as well: a servo
/// is reported `NO_REPLY`, and left out of the reads, only after `MISSES_FOR_NO_REPLY` misses
/// *and* that long without an answer, so a host stall of a few hundred ms is not a dead servo.
#[test]
fn a_silence_time_holds_back_no_reply_until_it_has_passed() {
    use reachy_firmware::control::{MISSES_FOR_NO_REPLY, SILENT_AFTER_MISSES};
    const QUIET_US: u64 = 200_000;
    let mut r = Rig::new(3);
    r.ctl.set_no_reply_after_us(QUIET_US as u32);
    r.send(&Command::Safety(SafetyConfig {
        telemetry_every: 1,
        ..SafetyConfig::default()
    }));
    r.run(20);
    // Silent from now on: cycle by cycle until it is reported, noting when and after how many
    // missed reads (each cycle waits out a read's timeout, so cycles run long here).
    for _ in 0..2 {
        r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = true;
        let (t0, m0) = (r.clock.peek(), r.ctl.stats().bus_timeouts);
        let (flagged_after_us, misses) = loop {
            let tel = r.run(1);
            if servo2_no_reply(&tel) {
                break (r.clock.peek() - t0, r.ctl.stats().bus_timeouts - m0);
            }
            assert!(r.clock.peek() - t0 < 10 * QUIET_US, "never reported");
        };
        assert!(
            (QUIET_US..QUIET_US + 20_000).contains(&flagged_after_us),
            "reported after {flagged_after_us} µs silent"
        );
        // read every cycle until then (not left out as silent on the count alone)
        assert!(
            misses > (MISSES_FOR_NO_REPLY + SILENT_AFTER_MISSES) as u32,
            "{misses} missed reads"
        );
        // answering again: the next probe clears it
        r.bus.borrow_mut().servo_mut(2).unwrap().faults.dead = false;
        r.run(60);
        let (_, j) = Rig::last_state(&r.run(5));
        assert!(j[1].flags & joint_flags::NO_REPLY == 0);
    }
}
