//! The host end of the firmware link: the serial backend's transport. Sends [`Command`]s and
//! receives [`Telemetry`] over a serial port with the firmware crate's own codec.

use std::time::{Duration, Instant};

use embedded_io::{Read, ReadReady, Write};
use reachy_firmware::link::{
    self, Command, FrameDecoder, JointLimits, LinkError, Telemetry, MAX_FRAME, MAX_JOINTS,
};

use crate::serial::SerialIo;

/// Errors of the firmware link.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareLinkError {
    /// Opening the port failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// Port path.
        path: String,
        /// Cause.
        source: serialport::Error,
    },
    /// Port I/O failed.
    #[error("firmware link I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A message could not be encoded.
    #[error("cannot encode a link message: {0:?}")]
    Encode(LinkError),
    /// More joints than one firmware handles.
    #[error("{0} joints; the firmware handles at most {MAX_JOINTS}")]
    TooManyJoints(usize),
}

/// A serial connection to the firmware.
pub struct FirmwareLink {
    port: SerialIo,
    dec: FrameDecoder,
    tx: [u8; MAX_FRAME],
    seq: u32,
}

impl FirmwareLink {
    /// Open the link at `path` (a USB serial device, or the pty of `reachy firmware run`).
    pub fn open(path: &str, baud: u32) -> Result<Self, FirmwareLinkError> {
        let port = SerialIo::open(path, baud).map_err(|source| FirmwareLinkError::Open {
            path: path.to_string(),
            source,
        })?;
        Ok(Self {
            port,
            dec: FrameDecoder::new(),
            tx: [0; MAX_FRAME],
            seq: 0,
        })
    }

    /// Send one command.
    pub fn send(&mut self, cmd: &Command) -> Result<(), FirmwareLinkError> {
        let n = link::encode(cmd, &mut self.tx).map_err(FirmwareLinkError::Encode)?;
        self.port.write_all(&self.tx[..n])?;
        self.port.flush()?;
        Ok(())
    }

    /// Send joint goals `(firmware joint index, rad)`; returns the sequence number used.
    pub fn send_goals(&mut self, goals: &[(u8, f32)]) -> Result<u32, FirmwareLinkError> {
        self.seq = self.seq.wrapping_add(1);
        let cmd = Command::position_goals(self.seq, goals)
            .ok_or(FirmwareLinkError::TooManyJoints(goals.len()))?;
        self.send(&cmd)?;
        Ok(self.seq)
    }

    /// Send `(firmware joint index, lower, upper, max velocity)` limits (servo frame, rad and
    /// rad/s); the firmware clamps every goal into them from then on.
    pub fn send_joint_limits(
        &mut self,
        limits: &[(u8, f32, f32, f32)],
    ) -> Result<(), FirmwareLinkError> {
        let mut v = heapless::Vec::<JointLimits, MAX_JOINTS>::new();
        for &(joint, lower, upper, max_velocity) in limits {
            v.push(JointLimits {
                joint,
                lower,
                upper,
                max_velocity,
            })
            .map_err(|_| FirmwareLinkError::TooManyJoints(limits.len()))?;
        }
        self.send(&Command::Limits(v))
    }

    /// Every telemetry message available now.
    pub fn poll(&mut self) -> Result<Vec<Telemetry>, FirmwareLinkError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while self.port.read_ready()? {
            let n = self.port.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if let Some(Ok(t)) = self.dec.push::<Telemetry>(b) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Wait for the next `State` telemetry, up to `timeout`.
    pub fn next_state(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Telemetry>, FirmwareLinkError> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(t) = self
                .poll()?
                .into_iter()
                .rev()
                .find(|t| matches!(t, Telemetry::State { .. }))
            {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Frames dropped by the decoder (corrupt telemetry).
    pub fn errors(&self) -> u32 {
        self.dec.stats.errors
    }
}
