//! Command → state round trip through the daemon (sim backend, daemon and sim at 1 kHz) against
//! a raw zenoh ping-pong on the same machine, both between two zenoh sessions linked over TCP
//! loopback; then state publication at 1 kHz checked for drops; then the same under a hostile
//! peer flooding the joint-target key with malformed commands (100 000 a second): the state
//! period's jitter, the lease holder's round trip and the rejections counted.
//!
//! `cargo bench -p reachy --bench daemon` (`REACHY_BENCH_SECONDS=60` for the 60 s
//! drop check; 10 s by default).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reachy_api::net::ZenohOptions;
use reachy_api::schema::{self, keys};
use reachy_apps::sim_bridge::{BridgeConfig, SimBridge};
use reachy_daemon::{Daemon, DaemonConfig, SimBackend};
use reachy_kinematics::model::{RobotModel, REACHY_URDF};
use reachy_sim::world::{World, WorldConfig};
use zenoh::Wait;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let server = ZenohOptions {
        listen: vec!["tcp/127.0.0.1:0".into()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let client = ZenohOptions {
        connect: reachy_api::net::listening(&server),
        ..Default::default()
    }
    .open()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let n = 2000;

    // raw zenoh ping-pong: the server echoes
    let echo_pub = server.declare_publisher("bench/pong").wait().unwrap();
    let _echo = server
        .declare_subscriber("bench/ping")
        .callback(move |s| {
            let _ = echo_pub.put(s.payload().to_bytes().into_owned()).wait();
        })
        .wait()
        .unwrap();
    let pongs = client.declare_subscriber("bench/pong").wait().unwrap();
    let ping = client.declare_publisher("bench/ping").wait().unwrap();
    // declarations reach the other session asynchronously
    std::thread::sleep(Duration::from_millis(500));
    let mut raw = Vec::with_capacity(n);
    for k in 0..n + 100 {
        let t = Instant::now();
        ping.put((k as u64).to_le_bytes().to_vec()).wait().unwrap();
        pongs.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
        if k >= 100 {
            raw.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }

    // the daemon on the sim, both at 1 kHz, on the server session
    let mut cfg = WorldConfig::new(REACHY_URDF);
    cfg.scene = None;
    let bridge = SimBridge::spawn(
        server.clone(),
        World::new(cfg).unwrap(),
        BridgeConfig {
            rate_hz: 1000.0,
            ..Default::default()
        },
    )
    .unwrap();
    let backend = SimBackend::connect(&server, "reachy", Duration::from_secs(5)).unwrap();
    let daemon = Daemon::spawn(
        server.clone(),
        RobotModel::reachy().unwrap(),
        Box::new(backend),
        DaemonConfig {
            rate_hz: 1000.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = reachy_api::client::RobotClient::connect(
        &client,
        "reachy",
        "bench",
        "teleop",
        Duration::from_secs(5),
    )
    .unwrap();
    let names = reachy_api::RobotIo::joint_names(&c);
    let i = names.iter().position(|x| x == "neck_yaw").unwrap();
    let latest: Arc<Mutex<Option<schema::RobotState>>> = Arc::new(Mutex::new(None));
    let seqs: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let _sub = {
        let latest = latest.clone();
        let seqs = seqs.clone();
        client
            .declare_subscriber(keys::state("reachy"))
            .callback(move |s| {
                if let Ok(m) = schema::decode_robot::<schema::RobotState>(&s.payload().to_bytes()) {
                    seqs.lock().unwrap().push((m.seq, Instant::now()));
                    *latest.lock().unwrap() = Some(m);
                }
            })
            .wait()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    let round_trips = |c: &mut reachy_api::client::RobotClient, n: usize| {
        let mut rt = Vec::with_capacity(n);
        for k in 0..n + 100 {
            // small steps: within one period's velocity limit, so the target is applied at once
            let goal = 0.1 + (k % 200) as f32 * 1e-4 + rt.len() as f32 * 1e-7;
            let t = Instant::now();
            reachy_api::RobotIo::command(c, &[i], &[goal]).unwrap();
            loop {
                if latest
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|s| s.target[i] == goal)
                {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "no state with the target"
                );
                std::hint::spin_loop();
            }
            if k >= 100 {
                rt.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        rt
    };
    let mut rt = round_trips(&mut c, n);
    let (r50, r99) = (pct(&mut raw, 0.5), pct(&mut raw, 0.99));
    let (d50, d99) = (pct(&mut rt, 0.5), pct(&mut rt, 0.99));
    println!("raw zenoh ping-pong (TCP loopback, {n} samples): p50 {r50:.0} us, p99 {r99:.0} us");
    println!(
        "command -> state through the daemon at 1 kHz (sim backend at 1 kHz): p50 {d50:.0} us, p99 {d99:.0} us ({:.1}x raw p50; goal <= 2x)",
        d50 / r50
    );

    // drops at 1 kHz
    let secs: u64 = std::env::var("REACHY_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // state arrivals over `secs`: (messages, first and last seq, missing, p99 |period - 1 ms| in us)
    let watch = |secs: u64| {
        seqs.lock().unwrap().clear();
        std::thread::sleep(Duration::from_secs(secs));
        let s = seqs.lock().unwrap().clone();
        let (first, last) = (s[0].0, s.last().unwrap().0);
        let gaps = (last - first + 1) - s.len() as u64;
        let mut jitter: Vec<f64> = s
            .windows(2)
            .map(|w| ((w[1].1 - w[0].1).as_secs_f64() * 1e6 - 1000.0).abs())
            .collect();
        (s.len(), first, last, gaps, pct(&mut jitter, 0.99))
    };
    let (msgs, first, last, gaps, j99) = watch(secs);
    println!(
        "state at 1 kHz over {secs} s: {msgs} messages, seq {first}..{last}, {gaps} missing ({:.0} Hz), period jitter p99 {j99:.0} us",
        msgs as f64 / secs as f64
    );

    // a hostile peer on its own session floods the joint-target key with malformed commands
    let hostile = ZenohOptions {
        connect: reachy_api::net::listening(&server),
        ..Default::default()
    }
    .open()
    .unwrap();
    let flood = hostile
        .declare_publisher(keys::joint_targets("reachy"))
        .wait()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rejected_before = latest.lock().unwrap().as_ref().map_or(0, |s| s.rejected);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut k = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // 100 000 a second: garbage CBOR, wrong lengths, NaN targets in turn
                let due = t0 + Duration::from_micros(10 * k);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let bad: Vec<u8> = match k % 3 {
                    0 => vec![0xff, 0x13, 0x37, (k & 0xff) as u8],
                    1 => vec![0xa1, 0x61, 0x76, 0x01],
                    _ => (0..64).map(|x| (x as u64 * 31 + k) as u8).collect(),
                };
                let _ = flood.put(bad).wait();
                k += 1;
            }
            sent.store(k, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let t_flood = Instant::now();
    let mut rt_flood = round_trips(&mut c, n / 4);
    let (msgs_f, first_f, last_f, gaps_f, j99_f) = watch(secs);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flooder.join().unwrap();
    let flood_s = t_flood.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let rejected = latest.lock().unwrap().as_ref().map_or(0, |s| s.rejected) - rejected_before;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let (f50, f99) = (pct(&mut rt_flood, 0.5), pct(&mut rt_flood, 0.99));
    println!(
        "under a flood of {:.0} malformed commands/s ({sent} sent, {rejected} rejected and counted): state {msgs_f} messages over {secs} s, seq {first_f}..{last_f}, {gaps_f} missing, period jitter p99 {j99_f:.0} us; the lease holder's command -> state p50 {f50:.0} us, p99 {f99:.0} us",
        sent as f64 / flood_s
    );
    drop(c);
    daemon.stop().unwrap();
    bridge.stop().unwrap();
}
