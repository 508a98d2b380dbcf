//! Setting up new servos and calibrating their mounting, as `lerobot-setup-motors` and
//! LeRobot's calibration do, for the URDF's servo map:
//!
//! - [`setup_one`]: the one servo connected to the adapter, found at whatever ID and baud rate it
//!   has (factory servos: ID 1 at 57 600), gets the ID and baud rate the servo map gives its
//!   joint, no return delay, and the URDF's position limits (through the joint's mounting), then
//!   is found again at its new address and read back;
//! - [`calibrate_joint`]: the joint held at its zero (Enter), then moved a little its positive
//!   way (Enter) gives `[servos] joint = { offset, direction }` for the serial and direct
//!   backends ([`write_mounts`] puts them into a TOML config, keeping the rest of the file).

use std::io::BufRead;

use reachy_daemon::config::ServoMount;
use reachy_daemon::serial::{SerialIo, StdClock};
use reachy_firmware::dynamixel::control_table::{position_to_rad, rad_to_position, regs};
use reachy_firmware::dynamixel::{Master, PingInfo};

/// The baud rates a Dynamixel X servo can be set to, by their `baud_rate` register value.
pub const BAUD_CODES: [(u8, u32); 8] = [
    (0, 9_600),
    (1, 57_600),
    (2, 115_200),
    (3, 1_000_000),
    (4, 2_000_000),
    (5, 3_000_000),
    (6, 4_000_000),
    (7, 4_500_000),
];

/// The order the search tries baud rates in: the factory default first, then the usual ones.
pub const SEARCH_BAUDS: [u32; 8] = [
    57_600, 1_000_000, 115_200, 2_000_000, 3_000_000, 4_000_000, 9_600, 4_500_000,
];

/// What went wrong setting a servo up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The adapter would not open.
    #[error("opening {0}: {1}")]
    Port(String, String),
    /// Nothing answered.
    #[error(
        "no servo answered on {port} at any baud rate ({bauds}): check its power and wiring, \
         and that it is the only one on the bus"
    )]
    NoServo {
        /// The adapter.
        port: String,
        /// The rates tried.
        bauds: String,
    },
    /// More than one servo answered.
    #[error(
        "{n} servos answer on {port} at {baud} baud (IDs {ids:?}): connect one servo at a time"
    )]
    SeveralServos {
        /// The adapter.
        port: String,
        /// Where they answered.
        baud: u32,
        /// How many.
        n: usize,
        /// Their IDs.
        ids: Vec<u8>,
    },
    /// A baud rate a servo cannot take.
    #[error("baud rate {0}: a Dynamixel X servo takes {1}")]
    Baud(u32, String),
    /// A bus transaction failed.
    #[error("{0}")]
    Bus(String),
    /// The read-back did not match.
    #[error("verification: {0}")]
    Verify(String),
    /// The operator's input ended.
    #[error("the input ended before {0}")]
    Aborted(String),
}

/// Where one servo should end up.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The joint.
    pub joint: String,
    /// Its ID in the servo map.
    pub id: u8,
    /// The bus's baud rate.
    pub baud: u32,
    /// Its limits (rad, joint side).
    pub lower: f32,
    /// Upper.
    pub upper: f32,
    /// How it is mounted.
    pub mount: ServoMount,
}

/// What [`setup_one`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetupReport {
    /// The joint.
    pub joint: String,
    /// Where the servo was found: ID, baud rate.
    pub found: (u8, u32),
    /// Its model number and firmware version.
    pub model: u16,
    /// Firmware.
    pub firmware: u8,
    /// Where it is now.
    pub now: (u8, u32),
    /// Its position limits (raw servo steps).
    pub limits: (i32, i32),
}

fn open(port: &str, baud: u32) -> Result<Master<SerialIo, StdClock>, SetupError> {
    let mut m = reachy_daemon::serial::open_master(port, baud, 20)
        .map_err(|e| SetupError::Port(port.into(), e.to_string()))?;
    m.broadcast_window_us = 50_000;
    Ok(m)
}

fn bus<E: core::fmt::Debug>(what: &str) -> impl Fn(E) -> SetupError + '_ {
    move |e| SetupError::Bus(format!("{what}: {e:?}"))
}

/// The one servo on `port`: its ping and the baud rate it answered at.
pub fn find_one(port: &str) -> Result<(PingInfo, u32), SetupError> {
    for baud in SEARCH_BAUDS {
        let mut m = open(port, baud)?;
        let mut found = [PingInfo::default(); 16];
        let n = m
            .broadcast_ping(&mut found)
            .map_err(bus("broadcast ping"))?;
        match n {
            0 => continue,
            1 => return Ok((found[0], baud)),
            n => {
                return Err(SetupError::SeveralServos {
                    port: port.into(),
                    baud,
                    n,
                    ids: found[..n].iter().map(|p| p.id).collect(),
                })
            }
        }
    }
    Err(SetupError::NoServo {
        port: port.into(),
        bauds: SEARCH_BAUDS.map(|b| b.to_string()).join(", "),
    })
}

/// The servo-side position limits of a joint's range (raw steps, low ≤ high).
pub fn servo_limits(t: &Target) -> (i32, i32) {
    let d = f32::from(t.mount.direction);
    let a = rad_to_position((t.lower - t.mount.offset) * d);
    let b = rad_to_position((t.upper - t.mount.offset) * d);
    (a.min(b).max(0), a.max(b).min(4095))
}

/// Set up the one servo on `port` for `t` (see the module's doc).
pub fn setup_one(port: &str, t: &Target) -> Result<SetupReport, SetupError> {
    let code = BAUD_CODES
        .iter()
        .find(|(_, b)| *b == t.baud)
        .map(|(c, _)| *c)
        .ok_or_else(|| {
            SetupError::Baud(t.baud, BAUD_CODES.map(|(_, b)| b.to_string()).join(", "))
        })?;
    let (ping, baud) = find_one(port)?;
    let mut m = open(port, baud)?;
    let id = ping.id;
    // EEPROM writes need torque off
    m.write(id, regs::TORQUE_ENABLE.addr, &[0])
        .map_err(bus("torque off"))?;
    let (lo, hi) = servo_limits(t);
    let mut b4 = [0u8; 4];
    regs::MIN_POSITION_LIMIT.encode(lo as i64, &mut b4);
    m.write(id, regs::MIN_POSITION_LIMIT.addr, &b4)
        .map_err(bus("min position limit"))?;
    regs::MAX_POSITION_LIMIT.encode(hi as i64, &mut b4);
    m.write(id, regs::MAX_POSITION_LIMIT.addr, &b4)
        .map_err(bus("max position limit"))?;
    m.write(id, regs::RETURN_DELAY_TIME.addr, &[0])
        .map_err(bus("return delay"))?;
    // the address last: after the ID the servo answers at the new one, after the baud rate at
    // the new rate
    if id != t.id {
        // the status may come from the new ID (as the simulated servos answer) or the old one:
        // the ping at the new address below is the check
        let _ = m.write(id, regs::ID.addr, &[t.id]);
    }
    if baud != t.baud {
        // the servo switches as it answers: the status may be lost
        let _ = m.write(t.id, regs::BAUD_RATE.addr, &[code]);
    }
    drop(m);
    // found again where it should be, and read back
    let mut m = open(port, t.baud)?;
    let p = m.ping(t.id).map_err(|e| {
        SetupError::Verify(format!(
            "no answer from ID {} at {} baud after the change: {e:?}",
            t.id, t.baud
        ))
    })?;
    let mut r = [0u8; 4];
    let mut read = |reg: &reachy_firmware::dynamixel::Register| -> Result<i64, SetupError> {
        let n = reg.size as usize;
        m.read(t.id, reg.addr, &mut r[..n]).map_err(bus(reg.name))?;
        reg.decode(&r[..n])
            .ok_or_else(|| SetupError::Verify(format!("{}: undecodable", reg.name)))
    };
    let got = (
        read(&regs::MIN_POSITION_LIMIT)?,
        read(&regs::MAX_POSITION_LIMIT)?,
        read(&regs::RETURN_DELAY_TIME)?,
        read(&regs::BAUD_RATE)?,
    );
    if got != (lo as i64, hi as i64, 0, code as i64) {
        return Err(SetupError::Verify(format!(
            "read back (min, max, return delay, baud code) {got:?}, wrote {:?}",
            (lo, hi, 0, code)
        )));
    }
    Ok(SetupReport {
        joint: t.joint.clone(),
        found: (id, baud),
        model: p.model,
        firmware: p.firmware,
        now: (t.id, t.baud),
        limits: (lo, hi),
    })
}

/// The mounting of `joint`'s servo (ID `id` on `master`'s bus): the operator holds the joint at
/// its zero (Enter on `input`), then moves it a little its positive way (Enter).
pub fn calibrate_joint(
    master: &mut Master<SerialIo, StdClock>,
    joint: &str,
    id: u8,
    input: &mut dyn BufRead,
    say: &mut dyn FnMut(&str),
) -> Result<ServoMount, SetupError> {
    let mut line = String::new();
    let mut enter = |input: &mut dyn BufRead, what: &str| {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => Err(SetupError::Aborted(what.into())),
            Ok(_) => Ok(()),
        }
    };
    let position = |m: &mut Master<SerialIo, StdClock>| -> Result<i32, SetupError> {
        let p = regs::PRESENT_POSITION;
        let mut b = [0u8; 4];
        m.read(id, p.addr, &mut b)
            .map_err(bus("present position"))?;
        Ok(p.decode(&b).unwrap_or(0) as i32)
    };
    master
        .write(id, regs::TORQUE_ENABLE.addr, &[0])
        .map_err(bus("torque off"))?;
    say(&format!(
        "{joint} (ID {id}): its torque is off. Hold it at its zero (the URDF's 0 rad), then \
         press Enter"
    ));
    enter(input, "the zero pose")?;
    let zero = position(master)?;
    say(&format!(
        "{joint}: now move it a little (10° or more) its positive way, then press Enter"
    ));
    enter(input, "the positive move")?;
    let moved = position(master)?;
    if (moved - zero).abs() < 50 {
        return Err(SetupError::Verify(format!(
            "{joint} moved {} steps (< 50, about 4°): move it further",
            moved - zero
        )));
    }
    let direction: i8 = if moved > zero { 1 } else { -1 };
    // joint = direction × servo + offset, 0 at the zero pose
    let offset = -f32::from(direction) * position_to_rad(zero);
    Ok(ServoMount { offset, direction })
}

/// Write `mounts` into the `[servos]` table of the TOML config at `path` (created when there is
/// none), every other key and comment kept.
pub fn write_mounts(
    path: &std::path::Path,
    mounts: &[(String, ServoMount)],
) -> Result<(), SetupError> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| SetupError::Verify(format!("{}: {e}", path.display())))?;
    if !doc.contains_table("servos") {
        doc["servos"] = toml_edit::table();
    }
    for (joint, m) in mounts {
        let mut t = toml_edit::InlineTable::new();
        t.insert("offset", f64::from((m.offset * 1e4).round() / 1e4).into());
        t.insert("direction", i64::from(m.direction).into());
        doc["servos"][joint.as_str()] = toml_edit::value(t);
    }
    // the file must still be a config the daemon takes
    reachy_daemon::config::Config::parse(&doc.to_string(), &path.display().to_string())
        .map_err(|e| SetupError::Verify(e.to_string()))?;
    std::fs::write(path, doc.to_string())
        .map_err(|e| SetupError::Verify(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_through_the_mounting() {
        let mut t = Target {
            joint: "r_elbow_pitch".into(),
            id: 4,
            baud: 1_000_000,
            lower: -2.0,
            upper: 0.0,
            mount: ServoMount {
                offset: 0.0,
                direction: 1,
            },
        };
        assert_eq!(servo_limits(&t), (rad_to_position(-2.0), 2048));
        t.mount = ServoMount {
            offset: -1.0,
            direction: -1,
        };
        // servo = (joint − offset) × direction: −2 → 1, 0 → −1
        assert_eq!(
            servo_limits(&t),
            (rad_to_position(-1.0), rad_to_position(1.0))
        );
    }
}
