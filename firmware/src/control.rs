//! The control loop and its on-board safety.
//!
//! Each [`Controller::tick`] is one control cycle: apply host commands from the link, run the
//! watchdog, rate-limit and clamp goals, then on every servo bus sync-write the goals and
//! sync-read present current / velocity / position (temperature and hardware error in turn),
//! shut down joints that overheat or report a hardware error, and send telemetry every N cycles.
//!
//! Safety lives here, not on the host: the host heartbeat watchdog (hold, then torque off), joint
//! limits clamped on board, a per-cycle goal step limit (velocity limit), per-joint shutdown, and
//! an e-stop latch that only an explicit clear releases. No heap.

use embedded_io::{Read, ReadReady, Write};
use heapless::Vec;

use crate::dynamixel::control_table::{
    position_to_rad, rad_to_position, regs, Model, RAD_S_PER_STEP,
};
use crate::dynamixel::{Clock, Master};
use crate::link::{
    self, joint_flags, state_flags, Command, FrameDecoder, JointState, LoopStats, SafetyConfig,
    Telemetry, MAX_FRAME, MAX_JOINTS,
};

/// Most servo buses (one per limb: right arm, left arm, head).
pub const MAX_BUSES: usize = 3;

/// The longest cycle time a goal step is allowed for (µs): after a longer cycle (a stall) the
/// step is that of this long a cycle at the velocity limit (75 mrad at 3 rad/s).
pub const MAX_STEP_DT_US: u64 = 25_000;

/// Where a joint's servo sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JointMap {
    /// Bus index.
    pub bus: u8,
    /// Servo ID on that bus.
    pub id: u8,
}

#[derive(Debug, Clone, Copy)]
struct Joint {
    map: JointMap,
    lower: f32,
    upper: f32,
    max_vel: f32,
    target: f32,
    cmd: f32,
    ff_current: Option<f32>,
    torque_wanted: bool,
    torque_on: bool,
    torque_dirty: bool,
    shutdown: bool,
    shutdown_reported: bool,
    have_state: bool,
    /// State reads in a row this servo did not answer.
    misses: u8,
    /// When it last answered a state read (or when the controller started).
    last_reply_us: u64,
    state: JointState,
}

/// State reads in a row a servo may miss before it is reported `NO_REPLY`. One lost or late
/// reply is bus noise (or, in QEMU, an emulated UART that delivered the reply after the read's
/// timeout), not a dead servo: the joint keeps its last state for those cycles (≤ 2 ms old at
/// 1 kHz), and the timeout is counted in the stats either way.
pub const MISSES_FOR_NO_REPLY: u8 = 3;

/// Missed reads in a row after which a servo counts as dead: it is then read only every
/// [`PROBE_SILENT_EVERY`] cycles (and back in every cycle once it answers).
pub const SILENT_AFTER_MISSES: u8 = 20;

/// How often a dead servo is probed (cycles).
pub const PROBE_SILENT_EVERY: u32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watchdog {
    Ok,
    Hold,
    TorqueOff,
}

/// The firmware's control loop over a link port `L`, servo bus ports `P` and a clock `C`.
pub struct Controller<L, P, C> {
    link: L,
    buses: Vec<Master<P, C>, MAX_BUSES>,
    clock: C,
    joints: Vec<Joint, MAX_JOINTS>,
    model: Model,
    period_us: u32,
    safety: SafetyConfig,
    dec: FrameDecoder,
    estop: bool,
    estop_dirty: bool,
    watchdog: Watchdog,
    last_cmd_us: u64,
    host_seq: u32,
    seq: u32,
    stats: LoopStats,
    last_tick_us: Option<u64>,
    /// When the last state telemetry went out.
    last_state_us: Option<u64>,
    window_sum: u64,
    window_n: u32,
    window_max: u32,
    bus_max: u32,
    /// A servo is reported `NO_REPLY` only once it has also been silent this long.
    no_reply_after_us: u32,
    tx: [u8; MAX_FRAME],
}

/// Construction errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// More joints than [`MAX_JOINTS`] or buses than [`MAX_BUSES`].
    TooMany,
    /// A joint refers to a bus that was not given.
    NoSuchBus(u8),
}

impl<L, P, C> Controller<L, P, C>
where
    L: Read + Write + ReadReady,
    P: Read + Write + ReadReady,
    C: Clock + Clone,
{
    /// A controller for `joints` on `bus_ports`, cycling every `period_us`.
    pub fn new(
        link: L,
        bus_ports: impl IntoIterator<Item = P>,
        clock: C,
        joints: &[JointMap],
        model: Model,
        period_us: u32,
    ) -> Result<Self, ConfigError> {
        let mut buses = Vec::new();
        for p in bus_ports {
            let mut m = Master::new(p, clock.clone());
            m.timeout_us = 2_000;
            m.retries = 0;
            buses.push(m).map_err(|_| ConfigError::TooMany)?;
        }
        let mut js = Vec::new();
        for &map in joints {
            if map.bus as usize >= buses.len() {
                return Err(ConfigError::NoSuchBus(map.bus));
            }
            js.push(Joint {
                map,
                lower: -core::f32::consts::PI,
                upper: core::f32::consts::PI,
                max_vel: 2.0,
                target: 0.0,
                cmd: 0.0,
                ff_current: None,
                torque_wanted: false,
                torque_on: false,
                torque_dirty: true,
                shutdown: false,
                shutdown_reported: false,
                have_state: false,
                misses: 0,
                last_reply_us: clock.now_us(),
                state: JointState::default(),
            })
            .map_err(|_| ConfigError::TooMany)?;
        }
        let now = clock.now_us();
        Ok(Self {
            link,
            buses,
            clock,
            joints: js,
            model,
            period_us,
            safety: SafetyConfig::default(),
            dec: FrameDecoder::new(),
            estop: false,
            estop_dirty: false,
            watchdog: Watchdog::Ok,
            last_cmd_us: now,
            host_seq: 0,
            seq: 0,
            stats: LoopStats::default(),
            last_tick_us: None,
            last_state_us: None,
            window_sum: 0,
            window_n: 0,
            window_max: 0,
            bus_max: 0,
            no_reply_after_us: 0,
            tx: [0; MAX_FRAME],
        })
    }

    /// Per-servo reply timeout on the buses (µs).
    pub fn set_bus_timeout_us(&mut self, us: u32) {
        for b in &mut self.buses {
            b.timeout_us = us;
        }
    }

    /// Report a servo `NO_REPLY` (and stop reading it every cycle) only after it has also been
    /// silent for `us`, besides [`MISSES_FOR_NO_REPLY`] missed reads in a row. 0 (the default)
    /// leaves the count alone in charge, right for a bus the MCU drives itself; a board whose
    /// buses are host ptys (QEMU) sets a time above the host's scheduling stalls.
    pub fn set_no_reply_after_us(&mut self, us: u32) {
        self.no_reply_after_us = us;
    }

    /// Counters so far.
    pub fn stats(&self) -> LoopStats {
        self.stats
    }

    /// E-stop latched.
    pub fn estopped(&self) -> bool {
        self.estop
    }

    /// The bus masters (e.g. for benchmarks).
    pub fn bus_mut(&mut self, i: usize) -> Option<&mut Master<P, C>> {
        self.buses.get_mut(i)
    }

    fn apply(&mut self, cmd: Command, now: u64) {
        // any valid frame feeds the watchdog
        self.last_cmd_us = now;
        if self.watchdog != Watchdog::Ok {
            self.watchdog = Watchdog::Ok;
        }
        match cmd {
            Command::Heartbeat { seq } => self.host_seq = seq,
            Command::Goals { seq, goals } => {
                self.host_seq = seq;
                if self.estop {
                    self.stats.rejected += 1;
                    return;
                }
                for g in goals {
                    let ok = g.position.is_finite()
                        && g.velocity.is_none_or(f32::is_finite)
                        && g.current.is_none_or(f32::is_finite);
                    match self.joints.get_mut(g.joint as usize) {
                        Some(j) if ok => {
                            let clamped = g.position.clamp(j.lower, j.upper);
                            if clamped != g.position {
                                j.state.flags |= joint_flags::CLAMPED;
                            }
                            j.target = clamped;
                            j.ff_current = g.current;
                        }
                        _ => self.stats.rejected += 1,
                    }
                }
            }
            Command::Torque { mask, on } => {
                if on && self.estop {
                    self.stats.rejected += 1;
                    return;
                }
                for (i, j) in self.joints.iter_mut().enumerate() {
                    if i < 32 && mask & (1 << i) != 0 {
                        if on && j.shutdown {
                            self.stats.rejected += 1;
                            continue;
                        }
                        if j.torque_wanted != on {
                            j.torque_wanted = on;
                            j.torque_dirty = true;
                        }
                    }
                }
            }
            Command::Limits(limits) => {
                for l in limits {
                    let ok = l.lower.is_finite()
                        && l.upper.is_finite()
                        && l.lower <= l.upper
                        && l.max_velocity.is_finite()
                        && l.max_velocity > 0.0;
                    match self.joints.get_mut(l.joint as usize) {
                        Some(j) if ok => {
                            j.lower = l.lower;
                            j.upper = l.upper;
                            j.max_vel = l.max_velocity;
                            j.target = j.target.clamp(j.lower, j.upper);
                        }
                        _ => self.stats.rejected += 1,
                    }
                }
            }
            Command::Safety(s) => {
                if s.hold_after_ms == 0
                    || s.torque_off_after_ms < s.hold_after_ms
                    || s.telemetry_every == 0
                {
                    self.stats.rejected += 1;
                } else {
                    self.safety = s;
                }
            }
            Command::Gains { joint, p, i, d } => {
                let Some(j) = self.joints.get(joint as usize).copied() else {
                    self.stats.rejected += 1;
                    return;
                };
                let mut buf = [0u8; 6];
                buf[..2].copy_from_slice(&d.to_le_bytes());
                buf[2..4].copy_from_slice(&i.to_le_bytes());
                buf[4..].copy_from_slice(&p.to_le_bytes());
                if let Some(b) = self.buses.get_mut(j.map.bus as usize) {
                    if b.write(j.map.id, regs::POSITION_D_GAIN.addr, &buf).is_err() {
                        self.stats.rejected += 1;
                    }
                }
            }
            Command::Mode { joint, mode } => {
                let Some(j) = self.joints.get(joint as usize).copied() else {
                    self.stats.rejected += 1;
                    return;
                };
                if j.torque_on || !crate::dynamixel::control_table::operating_mode::is_valid(mode) {
                    self.stats.rejected += 1;
                    return;
                }
                if let Some(b) = self.buses.get_mut(j.map.bus as usize) {
                    if b.write(j.map.id, regs::OPERATING_MODE.addr, &[mode])
                        .is_err()
                    {
                        self.stats.rejected += 1;
                    }
                }
            }
            Command::EStop => {
                self.estop = true;
                self.estop_dirty = true;
                for j in self.joints.iter_mut() {
                    j.torque_wanted = false;
                    j.torque_dirty = true;
                }
            }
            Command::ClearEStop => self.estop = false,
            Command::Reboot { joint } => {
                let Some(j) = self.joints.get_mut(joint as usize) else {
                    self.stats.rejected += 1;
                    return;
                };
                let map = j.map;
                j.shutdown = false;
                j.shutdown_reported = false;
                j.torque_wanted = false;
                j.torque_on = false;
                // unknown until the next reads; the old values must not re-trigger the shutdown
                j.state.hardware_error = 0;
                j.state.temperature = 0;
                if let Some(b) = self.buses.get_mut(map.bus as usize) {
                    let _ = b.reboot(map.id);
                }
            }
        }
    }

    fn poll_link(&mut self, now: u64) {
        let mut buf = [0u8; 256];
        loop {
            match self.link.read_ready() {
                Ok(true) => {}
                _ => break,
            }
            let n = match self.link.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                match self.dec.push::<Command>(b) {
                    Some(Ok(cmd)) => self.apply(cmd, now),
                    Some(Err(_)) => self.stats.link_errors += 1,
                    None => {}
                }
            }
        }
    }

    fn run_watchdog(&mut self, now: u64) {
        let idle_ms = now.saturating_sub(self.last_cmd_us) / 1000;
        let any_torque = self.joints.iter().any(|j| j.torque_wanted);
        if idle_ms >= self.safety.torque_off_after_ms as u64 {
            if self.watchdog != Watchdog::TorqueOff && any_torque {
                for j in self.joints.iter_mut() {
                    j.torque_wanted = false;
                    j.torque_dirty = true;
                }
                self.watchdog = Watchdog::TorqueOff;
            }
        } else if idle_ms >= self.safety.hold_after_ms as u64 && self.watchdog == Watchdog::Ok {
            for j in self.joints.iter_mut() {
                // hold where the joint is now
                j.target = if j.have_state {
                    j.state.position
                } else {
                    j.cmd
                };
                j.cmd = j.target;
            }
            self.watchdog = Watchdog::Hold;
        }
    }

    /// One control cycle. Call it every `period_us`.
    pub fn tick(&mut self) {
        let now = self.clock.now_us();
        // the velocity limit holds in rad/s whatever the real cycle time, bounded so a stall
        // never turns into a jump: at most 5 periods or MAX_STEP_DT_US, whichever is longer
        // (a board whose cycle runs long — an emulated one, a slow bus — still moves at the
        // commanded speed)
        let mut dt = self.period_us as f32 * 1e-6;
        if let Some(last) = self.last_tick_us {
            let bound = (5.0 * dt).max(MAX_STEP_DT_US as f32 * 1e-6);
            dt = (now.saturating_sub(last) as f32 * 1e-6).min(bound);
            let p = now.saturating_sub(last) as u32;
            self.window_sum += p as u64;
            self.window_n += 1;
            self.window_max = self.window_max.max(p);
            if p > self.period_us + self.period_us / 2 {
                self.stats.overruns += 1;
            }
        }
        self.last_tick_us = Some(now);
        self.stats.cycles = self.stats.cycles.wrapping_add(1);
        let cycle = self.stats.cycles;

        self.poll_link(now);
        self.run_watchdog(now);

        // goals: clamp, then limit the step per cycle
        for j in self.joints.iter_mut() {
            j.state.flags &= !joint_flags::RATE_LIMITED;
            let step = j.max_vel * dt;
            let want = j.target.clamp(j.lower, j.upper);
            let d = want - j.cmd;
            if d.abs() > step {
                j.cmd += step.copysign(d);
                j.state.flags |= joint_flags::RATE_LIMITED;
            } else {
                j.cmd = want;
            }
        }

        let t_bus = self.clock.now_us();
        for b in 0..self.buses.len() {
            self.cycle_bus(b, cycle);
        }
        self.bus_max = self.bus_max.max((self.clock.now_us() - t_bus) as u32);
        self.estop_dirty = false;

        // shutdowns on over-temperature or hardware error
        let limit = self.safety.temperature_limit_c;
        let mut reports: Vec<(u8, u8, u8), MAX_JOINTS> = Vec::new();
        for (i, j) in self.joints.iter_mut().enumerate() {
            let hot = j.state.temperature >= limit;
            if (hot || j.state.hardware_error != 0) && j.have_state && !j.shutdown {
                j.shutdown = true;
                j.torque_wanted = false;
                j.torque_dirty = true;
            }
            if j.shutdown && !j.shutdown_reported {
                j.shutdown_reported = true;
                let _ = reports.push((i as u8, j.state.hardware_error, j.state.temperature));
            }
        }
        for (joint, hardware_error, temperature) in reports {
            self.send(&Telemetry::Shutdown {
                joint,
                hardware_error,
                temperature,
            });
        }

        // every `telemetry_every` cycles, and at least every `telemetry_every` periods of time:
        // cycles that run long must not starve the host of state, or it holds the whole robot
        // as stale
        let every = self.safety.telemetry_every.max(1) as u32;
        let due_by_time = self
            .last_state_us
            .is_some_and(|t| now.saturating_sub(t) >= every as u64 * self.period_us as u64);
        if cycle.is_multiple_of(every) || due_by_time {
            self.last_state_us = Some(now);
            self.send_state(now);
        }
    }

    fn cycle_bus(&mut self, b: usize, cycle: u32) {
        let mut ids = [0u8; MAX_JOINTS];
        let mut idx = [0usize; MAX_JOINTS];
        let mut n = 0;
        for (i, j) in self.joints.iter().enumerate() {
            if j.map.bus as usize == b {
                ids[n] = j.map.id;
                idx[n] = i;
                n += 1;
            }
        }
        if n == 0 {
            return;
        }
        let bus = &mut self.buses[b];

        // torque changes (e-stop first: one broadcast-style sync write for every servo)
        let mut tids = [0u8; MAX_JOINTS];
        let mut tval = [0u8; MAX_JOINTS];
        let mut tgoal = [0u8; 4 * MAX_JOINTS];
        let mut tn = 0;
        for &i in &idx[..n] {
            let j = &mut self.joints[i];
            if j.torque_dirty || self.estop_dirty {
                let on = j.torque_wanted && !self.estop && !j.shutdown;
                if on && !j.torque_on {
                    // start from where the joint is
                    let p = if j.have_state {
                        j.state.position
                    } else {
                        j.cmd
                    };
                    j.cmd = p;
                    j.target = p.clamp(j.lower, j.upper);
                }
                tids[tn] = j.map.id;
                tval[tn] = on as u8;
                tgoal[4 * tn..4 * tn + 4].copy_from_slice(&rad_to_position(j.cmd).to_le_bytes());
                tn += 1;
                j.torque_on = on;
                j.torque_dirty = false;
            }
        }
        if tn > 0 {
            // goal first so torque-on does not jump, then torque
            let _ = bus.sync_write(regs::GOAL_POSITION.addr, 4, &tids[..tn], &tgoal[..4 * tn]);
            let _ = bus.sync_write(regs::TORQUE_ENABLE.addr, 1, &tids[..tn], &tval[..tn]);
        }

        // goals of joints with torque on
        let mut gids = [0u8; MAX_JOINTS];
        let mut gdata = [0u8; 4 * MAX_JOINTS];
        let mut gn = 0;
        for &i in &idx[..n] {
            let j = &self.joints[i];
            if j.torque_on {
                gids[gn] = j.map.id;
                gdata[4 * gn..4 * gn + 4].copy_from_slice(&rad_to_position(j.cmd).to_le_bytes());
                gn += 1;
            }
        }
        if gn > 0 {
            let _ = bus.sync_write(regs::GOAL_POSITION.addr, 4, &gids[..gn], &gdata[..4 * gn]);
        }

        // Servos silent for `SILENT_AFTER_MISSES` reads in a row are left out of the reads but
        // every `PROBE_SILENT_EVERY` cycles: a sync read waits for a missing reply until its
        // deadline (`timeout × servos`), so one dead servo would stretch every cycle of its bus
        // tenfold and slow the others' motion. (A late reply now and then, as under QEMU, is
        // far from that many in a row.)
        let probe = cycle.is_multiple_of(PROBE_SILENT_EVERY);
        let (mut rids, mut ridx) = ([0u8; MAX_JOINTS], [0usize; MAX_JOINTS]);
        let mut rn = 0;
        for k in 0..n {
            let j = &self.joints[idx[k]];
            let silent =
                j.misses >= SILENT_AFTER_MISSES && j.state.flags & joint_flags::NO_REPLY != 0;
            if probe || !silent {
                rids[rn] = ids[k];
                ridx[rn] = idx[k];
                rn += 1;
            }
        }
        let (ids, idx, n) = (rids, ridx, rn);
        if n == 0 {
            return;
        }
        // present current (126, 2) + velocity (128, 4) + position (132, 4) in one read
        let mut data = [0u8; 10 * MAX_JOINTS];
        let mut ok = [false; MAX_JOINTS];
        let timeouts0 = bus.stats.timeouts;
        let crc0 = bus.decoder_stats().crc_errors;
        let _ = bus.sync_read(
            regs::PRESENT_CURRENT.addr,
            10,
            &ids[..n],
            &mut data,
            &mut ok,
        );
        // temperature and hardware error in turn, every 10 cycles each
        // Temperature and hardware error in turn, every 10 cycles each. Each read has its own
        // length (3 bytes from 144: voltage + temperature; 2 bytes from 69: registered
        // instruction + hardware error; the state read is 10 bytes), so a late reply from an
        // earlier transaction can never be taken for this one: Protocol 2.0 has no transaction
        // IDs, and the master drops replies whose length does not match.
        let mut aux = [0u8; 3 * MAX_JOINTS];
        let mut aux_ok = [false; MAX_JOINTS];
        let aux_read = match cycle % 10 {
            0 => Some((regs::PRESENT_INPUT_VOLTAGE.addr, 3u16)),
            5 => Some((regs::HARDWARE_ERROR_STATUS.addr - 1, 2u16)),
            _ => None,
        };
        if let Some((addr, len)) = aux_read {
            let _ = bus.sync_read(addr, len, &ids[..n], &mut aux, &mut aux_ok);
        }
        self.stats.bus_timeouts += bus.stats.timeouts - timeouts0;
        self.stats.bus_crc_errors += bus.decoder_stats().crc_errors - crc0;
        let cur_unit = self.model.current_unit_a();
        let now = self.clock.now_us();
        for k in 0..n {
            let j = &mut self.joints[idx[k]];
            if ok[k] {
                let d = &data[10 * k..10 * k + 10];
                let cur = i16::from_le_bytes([d[0], d[1]]);
                let vel = i32::from_le_bytes([d[2], d[3], d[4], d[5]]);
                let pos = i32::from_le_bytes([d[6], d[7], d[8], d[9]]);
                j.state.current = cur as f32 * cur_unit;
                j.state.velocity = vel as f32 * RAD_S_PER_STEP;
                j.state.position = position_to_rad(pos);
                j.state.flags &= !joint_flags::NO_REPLY;
                j.misses = 0;
                j.last_reply_us = now;
                if !j.have_state {
                    j.have_state = true;
                    if !j.torque_on {
                        j.cmd = j.state.position;
                        j.target = j.state.position.clamp(j.lower, j.upper);
                    }
                }
            } else {
                j.misses = j.misses.saturating_add(1);
                let quiet_us = now.saturating_sub(j.last_reply_us);
                if j.misses >= MISSES_FOR_NO_REPLY && quiet_us >= self.no_reply_after_us as u64 {
                    j.state.flags |= joint_flags::NO_REPLY;
                }
            }
            if aux_ok[k] {
                match aux_read {
                    Some((_, 3)) => j.state.temperature = aux[3 * k + 2],
                    Some((_, 2)) => j.state.hardware_error = aux[2 * k + 1],
                    _ => {}
                }
            }
            if !j.torque_on && j.have_state {
                // limp joints: the goal follows the measured position
                j.cmd = j.state.position;
            }
        }
    }

    fn send<T: serde::Serialize>(&mut self, msg: &T) {
        if let Ok(n) = link::encode(msg, &mut self.tx) {
            let _ = self.link.write_all(&self.tx[..n]);
            let _ = self.link.flush();
        }
    }

    fn send_state(&mut self, now: u64) {
        let mut joints: Vec<JointState, MAX_JOINTS> = Vec::new();
        for j in self.joints.iter() {
            let mut s = j.state;
            s.flags &= joint_flags::NO_REPLY | joint_flags::CLAMPED | joint_flags::RATE_LIMITED;
            if j.torque_on {
                s.flags |= joint_flags::TORQUE_ON;
            }
            if j.shutdown {
                s.flags |= joint_flags::SHUTDOWN;
            }
            let _ = joints.push(s);
        }
        for j in self.joints.iter_mut() {
            j.state.flags &= !joint_flags::CLAMPED;
        }
        let mut flags = 0;
        if self.estop {
            flags |= state_flags::ESTOP;
        }
        match self.watchdog {
            Watchdog::Hold => flags |= state_flags::HOLD,
            Watchdog::TorqueOff => flags |= state_flags::WATCHDOG_TORQUE_OFF,
            Watchdog::Ok => {}
        }
        self.stats.link_errors = self.dec.stats.errors;
        let mut stats = self.stats;
        if self.window_n > 0 {
            stats.period_mean_us = (self.window_sum / self.window_n as u64) as u32;
        }
        stats.period_max_us = self.window_max;
        stats.bus_max_us = self.bus_max;
        self.window_sum = 0;
        self.window_n = 0;
        self.window_max = 0;
        self.bus_max = 0;
        self.seq = self.seq.wrapping_add(1);
        let msg = Telemetry::State {
            seq: self.seq,
            t_us: now,
            host_seq: self.host_seq,
            flags,
            joints,
            stats,
        };
        self.send(&msg);
    }
}
