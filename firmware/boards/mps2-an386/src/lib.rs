//! Board support for QEMU's mps2-an386: CMSDK APB UARTs (interrupt-driven receive into ring
//! buffers) as `embedded-io` ports and a
//! microsecond clock from SysTick. The firmware core comes unchanged from `reachy-firmware`.
#![no_std]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use reachy_firmware::dynamixel::Clock;

/// Core clock of the MPS2 FPGA images (Hz).
pub const SYSCLK_HZ: u32 = 25_000_000;
/// UART0: host link.
pub const UART0: usize = 0x4000_4000;
/// UART1: servo bus.
pub const UART1: usize = 0x4000_5000;

/// Receive ring buffer filled by the UART's RX interrupt (single producer: the ISR; single
/// consumer: the main loop).
pub struct RxRing {
    buf: core::cell::UnsafeCell<[u8; RING]>,
    head: AtomicU32,
    tail: AtomicU32,
    /// Bytes lost because the ring was full.
    pub overruns: AtomicU32,
}

const RING: usize = 2048;

// SAFETY: one producer (ISR) writes `buf[head]` then publishes `head`; one consumer reads
// `buf[tail]` only below the published `head`.
unsafe impl Sync for RxRing {}

impl RxRing {
    const fn new() -> Self {
        Self {
            buf: core::cell::UnsafeCell::new([0; RING]),
            head: AtomicU32::new(0),
            tail: AtomicU32::new(0),
            overruns: AtomicU32::new(0),
        }
    }
    fn push(&self, b: u8) {
        let h = self.head.load(Ordering::Relaxed);
        let t = self.tail.load(Ordering::Acquire);
        if h.wrapping_sub(t) as usize >= RING {
            self.overruns.fetch_add(1, Ordering::Relaxed);
            return;
        }
        unsafe { (*self.buf.get())[h as usize % RING] = b };
        self.head.store(h.wrapping_add(1), Ordering::Release);
    }
    fn pop(&self) -> Option<u8> {
        let t = self.tail.load(Ordering::Relaxed);
        let h = self.head.load(Ordering::Acquire);
        if t == h {
            return None;
        }
        let b = unsafe { (*self.buf.get())[t as usize % RING] };
        self.tail.store(t.wrapping_add(1), Ordering::Release);
        Some(b)
    }
    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Relaxed)
    }
}

/// RX rings of UART0 and UART1.
pub static RX: [RxRing; 2] = [RxRing::new(), RxRing::new()];

#[derive(Clone, Copy)]
struct Irq(u16);
// SAFETY: CMSDK UART RX interrupts 0 (UART0) and 2 (UART1) exist on mps2-an386.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// Drain a UART's RX register into its ring; call from the interrupt handler with the IRQ number.
pub fn on_interrupt(irqn: i16) {
    let (base, ring) = match irqn {
        0 => (UART0, &RX[0]),
        2 => (UART1, &RX[1]),
        _ => return,
    };
    unsafe {
        // clear first: a byte that lands while we drain raises the interrupt again
        ((base + 0x0C) as *mut u32).write_volatile(0b10);
        while ((base + 0x04) as *const u32).read_volatile() & 0b10 != 0 {
            ring.push((base as *const u32).read_volatile() as u8);
        }
    }
}

/// A CMSDK APB UART with interrupt-driven receive.
pub struct Uart {
    base: usize,
    ring: &'static RxRing,
    /// Sleep (WFI) in `read_ready` while nothing has arrived: see [`Uart::sleep_while_idle`].
    sleepy: bool,
}

impl Uart {
    /// Enable TX and RX at `baud`.
    ///
    /// # Safety
    /// `base` must be a CMSDK UART that nothing else uses.
    pub unsafe fn new(base: usize, baud: u32) -> Self {
        let (ring, irq) = if base == UART0 {
            (&RX[0], 0)
        } else {
            (&RX[1], 2)
        };
        let u = Self {
            base,
            ring,
            sleepy: false,
        };
        u.reg(0x10).write_volatile((SYSCLK_HZ / baud).max(16));
        // CTRL: bit 0 TX enable, bit 1 RX enable, bit 3 RX interrupt enable
        u.reg(0x08).write_volatile(0b1011);
        cortex_m::peripheral::NVIC::unmask(Irq(irq));
        u
    }
    /// Make `read_ready` sleep until the next interrupt (a byte received, or the 1 ms SysTick)
    /// when nothing is waiting, instead of returning at once. For the servo bus, which the
    /// bus master polls until a reply or its deadline: the core sleeps through the wait (on an
    /// MCU: power; under QEMU: the emulator's CPU thread no longer spins a host core), and the
    /// deadline is seen at most one SysTick (1 ms) late. Not for the host link, which the control
    /// loop polls once per cycle and must not wait on.
    pub fn sleep_while_idle(mut self) -> Self {
        self.sleepy = true;
        self
    }
    /// Sleep until the next interrupt unless a byte is already waiting. Interrupts are masked
    /// around the check: a byte landing between the check and the WFI still wakes the core (a
    /// pending interrupt ends WFI with PRIMASK set), then its handler runs.
    fn wait_for_byte(&self) {
        cortex_m::interrupt::free(|_| {
            if self.ring.is_empty() {
                cortex_m::asm::wfi();
            }
        });
    }
    fn reg(&self, off: usize) -> *mut u32 {
        (self.base + off) as *mut u32
    }
    fn state(&self) -> u32 {
        unsafe { self.reg(0x04).read_volatile() }
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.ring.is_empty() {
            self.wait_for_byte();
        }
        let mut n = 0;
        while n < buf.len() {
            match self.ring.pop() {
                Some(b) => buf[n] = b,
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        if self.sleepy {
            self.wait_for_byte();
        }
        Ok(!self.ring.is_empty())
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &b in buf {
            while self.state() & 0b01 != 0 {}
            unsafe { self.reg(0x00).write_volatile(b as u32) };
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

static WRAPS: AtomicU32 = AtomicU32::new(0);
/// SysTick wraps every millisecond: the tick that wakes a sleeping core (see [`idle_until`]).
const RELOAD: u32 = SYSCLK_HZ / 1000 - 1;

/// The board's exception handlers, for a binary's root: SysTick counts the clock's wraps
/// ([`on_systick`]), every other interrupt drains its UART ([`on_interrupt`]).
#[macro_export]
macro_rules! board_handlers {
    () => {
        #[cortex_m_rt::exception]
        fn SysTick() {
            $crate::on_systick();
        }

        #[cortex_m_rt::exception]
        unsafe fn DefaultHandler(irqn: i16) {
            $crate::on_interrupt(irqn);
        }
    };
}

/// SysTick wrap counter (milliseconds); call from the SysTick exception.
pub fn on_systick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Microsecond clock from SysTick (24-bit down counter at the core clock wrapping every
/// millisecond, wraps counted).
#[derive(Clone, Copy)]
pub struct SysTickClock;

impl SysTickClock {
    /// Start SysTick with its wrap interrupt.
    pub fn start(mut syst: cortex_m::peripheral::SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Self
    }
}

impl Clock for SysTickClock {
    fn now_us(&self) -> u64 {
        loop {
            let w1 = WRAPS.load(Ordering::Relaxed);
            let v = cortex_m::peripheral::SYST::get_current();
            let w2 = WRAPS.load(Ordering::Relaxed);
            if w1 == w2 {
                let cycles = (w1 as u64) * (RELOAD as u64 + 1) + (RELOAD - v) as u64;
                return cycles / (SYSCLK_HZ as u64 / 1_000_000);
            }
        }
    }
}

/// Sleep (WFI) until `clock` reads `t_us`. Each SysTick (every whole millisecond since the
/// clock started) and each received byte wakes the core: a `t_us` on a whole millisecond is met
/// on time, others up to 1 ms late.
pub fn idle_until(clock: &SysTickClock, t_us: u64) {
    while clock.now_us() < t_us {
        cortex_m::asm::wfi();
    }
}

/// The firmware of one limb's board: host link on UART0, the limb's `N` servos (IDs 1..=N, as
/// the URDF's servo map numbers each bus) on UART1, the control loop at 1 kHz, sleeping between
/// cycles and while the bus is silent. The arms' image has 8 servos, the head's 5.
pub fn run_limb<const N: usize>() -> ! {
    use reachy_firmware::control::{Controller, JointMap};
    use reachy_firmware::dynamixel::Model;
    let cp = cortex_m::Peripherals::take().expect("peripherals");
    let clock = SysTickClock::start(cp.SYST);
    let link = unsafe { Uart::new(UART0, 1_000_000) };
    let bus = unsafe { Uart::new(UART1, 1_000_000) }.sleep_while_idle();
    let joints: [JointMap; N] = core::array::from_fn(|i| JointMap {
        bus: 0,
        id: i as u8 + 1,
    });
    let period_us = 1000;
    let mut ctl = match Controller::new(link, [bus], clock, &joints, Model::Xm430W350, period_us) {
        Ok(c) => c,
        Err(_) => panic!("bad joint map"),
    };
    // emulated UARTs behind ptys answer in ~1-2 ms
    ctl.set_bus_timeout_us(5_000);
    // ... but behind host processes that a loaded host can stall for a few hundred ms (a CI run
    // saw bursts of misses while holding): a servo counts as not answering after 0.5 s silent
    ctl.set_no_reply_after_us(500_000);
    // cycles start on whole milliseconds, where the SysTick wakes the core
    let mut next = clock.now_us().div_ceil(1000) * 1000;
    loop {
        idle_until(&clock, next);
        ctl.tick();
        next += period_us as u64;
        let now = clock.now_us();
        if next < now {
            // an overrun is not caught up (the controller counts it)
            next = now.div_ceil(1000) * 1000;
        }
    }
}
