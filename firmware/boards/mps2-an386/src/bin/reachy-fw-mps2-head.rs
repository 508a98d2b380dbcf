//! The Reachy firmware on mps2-an386 for the head: host link on UART0, the neck's 3 and the
//! antennas' 2 servos on UART1, 1 kHz loop (see `reachy-fw-mps2`, the arms' image).
#![no_std]
#![no_main]

use panic_semihosting as _;

reachy_fw_mps2::board_handlers!();

#[cortex_m_rt::entry]
fn main() -> ! {
    reachy_fw_mps2::run_limb::<5>()
}
