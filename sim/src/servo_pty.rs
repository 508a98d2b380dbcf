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

/// Serve `bus` on a pty until `stop` is set: answer packets, advance servo dynamics in real time.
pub fn serve(bus: &mut SimBus, pty: &mut PtyEndpoint, stop: &AtomicBool) -> Result<(), PtyError> {
    serve_with_latency(bus, pty, stop, std::time::Duration::ZERO)
}

/// [`serve`], each reply held back by `latency` as a USB-serial adapter's latency timer holds
/// small packets (FTDI's default is 16 ms): what `reachy doctor` exists to catch.
pub fn serve_with_latency(
    bus: &mut SimBus,
    pty: &mut PtyEndpoint,
    stop: &AtomicBool,
    latency: std::time::Duration,
) -> Result<(), PtyError> {
    serve_with(bus, pty, stop, latency, &mut |_| {})
}

/// [`serve_with_latency`], calling `each` with the bus between packets: something outside the
/// servos moves them (a hand moving a leader arm whose torque is off, a test's script).
pub fn serve_with(
    bus: &mut SimBus,
    pty: &mut PtyEndpoint,
    stop: &AtomicBool,
    latency: std::time::Duration,
    each: &mut dyn FnMut(&mut SimBus),
) -> Result<(), PtyError> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    let mut held: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        while held.front().is_some_and(|(due, _)| *due <= Instant::now()) {
            if let Some((_, bytes)) = held.pop_front() {
                pty.write_all(&bytes)?;
            }
        }
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
            out.clear();
            bus.receive(&buf[..n], &mut out);
            if !out.is_empty() {
                if latency.is_zero() {
                    pty.write_all(&out)?;
                } else {
                    held.push_back((Instant::now() + latency, out.clone()));
                }
            }
        }
    }
    Ok(())
}

/// Serve a bus that something else moves (a physics engine: [`crate::servo_bus`]) on a pty
/// until `stop` is set: packets are answered under the lock, the servos are not stepped here.
pub fn serve_shared(
    bus: &std::sync::Mutex<SimBus>,
    pty: &mut PtyEndpoint,
    stop: &AtomicBool,
) -> Result<(), PtyError> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let n = pty.read(&mut buf)?;
        if n > 0 {
            out.clear();
            if let Ok(mut b) = bus.lock() {
                b.receive(&buf[..n], &mut out);
            }
            if !out.is_empty() {
                pty.write_all(&out)?;
            }
        }
    }
    Ok(())
}
