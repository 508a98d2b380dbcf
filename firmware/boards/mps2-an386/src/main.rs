//! The Reachy firmware on mps2-an386 for an arm: host link on UART0, the arm's 8 servos on
//! UART1, 1 kHz loop. Run with `qemu-system-arm -M mps2-an386 -nographic -serial pty -serial pty
//! -kernel …` (or `reachy firmware qemu`); the head's board runs `reachy-fw-mps2-head`.
#![no_std]
#![no_main]

use panic_semihosting as _;

reachy_fw_mps2::board_handlers!();

#[cortex_m_rt::entry]
fn main() -> ! {
    reachy_fw_mps2::run_limb::<8>()
}
