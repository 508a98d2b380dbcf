//! Servo bus and host link benchmarks: `cargo bench -p reachy-e2e --bench bus`.
//!
//! - `bus_cycle/master_8_servos`: the bus master's own CPU time for one control-loop bus cycle
//!   (sync write of 8 goals + sync read of current/velocity/position from 8 servos), against a
//!   port that answers with pre-recorded replies, so only encoding, CRC and decoding are timed.
//!   The wire time of the same cycle (bytes × 10 / baud) is printed; the cycle time on a real
//!   bus is wire time + this CPU time (+ the servos' return delay, set to 0 for fast loops).
//! - `bus_cycle/sim_8_servos`: the same cycle against simulated servos in process.
//! - `link/*`: host-link codec: encode + decode of a 21-joint goal command and of a 21-joint
//!   state telemetry frame.
// criterion_group! defines a public function without docs
#![allow(missing_docs)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, Criterion};
use reachy_e2e::TestClock;
use reachy_firmware::dynamixel::control_table::regs;
use reachy_firmware::dynamixel::{Master, Model};
use reachy_firmware::link::{
    self, Command, FrameDecoder, JointGoal, JointState, LoopStats, Telemetry, MAX_FRAME,
};
use reachy_sim::{SimBus, SimPort};

/// Answers every sync read (0x82) or fast sync read (0x8A) with canned replies.
struct ReplayPort {
    sync_reply: Vec<u8>,
    fast_reply: Vec<u8>,
    rx: VecDeque<u8>,
    tx_bytes: usize,
}

impl embedded_io::ErrorType for ReplayPort {
    type Error = core::convert::Infallible;
}
impl embedded_io::Write for ReplayPort {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.tx_bytes += buf.len();
        match buf.get(7) {
            Some(0x82) => self.rx.extend(self.sync_reply.iter().copied()),
            Some(0x8A) => self.rx.extend(self.fast_reply.iter().copied()),
            _ => {}
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
impl embedded_io::Read for ReplayPort {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.rx.len());
        for (o, b) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *o = b;
        }
        Ok(n)
    }
}
impl embedded_io::ReadReady for ReplayPort {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.rx.is_empty())
    }
}

const IDS: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn record(inst: u8) -> Vec<u8> {
    let mut bus = SimBus::new(&IDS, Model::Xm430W350);
    let mut req = [0u8; 64];
    let mut params = vec![126u8, 0, 10, 0];
    params.extend_from_slice(&IDS);
    let n =
        reachy_firmware::dynamixel::packet::encode(0xFE, inst, None, &params, &mut req).unwrap();
    let mut out = Vec::new();
    bus.receive(&req[..n], &mut out);
    out
}

fn cycle<P: embedded_io::Read + embedded_io::Write + embedded_io::ReadReady>(
    m: &mut Master<P, TestClock>,
    fast: bool,
) -> usize {
    let mut goals = [0u8; 32];
    for k in 0..8 {
        goals[4 * k..4 * k + 4].copy_from_slice(&(2048 + k as i32).to_le_bytes());
    }
    let _ = m.sync_write(regs::GOAL_POSITION.addr, 4, &IDS, &goals);
    let mut out = [0u8; 80];
    let mut ok = [false; 8];
    if fast {
        m.fast_sync_read(regs::PRESENT_CURRENT.addr, 10, &IDS, &mut out, &mut ok)
            .unwrap_or(0)
    } else {
        m.sync_read(regs::PRESENT_CURRENT.addr, 10, &IDS, &mut out, &mut ok)
            .unwrap_or(0)
    }
}

fn bench(c: &mut Criterion) {
    let sync_reply = record(0x82);
    let fast_reply = record(0x8A);
    for (name, reply) in [("sync read", &sync_reply), ("fast sync read", &fast_reply)] {
        let wire_bytes = (14 + 8 * 5) + (14 + 8) + reply.len();
        eprintln!(
            "bus cycle, 8 servos, {name}: {wire_bytes} bytes on the wire = {:.0} µs at 4 Mbaud, {:.0} µs at 1 Mbaud",
            wire_bytes as f64 * 10.0 / 4e6 * 1e6,
            wire_bytes as f64 * 10.0 / 1e6 * 1e6
        );
    }
    let mut g = c.benchmark_group("bus_cycle");
    for (name, fast) in [
        ("master_8_servos_sync_read", false),
        ("master_8_servos_fast_sync_read", true),
    ] {
        let port = ReplayPort {
            sync_reply: sync_reply.clone(),
            fast_reply: fast_reply.clone(),
            rx: VecDeque::new(),
            tx_bytes: 0,
        };
        let mut m = Master::new(port, TestClock::new(0));
        assert_eq!(cycle(&mut m, fast), 8);
        g.bench_function(name, |b| b.iter(|| black_box(cycle(&mut m, fast))));
    }
    let bus = Rc::new(RefCell::new(SimBus::new(&IDS, Model::Xm430W350)));
    let mut m = Master::new(SimPort::new(bus), TestClock::new(0));
    assert_eq!(cycle(&mut m, false), 8);
    g.bench_function("sim_8_servos_sync_read", |b| {
        b.iter(|| black_box(cycle(&mut m, false)))
    });
    g.finish();

    let goals = Command::Goals {
        seq: 1,
        goals: (0..21)
            .map(|j| JointGoal {
                joint: j,
                position: 0.1 * j as f32,
                velocity: None,
                current: None,
            })
            .collect(),
    };
    let state = Telemetry::State {
        seq: 1,
        t_us: 123_456_789,
        host_seq: 1,
        flags: 0,
        joints: (0..21)
            .map(|j| JointState {
                position: 0.1 * j as f32,
                velocity: 0.5,
                current: 0.2,
                temperature: 40,
                hardware_error: 0,
                flags: 1,
            })
            .collect(),
        stats: LoopStats::default(),
    };
    let mut buf = [0u8; MAX_FRAME];
    let gn = link::encode(&goals, &mut buf).unwrap();
    let sn = link::encode(&state, &mut buf).unwrap();
    eprintln!(
        "link frames: 21-joint goals {gn} bytes ({:.0} µs at 1 Mbaud), 21-joint state {sn} bytes ({:.0} µs at 1 Mbaud)",
        gn as f64 * 10.0,
        sn as f64 * 10.0
    );
    let mut g = c.benchmark_group("link");
    g.bench_function("goals_21_encode_decode", |b| {
        b.iter(|| {
            let n = link::encode(black_box(&goals), &mut buf).unwrap();
            let mut d = FrameDecoder::new();
            let mut out = None;
            for &x in &buf[..n] {
                if let Some(r) = d.push::<Command>(x) {
                    out = Some(r);
                }
            }
            black_box(out)
        })
    });
    g.bench_function("state_21_encode_decode", |b| {
        b.iter(|| {
            let n = link::encode(black_box(&state), &mut buf).unwrap();
            let mut d = FrameDecoder::new();
            let mut out = None;
            for &x in &buf[..n] {
                if let Some(r) = d.push::<Telemetry>(x) {
                    out = Some(r);
                }
            }
            black_box(out)
        })
    });
    g.finish();
}

/// Link round trip through `reachy firmware run` over ptys, 8 simulated servos behind it: the
/// host sends goals with a sequence number and waits for the telemetry that carries it back.
fn link_round_trip() {
    use std::process::{Command as Proc, Stdio};
    use std::time::{Duration, Instant};
    let exe = std::env::current_exe().expect("bench path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("reachy"));
    let Some(bin) = bin.filter(|b| b.exists()) else {
        eprintln!("link round trip: SKIPPED (build the reachy binary in this profile first: cargo build --release)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("reachy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (bus, linkp) = (dir.join("bus"), dir.join("link"));
    let _servos = reachy_e2e::spawn_sim_servos(&bus, "1-8");
    let _fw = reachy_e2e::ChildGuard(
        Proc::new(&bin)
            .args([
                "firmware",
                "run",
                "--link",
                linkp.to_str().expect("utf8"),
                "--bus",
            ])
            .arg(format!("{}:1-8", bus.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("firmware"),
    );
    reachy_e2e::wait_for(&linkp, 20);
    let mut l =
        reachy_daemon::firmware_link::FirmwareLink::open(linkp.to_str().expect("utf8"), 1_000_000)
            .expect("link");
    l.send(&Command::Safety(link::SafetyConfig {
        telemetry_every: 1,
        ..Default::default()
    }))
    .expect("send");
    std::thread::sleep(Duration::from_millis(200));
    let mut samples = Vec::new();
    let mut periods = Vec::new();
    for _ in 0..500 {
        let t0 = Instant::now();
        let seq = l.send_goals(&[(0, 0.0)]).expect("send");
        'wait: while t0.elapsed() < Duration::from_millis(100) {
            for t in l.poll().expect("poll") {
                if let Telemetry::State {
                    host_seq, stats, ..
                } = t
                {
                    if host_seq == seq {
                        samples.push(t0.elapsed().as_secs_f64() * 1e6);
                        periods.push(stats.period_mean_us);
                        break 'wait;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    periods.sort_unstable();
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    eprintln!(
        "link round trip via `reachy firmware run` (ptys, 8 sim servos, 1 kHz loop): {} samples, p50 {:.0} µs, p99 {:.0} µs; loop period p50 {} µs",
        samples.len(),
        q(0.5),
        q(0.99),
        periods[periods.len() / 2]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn round_trip(_c: &mut Criterion) {
    link_round_trip();
}

criterion_group!(benches, bench, round_trip);
criterion_main!(benches);
