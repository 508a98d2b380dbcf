//! Teleop latency, source by source, on the in-process simulated robot (daemon at 100 Hz): the
//! time from an input event — a key press, a gamepad stick with the dead-man held, a WebSocket
//! pose frame as the WebXR page sends it, a leader servo moved by hand — to the first daemon
//! state whose joint targets show it (p50 / p99 over the trials); then the leader → follower
//! tracking lag (the delay that best aligns the follower's measured joint with the leader's
//! over a 0.5 Hz sine).
//!
//! `cargo bench -p reachy --bench teleop` (`REACHY_BENCH_TRIALS=N`, 40 by default).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use reachy_api::schema::RobotState;
use reachy_api::RobotClient;
use reachy_apps::inprocess::{ClientRobot, RobotOptions};
use reachy_apps::teleop::{gamepad, jog, keyboard, leader, webxr};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The r_arm joints' targets in a state.
fn targets(s: &RobotState, idx: &[usize]) -> Vec<f32> {
    idx.iter().map(|&i| s.target[i]).collect()
}

/// A pseudo-random 0..20 ms pause, so inputs do not arrive in phase with the loops' ticks.
fn jitter(k: usize) {
    let us = (k as u64).wrapping_mul(2_654_435_761) % 20_000;
    std::thread::sleep(Duration::from_micros(us));
}

fn changed(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-6)
}

/// Wait until the targets have not changed over 20 states in a row; returns them.
fn steady(c: &RobotClient, idx: &[usize]) -> Vec<f32> {
    let mut last = targets(&c.state().unwrap(), idx);
    let (mut seq, mut run) = (0, 0);
    let t0 = Instant::now();
    while run < 20 && t0.elapsed() < Duration::from_secs(10) {
        let s = c.state().unwrap();
        if s.seq != seq {
            seq = s.seq;
            let t = targets(&s, idx);
            if changed(&t, &last) {
                run = 0;
                last = t;
            } else {
                run += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    last
}

/// Time from `t0` to the first state whose targets differ from `before` (ms).
fn until_changed(c: &RobotClient, idx: &[usize], before: &[f32], t0: Instant) -> f64 {
    loop {
        let s = c.state().unwrap();
        if changed(&targets(&s, idx), before) {
            return t0.elapsed().as_secs_f64() * 1e3;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no new target in 5 s"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn report(name: &str, v: &mut [f64]) {
    let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
    println!(
        "{name:<34} input event → state with the new target: p50 {p50:6.1} ms, p99 {p99:6.1} ms ({} trials)",
        v.len()
    );
}

fn main() {
    let trials: usize = std::env::var("REACHY_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let robot = ClientRobot::open(
        &RobotOptions {
            backend: Some("sim".into()),
            name: "bench".into(),
            seed: 0,
            zenoh: Default::default(),
            firmware_program: None,
        },
        None,
        Vec::new(),
        30.0,
    )
    .unwrap();
    let watch = robot.connect("bench-watch", "script").unwrap();
    // the watcher holds no lease: give it back at once
    watch.release().unwrap();
    let names = watch.state().unwrap().names;
    let arm: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.starts_with("r_") && !n.ends_with("_mimic"))
        .map(|(i, _)| i)
        .collect();

    // keyboard and gamepad: the jog loop at 50 Hz
    for source in ["keyboard", "gamepad"] {
        let mut client = robot.connect("bench-jog", "teleop").unwrap();
        let stop = AtomicBool::new(false);
        let mut lat = Vec::new();
        std::thread::scope(|s| {
            let (ktx, krx) = mpsc::channel();
            let (ptx, prx) = mpsc::channel();
            let stop = &stop;
            let client = &mut client;
            let h = s.spawn(move || {
                let mut dev: Box<dyn jog::Device> = if source == "keyboard" {
                    Box::new(keyboard::Keyboard::from_events(krx))
                } else {
                    let map = gamepad::Mapping::new(&Default::default()).unwrap();
                    Box::new(gamepad::Gamepad::new(prx, map))
                };
                jog::jog(
                    client,
                    dev.as_mut(),
                    &jog::JogConfig::default(),
                    stop,
                    &mut |_| {},
                )
                .unwrap()
            });
            for k in 0..trials {
                let before = steady(&watch, &arm);
                jitter(k);
                // alternate directions so the arm stays in its workspace
                let t0 = Instant::now();
                if source == "keyboard" {
                    let key = if k % 2 == 0 { 'w' } else { 's' };
                    ktx.send((keyboard::Key::Char(key), keyboard::KeyKind::Press, t0))
                        .unwrap();
                } else {
                    let v = if k % 2 == 0 { 1.0 } else { -1.0 };
                    ptx.send(gamepad::PadInput::Axis("LeftStickY".into(), v))
                        .unwrap();
                    ptx.send(gamepad::PadInput::Button("LeftTrigger".into(), true))
                        .unwrap();
                }
                lat.push(until_changed(&watch, &arm, &before, t0));
                if source == "gamepad" {
                    std::thread::sleep(Duration::from_millis(100));
                    ptx.send(gamepad::PadInput::Button("LeftTrigger".into(), false))
                        .unwrap();
                }
            }
            ktx.send((
                keyboard::Key::Char('q'),
                keyboard::KeyKind::Press,
                Instant::now(),
            ))
            .unwrap();
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap();
        });
        report(source, &mut lat);
    }

    // WebSocket: the webxr source at 90 Hz, frames as the page sends them
    {
        let mut client = robot.connect("bench-xr", "teleop").unwrap();
        let server = webxr::Server::start("127.0.0.1:0").unwrap();
        let addr = server.addr;
        let stop = AtomicBool::new(false);
        let mut lat = Vec::new();
        std::thread::scope(|s| {
            let stop = &stop;
            let server = &server;
            let client = &mut client;
            let h = s.spawn(move || webxr::run(client, server, 90.0, None, stop, &mut |_| {}));
            let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws")).unwrap();
            let frame = |z: f32| {
                tungstenite::Message::text(format!(
                    r#"{{"hands": [{{"hand": "right", "grip": true, "trigger": 0,
                        "position": [0.2, 1.2, {z}], "orientation": [0, 0, 0, 1]}}]}}"#
                ))
            };
            let mut z = -0.4f32;
            for _ in 0..90 {
                ws.send(frame(z)).unwrap();
                std::thread::sleep(Duration::from_millis(11));
            }
            for k in 0..trials {
                // steady frames until the targets settle, then one frame 1 cm further
                let t_settle = Instant::now();
                let mut before = targets(&watch.state().unwrap(), &arm);
                let mut still = 0;
                while still < 20 && t_settle.elapsed() < Duration::from_secs(10) {
                    ws.send(frame(z)).unwrap();
                    std::thread::sleep(Duration::from_millis(11));
                    let t = targets(&watch.state().unwrap(), &arm);
                    if changed(&t, &before) {
                        still = 0;
                        before = t;
                    } else {
                        still += 1;
                    }
                }
                z += if k % 2 == 0 { -0.01 } else { 0.01 };
                jitter(k);
                let t0 = Instant::now();
                ws.send(frame(z)).unwrap();
                lat.push(until_changed(&watch, &arm, &before, t0));
            }
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap().unwrap();
        });
        report("WebSocket (webxr)", &mut lat);
    }

    // leader: simulated servos on a pty, moved by a "hand"
    {
        use reachy_sim::servo::SimBus;
        use reachy_sim::servo_pty::{serve_with, PtyEndpoint};
        let dir = std::env::temp_dir().join(format!("reachy-bench-leader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = dir.join("leader");
        // the leader held where the follower's home pose maps to (the middle of each joint's
        // range is the middle of the follower's: `leader::follower_targets`)
        let (_, model) = reachy_kinematics::model::RobotModel::load(None).unwrap();
        let map = leader::leader_map(&model, "r_arm");
        let home = reachy_sim::physics::home_pose(
            &map.iter().map(|(j, _)| j.as_str()).collect::<Vec<_>>(),
        );
        let base: Vec<f32> = map
            .iter()
            .zip(&home)
            .map(|((j, _), h)| {
                let l = watch.info().joints.iter().find(|x| x.name == *j).unwrap();
                if j.ends_with("gripper") {
                    0.0
                } else {
                    h - (l.lower + l.upper) / 2.0
                }
            })
            .collect();
        let hand = Arc::new(Mutex::new((base.clone(), Instant::now())));
        let serving = Arc::new(AtomicBool::new(false));
        let (h2, p2, serving2) = (hand.clone(), port.clone(), serving.clone());
        let bus_stop = Arc::new(AtomicBool::new(false));
        let bs2 = bus_stop.clone();
        let server = std::thread::spawn(move || {
            let ids: Vec<u8> = (1..=8).collect();
            let mut bus = SimBus::new(&ids, reachy_firmware::dynamixel::Model::Xm430W350);
            let mut pty = PtyEndpoint::create(&p2).unwrap();
            serving2.store(true, Ordering::Relaxed);
            serve_with(&mut bus, &mut pty, &bs2, Default::default(), &mut |bus| {
                let h = h2.lock().unwrap().0.clone();
                for (k, id) in (1..=8u8).enumerate() {
                    bus.servo_mut(id).unwrap().set_position(h[k]);
                }
            })
            .unwrap();
        });
        while !serving.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut l = leader::Leader::open(port.to_str().unwrap(), 1_000_000, &map).unwrap();
        // a calibration as if the sweep had covered ±1 rad about 0 on every joint
        let cal = leader::Calibration {
            arm: "r_arm".into(),
            joints: map
                .iter()
                .map(|(j, id)| leader::JointCalibration {
                    joint: j.clone(),
                    id: *id,
                    middle: 2048,
                    min: 2048 - 652,
                    max: 2048 + 652,
                    direction: 1,
                })
                .collect(),
        };
        let mut client = robot.connect("bench-leader", "teleop").unwrap();
        let stop = AtomicBool::new(false);
        let mut lat = Vec::new();
        let mut lag_ms = 0.0;
        std::thread::scope(|s| {
            let stop = &stop;
            let client = &mut client;
            let cal = &cal;
            let h = s.spawn(move || {
                leader::mirror(client, &mut l, cal, &Default::default(), stop, &mut |_| {}).unwrap()
            });
            // the approach goto first
            std::thread::sleep(Duration::from_secs(4));
            for k in 0..trials {
                let before = steady(&watch, &arm);
                jitter(k);
                let t0 = Instant::now();
                {
                    let mut g = hand.lock().unwrap();
                    g.0[3] = base[3] + if k % 2 == 0 { 0.05 } else { 0.0 };
                    g.1 = t0;
                }
                lat.push(until_changed(&watch, &arm, &before, t0));
            }
            // tracking: a 0.5 Hz sine of 0.3 rad on the elbow for 6 s
            let elbow = names.iter().position(|n| n == "r_elbow_pitch").unwrap();
            let (lo, hi) = {
                let j = watch
                    .info()
                    .joints
                    .iter()
                    .find(|j| j.name == "r_elbow_pitch")
                    .unwrap();
                (j.lower, j.upper)
            };
            let mid = (lo + hi) / 2.0 + base[3];
            let t0 = Instant::now();
            let mut samples: Vec<(f64, f32)> = Vec::new();
            let mut seq = 0;
            while t0.elapsed() < Duration::from_secs(6) {
                let t = t0.elapsed().as_secs_f64();
                hand.lock().unwrap().0[3] =
                    base[3] + 0.3 * (std::f64::consts::TAU * 0.5 * t).sin() as f32;
                let s = watch.state().unwrap();
                if s.seq != seq {
                    seq = s.seq;
                    samples.push((t, s.position[elbow] - mid));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // the delay d that best aligns follower(t) with the hand's sine at t − d
            let mut best = (f64::MAX, 0.0);
            for d_ms in (0..=600).step_by(5) {
                let d = d_ms as f64 / 1e3;
                let err: f64 = samples
                    .iter()
                    .filter(|(t, _)| *t > 1.0)
                    .map(|(t, y)| {
                        let want = 0.3 * (std::f64::consts::TAU * 0.5 * (t - d)).sin();
                        (*y as f64 - want).powi(2)
                    })
                    .sum();
                if err < best.0 {
                    best = (err, d_ms as f64);
                }
            }
            lag_ms = best.1;
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap();
        });
        report("leader arm (pty, 1 Mbaud)", &mut lat);
        println!("leader → follower tracking lag (0.5 Hz sine, 0.3 rad): {lag_ms:.0} ms");
        bus_stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
    drop(watch);
    drop(robot);
}
