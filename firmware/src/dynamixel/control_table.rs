//! Typed control table of the X series (XM430-W350, XM430-W210, XL330-M288): addresses, sizes,
//! EEPROM/RAM area, snake_case names and conversions between raw values and SI units.

/// Servo models this table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Model {
    /// XM430-W350 (model number 1020).
    Xm430W350,
    /// XM430-W210 (model number 1030).
    Xm430W210,
    /// XL330-M288 (model number 1200).
    Xl330M288,
}

impl Model {
    /// The model number in register 0.
    pub const fn number(self) -> u16 {
        match self {
            Model::Xm430W350 => 1020,
            Model::Xm430W210 => 1030,
            Model::Xl330M288 => 1200,
        }
    }
    /// From a model number.
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            1020 => Some(Model::Xm430W350),
            1030 => Some(Model::Xm430W210),
            1200 => Some(Model::Xl330M288),
            _ => None,
        }
    }
    /// Lower-case name, e.g. `xm430-w350`.
    pub const fn name(self) -> &'static str {
        match self {
            Model::Xm430W350 => "xm430-w350",
            Model::Xm430W210 => "xm430-w210",
            Model::Xl330M288 => "xl330-m288",
        }
    }
    /// From the lower-case name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Model::Xm430W350, Model::Xm430W210, Model::Xl330M288]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }
    /// Current unit in amperes per raw step (2.69 mA on XM430, 1 mA on XL330).
    pub const fn current_unit_a(self) -> f32 {
        match self {
            Model::Xl330M288 => 0.001,
            _ => 0.00269,
        }
    }
    /// Stall torque (N·m) at nominal voltage, used by the simulated servo.
    pub const fn stall_torque_nm(self) -> f32 {
        match self {
            Model::Xm430W350 => 4.1,
            Model::Xm430W210 => 3.0,
            Model::Xl330M288 => 0.52,
        }
    }
    /// No-load speed (rad/s), used by the simulated servo.
    pub const fn no_load_speed(self) -> f32 {
        match self {
            Model::Xm430W350 => 4.8,
            Model::Xm430W210 => 8.1,
            Model::Xl330M288 => 10.9,
        }
    }
}

/// Physical unit of a register, for `--si` conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// No conversion.
    Raw,
    /// Position: 4096 steps per turn, 2048 = 0 rad.
    Position,
    /// Velocity: 0.229 rpm per step.
    Velocity,
    /// Current: model dependent (A).
    Current,
    /// Temperature: 1 °C per step.
    Celsius,
    /// Voltage: 0.1 V per step.
    Volt,
    /// PWM: 0.113 % per step.
    Pwm,
    /// Return delay: 2 µs per step.
    Delay2us,
}

impl Unit {
    /// Name of the SI unit.
    pub const fn symbol(self) -> &'static str {
        match self {
            Unit::Raw => "",
            Unit::Position => "rad",
            Unit::Velocity => "rad/s",
            Unit::Current => "A",
            Unit::Celsius => "°C",
            Unit::Volt => "V",
            Unit::Pwm => "%",
            Unit::Delay2us => "s",
        }
    }
}

/// One register of the control table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    /// snake_case name, as on the command line.
    pub name: &'static str,
    /// Address.
    pub addr: u16,
    /// Size in bytes (1, 2 or 4).
    pub size: u8,
    /// In EEPROM (writable only with torque off).
    pub eeprom: bool,
    /// Signed value.
    pub signed: bool,
    /// Unit for conversions.
    pub unit: Unit,
    /// Writable by the host.
    pub writable: bool,
}

const fn reg(
    name: &'static str,
    addr: u16,
    size: u8,
    eeprom: bool,
    signed: bool,
    unit: Unit,
    writable: bool,
) -> Register {
    Register {
        name,
        addr,
        size,
        eeprom,
        signed,
        unit,
        writable,
    }
}

/// Registers, in address order.
pub mod regs {
    use super::{reg, Register, Unit::*};
    /// Model number.
    pub const MODEL_NUMBER: Register = reg("model_number", 0, 2, true, false, Raw, false);
    /// Firmware version.
    pub const FIRMWARE_VERSION: Register = reg("firmware_version", 6, 1, true, false, Raw, false);
    /// ID.
    pub const ID: Register = reg("id", 7, 1, true, false, Raw, true);
    /// Baud rate index.
    pub const BAUD_RATE: Register = reg("baud_rate", 8, 1, true, false, Raw, true);
    /// Return delay time.
    pub const RETURN_DELAY_TIME: Register =
        reg("return_delay_time", 9, 1, true, false, Delay2us, true);
    /// Drive mode.
    pub const DRIVE_MODE: Register = reg("drive_mode", 10, 1, true, false, Raw, true);
    /// Operating mode.
    pub const OPERATING_MODE: Register = reg("operating_mode", 11, 1, true, false, Raw, true);
    /// Temperature limit.
    pub const TEMPERATURE_LIMIT: Register =
        reg("temperature_limit", 31, 1, true, false, Celsius, true);
    /// Max voltage limit.
    pub const MAX_VOLTAGE_LIMIT: Register =
        reg("max_voltage_limit", 32, 2, true, false, Volt, true);
    /// Min voltage limit.
    pub const MIN_VOLTAGE_LIMIT: Register =
        reg("min_voltage_limit", 34, 2, true, false, Volt, true);
    /// PWM limit.
    pub const PWM_LIMIT: Register = reg("pwm_limit", 36, 2, true, false, Pwm, true);
    /// Current limit.
    pub const CURRENT_LIMIT: Register = reg("current_limit", 38, 2, true, false, Current, true);
    /// Velocity limit.
    pub const VELOCITY_LIMIT: Register = reg("velocity_limit", 44, 4, true, false, Velocity, true);
    /// Max position limit.
    pub const MAX_POSITION_LIMIT: Register =
        reg("max_position_limit", 48, 4, true, false, Position, true);
    /// Min position limit.
    pub const MIN_POSITION_LIMIT: Register =
        reg("min_position_limit", 52, 4, true, false, Position, true);
    /// Shutdown conditions.
    pub const SHUTDOWN: Register = reg("shutdown", 63, 1, true, false, Raw, true);
    /// Torque enable.
    pub const TORQUE_ENABLE: Register = reg("torque_enable", 64, 1, false, false, Raw, true);
    /// LED.
    pub const LED: Register = reg("led", 65, 1, false, false, Raw, true);
    /// Status return level.
    pub const STATUS_RETURN_LEVEL: Register =
        reg("status_return_level", 68, 1, false, false, Raw, true);
    /// Hardware error status.
    pub const HARDWARE_ERROR_STATUS: Register =
        reg("hardware_error_status", 70, 1, false, false, Raw, false);
    /// Position D gain.
    pub const POSITION_D_GAIN: Register = reg("position_d_gain", 80, 2, false, false, Raw, true);
    /// Position I gain.
    pub const POSITION_I_GAIN: Register = reg("position_i_gain", 82, 2, false, false, Raw, true);
    /// Position P gain.
    pub const POSITION_P_GAIN: Register = reg("position_p_gain", 84, 2, false, false, Raw, true);
    /// Goal PWM.
    pub const GOAL_PWM: Register = reg("goal_pwm", 100, 2, false, true, Pwm, true);
    /// Goal current.
    pub const GOAL_CURRENT: Register = reg("goal_current", 102, 2, false, true, Current, true);
    /// Goal velocity.
    pub const GOAL_VELOCITY: Register = reg("goal_velocity", 104, 4, false, true, Velocity, true);
    /// Profile acceleration.
    pub const PROFILE_ACCELERATION: Register =
        reg("profile_acceleration", 108, 4, false, false, Raw, true);
    /// Profile velocity.
    pub const PROFILE_VELOCITY: Register = reg("profile_velocity", 112, 4, false, false, Raw, true);
    /// Goal position.
    pub const GOAL_POSITION: Register = reg("goal_position", 116, 4, false, true, Position, true);
    /// Moving flag.
    pub const MOVING: Register = reg("moving", 122, 1, false, false, Raw, false);
    /// Present PWM.
    pub const PRESENT_PWM: Register = reg("present_pwm", 124, 2, false, true, Pwm, false);
    /// Present current.
    pub const PRESENT_CURRENT: Register =
        reg("present_current", 126, 2, false, true, Current, false);
    /// Present velocity.
    pub const PRESENT_VELOCITY: Register =
        reg("present_velocity", 128, 4, false, true, Velocity, false);
    /// Present position.
    pub const PRESENT_POSITION: Register =
        reg("present_position", 132, 4, false, true, Position, false);
    /// Present input voltage.
    pub const PRESENT_INPUT_VOLTAGE: Register =
        reg("present_input_voltage", 144, 2, false, false, Volt, false);
    /// Present temperature.
    pub const PRESENT_TEMPERATURE: Register =
        reg("present_temperature", 146, 1, false, false, Celsius, false);
}

/// Every register, in address order.
pub const ALL: [Register; 33] = {
    use regs::*;
    [
        MODEL_NUMBER,
        FIRMWARE_VERSION,
        ID,
        BAUD_RATE,
        RETURN_DELAY_TIME,
        DRIVE_MODE,
        OPERATING_MODE,
        TEMPERATURE_LIMIT,
        MAX_VOLTAGE_LIMIT,
        MIN_VOLTAGE_LIMIT,
        PWM_LIMIT,
        CURRENT_LIMIT,
        VELOCITY_LIMIT,
        MAX_POSITION_LIMIT,
        MIN_POSITION_LIMIT,
        SHUTDOWN,
        TORQUE_ENABLE,
        LED,
        STATUS_RETURN_LEVEL,
        HARDWARE_ERROR_STATUS,
        POSITION_D_GAIN,
        POSITION_I_GAIN,
        POSITION_P_GAIN,
        GOAL_PWM,
        GOAL_CURRENT,
        GOAL_VELOCITY,
        PROFILE_ACCELERATION,
        PROFILE_VELOCITY,
        GOAL_POSITION,
        MOVING,
        PRESENT_PWM,
        PRESENT_CURRENT,
        PRESENT_VELOCITY,
    ]
};

/// Registers not in [`ALL`] for array-size reasons, appended by [`by_name`] and [`by_addr`].
const MORE: [Register; 3] = [
    regs::PRESENT_POSITION,
    regs::PRESENT_INPUT_VOLTAGE,
    regs::PRESENT_TEMPERATURE,
];

/// Iterate over every register.
pub fn registers() -> impl Iterator<Item = &'static Register> {
    ALL.iter().chain(MORE.iter())
}

/// Find a register by snake_case name.
pub fn by_name(name: &str) -> Option<&'static Register> {
    registers().find(|r| r.name == name)
}

/// Find a register by address.
pub fn by_addr(addr: u16) -> Option<&'static Register> {
    registers().find(|r| r.addr == addr)
}

/// Operating modes (register 11).
pub mod operating_mode {
    /// Current control.
    pub const CURRENT: u8 = 0;
    /// Velocity control.
    pub const VELOCITY: u8 = 1;
    /// Position control.
    pub const POSITION: u8 = 3;
    /// Extended position.
    pub const EXTENDED_POSITION: u8 = 4;
    /// Current-based position.
    pub const CURRENT_BASED_POSITION: u8 = 5;
    /// PWM.
    pub const PWM: u8 = 16;
    /// Whether `m` is a valid mode.
    pub const fn is_valid(m: u8) -> bool {
        matches!(m, 0 | 1 | 3 | 4 | 5 | 16)
    }
}

/// Hardware error bits (register 70).
pub mod hardware_error {
    /// Input voltage error.
    pub const VOLTAGE: u8 = 1 << 0;
    /// Overheating.
    pub const OVERHEATING: u8 = 1 << 2;
    /// Motor encoder.
    pub const ENCODER: u8 = 1 << 3;
    /// Electrical shock.
    pub const ELECTRICAL_SHOCK: u8 = 1 << 4;
    /// Overload.
    pub const OVERLOAD: u8 = 1 << 5;
}

const TAU: f32 = core::f32::consts::TAU;
/// Position steps per radian (4096 per turn).
pub const STEPS_PER_RAD: f32 = 4096.0 / TAU;
/// Raw position of 0 rad.
pub const POSITION_CENTER: i32 = 2048;
/// rad/s per velocity step (0.229 rpm).
pub const RAD_S_PER_STEP: f32 = 0.229 * TAU / 60.0;

/// Raw position → rad.
pub fn position_to_rad(raw: i32) -> f32 {
    (raw - POSITION_CENTER) as f32 / STEPS_PER_RAD
}
/// rad → raw position (rounded).
pub fn rad_to_position(rad: f32) -> i32 {
    let v = rad * STEPS_PER_RAD;
    let r = if v >= 0.0 {
        (v + 0.5) as i32
    } else {
        (v - 0.5) as i32
    };
    r + POSITION_CENTER
}
/// Raw velocity → rad/s.
pub fn velocity_to_rad_s(raw: i32) -> f32 {
    raw as f32 * RAD_S_PER_STEP
}
/// rad/s → raw velocity (rounded).
pub fn rad_s_to_velocity(v: f32) -> i32 {
    let x = v / RAD_S_PER_STEP;
    if x >= 0.0 {
        (x + 0.5) as i32
    } else {
        (x - 0.5) as i32
    }
}

impl Register {
    /// Decode `size` little-endian bytes into the raw value (sign-extended when signed).
    pub fn decode(&self, bytes: &[u8]) -> Option<i64> {
        let b = bytes.get(..self.size as usize)?;
        let mut u: u32 = 0;
        for (i, &x) in b.iter().enumerate() {
            u |= (x as u32) << (8 * i);
        }
        Some(if self.signed {
            match self.size {
                1 => u as u8 as i8 as i64,
                2 => u as u16 as i16 as i64,
                _ => u as i32 as i64,
            }
        } else {
            u as i64
        })
    }

    /// Encode a raw value into `out` (little-endian, `size` bytes); `None` if it does not fit.
    pub fn encode(&self, raw: i64, out: &mut [u8]) -> Option<usize> {
        let n = self.size as usize;
        let (lo, hi) = if self.signed {
            (-(1i64 << (8 * n - 1)), (1i64 << (8 * n - 1)) - 1)
        } else {
            (0, (1i64 << (8 * n)) - 1)
        };
        if raw < lo || raw > hi || out.len() < n {
            return None;
        }
        for (i, o) in out.iter_mut().enumerate().take(n) {
            *o = (raw >> (8 * i)) as u8;
        }
        Some(n)
    }

    /// Raw → SI (see [`Unit`]).
    pub fn to_si(&self, raw: i64, model: Model) -> f64 {
        let r = raw as f64;
        match self.unit {
            Unit::Raw => r,
            Unit::Position => (r - POSITION_CENTER as f64) * core::f64::consts::TAU / 4096.0,
            Unit::Velocity => r * 0.229 * core::f64::consts::TAU / 60.0,
            Unit::Current => r * model.current_unit_a() as f64,
            Unit::Celsius => r,
            Unit::Volt => r * 0.1,
            Unit::Pwm => r * 0.113,
            Unit::Delay2us => r * 2e-6,
        }
    }

    /// SI → raw, rounded to the nearest step.
    pub fn from_si(&self, si: f64, model: Model) -> i64 {
        let r = match self.unit {
            Unit::Raw => si,
            Unit::Position => si * 4096.0 / core::f64::consts::TAU + POSITION_CENTER as f64,
            Unit::Velocity => si * 60.0 / (0.229 * core::f64::consts::TAU),
            Unit::Current => si / model.current_unit_a() as f64,
            Unit::Celsius => si,
            Unit::Volt => si / 0.1,
            Unit::Pwm => si / 0.113,
            Unit::Delay2us => si / 2e-6,
        };
        // round half away from zero without std
        if r >= 0.0 {
            (r + 0.5) as i64
        } else {
            (r - 0.5) as i64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_unique_and_match_the_manual() {
        let all: std::vec::Vec<_> = registers().collect();
        assert_eq!(all.len(), 36);
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.addr, b.addr);
            }
        }
        assert_eq!(by_name("present_position").unwrap().addr, 132);
        assert_eq!(by_name("goal_position").unwrap().addr, 116);
        assert_eq!(by_name("present_temperature").unwrap().addr, 146);
        assert_eq!(by_addr(64).unwrap().name, "torque_enable");
        assert!(by_name("nope").is_none());
    }

    #[test]
    fn conversions() {
        let p = regs::PRESENT_POSITION;
        assert_eq!(p.decode(&[0xA6, 0, 0, 0]), Some(166));
        assert_eq!(p.decode(&[0xFF, 0xFF, 0xFF, 0xFF]), Some(-1));
        assert!((p.to_si(3072, Model::Xm430W350) - core::f64::consts::FRAC_PI_2).abs() < 1e-12);
        assert_eq!(
            p.from_si(core::f64::consts::FRAC_PI_2, Model::Xm430W350),
            3072
        );
        assert_eq!(rad_to_position(position_to_rad(1000)), 1000);
        let c = regs::PRESENT_CURRENT;
        assert!((c.to_si(100, Model::Xm430W350) - 0.269).abs() < 1e-6);
        let mut out = [0u8; 4];
        assert_eq!(regs::LED.encode(256, &mut out), None);
        assert_eq!(regs::GOAL_POSITION.encode(512, &mut out), Some(4));
        assert_eq!(out, [0, 2, 0, 0]);
    }
}
