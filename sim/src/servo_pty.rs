//! A simulated servo bus served on a pseudo-terminal, so any Dynamixel client (ROBOTIS's SDK,
//! `reachy bus`, the firmware) can open it like a USB serial adapter.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};

use crate::servo::SimBus;

/// Errors of the pty server.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// Creating the pseudo-terminal failed.
    #[error("cannot create a pseudo-terminal: {0}")]
    Open(#[from] serialport::Error),
    /// Creating the symlink failed.
    #[error("cannot create symlink {path}: {source}")]
    Link {
        /// Requested path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing the pty failed.
    #[error("pty I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Create a pty pair with a 1 ms read timeout on the master, and a symlink `link` → slave
/// device (a stale symlink is replaced). Keep the slave open while the pty is in use.
pub fn pty_pair(link: &Path) -> Result<(TTYPort, TTYPort), PtyError> {
    let (mut master, slave) = TTYPort::pair()?;
    master.set_timeout(Duration::from_millis(1))?;
    let dev = slave.name().unwrap_or_default();
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if meta.file_type().is_symlink() {
            let _ = std::fs::remove_file(link);
        }
    }
    std::os::unix::fs::symlink(&dev, link).map_err(|source| PtyError::Link {
        path: link.to_path_buf(),
        source,
    })?;
    Ok((master, slave))
}

/// A pseudo-terminal whose slave end is reachable at a symlink.
pub struct PtyEndpoint {
    master: TTYPort,
    _slave: TTYPort, // kept open so the master never sees EIO between clients
    link: PathBuf,
}

impl PtyEndpoint {
    /// Create a pty pair and a symlink `link` → slave device (replacing a stale symlink).
    pub fn create(link: &Path) -> Result<Self, PtyError> {
        let (master, slave) = pty_pair(link)?;
        Ok(Self {
            master,
            _slave: slave,
            link: link.to_path_buf(),
        })
    }

    /// The symlink path.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// Read what is available (waits up to 1 ms); 0 when nothing arrived.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, PtyError> {
        match self.master.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Write everything.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), PtyError> {
        self.master.write_all(buf)?;
        self.master.flush()?;
        Ok(())
    }
}

impl Drop for PtyEndpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// How long a bus's bytes take. A pty moves them at once; a real bus is a half-duplex wire at
/// its baud rate (10 bits a byte, requests and replies in turn), often behind a USB adapter
/// whose latency timer holds back what the servos send. The default is a pty's: instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Wire {
    /// The wire's baud rate: each request's bytes take their time on it after what is already
    /// on it, then the replies' bytes theirs; a reply is written once its last byte would have
    /// arrived. `None`: instant.
    pub baud: Option<u32>,
    /// A USB-serial adapter's latency timer: every reply held back this much more (FTDI's
    /// default is 16 ms).
    pub latency: Duration,
}

impl Wire {
    /// A wire at `baud` with no adapter latency.
    pub fn at_baud(baud: u32) -> Self {
        Self {
            baud: Some(baud),
            latency: Duration::ZERO,
        }
    }

    /// Time of `n` bytes on the wire (10 bits each: start, 8 data, stop).
    pub fn bytes_time(&self, n: usize) -> Duration {
        match self.baud {
            Some(b) if b > 0 => Duration::from_nanos(n as u64 * 10 * 1_000_000_000 / b as u64),
            _ => Duration::ZERO,
        }
    }

    fn is_instant(&self) -> bool {
        self.bytes_time(1).is_zero() && self.latency.is_zero()
    }
}

/// A pty's replies in flight on its [`Wire`]: when the wire is free, which replies are due when.
struct OnWire {
    wire: Wire,
    free: Instant,
    held: std::collections::VecDeque<(Instant, Vec<u8>)>,
}

impl OnWire {
    fn new(wire: Wire) -> Self {
        Self {
            wire,
            free: Instant::now(),
            held: Default::default(),
        }
    }

    /// `n` request bytes read now: on the wire after what is on it.
    fn received(&mut self, n: usize) {
        self.free = self.free.max(Instant::now()) + self.wire.bytes_time(n);
    }

    /// A reply to what was received: written now on an instant wire, else once the wire has
    /// carried it (and the adapter's latency has passed).
    fn reply(&mut self, pty: &mut PtyEndpoint, out: &[u8]) -> Result<(), PtyError> {
        if self.wire.is_instant() {
            return pty.write_all(out);
        }
        self.free += self.wire.bytes_time(out.len());
        self.held
            .push_back((self.free + self.wire.latency, out.to_vec()));
        Ok(())
    }

    /// Wait for the next held reply, if any, and write it (the master waits for it anyway:
    /// the bus is half duplex).
    fn write_due(&mut self, pty: &mut PtyEndpoint) -> Result<(), PtyError> {
        if let Some((due, bytes)) = self.held.pop_front() {
            sleep_until(due);
            pty.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// Sleep until `t`: the last 100 µs spun, past the scheduler's timer slack.
fn sleep_until(t: Instant) {
    let spin = Duration::from_micros(100);
    let now = Instant::now();
    if t > now + spin {
        std::thread::sleep(t - now - spin);
    }
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

/// Serve `bus` on a pty until `stop` is set: answer packets, advance servo dynamics in real time.
pub fn serve(bus: &mut SimBus, pty: &mut PtyEndpoint, stop: &AtomicBool) -> Result<(), PtyError> {
    serve_with(bus, pty, stop, Wire::default(), &mut |_| {})
}

/// [`serve`], calling `each` with the bus between packets: something outside the servos moves
/// them (a hand moving a leader arm whose torque is off, a test's script); the replies take the
/// time of `wire` (its baud rate, an adapter's latency timer: what `reachy doctor` exists to
/// catch).
pub fn serve_with(
    bus: &mut SimBus,
    pty: &mut PtyEndpoint,
    stop: &AtomicBool,
    wire: Wire,
    each: &mut dyn FnMut(&mut SimBus),
) -> Result<(), PtyError> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    let mut on_wire = OnWire::new(wire);
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        on_wire.write_due(pty)?;
        let n = pty.read(&mut buf)?;
        each(bus);
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f32();
        if dt >= 0.0005 {
            // advance in ≤ 1 ms steps for a stable first-order response
            let steps = (dt / 0.001).ceil().min(1000.0) as usize;
            for _ in 0..steps {
                bus.step(dt / steps as f32);
            }
            last = now;
        }
        if n > 0 {
            on_wire.received(n);
            out.clear();
            bus.receive(&buf[..n], &mut out);
            if !out.is_empty() {
                on_wire.reply(pty, &out)?;
            }
        }
    }
    Ok(())
}

/// Serve a bus that something else moves (a physics engine: [`crate::servo_bus`]) on a pty
/// until `stop` is set: packets are answered under the lock, the servos are not stepped here;
/// the replies take the time of `wire`.
pub fn serve_shared(
    bus: &std::sync::Mutex<SimBus>,
    pty: &mut PtyEndpoint,
    stop: &AtomicBool,
    wire: Wire,
) -> Result<(), PtyError> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    let mut on_wire = OnWire::new(wire);
    while !stop.load(Ordering::Relaxed) {
        on_wire.write_due(pty)?;
        let n = pty.read(&mut buf)?;
        if n > 0 {
            on_wire.received(n);
            out.clear();
            if let Ok(mut b) = bus.lock() {
                b.receive(&buf[..n], &mut out);
            }
            if !out.is_empty() {
                on_wire.reply(pty, &out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reachy_firmware::dynamixel::Model;

    /// ROBOTIS's reference ping of ID 1 (10 bytes) and its reply (14 bytes).
    const PING: [u8; 10] = [0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x03, 0x00, 0x01, 0x19, 0x4E];
    const REPLY_LEN: usize = 14;

    #[test]
    fn a_wire_takes_ten_bits_a_byte_at_its_baud() {
        assert_eq!(
            Wire::at_baud(1_000_000).bytes_time(244),
            Duration::from_micros(2440)
        );
        assert_eq!(
            Wire::at_baud(4_000_000).bytes_time(244),
            Duration::from_micros(610)
        );
        assert!(Wire::default().bytes_time(1000).is_zero());
        assert!(Wire::default().is_instant());
    }

    /// At 9600 baud a ping and its reply are 24 bytes on the wire, 25 ms: the reply is not
    /// there before (and it comes, whole).
    #[test]
    fn replies_arrive_no_sooner_than_the_wire_carries_them() {
        let link = std::env::temp_dir().join(format!("reachy-wire-test-{}", std::process::id()));
        let mut ep = PtyEndpoint::create(&link).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let server = std::thread::spawn(move || {
            let mut bus = SimBus::new(&[1], Model::Xm430W350);
            serve_with(&mut bus, &mut ep, &st, Wire::at_baud(9600), &mut |_| {})
        });
        let mut port = serialport::new(link.to_string_lossy(), 9600)
            .timeout(Duration::from_secs(5))
            .open_native()
            .unwrap();
        let wire = Wire::at_baud(9600).bytes_time(PING.len() + REPLY_LEN);
        for _ in 0..3 {
            let t = Instant::now();
            port.write_all(&PING).unwrap();
            let mut reply = [0u8; REPLY_LEN];
            port.read_exact(&mut reply).unwrap();
            assert!(t.elapsed() >= wire, "{:?} < {wire:?}", t.elapsed());
            assert_eq!(
                &reply[..8],
                &[0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x07, 0x00, 0x55]
            );
        }
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap().unwrap();
    }
}
