//! Helpers for the end-to-end tests in `tests/tests/`: an in-memory duplex link and a
//! deterministic clock, so the firmware core runs against simulated servos without an OS pty.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use reachy_firmware::dynamixel::Clock;

/// A clock that advances by `step_us` every time it is read (so timeouts always expire), and
/// that a test can move forward explicitly.
#[derive(Debug, Clone)]
pub struct TestClock {
    now: Rc<Cell<u64>>,
    step_us: u64,
}

impl TestClock {
    /// Starts at 0 and advances `step_us` per read.
    pub fn new(step_us: u64) -> Self {
        Self {
            now: Rc::new(Cell::new(0)),
            step_us,
        }
    }
    /// Jump forward.
    pub fn advance(&self, us: u64) {
        self.now.set(self.now.get() + us);
    }
    /// Current time without advancing.
    pub fn peek(&self) -> u64 {
        self.now.get()
    }
}

impl Clock for TestClock {
    fn now_us(&self) -> u64 {
        let t = self.now.get();
        self.now.set(t + self.step_us);
        t
    }
}

/// One end of an in-memory duplex byte pipe.
#[derive(Debug, Clone)]
pub struct PipeEnd {
    rx: Rc<RefCell<VecDeque<u8>>>,
    tx: Rc<RefCell<VecDeque<u8>>>,
}

/// Two connected ends.
pub fn pipe() -> (PipeEnd, PipeEnd) {
    let a = Rc::new(RefCell::new(VecDeque::new()));
    let b = Rc::new(RefCell::new(VecDeque::new()));
    (
        PipeEnd {
            rx: a.clone(),
            tx: b.clone(),
        },
        PipeEnd { rx: b, tx: a },
    )
}

impl PipeEnd {
    /// Everything received so far.
    pub fn take(&self) -> Vec<u8> {
        self.rx.borrow_mut().drain(..).collect()
    }
    /// Send bytes.
    pub fn send(&self, b: &[u8]) {
        self.tx.borrow_mut().extend(b.iter().copied());
    }
}

impl embedded_io::ErrorType for PipeEnd {
    type Error = core::convert::Infallible;
}
impl embedded_io::Read for PipeEnd {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut rx = self.rx.borrow_mut();
        let n = buf.len().min(rx.len());
        for (o, b) in buf.iter_mut().zip(rx.drain(..n)) {
            *o = b;
        }
        Ok(n)
    }
}
impl embedded_io::Write for PipeEnd {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.tx.borrow_mut().extend(buf.iter().copied());
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
impl embedded_io::ReadReady for PipeEnd {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.rx.borrow().is_empty())
    }
}

/// The `reachy` binary next to the running test (built by `cargo test --workspace`, which
/// builds the `reachy` package's binary for its own integration tests).
pub fn reachy_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile directory");
    let bin = dir.join("reachy");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` or `cargo build -p reachy` first",
        bin.display()
    );
    bin
}

/// Tests that time real processes against each other share this machine's cores. The QEMU
/// test emulates a Cortex-M in software and times its bus against a host process; with the
/// suite's other process tests beside it on a two-core runner its loop ran at 17 ms a cycle and
/// missed servo replies. It takes [`alone`]; the others take [`beside_others`], so they still
/// run in parallel with one another, but never with it.
static CORES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Run with no other process test of this binary (a panic elsewhere does not poison it).
pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    CORES.write().unwrap_or_else(|e| e.into_inner())
}

/// Run beside the other process tests, but not beside one that runs [`alone`].
pub fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    CORES.read().unwrap_or_else(|e| e.into_inner())
}

/// A child process killed on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    /// SIGTERM first, so the child cleans up as on Ctrl-C (`reachy firmware qemu` stops its
    /// QEMU, which a SIGKILL would leave running at full CPU for the rest of the suite), then
    /// SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let termed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        let t0 = std::time::Instant::now();
        while termed && t0.elapsed() < std::time::Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `reachy ARGS --listen tcp/127.0.0.1:0`, wait for its first stdout line to start with
/// `ready`; the process and the endpoint it listens on, read from that line.
pub fn start_listening(args: &[&str], ready: &str) -> (ChildGuard, String) {
    use std::io::BufRead;
    let mut c = std::process::Command::new(reachy_bin())
        .args(args)
        .args(["--listen", "tcp/127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning reachy");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a ready line");
    let guard = ChildGuard(c);
    assert!(line.starts_with(ready), "{args:?}: {line:?}");
    let endpoint = reachy_test_support::listening_endpoint(&line)
        .unwrap_or_else(|| panic!("{args:?}: no `listening on` in {line:?}"));
    (guard, endpoint)
}

/// Wait until `path` exists (a pty symlink), panicking after `secs`.
pub fn wait_for(path: &std::path::Path, secs: u64) {
    let t0 = std::time::Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed().as_secs() < secs,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Start `reachy sim servos` with `ids` on a pty at `link` and wait until it is there.
pub fn spawn_sim_servos(link: &std::path::Path, ids: &str) -> ChildGuard {
    spawn_sim_servos_with(link, ids, &[])
}

/// [`spawn_sim_servos`] with more arguments (fault injection: `--dead 5`, `--drop-rate 0.1`).
pub fn spawn_sim_servos_with(link: &std::path::Path, ids: &str, extra: &[&str]) -> ChildGuard {
    let child = std::process::Command::new(reachy_bin())
        .args(["sim", "servos", "--ids", ids, "--pty"])
        .arg(link)
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning reachy sim servos");
    let guard = ChildGuard(child);
    wait_for(link, 20);
    guard
}

/// Simulated servos (`ids`) on a bus pty and `reachy firmware run` between a link pty and that
/// bus (`bus_spec(bus_path)`, e.g. `PATH:1-3` or `r_arm=PATH`), in a fresh directory named
/// after `tag`. Returns both processes and the link's path, once it exists.
pub fn spawn_firmware_on_sim_servos(
    tag: &str,
    ids: &str,
    bus_spec: impl Fn(&std::path::Path) -> String,
) -> (ChildGuard, ChildGuard, std::path::PathBuf) {
    spawn_firmware_on_sim_servos_with(tag, ids, &[], bus_spec)
}

/// [`spawn_firmware_on_sim_servos`] with fault-injection arguments for the servos.
pub fn spawn_firmware_on_sim_servos_with(
    tag: &str,
    ids: &str,
    servo_args: &[&str],
    bus_spec: impl Fn(&std::path::Path) -> String,
) -> (ChildGuard, ChildGuard, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("reachy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (bus, link) = (dir.join("bus"), dir.join("link"));
    let servos = spawn_sim_servos_with(&bus, ids, servo_args);
    let fw = spawn_firmware_run(&link, &bus_spec(&bus));
    (servos, fw, link)
}

/// `reachy firmware run --link LINK --bus BUS_SPEC` (e.g. `r_arm=PATH`), once its link is there.
pub fn spawn_firmware_run(link: &std::path::Path, bus_spec: &str) -> ChildGuard {
    let fw = ChildGuard(
        std::process::Command::new(reachy_bin())
            .args(["firmware", "run", "--link"])
            .arg(link)
            .arg("--bus")
            .arg(bus_spec)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning reachy firmware run"),
    );
    wait_for(link, 20);
    fw
}
