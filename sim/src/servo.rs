//! Simulated Dynamixel X-series servos and the bus they share.
//!
//! A [`SimServo`] has the real control table (EEPROM locked while torque is on), a first-order
//! position response limited by its velocity and current limits, a temperature that rises with
//! current and trips an overheating shutdown, and injectable faults (hardware errors, dropped
//! replies). A [`SimBus`] answers Dynamixel 2.0 instruction packets for a set of servos exactly
//! as a real bus would: ping (incl. broadcast), read, write, reg write / action, reboot, factory
//! reset, sync read / write, fast sync read, bulk read / write.

use reachy_firmware::dynamixel::control_table::{
    hardware_error, operating_mode, position_to_rad, rad_to_position, regs, Model, Register,
    RAD_S_PER_STEP,
};
use reachy_firmware::dynamixel::packet::{self, Decoder, Event, Instruction, BROADCAST_ID};

/// Control table size (bytes).
pub const TABLE_SIZE: usize = 256;
/// Ambient temperature (°C).
pub const AMBIENT_C: f32 = 25.0;

/// Protocol error codes in the status byte.
pub mod status_error {
    /// Result fail.
    pub const RESULT_FAIL: u8 = 1;
    /// Instruction error.
    pub const INSTRUCTION: u8 = 2;
    /// CRC error.
    pub const CRC: u8 = 3;
    /// Data range error.
    pub const DATA_RANGE: u8 = 4;
    /// Data length error.
    pub const DATA_LENGTH: u8 = 5;
    /// Data limit error.
    pub const DATA_LIMIT: u8 = 6;
    /// Access error.
    pub const ACCESS: u8 = 7;
    /// Hardware alert flag.
    pub const ALERT: u8 = 0x80;
}

/// Faults a test can inject into one servo.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Never answer (a dead servo or a cut cable).
    pub dead: bool,
    /// Drop the next N replies.
    pub drop_next: u32,
    /// Drop every reply with this probability (deterministic generator).
    pub drop_rate: f32,
    /// Extra load torque (N·m) opposing motion, which raises current and temperature.
    pub load_nm: f32,
}

/// One simulated servo.
#[derive(Debug, Clone)]
pub struct SimServo {
    model: Model,
    table: [u8; TABLE_SIZE],
    /// Position (rad), velocity (rad/s), current (A), temperature (°C).
    pos: f32,
    vel: f32,
    current: f32,
    temp: f32,
    registered: Option<(u16, [u8; 16], usize)>,
    /// Injected faults.
    pub faults: Faults,
    rng: u32,
}

impl SimServo {
    /// A servo with factory defaults, the given ID, at 0 rad.
    pub fn new(id: u8, model: Model) -> Self {
        let mut s = Self {
            model,
            table: [0; TABLE_SIZE],
            pos: 0.0,
            vel: 0.0,
            current: 0.0,
            temp: AMBIENT_C,
            registered: None,
            faults: Faults::default(),
            rng: 0x1234_5678 ^ id as u32,
        };
        s.factory_reset(false);
        s.set(&regs::ID, id as i64);
        s.sync_present();
        s
    }

    fn factory_reset(&mut self, keep_id: bool) {
        let id = self.table[regs::ID.addr as usize];
        self.table = [0; TABLE_SIZE];
        self.set(&regs::MODEL_NUMBER, self.model.number() as i64);
        self.set(&regs::FIRMWARE_VERSION, 46);
        self.set(&regs::ID, if keep_id { id as i64 } else { 1 });
        self.set(&regs::BAUD_RATE, 1);
        self.set(&regs::RETURN_DELAY_TIME, 250);
        self.set(&regs::OPERATING_MODE, operating_mode::POSITION as i64);
        self.set(&regs::TEMPERATURE_LIMIT, 80);
        self.set(&regs::MAX_VOLTAGE_LIMIT, 160);
        self.set(&regs::MIN_VOLTAGE_LIMIT, 95);
        self.set(&regs::PWM_LIMIT, 885);
        let cur = (self.model.stall_torque_nm() / 1.8 / self.model.current_unit_a()) as i64;
        self.set(&regs::CURRENT_LIMIT, cur.min(1193));
        self.set(
            &regs::VELOCITY_LIMIT,
            (self.model.no_load_speed() / RAD_S_PER_STEP) as i64,
        );
        self.set(&regs::MAX_POSITION_LIMIT, 4095);
        self.set(&regs::MIN_POSITION_LIMIT, 0);
        self.set(&regs::SHUTDOWN, 0b0011_0100);
        self.set(&regs::STATUS_RETURN_LEVEL, 2);
        self.set(&regs::POSITION_P_GAIN, 800);
        self.set(&regs::PRESENT_INPUT_VOLTAGE, 120);
        self.set(&regs::GOAL_POSITION, rad_to_position(self.pos) as i64);
    }

    /// ID.
    pub fn id(&self) -> u8 {
        self.table[regs::ID.addr as usize]
    }
    /// Model.
    pub fn model(&self) -> Model {
        self.model
    }
    /// Read a register's raw value.
    pub fn get(&self, r: &Register) -> i64 {
        r.decode(&self.table[r.addr as usize..]).unwrap_or(0)
    }
    fn set(&mut self, r: &Register, v: i64) {
        let a = r.addr as usize;
        let _ = r.encode(v, &mut self.table[a..a + r.size as usize]);
    }
    /// Position (rad).
    pub fn position(&self) -> f32 {
        self.pos
    }
    /// Set the position directly (e.g. an external physics engine moved the joint).
    pub fn set_position(&mut self, rad: f32) {
        self.pos = rad;
        self.sync_present();
    }
    /// Temperature (°C).
    pub fn temperature(&self) -> f32 {
        self.temp
    }
    /// Torque enabled.
    pub fn torque_enabled(&self) -> bool {
        self.table[regs::TORQUE_ENABLE.addr as usize] != 0
    }
    /// Hardware error bits.
    pub fn hardware_error(&self) -> u8 {
        self.table[regs::HARDWARE_ERROR_STATUS.addr as usize]
    }
    /// Raise hardware error bits; a bit that is in the shutdown mask turns torque off until reboot.
    pub fn inject_hardware_error(&mut self, bits: u8) {
        let e = self.hardware_error() | bits;
        self.table[regs::HARDWARE_ERROR_STATUS.addr as usize] = e;
        if e & self.table[regs::SHUTDOWN.addr as usize] != 0 {
            self.table[regs::TORQUE_ENABLE.addr as usize] = 0;
        }
    }

    fn sync_present(&mut self) {
        self.set(&regs::PRESENT_POSITION, rad_to_position(self.pos) as i64);
        let v = self.vel / RAD_S_PER_STEP;
        self.set(&regs::PRESENT_VELOCITY, v.round() as i64);
        let c = self.current / self.model.current_unit_a();
        self.set(&regs::PRESENT_CURRENT, c.round() as i64);
        self.set(&regs::PRESENT_TEMPERATURE, self.temp.round() as i64);
        let goal = self.get(&regs::GOAL_POSITION);
        let moving = (goal - self.get(&regs::PRESENT_POSITION)).abs() > 20 || self.vel.abs() > 0.05;
        self.table[regs::MOVING.addr as usize] = moving as u8;
    }

    /// What the motor is asked to do when something else (a physics engine) moves the joint:
    /// hold this position (rad, within the position limits in position mode), or `None` when
    /// the torque is off or the mode is not a position mode (the joint is limp).
    pub fn position_command(&self) -> Option<f32> {
        if !self.torque_enabled() {
            return None;
        }
        let mode = self.table[regs::OPERATING_MODE.addr as usize];
        let goal = position_to_rad(self.get(&regs::GOAL_POSITION) as i32);
        match mode {
            operating_mode::POSITION | operating_mode::CURRENT_BASED_POSITION => {
                let lo = position_to_rad(self.get(&regs::MIN_POSITION_LIMIT) as i32);
                let hi = position_to_rad(self.get(&regs::MAX_POSITION_LIMIT) as i32);
                Some(goal.clamp(lo, hi))
            }
            operating_mode::EXTENDED_POSITION => Some(goal),
            _ => None,
        }
    }

    /// The joint as a physics engine moved it over `dt` seconds: position (rad), velocity
    /// (rad/s) and the torque the motor gave (N·m, as current through the motor constant, within
    /// the current limit); then the servo's own temperature and hardware-error behaviour, and
    /// its present registers, as [`Self::step`] does for its own motion.
    pub fn physics_update(&mut self, pos: f32, vel: f32, torque_nm: f32, dt: f32) {
        let kt = 1.8; // N·m per A, XM430-class
        let imax = self.get(&regs::CURRENT_LIMIT) as f32 * self.model.current_unit_a();
        self.pos = pos;
        self.vel = vel;
        self.current = if self.torque_enabled() {
            (torque_nm / kt).clamp(-imax, imax)
        } else {
            0.0
        };
        // a real joint's load (gravity on a full arm) is held for minutes: heating as an XM430's
        // (≈ 1 °C/s at 4.5 A), not the fast-heating model of the servos' own motion
        self.thermal(dt, 0.05);
    }

    /// I²R heating (`k` °C per A²·s), Newtonian cooling, the over-temperature shutdown.
    fn thermal(&mut self, dt: f32, k: f32) {
        let heat = k * self.current * self.current;
        self.temp += (heat - 0.02 * (self.temp - AMBIENT_C)) * dt;
        let limit = self.table[regs::TEMPERATURE_LIMIT.addr as usize] as f32;
        if self.temp > limit {
            self.inject_hardware_error(hardware_error::OVERHEATING);
        }
        self.sync_present();
    }

    /// Advance the servo's own dynamics by `dt` seconds.
    pub fn step(&mut self, dt: f32) {
        let vmax = (self.get(&regs::VELOCITY_LIMIT) as f32 * RAD_S_PER_STEP).max(0.1);
        let kt = 1.8; // N·m per A, XM430-class
        let imax = self.get(&regs::CURRENT_LIMIT) as f32 * self.model.current_unit_a();
        let mode = self.table[regs::OPERATING_MODE.addr as usize];
        let mut target_vel = 0.0;
        if self.torque_enabled() {
            match mode {
                operating_mode::VELOCITY => {
                    target_vel = self.get(&regs::GOAL_VELOCITY) as f32 * RAD_S_PER_STEP;
                }
                operating_mode::POSITION
                | operating_mode::EXTENDED_POSITION
                | operating_mode::CURRENT_BASED_POSITION => {
                    let lo = position_to_rad(self.get(&regs::MIN_POSITION_LIMIT) as i32);
                    let hi = position_to_rad(self.get(&regs::MAX_POSITION_LIMIT) as i32);
                    let mut goal = position_to_rad(self.get(&regs::GOAL_POSITION) as i32);
                    if mode == operating_mode::POSITION {
                        goal = goal.clamp(lo, hi);
                    }
                    let tau: f32 = 0.02; // first-order time constant (s)
                    target_vel = (goal - self.pos) / tau.max(dt);
                }
                _ => {}
            }
        }
        target_vel = target_vel.clamp(-vmax, vmax);
        // acceleration limited by the current limit through the motor constant and an inertia
        let inertia = 0.002;
        let amax = (imax * kt / inertia).max(1.0);
        let dv = (target_vel - self.vel).clamp(-amax * dt, amax * dt);
        let accel = dv / dt.max(1e-6);
        self.vel += dv;
        self.pos += self.vel * dt;
        let torque = inertia * accel + self.faults.load_nm * self.vel.signum() + 0.05 * self.vel;
        self.current = if self.torque_enabled() {
            (torque / kt).clamp(-imax, imax)
        } else {
            0.0
        };
        if !self.torque_enabled() {
            self.vel *= 0.9; // friction brakes a limp joint
        }
        self.thermal(dt, 8.0);
    }

    fn should_drop(&mut self) -> bool {
        if self.faults.dead {
            return true;
        }
        if self.faults.drop_next > 0 {
            self.faults.drop_next -= 1;
            return true;
        }
        if self.faults.drop_rate > 0.0 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 17;
            self.rng ^= self.rng << 5;
            return (self.rng as f32 / u32::MAX as f32) < self.faults.drop_rate;
        }
        false
    }

    fn alert(&self) -> u8 {
        if self.hardware_error() != 0 {
            status_error::ALERT
        } else {
            0
        }
    }

    /// Read `len` bytes at `addr`, or a protocol error code.
    fn read_bytes(&self, addr: u16, len: u16) -> Result<&[u8], u8> {
        let (a, l) = (addr as usize, len as usize);
        if l == 0 || a + l > TABLE_SIZE {
            return Err(status_error::DATA_RANGE);
        }
        Ok(&self.table[a..a + l])
    }

    /// Write bytes at `addr`, honouring read-only registers and the EEPROM lock.
    fn write_bytes(&mut self, addr: u16, data: &[u8]) -> Result<(), u8> {
        let a = addr as usize;
        if data.is_empty() || a + data.len() > TABLE_SIZE {
            return Err(status_error::DATA_RANGE);
        }
        let torque_on = self.torque_enabled();
        for off in 0..data.len() {
            let at = (a + off) as u16;
            if let Some(r) = reachy_firmware::dynamixel::control_table::by_addr(at) {
                if !r.writable {
                    return Err(status_error::ACCESS);
                }
                if r.eeprom && torque_on {
                    return Err(status_error::ACCESS);
                }
            }
        }
        // a hardware-error shutdown keeps torque off until reboot
        if a <= regs::TORQUE_ENABLE.addr as usize
            && a + data.len() > regs::TORQUE_ENABLE.addr as usize
            && data[regs::TORQUE_ENABLE.addr as usize - a] != 0
            && self.hardware_error() & self.table[regs::SHUTDOWN.addr as usize] != 0
        {
            return Err(status_error::RESULT_FAIL);
        }
        if a <= regs::OPERATING_MODE.addr as usize
            && a + data.len() > regs::OPERATING_MODE.addr as usize
        {
            let m = data[regs::OPERATING_MODE.addr as usize - a];
            if !operating_mode::is_valid(m) {
                return Err(status_error::DATA_RANGE);
            }
        }
        let was_on = torque_on;
        self.table[a..a + data.len()].copy_from_slice(data);
        if !was_on && self.torque_enabled() {
            // on torque enable the goal snaps to the present position (as on real servos)
            let p = rad_to_position(self.pos) as i64;
            if !(a..a + data.len()).contains(&(regs::GOAL_POSITION.addr as usize)) {
                self.set(&regs::GOAL_POSITION, p);
            }
        }
        Ok(())
    }

    fn reboot(&mut self) {
        self.table[regs::HARDWARE_ERROR_STATUS.addr as usize] = 0;
        self.table[regs::TORQUE_ENABLE.addr as usize] = 0;
        self.temp = self
            .temp
            .min(self.table[regs::TEMPERATURE_LIMIT.addr as usize] as f32 - 5.0);
        self.vel = 0.0;
        self.sync_present();
    }
}

/// Counters of a simulated bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimBusStats {
    /// Instruction packets handled.
    pub instructions: u32,
    /// Replies sent.
    pub replies: u32,
    /// Replies suppressed by injected faults.
    pub dropped: u32,
    /// Corrupt packets seen (CRC, framing).
    pub corrupt: u32,
}

/// Servos sharing one bus.
#[derive(Debug, Clone)]
pub struct SimBus {
    /// The servos, any IDs.
    pub servos: Vec<SimServo>,
    decoder: Decoder<2048>,
    /// Counters.
    pub stats: SimBusStats,
}

impl SimBus {
    /// A bus with servos of `model` at `ids`.
    pub fn new(ids: &[u8], model: Model) -> Self {
        Self {
            servos: ids.iter().map(|&id| SimServo::new(id, model)).collect(),
            decoder: Decoder::new(),
            stats: SimBusStats::default(),
        }
    }

    /// Servo by ID.
    pub fn servo(&self, id: u8) -> Option<&SimServo> {
        self.servos.iter().find(|s| s.id() == id)
    }
    /// Servo by ID, mutable.
    pub fn servo_mut(&mut self, id: u8) -> Option<&mut SimServo> {
        self.servos.iter_mut().find(|s| s.id() == id)
    }

    /// Advance every servo by `dt` seconds.
    pub fn step(&mut self, dt: f32) {
        for s in &mut self.servos {
            s.step(dt);
        }
    }

    /// Feed bytes from the master; replies are appended to `out`.
    pub fn receive(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            match self.decoder.push(b) {
                Event::Packet => {
                    let Some(p) = self.decoder.packet() else {
                        continue;
                    };
                    if p.instruction == Instruction::Status {
                        continue; // another servo's reply on a shared line
                    }
                    let (id, inst) = (p.id, p.instruction);
                    let mut params = [0u8; 2048];
                    let n = p.params.len();
                    params[..n].copy_from_slice(p.params);
                    self.stats.instructions += 1;
                    self.handle(id, inst, &params[..n], out);
                }
                Event::Error(_) => self.stats.corrupt += 1,
                Event::Pending => {}
            }
        }
    }

    fn reply(&mut self, idx: usize, inst: Instruction, err: u8, data: &[u8], out: &mut Vec<u8>) {
        let s = &mut self.servos[idx];
        let level = s.table[regs::STATUS_RETURN_LEVEL.addr as usize];
        let wanted = match inst {
            Instruction::Ping => true,
            Instruction::Read
            | Instruction::SyncRead
            | Instruction::BulkRead
            | Instruction::FastSyncRead => level >= 1,
            _ => level >= 2,
        };
        if !wanted {
            return;
        }
        if s.should_drop() {
            self.stats.dropped += 1;
            return;
        }
        let err = err | s.alert();
        let mut buf = [0u8; 1100];
        if let Ok(n) = packet::encode(s.id(), Instruction::Status as u8, Some(err), data, &mut buf)
        {
            out.extend_from_slice(&buf[..n]);
            self.stats.replies += 1;
        }
    }

    /// Answer a read of `len` bytes at `addr` from servo `i`: the data, or the error code.
    fn reply_read(&mut self, i: usize, inst: Instruction, addr: u16, len: u16, out: &mut Vec<u8>) {
        match self.servos[i].read_bytes(addr, len) {
            Ok(d) => {
                let d = d.to_vec();
                self.reply(i, inst, 0, &d, out)
            }
            Err(e) => self.reply(i, inst, e, &[], out),
        }
    }

    fn handle(&mut self, id: u8, inst: Instruction, p: &[u8], out: &mut Vec<u8>) {
        let le16 = |i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
        let targets: Vec<usize> = (0..self.servos.len())
            .filter(|&i| id == BROADCAST_ID || self.servos[i].id() == id)
            .collect();
        match inst {
            Instruction::Ping => {
                for i in targets {
                    let m = self.servos[i].model.number().to_le_bytes();
                    let fw = self.servos[i].table[regs::FIRMWARE_VERSION.addr as usize];
                    self.reply(i, inst, 0, &[m[0], m[1], fw], out);
                }
            }
            Instruction::Read => {
                if id == BROADCAST_ID {
                    return;
                }
                for i in targets {
                    if p.len() != 4 {
                        self.reply(i, inst, status_error::DATA_LENGTH, &[], out);
                        continue;
                    }
                    self.reply_read(i, inst, le16(0), le16(2), out);
                }
            }
            Instruction::Write | Instruction::RegWrite => {
                for i in targets {
                    if p.len() < 3 {
                        if id != BROADCAST_ID {
                            self.reply(i, inst, status_error::DATA_LENGTH, &[], out);
                        }
                        continue;
                    }
                    let r = if inst == Instruction::Write {
                        self.servos[i].write_bytes(le16(0), &p[2..])
                    } else if p.len() - 2 <= 16 {
                        let mut b = [0u8; 16];
                        b[..p.len() - 2].copy_from_slice(&p[2..]);
                        self.servos[i].registered = Some((le16(0), b, p.len() - 2));
                        Ok(())
                    } else {
                        Err(status_error::DATA_LENGTH)
                    };
                    if id != BROADCAST_ID {
                        self.reply(i, inst, r.err().unwrap_or(0), &[], out);
                    }
                }
            }
            Instruction::Action => {
                for i in targets {
                    let r = match self.servos[i].registered.take() {
                        Some((a, b, n)) => self.servos[i].write_bytes(a, &b[..n]),
                        None => Err(status_error::RESULT_FAIL),
                    };
                    if id != BROADCAST_ID {
                        self.reply(i, inst, r.err().unwrap_or(0), &[], out);
                    }
                }
            }
            Instruction::Reboot | Instruction::FactoryReset | Instruction::Clear => {
                for i in targets {
                    match inst {
                        Instruction::Reboot => self.servos[i].reboot(),
                        Instruction::FactoryReset => {
                            let keep = p.first().copied().unwrap_or(0) == 0x02;
                            self.servos[i].factory_reset(keep);
                        }
                        _ => {}
                    }
                    if id != BROADCAST_ID {
                        self.reply(i, inst, 0, &[], out);
                    }
                }
            }
            Instruction::SyncRead | Instruction::FastSyncRead => {
                if p.len() < 4 {
                    return;
                }
                let (addr, len) = (le16(0), le16(2));
                if inst == Instruction::SyncRead {
                    for &sid in &p[4..] {
                        if let Some(i) = self.servos.iter().position(|s| s.id() == sid) {
                            self.reply_read(i, inst, addr, len, out);
                        }
                    }
                } else {
                    self.fast_sync_read(addr, len, &p[4..], out);
                }
            }
            Instruction::SyncWrite => {
                if p.len() < 4 {
                    return;
                }
                let (addr, len) = (le16(0), le16(2) as usize);
                let mut k = 4;
                while len > 0 && k + 1 + len <= p.len() {
                    let sid = p[k];
                    if let Some(s) = self.servo_mut(sid) {
                        let _ = s.write_bytes(addr, &p[k + 1..k + 1 + len]);
                    }
                    k += 1 + len;
                }
            }
            Instruction::BulkRead | Instruction::FastBulkRead => {
                let mut k = 0;
                while k + 5 <= p.len() {
                    let (sid, addr, len) = (p[k], le16(k + 1), le16(k + 3));
                    if let Some(i) = self.servos.iter().position(|s| s.id() == sid) {
                        self.reply_read(i, inst, addr, len, out);
                    }
                    k += 5;
                }
            }
            Instruction::BulkWrite => {
                let mut k = 0;
                while k + 5 <= p.len() {
                    let (sid, addr, len) = (p[k], le16(k + 1), le16(k + 3) as usize);
                    if k + 5 + len > p.len() {
                        break;
                    }
                    if let Some(s) = self.servo_mut(sid) {
                        let _ = s.write_bytes(addr, &p[k + 5..k + 5 + len]);
                    }
                    k += 5 + len;
                }
            }
            Instruction::Status => {}
        }
    }

    /// Fast Sync Read: one status packet, ID 0xFE, blocks `[ERR ID DATA CRC]` whose CRC is the
    /// running CRC of the packet so far; a servo that does not answer leaves its block out.
    fn fast_sync_read(&mut self, addr: u16, len: u16, ids: &[u8], out: &mut Vec<u8>) {
        let mut blocks: Vec<(u8, u8, Vec<u8>)> = Vec::new();
        for &sid in ids {
            let Some(i) = self.servos.iter().position(|s| s.id() == sid) else {
                continue;
            };
            if self.servos[i].should_drop() {
                self.stats.dropped += 1;
                continue;
            }
            let alert = self.servos[i].alert();
            match self.servos[i].read_bytes(addr, len) {
                Ok(d) => blocks.push((alert, sid, d.to_vec())),
                Err(e) => blocks.push((e | alert, sid, vec![0; len as usize])),
            }
        }
        if blocks.is_empty() {
            return;
        }
        let body_len: usize = blocks.iter().map(|b| 2 + b.2.len() + 2).sum();
        let len_field = (1 + body_len) as u16; // instruction + blocks (last CRC is the packet CRC)
        let start = out.len();
        out.extend_from_slice(&packet::HEADER);
        out.push(BROADCAST_ID);
        out.extend_from_slice(&len_field.to_le_bytes());
        out.push(Instruction::Status as u8);
        for (err, sid, data) in blocks {
            out.push(err);
            out.push(sid);
            out.extend_from_slice(&data);
            let c = reachy_firmware::dynamixel::crc::crc16(&out[start..]);
            out.extend_from_slice(&c.to_le_bytes());
        }
        self.stats.replies += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    #[test]
    fn answers_the_reference_ping_and_read() {
        let mut bus = SimBus::new(&[1], Model::Xm430W210);
        let mut out = Vec::new();
        bus.servo_mut(1).unwrap().table[6] = 38;
        bus.receive(&hex("FF FF FD 00 01 03 00 01 19 4E"), &mut out);
        assert_eq!(out, hex("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D"));
        out.clear();
        bus.servo_mut(1).unwrap().set(&regs::PRESENT_POSITION, 166);
        bus.receive(&hex("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15"), &mut out);
        assert_eq!(out, hex("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0"));
        out.clear();
        bus.receive(
            &hex("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89"),
            &mut out,
        );
        assert_eq!(out, hex("FF FF FD 00 01 04 00 55 00 A1 0C"));
        assert_eq!(bus.servo(1).unwrap().get(&regs::GOAL_POSITION), 512);
    }

    #[test]
    fn eeprom_is_locked_while_torque_is_on() {
        let mut s = SimServo::new(3, Model::Xm430W350);
        assert!(s.write_bytes(regs::OPERATING_MODE.addr, &[1]).is_ok());
        s.write_bytes(regs::TORQUE_ENABLE.addr, &[1]).unwrap();
        assert_eq!(
            s.write_bytes(regs::OPERATING_MODE.addr, &[3]),
            Err(status_error::ACCESS)
        );
        assert_eq!(
            s.write_bytes(regs::PRESENT_POSITION.addr, &[0, 0, 0, 0]),
            Err(status_error::ACCESS)
        );
    }

    #[test]
    fn follows_goal_within_velocity_limit_and_overheats_under_load() {
        let mut s = SimServo::new(1, Model::Xm430W350);
        s.write_bytes(regs::TORQUE_ENABLE.addr, &[1]).unwrap();
        let goal = rad_to_position(1.0);
        s.write_bytes(regs::GOAL_POSITION.addr, &goal.to_le_bytes())
            .unwrap();
        let vmax = s.get(&regs::VELOCITY_LIMIT) as f32 * RAD_S_PER_STEP;
        let mut prev = s.position();
        for _ in 0..1000 {
            s.step(0.001);
            assert!((s.position() - prev).abs() <= vmax * 0.001 + 1e-6);
            prev = s.position();
        }
        assert!((s.position() - 1.0).abs() < 0.01, "{}", s.position());
        // heavy load while oscillating: heats up, shuts down, reboot clears
        s.faults.load_nm = 3.5;
        let mut t = 0;
        while s.hardware_error() == 0 && t < 2_000_000 {
            let g = if (t / 500) % 2 == 0 { -1.0 } else { 1.0 };
            s.set(&regs::GOAL_POSITION, rad_to_position(g) as i64);
            s.step(0.01);
            t += 1;
        }
        assert_eq!(
            s.hardware_error() & hardware_error::OVERHEATING,
            hardware_error::OVERHEATING
        );
        assert!(!s.torque_enabled());
        assert_eq!(
            s.write_bytes(regs::TORQUE_ENABLE.addr, &[1]),
            Err(status_error::RESULT_FAIL)
        );
        s.reboot();
        assert_eq!(s.hardware_error(), 0);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        /// Foreign bytes, and well-framed packets with random instructions and parameters, never
        /// panic the simulated bus; the servos keep answering pings afterwards.
        #[test]
        fn random_packets_never_panic(
            noise in proptest::collection::vec(any::<u8>(), 0..512),
            packets in proptest::collection::vec(
                (prop::sample::select(vec![1u8, 2, 3, 4, 5, 6, 8, 0x10, 0x82, 0x83, 0x8A, 0x92, 0x93, 0x9A]),
                 prop::sample::select(vec![1u8, 2, 0xFE]),
                 proptest::collection::vec(any::<u8>(), 0..40)),
                0..20),
        ) {
            let mut bus = SimBus::new(&[1, 2], Model::Xm430W350);
            let mut out = Vec::new();
            bus.receive(&noise, &mut out);
            for (inst, id, params) in packets {
                let mut buf = [0u8; 128];
                if inst == 6 || inst == 8 {
                    continue; // factory reset / reboot change IDs and state on purpose
                }
                let n = packet::encode(id, inst, None, &params, &mut buf).unwrap();
                bus.receive(&buf[..n], &mut out);
                bus.step(0.001);
            }
            out.clear();
            let mut ping = [0u8; 16];
            let n = packet::encode(1, 0x01, None, &[], &mut ping).unwrap();
            bus.receive(&ping[..n], &mut out);
            prop_assert!(!out.is_empty() || bus.servo(1).is_none(), "a live servo 1 answers ping");
        }
    }
}
