//! An in-process port onto a [`SimBus`]: the firmware's bus master talks to simulated servos
//! through `embedded-io` with no operating-system pty in between (tests, benchmarks, `reachy demo`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::servo::SimBus;

/// `embedded-io` port whose far end is a shared [`SimBus`]. Replies are available at once.
#[derive(Debug, Clone)]
pub struct SimPort {
    bus: Rc<RefCell<SimBus>>,
    rx: VecDeque<u8>,
    scratch: Vec<u8>,
    /// Bytes written to the bus.
    pub tx_bytes: u64,
    /// Bytes read from the bus.
    pub rx_bytes: u64,
}

impl SimPort {
    /// A port onto `bus`.
    pub fn new(bus: Rc<RefCell<SimBus>>) -> Self {
        Self {
            bus,
            rx: VecDeque::new(),
            scratch: Vec::new(),
            tx_bytes: 0,
            rx_bytes: 0,
        }
    }
}

impl embedded_io::ErrorType for SimPort {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for SimPort {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.scratch.clear();
        self.bus.borrow_mut().receive(buf, &mut self.scratch);
        self.rx.extend(self.scratch.iter().copied());
        self.tx_bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl embedded_io::Read for SimPort {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.rx.len());
        for (o, b) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *o = b;
        }
        self.rx_bytes += n as u64;
        Ok(n)
    }
}

impl embedded_io::ReadReady for SimPort {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.rx.is_empty())
    }
}
