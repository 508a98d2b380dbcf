//! The firmware's Cortex-M4 images in QEMU (mps2-an386), with their UARTs wired: UART0, the
//! host link, as a symlink at a path the serial backend opens; UART1, the servo bus, bridged to
//! a servo bus pty (`reachy sim servos`, or the physics robot's buses). What `reachy firmware
//! qemu` runs for one board and `reachy demo --backend qemu` for a board per limb.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The board crate, from this crate's sources (`cargo build --release` there builds the images).
const BOARD_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../firmware/boards/mps2-an386"
);

/// The arms' image (8 servos, IDs 1..=8): `REACHY_FW_IMAGE` if set, else the board crate's own
/// release build.
pub fn default_image() -> PathBuf {
    std::env::var_os("REACHY_FW_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(BOARD_DIR).join("target/thumbv7em-none-eabihf/release/reachy-fw-mps2")
        })
}

/// The image a limb's board runs, beside the arms' `image`: the head's (5 servos) is
/// `reachy-fw-mps2-head`, built with it.
pub fn limb_image(image: &Path, limb: &str) -> PathBuf {
    if limb == "head" {
        let mut name = image.file_name().unwrap_or_default().to_os_string();
        name.push("-head");
        image.with_file_name(name)
    } else {
        image.to_path_buf()
    }
}

/// A running QEMU board; dropping it stops QEMU and the bridge and removes the link.
pub struct QemuBoard {
    child: Child,
    stop: Arc<AtomicBool>,
    bridges: Vec<JoinHandle<()>>,
    link: PathBuf,
    /// QEMU's pty for UART0 (the host link).
    pub uart0: String,
    /// QEMU's pty for UART1 (the servo bus).
    pub uart1: String,
}

impl QemuBoard {
    /// Start `image`, link UART0 at `link` and bridge UART1 to `bus` if given. Returns once both
    /// UARTs are up.
    pub fn start(image: &Path, link: &Path, bus: Option<&Path>) -> anyhow::Result<Self> {
        if !image.is_file() {
            bail!(
                "the firmware image {} is not there: build it with `cd {} && cargo build --release`, \
                 or give its path (--image, or REACHY_FW_IMAGE)",
                image.display(),
                Path::new(BOARD_DIR).display()
            );
        }
        if link.symlink_metadata().is_ok() {
            bail!("--link {}: something is already there", link.display());
        }
        let mut child = Command::new("qemu-system-arm")
            .args([
                "-cpu",
                "cortex-m4",
                "-machine",
                "mps2-an386",
                "-display",
                "none",
            ])
            .args([
                "-monitor", "none", "-serial", "pty", "-serial", "pty", "-kernel",
            ])
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-arm (Debian: apt install qemu-system-arm)")?;
        // QEMU says "char device redirected to /dev/pts/N (label serial0)" per UART, on either
        // stream; later lines are logged
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Err(std::sync::mpsc::SendError(line)) = tx.send(line) {
                        tracing::info!("qemu: {line}");
                    }
                }
            });
        }
        let mut ptys = Vec::new();
        let t0 = Instant::now();
        while ptys.len() < 2 && t0.elapsed() < Duration::from_secs(20) {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if let Some(rest) = line.split("redirected to ").nth(1) {
                    ptys.extend(rest.split_whitespace().next().map(str::to_string));
                } else {
                    tracing::info!("qemu: {line}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("qemu-system-arm exited ({status}) before its UARTs were ready");
            }
        }
        drop(rx);
        if ptys.len() < 2 {
            let _ = child.kill();
            let _ = child.wait();
            bail!("qemu-system-arm did not report its two UART ptys within 20 s");
        }
        let mut board = Self {
            child,
            stop: Arc::new(AtomicBool::new(false)),
            bridges: Vec::new(),
            link: PathBuf::new(),
            uart1: ptys.pop().expect("two"),
            uart0: ptys.pop().expect("two"),
        };
        std::os::unix::fs::symlink(&board.uart0, link)
            .with_context(|| format!("linking {} to {}", link.display(), board.uart0))?;
        board.link = link.to_path_buf();
        if let Some(bus) = bus {
            board.bridge(bus)?;
        }
        Ok(board)
    }

    /// Copy bytes both ways between UART1 and `bus` on two threads.
    fn bridge(&mut self, bus: &Path) -> anyhow::Result<()> {
        let open = |p: &str| {
            serialport::new(p, 1_000_000)
                .timeout(Duration::from_millis(20))
                .open_native()
                .with_context(|| format!("opening {p}"))
        };
        let uart = open(&self.uart1)?;
        let dev = open(&bus.to_string_lossy())?;
        for (mut from, mut to) in [
            (uart.try_clone_native()?, dev.try_clone_native()?),
            (dev, uart),
        ] {
            let stop = self.stop.clone();
            self.bridges.push(
                std::thread::Builder::new()
                    .name("qemu bus bridge".into())
                    .spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 512];
                        while !stop.load(Ordering::Relaxed) {
                            match from.read(&mut buf) {
                                Ok(0) => {}
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => break,
                            }
                        }
                    })?,
            );
        }
        Ok(())
    }

    /// Wait until QEMU exits or `stop` is set (then QEMU is stopped): its exit status, `None`
    /// when stopped.
    pub fn wait(&mut self, stop: &AtomicBool) -> anyhow::Result<Option<std::process::ExitStatus>> {
        loop {
            if stop.load(Ordering::Relaxed) {
                self.kill();
                return Ok(None);
            }
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuBoard {
    fn drop(&mut self) {
        self.kill();
        self.stop.store(true, Ordering::Relaxed);
        for b in self.bridges.drain(..) {
            let _ = b.join();
        }
        if !self.link.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}
