//! Serial ports for the firmware crate's `embedded-io` code: an adapter over `serialport` (a USB
//! adapter, a UART, or a pseudo-terminal), and a `std` clock.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use reachy_firmware::dynamixel::Clock;
use serialport::SerialPort;

/// Monotonic clock from `Instant`.
#[derive(Debug, Clone, Copy)]
pub struct StdClock(Instant);

impl Default for StdClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for StdClock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// `embedded-io` view of a serial port.
pub struct SerialIo {
    port: Box<dyn SerialPort>,
}

impl SerialIo {
    /// Open `path` at `baud`, raw 8N1, no flow control. A path that is a regular file or a
    /// directory is refused with that said (the OS would answer "Not a typewriter").
    pub fn open(path: &str, baud: u32) -> Result<Self, serialport::Error> {
        if let Ok(m) = std::fs::metadata(path) {
            if m.is_file() || m.is_dir() {
                let what = if m.is_dir() {
                    "a directory"
                } else {
                    "a regular file"
                };
                return Err(serialport::Error::new(
                    serialport::ErrorKind::InvalidInput,
                    format!("{path} is {what}, not a serial port (a USB adapter such as /dev/ttyUSB0, or a pty)"),
                ));
            }
        }
        let port = serialport::new(path, baud)
            .timeout(Duration::from_millis(1))
            .open()?;
        Ok(Self { port })
    }

    /// Wrap an already open port.
    pub fn new(port: Box<dyn SerialPort>) -> Self {
        Self { port }
    }
}

/// A Dynamixel 2.0 bus master on the serial port `path` at `baud`, waiting `timeout_ms` for
/// each reply: what the bus tools and `reachy doctor` talk to servos with.
pub fn open_master(
    path: &str,
    baud: u32,
    timeout_ms: u32,
) -> Result<reachy_firmware::dynamixel::Master<SerialIo, StdClock>, serialport::Error> {
    let mut m =
        reachy_firmware::dynamixel::Master::new(SerialIo::open(path, baud)?, StdClock::default());
    m.timeout_us = timeout_ms * 1000;
    Ok(m)
}

impl embedded_io::ErrorType for SerialIo {
    type Error = std::io::Error;
}

impl embedded_io::Read for SerialIo {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self.port.read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}

impl embedded_io::Write for SerialIo {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.port.write(buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.port.flush()
    }
}

impl embedded_io::ReadReady for SerialIo {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        let n = self.port.bytes_to_read().map_err(std::io::Error::other)?;
        if n == 0 {
            // yield briefly instead of spinning a core while a reply is on its way
            std::thread::sleep(Duration::from_micros(20));
        }
        Ok(n > 0)
    }
}
