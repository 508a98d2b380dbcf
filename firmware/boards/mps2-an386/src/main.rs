//! The Reachy firmware on mps2-an386: host link on UART0, one servo bus on UART1, 1 kHz loop.
//! Run with `qemu-system-arm -M mps2-an386 -nographic -serial pty -serial pty -kernel …`.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception};
use panic_semihosting as _;
use reachy_firmware::control::{Controller, JointMap};
use reachy_firmware::dynamixel::{Clock, Model};
use reachy_fw_mps2::{on_interrupt, on_systick, SysTickClock, Uart, UART0, UART1};

#[exception]
fn SysTick() {
    on_systick();
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    on_interrupt(irqn);
}

#[entry]
fn main() -> ! {
    let cp = cortex_m::Peripherals::take().expect("peripherals");
    let clock = SysTickClock::start(cp.SYST);
    let link = unsafe { Uart::new(UART0, 1_000_000) };
    let bus = unsafe { Uart::new(UART1, 1_000_000) };
    // one limb: servo IDs 1..=8 on the bus
    let joints: [JointMap; 8] = core::array::from_fn(|i| JointMap {
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
    let mut next = clock.now_us();
    loop {
        ctl.tick();
        next += period_us as u64;
        while clock.now_us() < next {}
    }
}
