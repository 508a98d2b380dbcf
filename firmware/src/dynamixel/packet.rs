//! Dynamixel Protocol 2.0 packets: encoding with byte stuffing, and a streaming decoder that
//! frames by LEN, checks the CRC on the bytes as received, then unstuffs.
//!
//! The decoder accepts both instruction and status packets (a master decodes status packets, a
//! simulated servo decodes instructions), never panics on foreign bytes, and resynchronises on
//! the next header after a corrupt packet. It tolerates senders that forget to stuff: framing
//! is by LEN only, and an `FF FF FD xx` (xx ≠ FD) inside a packet is kept as data.

use super::crc;

/// Header bytes that start every packet.
pub const HEADER: [u8; 4] = [0xFF, 0xFF, 0xFD, 0x00];
/// Broadcast ID.
pub const BROADCAST_ID: u8 = 0xFE;
/// Largest ID a servo may have.
pub const MAX_ID: u8 = 252;

/// Instruction codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Instruction {
    /// Ping.
    Ping = 0x01,
    /// Read.
    Read = 0x02,
    /// Write.
    Write = 0x03,
    /// Registered write.
    RegWrite = 0x04,
    /// Action (execute registered write).
    Action = 0x05,
    /// Factory reset.
    FactoryReset = 0x06,
    /// Reboot.
    Reboot = 0x08,
    /// Clear.
    Clear = 0x10,
    /// Status (reply).
    Status = 0x55,
    /// Sync read.
    SyncRead = 0x82,
    /// Sync write.
    SyncWrite = 0x83,
    /// Fast sync read.
    FastSyncRead = 0x8A,
    /// Bulk read.
    BulkRead = 0x92,
    /// Bulk write.
    BulkWrite = 0x93,
    /// Fast bulk read.
    FastBulkRead = 0x9A,
}

impl Instruction {
    /// From the wire byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        use Instruction::*;
        Some(match b {
            0x01 => Ping,
            0x02 => Read,
            0x03 => Write,
            0x04 => RegWrite,
            0x05 => Action,
            0x06 => FactoryReset,
            0x08 => Reboot,
            0x10 => Clear,
            0x55 => Status,
            0x82 => SyncRead,
            0x83 => SyncWrite,
            0x8A => FastSyncRead,
            0x92 => BulkRead,
            0x93 => BulkWrite,
            0x9A => FastBulkRead,
            _ => return None,
        })
    }
}

/// Encoding errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
}

/// Decoding errors; each one drops the packet being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// CRC mismatch.
    Crc,
    /// LEN below 3 (no room for instruction and CRC).
    BadLength,
    /// Packet longer than the decoder's buffer.
    TooLong,
    /// Unknown instruction byte.
    UnknownInstruction(u8),
}

/// Encode a packet (instruction or status); `prefix` is the error byte for status packets.
/// Stuffs `FF FF FD` → `FF FF FD FD` over instruction + params, fixes LEN, appends the CRC.
pub fn encode(
    id: u8,
    instruction: u8,
    prefix: Option<u8>,
    params: &[u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if out.len() < 10 {
        return Err(EncodeError::BufferTooSmall);
    }
    out[..4].copy_from_slice(&HEADER);
    out[4] = id;
    let mut n = 7;
    let mut put = |b: u8, n: &mut usize| -> Result<(), EncodeError> {
        if *n >= out.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        out[*n] = b;
        *n += 1;
        // stuffing: after emitting FF FF FD within the body, insert FD
        if *n >= 10 && out[*n - 3..*n] == [0xFF, 0xFF, 0xFD] && *n - 3 >= 7 {
            if *n >= out.len() {
                return Err(EncodeError::BufferTooSmall);
            }
            out[*n] = 0xFD;
            *n += 1;
        }
        Ok(())
    };
    put(instruction, &mut n)?;
    if let Some(p) = prefix {
        put(p, &mut n)?;
    }
    for &b in params {
        put(b, &mut n)?;
    }
    let len = (n - 7 + 2) as u16;
    out[5] = len as u8;
    out[6] = (len >> 8) as u8;
    if n + 2 > out.len() {
        return Err(EncodeError::BufferTooSmall);
    }
    let c = crc::crc16(&out[..n]);
    out[n] = c as u8;
    out[n + 1] = (c >> 8) as u8;
    Ok(n + 2)
}

/// A decoded packet, borrowed from the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Servo ID (or broadcast).
    pub id: u8,
    /// Instruction (Status for replies).
    pub instruction: Instruction,
    /// Error byte for status packets, 0 otherwise.
    pub error: u8,
    /// Parameters, unstuffed (fast-read replies are left as received, as the protocol says).
    pub params: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header(u8),
    Id,
    LenL,
    LenH,
    Body,
}

/// What one byte did to the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Need more bytes.
    Pending,
    /// A packet is complete: read it with [`Decoder::packet`].
    Packet,
    /// A packet was dropped.
    Error(DecodeError),
}

/// Counters of a decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Good packets.
    pub packets: u32,
    /// CRC failures.
    pub crc_errors: u32,
    /// Other framing errors.
    pub framing_errors: u32,
    /// Bytes skipped while looking for a header.
    pub skipped_bytes: u32,
}

/// Streaming packet decoder with an `N`-byte buffer.
#[derive(Debug, Clone)]
pub struct Decoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    expected: usize,
    state: State,
    id: u8,
    ready: Option<(u8, usize, usize)>, // (instruction, params start, params len) inside buf
    /// Counters.
    pub stats: DecoderStats,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    /// A decoder looking for a header.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            expected: 0,
            state: State::Header(0),
            id: 0,
            ready: None,
            stats: DecoderStats {
                packets: 0,
                crc_errors: 0,
                framing_errors: 0,
                skipped_bytes: 0,
            },
        }
    }

    /// Forget any partial packet.
    pub fn reset(&mut self) {
        self.state = State::Header(0);
        self.len = 0;
        self.ready = None;
    }

    /// Feed one byte.
    pub fn push(&mut self, b: u8) -> Event {
        self.ready = None;
        match self.state {
            State::Header(k) => {
                let k = k as usize;
                if b == HEADER[k] {
                    self.state = if k == 3 {
                        State::Id
                    } else {
                        State::Header(k as u8 + 1)
                    };
                } else {
                    // longest suffix of (matched prefix + b) that is again a header prefix
                    let keep = match (k, b) {
                        (2, 0xFF) => 2,
                        (_, 0xFF) => 1,
                        _ => 0,
                    };
                    self.stats.skipped_bytes += (k + 1 - keep) as u32;
                    self.state = State::Header(keep as u8);
                }
                Event::Pending
            }
            State::Id => {
                self.id = b;
                self.buf[..4.min(N)].copy_from_slice(&HEADER[..4.min(N)]);
                if N < 10 {
                    return self.fail(DecodeError::TooLong);
                }
                self.buf[4] = b;
                self.state = State::LenL;
                Event::Pending
            }
            State::LenL => {
                self.buf[5] = b;
                self.state = State::LenH;
                Event::Pending
            }
            State::LenH => {
                self.buf[6] = b;
                let l = u16::from_le_bytes([self.buf[5], b]) as usize;
                if l < 3 {
                    return self.fail(DecodeError::BadLength);
                }
                if 7 + l > N {
                    return self.fail(DecodeError::TooLong);
                }
                self.expected = 7 + l;
                self.len = 7;
                self.state = State::Body;
                Event::Pending
            }
            State::Body => {
                self.buf[self.len] = b;
                self.len += 1;
                if self.len < self.expected {
                    return Event::Pending;
                }
                self.state = State::Header(0);
                let n = self.len;
                let got = u16::from_le_bytes([self.buf[n - 2], self.buf[n - 1]]);
                if crc::crc16(&self.buf[..n - 2]) != got {
                    self.stats.crc_errors += 1;
                    return Event::Error(DecodeError::Crc);
                }
                let inst = self.buf[7];
                let Some(instruction) = Instruction::from_u8(inst) else {
                    self.stats.framing_errors += 1;
                    return Event::Error(DecodeError::UnknownInstruction(inst));
                };
                let fast = instruction == Instruction::Status && self.id == BROADCAST_ID;
                let body_end = if fast {
                    n - 2
                } else {
                    unstuff(&mut self.buf[8..n - 2]) + 8
                };
                self.stats.packets += 1;
                self.ready = Some((inst, 8, body_end - 8));
                Event::Packet
            }
        }
    }

    fn fail(&mut self, e: DecodeError) -> Event {
        self.stats.framing_errors += 1;
        self.state = State::Header(0);
        Event::Error(e)
    }

    /// The packet completed by the last [`push`](Self::push) that returned [`Event::Packet`].
    pub fn packet(&self) -> Option<Packet<'_>> {
        let (inst, start, len) = self.ready?;
        let instruction = Instruction::from_u8(inst)?;
        let params = &self.buf[start..start + len];
        if instruction == Instruction::Status {
            let (&error, rest) = params.split_first()?;
            Some(Packet {
                id: self.id,
                instruction,
                error,
                params: rest,
            })
        } else {
            Some(Packet {
                id: self.id,
                instruction,
                error: 0,
                params,
            })
        }
    }
}

/// Undo byte stuffing in place; returns the new length. `FF FF FD FD` → `FF FF FD`;
/// an unstuffed `FF FF FD xx` is kept as it is.
pub fn unstuff(body: &mut [u8]) -> usize {
    let mut w = 0;
    let mut last = [0u8; 3]; // last three input bytes
    for r in 0..body.len() {
        let b = body[r];
        let stuffing = b == 0xFD && r >= 3 && last == [0xFF, 0xFF, 0xFD];
        last = [last[1], last[2], b];
        if stuffing {
            continue;
        }
        body[w] = b;
        w += 1;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> std::vec::Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    fn enc(id: u8, inst: u8, prefix: Option<u8>, params: &[u8]) -> std::vec::Vec<u8> {
        let mut out = [0u8; 256];
        let n = encode(id, inst, prefix, params, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn decode_all(bytes: &[u8]) -> std::vec::Vec<(u8, Instruction, u8, std::vec::Vec<u8>)> {
        let mut d = Decoder::<512>::new();
        let mut v = std::vec::Vec::new();
        for &b in bytes {
            if d.push(b) == Event::Packet {
                let p = d.packet().unwrap();
                v.push((p.id, p.instruction, p.error, p.params.to_vec()));
            }
        }
        v
    }

    // every vector of ../shared/reference/dynamixel-protocol2-vectors.md
    #[test]
    fn reference_vectors_encode() {
        assert_eq!(
            enc(1, 0x01, None, &[]),
            hex("FF FF FD 00 01 03 00 01 19 4E")
        );
        assert_eq!(
            enc(1, 0x55, Some(0), &[0x06, 0x04, 0x26]),
            hex("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D")
        );
        assert_eq!(
            enc(0xFE, 0x01, None, &[]),
            hex("FF FF FD 00 FE 03 00 01 31 42")
        );
        assert_eq!(
            enc(1, 0x02, None, &[0x84, 0, 4, 0]),
            hex("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15")
        );
        assert_eq!(
            enc(1, 0x55, Some(0), &[0xA6, 0, 0, 0]),
            hex("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0")
        );
        assert_eq!(
            enc(1, 0x03, None, &[0x74, 0, 0, 2, 0, 0]),
            hex("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89")
        );
        assert_eq!(
            enc(1, 0x55, Some(0), &[]),
            hex("FF FF FD 00 01 04 00 55 00 A1 0C")
        );
        assert_eq!(
            enc(1, 0x05, None, &[]),
            hex("FF FF FD 00 01 03 00 05 02 CE")
        );
        assert_eq!(
            enc(0xFE, 0x82, None, &[0x84, 0, 4, 0, 1, 2]),
            hex("FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA")
        );
        assert_eq!(
            enc(
                0xFE,
                0x83,
                None,
                &[0x74, 0, 4, 0, 1, 0x96, 0, 0, 0, 2, 0xAA, 0, 0, 0]
            ),
            hex("FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87")
        );
        assert_eq!(
            enc(0xFE, 0x92, None, &[1, 0x90, 0, 2, 0, 2, 0x92, 0, 1, 0]),
            hex("FF FF FD 00 FE 0D 00 92 01 90 00 02 00 02 92 00 01 00 1A 05")
        );
        assert_eq!(
            enc(1, 0x55, Some(0), &[0xFF, 0xFF, 0xFD, 0x07]),
            hex("FF FF FD 00 01 09 00 55 00 FF FF FD FD 07 C9 1C")
        );
    }

    #[test]
    fn reference_vectors_decode() {
        let p = decode_all(&hex("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D"));
        assert_eq!(p, [(1, Instruction::Status, 0, vec![6, 4, 0x26])]);
        let p = decode_all(&hex("FF FF FD 00 01 09 00 55 00 FF FF FD FD 07 C9 1C"));
        assert_eq!(p, [(1, Instruction::Status, 0, vec![0xFF, 0xFF, 0xFD, 7])]);
        let p = decode_all(&hex(
            "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87",
        ));
        assert_eq!(p[0].1, Instruction::SyncWrite);
        assert_eq!(p[0].3.len(), 14);
    }

    #[test]
    fn garbage_between_packets_and_corrupt_crc_resync() {
        let mut bytes = hex("00 FF 12 FF FF FF FD 00 01 03 00 01 19 4E");
        let mut bad = hex("FF FF FD 00 01 07 00 02 84 00 04 00 1D 16");
        bytes.append(&mut bad);
        bytes.extend(hex("FF FF FD 00 01 03 00 01 19 4E"));
        let mut d = Decoder::<64>::new();
        let mut n = 0;
        let mut crc = 0;
        for &b in &bytes {
            match d.push(b) {
                Event::Packet => n += 1,
                Event::Error(DecodeError::Crc) => crc += 1,
                _ => {}
            }
        }
        assert_eq!((n, crc), (2, 1));
        assert_eq!(d.stats.crc_errors, 1);
    }

    #[test]
    fn unstuffed_sender_is_tolerated() {
        // a master that forgets to stuff: LEN and CRC cover FF FF FD 07 as is
        let mut raw = hex("FF FF FD 00 01 09 00 03 74 00 FF FF FD 07");
        let len = (raw.len() - 7 + 2) as u16;
        raw[5] = len as u8;
        let c = crc::crc16(&raw);
        raw.extend([c as u8, (c >> 8) as u8]);
        let p = decode_all(&raw);
        assert_eq!(p[0].3, vec![0x74, 0, 0xFF, 0xFF, 0xFD, 7]);
    }

    #[test]
    fn too_long_and_short_len_are_errors() {
        let mut d = Decoder::<16>::new();
        let mut errs = 0;
        for b in hex("FF FF FD 00 01 FF 00") {
            if let Event::Error(DecodeError::TooLong) = d.push(b) {
                errs += 1;
            }
        }
        for b in hex("FF FF FD 00 01 02 00") {
            if let Event::Error(DecodeError::BadLength) = d.push(b) {
                errs += 1;
            }
        }
        assert_eq!(errs, 2);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

        /// Random bytes never panic, and the decoder keeps making progress.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut d = Decoder::<256>::new();
            for b in bytes {
                if d.push(b) == Event::Packet {
                    prop_assert!(d.packet().is_some());
                }
            }
        }

        /// Any packet survives encoding (with stuffing) and decoding, even between garbage,
        /// and a flipped bit is caught by the CRC, not delivered.
        #[test]
        fn packets_round_trip_through_noise(
            id in 0u8..=252,
            inst in prop::sample::select(vec![0x01u8, 0x02, 0x03, 0x55, 0x82, 0x83, 0x92, 0x93]),
            params in proptest::collection::vec(prop::sample::select(vec![0u8, 0xFF, 0xFD, 0x12]), 0..64),
            junk in proptest::collection::vec(any::<u8>(), 0..32),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut buf = [0u8; 512];
            let prefix = if inst == 0x55 { Some(0) } else { None };
            let n = encode(id, inst, prefix, &params, &mut buf).unwrap();
            let mut d = Decoder::<512>::new();
            let mut got = 0;
            // junk that cannot contain a header, then the packet
            for &b in junk.iter().filter(|&&b| b != 0xFF) {
                d.push(b);
            }
            for &b in &buf[..n] {
                if d.push(b) == Event::Packet {
                    let p = d.packet().unwrap();
                    prop_assert_eq!(p.id, id);
                    prop_assert_eq!(p.params, &params[..]);
                    got += 1;
                }
            }
            prop_assert_eq!(got, 1);
            // corrupt one byte after the header: never a wrong packet
            let mut bad = buf[..n].to_vec();
            let i = 7 + flip.index(n - 7);
            bad[i] ^= 0x5A;
            let mut d = Decoder::<512>::new();
            for &b in &bad {
                if d.push(b) == Event::Packet {
                    let p = d.packet().unwrap();
                    prop_assert!(p.params == &params[..] && p.id == id, "corrupt packet delivered");
                }
            }
        }
    }
}
