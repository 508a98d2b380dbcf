//! Bus master: transactions over any `embedded-io` port with reply timeouts and bounded retries.
//!
//! The port must implement [`embedded_io::Read`], [`embedded_io::Write`] and
//! [`embedded_io::ReadReady`] (so a missing reply times out instead of blocking); time comes from
//! a [`Clock`]. The same code drives a UART on a board, a pseudo-terminal on the host and an
//! in-memory simulated bus in tests. No heap: callers pass the output slices.

use embedded_io::{Read, ReadReady, Write};

use super::packet::{self, Decoder, Event, Instruction, BROADCAST_ID};

/// A monotonic microsecond clock.
pub trait Clock {
    /// Microseconds since an arbitrary start.
    fn now_us(&self) -> u64;
}

/// Bus errors for one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusError<E> {
    /// The port failed.
    Io(E),
    /// No (valid) reply in time, after all retries.
    Timeout {
        /// Servo that did not answer.
        id: u8,
    },
    /// The servo answered with an error in the status byte (bits 0–6).
    Status {
        /// Servo.
        id: u8,
        /// Error code (1 result fail, 2 instruction, 3 CRC, 4 range, 5 length, 6 limit, 7 access).
        error: u8,
    },
    /// The reply was well formed but not what the request asks for.
    BadReply {
        /// Servo.
        id: u8,
    },
    /// Request does not fit the transmit buffer.
    TooLarge,
}

/// Counters of a bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Transactions attempted.
    pub transactions: u32,
    /// Replies that did not arrive in time.
    pub timeouts: u32,
    /// Retries made.
    pub retries: u32,
    /// Status packets carrying the hardware alert bit.
    pub alerts: u32,
    /// Status error replies.
    pub status_errors: u32,
    /// Bytes written.
    pub tx_bytes: u32,
    /// Bytes read.
    pub rx_bytes: u32,
}

/// Reply to a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PingInfo {
    /// Servo ID.
    pub id: u8,
    /// Model number.
    pub model: u16,
    /// Firmware version.
    pub firmware: u8,
}

const RX_MAX: usize = 1024;
const TX_MAX: usize = 1024;

/// Bus master over port `P` with clock `C`.
pub struct Master<P, C> {
    port: P,
    clock: C,
    dec: Decoder<RX_MAX>,
    tx: [u8; TX_MAX],
    scratch: [u8; TX_MAX],
    rx: [u8; RX_MAX],
    rx_len: usize,
    rx_id: u8,
    rx_err: u8,
    pending: [u8; 64],
    pending_pos: usize,
    pending_len: usize,
    /// Reply timeout per status packet (µs).
    pub timeout_us: u32,
    /// Retries of single-servo transactions after a timeout or corrupt reply.
    pub retries: u8,
    /// How long a broadcast ping collects replies (µs).
    pub broadcast_window_us: u32,
    /// Counters.
    pub stats: BusStats,
}

impl<P, C> Master<P, C>
where
    P: Read + Write + ReadReady,
    C: Clock,
{
    /// A master with a 10 ms timeout and 2 retries.
    pub fn new(port: P, clock: C) -> Self {
        Self {
            port,
            clock,
            dec: Decoder::new(),
            tx: [0; TX_MAX],
            scratch: [0; TX_MAX],
            rx: [0; RX_MAX],
            rx_len: 0,
            rx_id: 0,
            rx_err: 0,
            pending: [0; 64],
            pending_pos: 0,
            pending_len: 0,
            timeout_us: 10_000,
            retries: 2,
            broadcast_window_us: 50_000,
            stats: BusStats::default(),
        }
    }

    /// The port, e.g. to change its baud rate.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Decoder counters (CRC errors, skipped bytes).
    pub fn decoder_stats(&self) -> packet::DecoderStats {
        self.dec.stats
    }

    fn send(
        &mut self,
        id: u8,
        inst: Instruction,
        params_len: usize,
    ) -> Result<(), BusError<P::Error>> {
        let params = &self.scratch[..params_len];
        let n = packet::encode(id, inst as u8, None, params, &mut self.tx)
            .map_err(|_| BusError::TooLarge)?;
        // drop stale bytes from earlier, late replies
        self.pending_len = 0;
        self.pending_pos = 0;
        while self.port.read_ready().map_err(BusError::Io)? {
            let mut junk = [0u8; 64];
            if self.port.read(&mut junk).map_err(BusError::Io)? == 0 {
                break;
            }
        }
        self.dec.reset();
        self.port.write_all(&self.tx[..n]).map_err(BusError::Io)?;
        self.port.flush().map_err(BusError::Io)?;
        self.stats.tx_bytes += n as u32;
        self.stats.transactions += 1;
        Ok(())
    }

    /// Wait for the next status packet until `deadline`; it lands in `self.rx`.
    fn recv(&mut self, deadline: u64) -> Result<bool, BusError<P::Error>> {
        loop {
            while self.pending_pos < self.pending_len {
                let b = self.pending[self.pending_pos];
                self.pending_pos += 1;
                if let Event::Packet = self.dec.push(b) {
                    if let Some(p) = self.dec.packet() {
                        if p.instruction == Instruction::Status {
                            self.rx_id = p.id;
                            self.rx_err = p.error;
                            self.rx_len = p.params.len();
                            self.rx[..p.params.len()].copy_from_slice(p.params);
                            if p.error & 0x80 != 0 {
                                self.stats.alerts += 1;
                            }
                            return Ok(true);
                        }
                        // an echo of our own instruction (half-duplex adapters): ignore
                    }
                }
            }
            if self.clock.now_us() >= deadline {
                return Ok(false);
            }
            if self.port.read_ready().map_err(BusError::Io)? {
                let n = self.port.read(&mut self.pending).map_err(BusError::Io)?;
                self.stats.rx_bytes += n as u32;
                self.pending_pos = 0;
                self.pending_len = n;
            }
        }
    }

    fn check_status(&mut self, id: u8) -> Result<(), BusError<P::Error>> {
        let e = self.rx_err & 0x7F;
        if e != 0 {
            self.stats.status_errors += 1;
            return Err(BusError::Status { id, error: e });
        }
        Ok(())
    }

    /// One request to one servo with retries; the reply params are left in `self.rx`.
    fn transact(
        &mut self,
        id: u8,
        inst: Instruction,
        params_len: usize,
    ) -> Result<(), BusError<P::Error>> {
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.stats.retries += 1;
            }
            self.send(id, inst, params_len)?;
            let deadline = self.clock.now_us() + self.timeout_us as u64;
            loop {
                if !self.recv(deadline)? {
                    self.stats.timeouts += 1;
                    break;
                }
                if self.rx_id == id {
                    return self.check_status(id);
                }
            }
        }
        Err(BusError::Timeout { id })
    }

    /// Ping one servo.
    pub fn ping(&mut self, id: u8) -> Result<PingInfo, BusError<P::Error>> {
        self.transact(id, Instruction::Ping, 0)?;
        if self.rx_len < 3 {
            return Err(BusError::BadReply { id });
        }
        Ok(PingInfo {
            id,
            model: u16::from_le_bytes([self.rx[0], self.rx[1]]),
            firmware: self.rx[2],
        })
    }

    /// Broadcast ping: every servo answers; fills `out`, returns how many answered (sorted by ID).
    pub fn broadcast_ping(&mut self, out: &mut [PingInfo]) -> Result<usize, BusError<P::Error>> {
        self.send(BROADCAST_ID, Instruction::Ping, 0)?;
        let deadline = self.clock.now_us() + self.broadcast_window_us as u64;
        let mut n = 0;
        while self.recv(deadline)? {
            if self.rx_len >= 3 && n < out.len() && !out[..n].iter().any(|p| p.id == self.rx_id) {
                out[n] = PingInfo {
                    id: self.rx_id,
                    model: u16::from_le_bytes([self.rx[0], self.rx[1]]),
                    firmware: self.rx[2],
                };
                n += 1;
            }
        }
        out[..n].sort_unstable_by_key(|p| p.id);
        Ok(n)
    }

    /// Read `out.len()` bytes at `addr`.
    pub fn read(&mut self, id: u8, addr: u16, out: &mut [u8]) -> Result<(), BusError<P::Error>> {
        let len = out.len() as u16;
        self.scratch[..4].copy_from_slice(&[
            addr as u8,
            (addr >> 8) as u8,
            len as u8,
            (len >> 8) as u8,
        ]);
        self.transact(id, Instruction::Read, 4)?;
        if self.rx_len != out.len() {
            return Err(BusError::BadReply { id });
        }
        out.copy_from_slice(&self.rx[..out.len()]);
        Ok(())
    }

    /// Write `data` at `addr`; waits for the status unless `id` is broadcast.
    pub fn write(&mut self, id: u8, addr: u16, data: &[u8]) -> Result<(), BusError<P::Error>> {
        if data.len() + 2 > self.scratch.len() {
            return Err(BusError::TooLarge);
        }
        self.scratch[0] = addr as u8;
        self.scratch[1] = (addr >> 8) as u8;
        self.scratch[2..2 + data.len()].copy_from_slice(data);
        if id == BROADCAST_ID {
            return self.send(id, Instruction::Write, 2 + data.len());
        }
        self.transact(id, Instruction::Write, 2 + data.len())
    }

    /// Reboot a servo (clears a hardware-error shutdown).
    pub fn reboot(&mut self, id: u8) -> Result<(), BusError<P::Error>> {
        self.transact(id, Instruction::Reboot, 0)
    }

    /// Sync write `len` bytes at `addr`: `data` holds `ids.len()` blocks of `len` bytes. No reply.
    pub fn sync_write(
        &mut self,
        addr: u16,
        len: u16,
        ids: &[u8],
        data: &[u8],
    ) -> Result<(), BusError<P::Error>> {
        let l = len as usize;
        let total = 4 + ids.len() * (1 + l);
        if data.len() < ids.len() * l || total > self.scratch.len() {
            return Err(BusError::TooLarge);
        }
        self.scratch[..4].copy_from_slice(&[
            addr as u8,
            (addr >> 8) as u8,
            len as u8,
            (len >> 8) as u8,
        ]);
        let mut k = 4;
        for (i, &id) in ids.iter().enumerate() {
            self.scratch[k] = id;
            self.scratch[k + 1..k + 1 + l].copy_from_slice(&data[i * l..(i + 1) * l]);
            k += 1 + l;
        }
        self.send(BROADCAST_ID, Instruction::SyncWrite, total)
    }

    /// Check the output slices, send a (fast) sync read request, return the reply deadline.
    fn start_sync_read(
        &mut self,
        inst: Instruction,
        addr: u16,
        len: u16,
        ids: &[u8],
        out: &[u8],
        ok: &mut [bool],
    ) -> Result<u64, BusError<P::Error>> {
        if out.len() < ids.len() * len as usize
            || ok.len() < ids.len()
            || 4 + ids.len() > self.scratch.len()
        {
            return Err(BusError::TooLarge);
        }
        ok[..ids.len()].fill(false);
        self.scratch[..4].copy_from_slice(&[
            addr as u8,
            (addr >> 8) as u8,
            len as u8,
            (len >> 8) as u8,
        ]);
        self.scratch[4..4 + ids.len()].copy_from_slice(ids);
        self.send(BROADCAST_ID, inst, 4 + ids.len())?;
        Ok(self.clock.now_us() + self.timeout_us as u64 * ids.len().max(1) as u64)
    }

    /// Sync read `len` bytes at `addr` from `ids`. `out` gets one block of `len` bytes per ID;
    /// `ok[i]` tells whether servo `i` answered correctly. A dead servo does not stop the others.
    /// Returns how many answered.
    pub fn sync_read(
        &mut self,
        addr: u16,
        len: u16,
        ids: &[u8],
        out: &mut [u8],
        ok: &mut [bool],
    ) -> Result<usize, BusError<P::Error>> {
        let l = len as usize;
        let deadline = self.start_sync_read(Instruction::SyncRead, addr, len, ids, out, ok)?;
        let mut got = 0;
        while got < ids.len() && self.recv(deadline)? {
            let Some(i) = ids.iter().position(|&x| x == self.rx_id) else {
                continue;
            };
            if self.rx_err & 0x7F == 0 && self.rx_len == l && !ok[i] {
                out[i * l..(i + 1) * l].copy_from_slice(&self.rx[..l]);
                ok[i] = true;
                got += 1;
            } else if self.rx_err & 0x7F != 0 {
                self.stats.status_errors += 1;
            }
        }
        if got < ids.len() {
            self.stats.timeouts += (ids.len() - got) as u32;
        }
        Ok(got)
    }

    /// Fast sync read: one combined status packet (ID 0xFE) carrying `[ERR ID DATA CRC]` blocks.
    /// Same contract as [`sync_read`](Self::sync_read).
    pub fn fast_sync_read(
        &mut self,
        addr: u16,
        len: u16,
        ids: &[u8],
        out: &mut [u8],
        ok: &mut [bool],
    ) -> Result<usize, BusError<P::Error>> {
        let l = len as usize;
        let deadline = self.start_sync_read(Instruction::FastSyncRead, addr, len, ids, out, ok)?;
        loop {
            if !self.recv(deadline)? {
                self.stats.timeouts += ids.len() as u32;
                return Ok(0);
            }
            if self.rx_id == BROADCAST_ID {
                break;
            }
        }
        // rx = [ID1 DATA1 CRC1(2) ERR2 ID2 DATA2 CRC2 … ERRn IDn DATAn]; first ERR was the status byte
        let mut got = 0;
        let mut k = 0;
        let mut err = self.rx_err;
        for _ in 0..ids.len() {
            if k + 1 + l > self.rx_len {
                break;
            }
            let id = self.rx[k];
            if let Some(i) = ids.iter().position(|&x| x == id) {
                if err & 0x7F == 0 && !ok[i] {
                    out[i * l..(i + 1) * l].copy_from_slice(&self.rx[k + 1..k + 1 + l]);
                    ok[i] = true;
                    got += 1;
                }
            }
            k += 1 + l + 2;
            if k - 2 < self.rx_len && k < self.rx_len {
                err = self.rx[k];
                k += 1;
            }
        }
        Ok(got)
    }

    /// Bulk read: `items` are (id, addr, len); replies go to `out` back to back. Returns how many answered.
    pub fn bulk_read(
        &mut self,
        items: &[(u8, u16, u16)],
        out: &mut [u8],
        ok: &mut [bool],
    ) -> Result<usize, BusError<P::Error>> {
        let total: usize = items.iter().map(|x| x.2 as usize).sum();
        if out.len() < total || ok.len() < items.len() || items.len() * 5 > self.scratch.len() {
            return Err(BusError::TooLarge);
        }
        ok[..items.len()].fill(false);
        for (i, &(id, addr, len)) in items.iter().enumerate() {
            self.scratch[i * 5..i * 5 + 5].copy_from_slice(&[
                id,
                addr as u8,
                (addr >> 8) as u8,
                len as u8,
                (len >> 8) as u8,
            ]);
        }
        self.send(BROADCAST_ID, Instruction::BulkRead, items.len() * 5)?;
        let deadline = self.clock.now_us() + self.timeout_us as u64 * items.len().max(1) as u64;
        let mut got = 0;
        while got < items.len() && self.recv(deadline)? {
            let mut off = 0;
            for (i, &(id, _, len)) in items.iter().enumerate() {
                let l = len as usize;
                if id == self.rx_id && !ok[i] && self.rx_err & 0x7F == 0 && self.rx_len == l {
                    out[off..off + l].copy_from_slice(&self.rx[..l]);
                    ok[i] = true;
                    got += 1;
                    break;
                }
                off += l;
            }
        }
        Ok(got)
    }

    /// Bulk write: `items` are (id, addr, data). No reply.
    pub fn bulk_write(&mut self, items: &[(u8, u16, &[u8])]) -> Result<(), BusError<P::Error>> {
        let mut k = 0;
        for &(id, addr, data) in items {
            let l = data.len();
            if k + 5 + l > self.scratch.len() {
                return Err(BusError::TooLarge);
            }
            self.scratch[k..k + 5].copy_from_slice(&[
                id,
                addr as u8,
                (addr >> 8) as u8,
                l as u8,
                (l >> 8) as u8,
            ]);
            self.scratch[k + 5..k + 5 + l].copy_from_slice(data);
            k += 5 + l;
        }
        self.send(BROADCAST_ID, Instruction::BulkWrite, k)
    }
}

/// Name of a status error code (bits 0–6 of the error byte).
pub fn status_error_name(code: u8) -> &'static str {
    match code {
        1 => "result fail (e.g. torque cannot be enabled while a hardware error shuts the servo down)",
        2 => "instruction error",
        3 => "CRC error",
        4 => "data range error (value or address out of range)",
        5 => "data length error",
        6 => "data limit error",
        7 => "access error (read-only register, or EEPROM while torque is on)",
        _ => "unknown error",
    }
}

impl<E: core::fmt::Debug> core::fmt::Display for BusError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BusError::Io(e) => write!(f, "port error: {e:?}"),
            BusError::Timeout { id } => write!(f, "servo {id} did not answer"),
            BusError::Status { id, error } => {
                write!(
                    f,
                    "servo {id} answered with error {error}: {}",
                    status_error_name(*error)
                )
            }
            BusError::BadReply { id } => {
                write!(f, "servo {id} sent a reply that does not match the request")
            }
            BusError::TooLarge => write!(f, "request too large for the transmit buffer"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: core::fmt::Debug> std::error::Error for BusError<E> {}
