//! Command → state round trip through the daemon (sim backend, daemon and sim at 1 kHz) against
//! a raw zenoh ping-pong on the same machine, both between two zenoh sessions linked over TCP
//! loopback; then state publication at 1 kHz checked for drops.
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let server = ZenohOptions {
        listen: vec![ep.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let client = ZenohOptions {
        connect: vec![ep],
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
    let seqs: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let _sub = {
        let latest = latest.clone();
        let seqs = seqs.clone();
        client
            .declare_subscriber(keys::state("reachy"))
            .callback(move |s| {
                if let Ok(m) = schema::decode_robot::<schema::RobotState>(&s.payload().to_bytes()) {
                    seqs.lock().unwrap().push(m.seq);
                    *latest.lock().unwrap() = Some(m);
                }
            })
            .wait()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut rt = Vec::with_capacity(n);
    for k in 0..n + 100 {
        // small steps: within one period's velocity limit, so the target is applied at once
        let goal = 0.1 + (k % 200) as f32 * 1e-4;
        let t = Instant::now();
        reachy_api::RobotIo::command(&mut c, &[i], &[goal]).unwrap();
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
    seqs.lock().unwrap().clear();
    std::thread::sleep(Duration::from_secs(secs));
    let s = seqs.lock().unwrap().clone();
    let (first, last) = (s[0], *s.last().unwrap());
    let expected = last - first + 1;
    let gaps = expected - s.len() as u64;
    println!(
        "state at 1 kHz over {secs} s: {} messages, seq {first}..{last}, {gaps} missing ({:.0} Hz)",
        s.len(),
        s.len() as f64 / secs as f64
    );
    drop(c);
    daemon.stop().unwrap();
    bridge.stop().unwrap();
}
