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
