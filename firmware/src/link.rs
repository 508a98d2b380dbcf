//! Host link protocol: the one definition of what travels between the host and the firmware.
//!
//! Frame on the wire: `COBS( version | postcard(message) | crc16_le ) 0x00`. The CRC is the
//! Dynamixel CRC-16 over version + payload. A frame with a bad COBS code, CRC, version or
//! payload is counted and dropped; the decoder resynchronises on the next `0x00`.
//! No heap: messages use fixed-capacity `heapless` vectors.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::dynamixel::crc;

/// Protocol version carried in every frame.
pub const LINK_VERSION: u8 = 1;
/// Most joints one firmware drives.
pub const MAX_JOINTS: usize = 24;
/// Largest encoded frame (COBS overhead included).
pub const MAX_FRAME: usize = 1024;

/// A goal for one joint (radians, firmware joint index).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JointGoal {
    /// Joint index (order of the firmware's joint map).
    pub joint: u8,
    /// Goal position (rad).
    pub position: f32,
    /// Optional velocity feed-forward (rad/s).
    pub velocity: Option<f32>,
    /// Optional current feed-forward (A).
    pub current: Option<f32>,
}

/// Limits of one joint, enforced on board.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JointLimits {
    /// Joint index.
    pub joint: u8,
    /// Lower position limit (rad).
    pub lower: f32,
    /// Upper position limit (rad).
    pub upper: f32,
    /// Velocity limit (rad/s): the goal moves at most this far per second.
    pub max_velocity: f32,
}

/// Safety timing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SafetyConfig {
    /// No valid command for this long → hold position (ms).
    pub hold_after_ms: u32,
    /// No valid command for this long → torque off (ms).
    pub torque_off_after_ms: u32,
    /// Send telemetry every N control cycles.
    pub telemetry_every: u16,
    /// Shut a joint down at this temperature (°C).
    pub temperature_limit_c: u8,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            hold_after_ms: 100,
            torque_off_after_ms: 1000,
            telemetry_every: 10,
            temperature_limit_c: 70,
        }
    }
}

/// Host → firmware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Joint goals (any subset of joints).
    Goals {
        /// Host sequence number.
        seq: u32,
        /// Goals.
        goals: Vec<JointGoal, MAX_JOINTS>,
    },
    /// Torque on or off for the joints in `mask` (bit i = joint i).
    Torque {
        /// Joint mask.
        mask: u32,
        /// On or off.
        on: bool,
    },
    /// Position PID gains of one joint (raw control-table units).
    Gains {
        /// Joint index.
        joint: u8,
        /// P gain.
        p: u16,
        /// I gain.
        i: u16,
        /// D gain.
        d: u16,
    },
    /// Operating mode of one joint (control-table value; needs torque off).
    Mode {
        /// Joint index.
        joint: u8,
        /// Mode.
        mode: u8,
    },
    /// Limits of some joints.
    Limits(Vec<JointLimits, MAX_JOINTS>),
    /// Safety timing.
    Safety(SafetyConfig),
    /// Emergency stop: torque off everywhere, latched until [`Command::ClearEStop`].
    EStop,
    /// Release the e-stop latch (torque stays off until asked for).
    ClearEStop,
    /// Reboot a joint's servo (clears a hardware-error shutdown).
    Reboot {
        /// Joint index.
        joint: u8,
    },
    /// Keep-alive.
    Heartbeat {
        /// Host sequence number.
        seq: u32,
    },
}

impl Command {
    /// Position goals `(joint, rad)` without feed-forward; `None` if more than [`MAX_JOINTS`].
    pub fn position_goals(seq: u32, goals: &[(u8, f32)]) -> Option<Self> {
        let mut v = Vec::new();
        for &(joint, position) in goals {
            v.push(JointGoal {
                joint,
                position,
                velocity: None,
                current: None,
            })
            .ok()?;
        }
        Some(Command::Goals { seq, goals: v })
    }
}

/// Per-joint health flags in telemetry.
pub mod joint_flags {
    /// Torque is on.
    pub const TORQUE_ON: u8 = 1 << 0;
    /// The servo did not answer the last read.
    pub const NO_REPLY: u8 = 1 << 1;
    /// Shut down on board (over-temperature or hardware error) until the host reboots it.
    pub const SHUTDOWN: u8 = 1 << 2;
    /// The goal was clamped by a position limit.
    pub const CLAMPED: u8 = 1 << 3;
    /// The goal step was limited by the velocity limit this cycle.
    pub const RATE_LIMITED: u8 = 1 << 4;
}

/// Global flags in telemetry.
pub mod state_flags {
    /// E-stop latched.
    pub const ESTOP: u8 = 1 << 0;
    /// Watchdog: holding position.
    pub const HOLD: u8 = 1 << 1;
    /// Watchdog: torque switched off.
    pub const WATCHDOG_TORQUE_OFF: u8 = 1 << 2;
}

/// State of one joint.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct JointState {
    /// Present position (rad).
    pub position: f32,
    /// Present velocity (rad/s).
    pub velocity: f32,
    /// Present current (A).
    pub current: f32,
    /// Temperature (°C).
    pub temperature: u8,
    /// Hardware error status (register 70).
    pub hardware_error: u8,
    /// [`joint_flags`].
    pub flags: u8,
}

/// Loop timing and error counters.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LoopStats {
    /// Control cycles run.
    pub cycles: u32,
    /// Mean cycle period over the last telemetry window (µs).
    pub period_mean_us: u32,
    /// Longest cycle period over the last telemetry window (µs).
    pub period_max_us: u32,
    /// Longest bus transaction time (sync write + read) over the window (µs).
    pub bus_max_us: u32,
    /// Cycles that started late.
    pub overruns: u32,
    /// Link frames dropped (COBS, CRC, version, payload).
    pub link_errors: u32,
    /// Commands rejected (bad joint index, non-finite values, refused while e-stopped).
    pub rejected: u32,
    /// Missing servo replies.
    pub bus_timeouts: u32,
    /// Corrupt servo replies.
    pub bus_crc_errors: u32,
}

/// Firmware → host.
// no heap on the firmware: the big variant stays inline on purpose
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Telemetry {
    /// Periodic state.
    State {
        /// Firmware sequence number.
        seq: u32,
        /// Firmware clock (µs).
        t_us: u64,
        /// Last host sequence number applied.
        host_seq: u32,
        /// [`state_flags`].
        flags: u8,
        /// One entry per joint of the map.
        joints: Vec<JointState, MAX_JOINTS>,
        /// Counters.
        stats: LoopStats,
    },
    /// A joint was shut down on board, with the reason (hardware error bits, temperature).
    Shutdown {
        /// Joint index.
        joint: u8,
        /// Hardware error status.
        hardware_error: u8,
        /// Temperature (°C).
        temperature: u8,
    },
}

/// Link errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Frame longer than [`MAX_FRAME`].
    Overflow,
    /// Invalid COBS encoding.
    Cobs,
    /// CRC mismatch.
    Crc,
    /// Unknown protocol version.
    Version(u8),
    /// Payload does not decode.
    Payload,
    /// Message does not fit the buffer.
    Encode,
}

/// COBS-encode `src` into `dst` (no trailing zero); returns the length.
pub fn cobs_encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut code_idx = 0;
    let mut w = 1;
    let mut code: u8 = 1;
    if dst.is_empty() {
        return None;
    }
    for &b in src {
        if b == 0 {
            *dst.get_mut(code_idx)? = code;
            code_idx = w;
            w += 1;
            code = 1;
        } else {
            *dst.get_mut(w)? = b;
            w += 1;
            code += 1;
            if code == 0xFF {
                *dst.get_mut(code_idx)? = code;
                code_idx = w;
                w += 1;
                code = 1;
            }
        }
    }
    *dst.get_mut(code_idx)? = code;
    Some(w)
}

/// COBS-decode `src` (no trailing zero) into `dst`; returns the length.
pub fn cobs_decode(src: &[u8], dst: &mut [u8]) -> Result<usize, LinkError> {
    let mut r = 0;
    let mut w = 0;
    while r < src.len() {
        let code = src[r];
        if code == 0 {
            return Err(LinkError::Cobs);
        }
        r += 1;
        for _ in 1..code {
            let b = *src.get(r).ok_or(LinkError::Cobs)?;
            if b == 0 {
                return Err(LinkError::Cobs);
            }
            *dst.get_mut(w).ok_or(LinkError::Overflow)? = b;
            w += 1;
            r += 1;
        }
        if code != 0xFF && r < src.len() {
            *dst.get_mut(w).ok_or(LinkError::Overflow)? = 0;
            w += 1;
        }
    }
    Ok(w)
}

/// Encode a message into a complete frame (with the trailing `0x00`).
pub fn encode<T: Serialize>(msg: &T, out: &mut [u8]) -> Result<usize, LinkError> {
    let mut raw = [0u8; MAX_FRAME];
    raw[0] = LINK_VERSION;
    let used = postcard::to_slice(msg, &mut raw[1..MAX_FRAME - 2])
        .map_err(|_| LinkError::Encode)?
        .len();
    let n = 1 + used;
    let c = crc::crc16(&raw[..n]);
    raw[n] = c as u8;
    raw[n + 1] = (c >> 8) as u8;
    let len = cobs_encode(&raw[..n + 2], out).ok_or(LinkError::Encode)?;
    *out.get_mut(len).ok_or(LinkError::Encode)? = 0;
    Ok(len + 1)
}

/// Decode one frame's bytes (without the trailing `0x00`).
pub fn decode<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, LinkError> {
    let mut raw = [0u8; MAX_FRAME];
    let n = cobs_decode(frame, &mut raw)?;
    if n < 3 {
        return Err(LinkError::Cobs);
    }
    let got = u16::from_le_bytes([raw[n - 2], raw[n - 1]]);
    if crc::crc16(&raw[..n - 2]) != got {
        return Err(LinkError::Crc);
    }
    if raw[0] != LINK_VERSION {
        return Err(LinkError::Version(raw[0]));
    }
    postcard::from_bytes(&raw[1..n - 2]).map_err(|_| LinkError::Payload)
}

/// Counters of a [`FrameDecoder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Good frames.
    pub frames: u32,
    /// Dropped frames.
    pub errors: u32,
}

/// Streaming frame decoder: push bytes, get messages.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflow: bool,
    /// Counters.
    pub stats: LinkStats,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// Empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            overflow: false,
            stats: LinkStats {
                frames: 0,
                errors: 0,
            },
        }
    }

    /// Feed one byte; returns a decoded message or an error when a frame ends.
    pub fn push<T: for<'de> Deserialize<'de>>(&mut self, b: u8) -> Option<Result<T, LinkError>> {
        if b != 0 {
            if self.len < MAX_FRAME {
                self.buf[self.len] = b;
                self.len += 1;
            } else {
                self.overflow = true;
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflow) {
            self.stats.errors += 1;
            return Some(Err(LinkError::Overflow));
        }
        if len == 0 {
            return None; // idle zeros between frames
        }
        let r = decode(&self.buf[..len]);
        match r {
            Ok(_) => self.stats.frames += 1,
            Err(_) => self.stats.errors += 1,
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goals() -> Command {
        let mut g = Vec::new();
        for j in 0..8 {
            g.push(JointGoal {
                joint: j,
                position: j as f32 * 0.1,
                velocity: Some(0.5),
                current: None,
            })
            .unwrap();
        }
        Command::Goals { seq: 7, goals: g }
    }

    #[test]
    fn cobs_round_trip_edge_cases() {
        for src in [
            &[][..],
            &[0],
            &[0, 0],
            &[1, 2, 3],
            &[0x11, 0x00, 0x22, 0x00],
            &[0xFF; 300],
        ] {
            let mut enc = [0u8; 400];
            let n = cobs_encode(src, &mut enc).unwrap();
            assert!(!enc[..n].contains(&0));
            let mut dec = [0u8; 400];
            let m = cobs_decode(&enc[..n], &mut dec).unwrap();
            assert_eq!(&dec[..m], src);
        }
    }

    #[test]
    fn frames_round_trip_and_corruption_is_counted() {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(&goals(), &mut buf).unwrap();
        let mut d = FrameDecoder::new();
        let mut got = std::vec::Vec::new();
        let mut stream = std::vec::Vec::new();
        stream.extend_from_slice(&buf[..n]);
        let mut bad = buf[..n].to_vec();
        bad[3] ^= 0x40;
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&buf[..n]);
        for b in stream {
            if let Some(r) = d.push::<Command>(b) {
                got.push(r);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap(), &goals());
        assert!(got[1].is_err());
        assert_eq!(got[2].as_ref().unwrap(), &goals());
        assert_eq!(
            d.stats,
            LinkStats {
                frames: 2,
                errors: 1
            }
        );
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut raw = [LINK_VERSION + 1, 0, 0, 0];
        let c = crc::crc16(&raw[..2]);
        raw[2] = c as u8;
        raw[3] = (c >> 8) as u8;
        let mut enc = [0u8; 8];
        let n = cobs_encode(&raw, &mut enc).unwrap();
        assert_eq!(decode::<Command>(&enc[..n]), Err(LinkError::Version(2)));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

        /// Random bytes never panic; every frame end yields a result, good or counted error.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut d = FrameDecoder::new();
            let mut results = 0u32;
            for b in bytes {
                if d.push::<Command>(b).is_some() {
                    results += 1;
                }
            }
            prop_assert_eq!(results, d.stats.frames + d.stats.errors);
        }

        /// Goals round-trip; a corrupted frame is dropped and the next good one still decodes.
        #[test]
        fn goals_round_trip_after_corruption(
            positions in proptest::collection::vec(-10.0f32..10.0, 1..MAX_JOINTS),
            flip in any::<prop::sample::Index>(),
        ) {
            let goals = positions.iter().enumerate().map(|(i, &p)| JointGoal { joint: i as u8, position: p, velocity: None, current: Some(p) }).collect();
            let cmd = Command::Goals { seq: 1, goals };
            let mut buf = [0u8; MAX_FRAME];
            let n = encode(&cmd, &mut buf).unwrap();
            let mut bad = buf[..n].to_vec();
            let i = flip.index(n - 1);
            bad[i] = bad[i].wrapping_add(1).max(1);
            let mut d = FrameDecoder::new();
            let mut got = std::vec::Vec::new();
            for &b in bad.iter().chain(&buf[..n]) {
                if let Some(r) = d.push::<Command>(b) {
                    got.push(r);
                }
            }
            prop_assert_eq!(got.last().unwrap().as_ref().unwrap(), &cmd);
            for r in &got[..got.len() - 1] {
                prop_assert!(r.is_err(), "corrupt frame delivered");
            }
        }
    }
}
