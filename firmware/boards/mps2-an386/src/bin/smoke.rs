//! Semihosting smoke test in QEMU: the firmware core on the real target. Exit code 0 = pass.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;
use reachy_firmware::control::{Controller, JointMap};
use reachy_firmware::dynamixel::{crc, packet, Clock, Model};
use reachy_firmware::link::{self, Command, JointGoal};
use reachy_fw_mps2::{SysTickClock, Uart, UART0, UART1};

reachy_fw_mps2::board_handlers!();

fn check(name: &str, ok: bool, failures: &mut u32) {
    hprintln!("{} {}", if ok { "ok  " } else { "FAIL" }, name);
    if !ok {
        *failures += 1;
    }
}

#[entry]
fn main() -> ! {
    let mut failures = 0;
    let cp = cortex_m::Peripherals::take().expect("peripherals");
    let clock = SysTickClock::start(cp.SYST);

    check(
        "crc16 check value",
        crc::crc16(b"123456789") == 0xFEE8,
        &mut failures,
    );
    let mut buf = [0u8; 32];
    let n = packet::encode(1, 0x03, None, &[0x74, 0, 0, 2, 0, 0], &mut buf).unwrap_or(0);
    check(
        "write packet vector",
        buf[..n]
            == [
                0xFF, 0xFF, 0xFD, 0, 1, 9, 0, 3, 0x74, 0, 0, 2, 0, 0, 0xCA, 0x89,
            ],
        &mut failures,
    );
    let n = packet::encode(1, 0x55, Some(0), &[0xFF, 0xFF, 0xFD, 7], &mut buf).unwrap_or(0);
    check(
        "byte stuffing",
        buf[..n]
            == [
                0xFF, 0xFF, 0xFD, 0, 1, 9, 0, 0x55, 0, 0xFF, 0xFF, 0xFD, 0xFD, 7, 0xC9, 0x1C,
            ],
        &mut failures,
    );

    let mut frame = [0u8; link::MAX_FRAME];
    let cmd = Command::Goals {
        seq: 3,
        goals: [JointGoal {
            joint: 0,
            position: 0.5,
            velocity: None,
            current: Some(0.2),
        }]
        .into_iter()
        .collect(),
    };
    let n = link::encode(&cmd, &mut frame).unwrap_or(0);
    let back: Result<Command, _> = link::decode(&frame[..n - 1]);
    check(
        "link frame round trip",
        back.as_ref().ok() == Some(&cmd),
        &mut failures,
    );

    // the clock must pass 1 ms within a bounded amount of work (QEMU's SysTick follows host time)
    let t0 = clock.now_us();
    let mut spins = 0u32;
    while clock.now_us() < t0 + 1000 && spins < 50_000_000 {
        spins += 1;
    }
    check("clock advances", clock.now_us() >= t0 + 1000, &mut failures);

    // the control loop with nothing on the bus: every servo times out, the loop keeps running
    let link = unsafe { Uart::new(UART0, 1_000_000) };
    let bus = unsafe { Uart::new(UART1, 1_000_000) };
    let joints: [JointMap; 4] = core::array::from_fn(|i| JointMap {
        bus: 0,
        id: i as u8 + 1,
    });
    match Controller::new(link, [bus], clock, &joints, Model::Xm430W350, 1000) {
        Ok(mut ctl) => {
            ctl.set_bus_timeout_us(200);
            for _ in 0..10 {
                ctl.tick();
            }
            let s = ctl.stats();
            check("control loop cycles", s.cycles == 10, &mut failures);
            check(
                "dead servos are counted, not fatal",
                s.bus_timeouts >= 40,
                &mut failures,
            );
        }
        Err(_) => check("controller construction", false, &mut failures),
    }

    hprintln!("{} failure(s)", failures);
    debug::exit(if failures == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}
