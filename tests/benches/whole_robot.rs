//! The whole robot through the firmware (issue 14 §6): the physics robot's 21 servos on three
//! Dynamixel buses (`reachy sim --servo-bus`: r_arm 8, l_arm 8, head 5), a board per limb at
//! 1 kHz, each cycle a sync write of the goals and a sync read of every servo on its bus — first
//! as `reachy firmware run` processes on buses that move bytes at once (ptys), then on buses
//! that take a wire's time at 1 and at 4 Mbaud (`reachy sim --wire-baud`), then as the
//! Cortex-M4 images in QEMU (`reachy firmware qemu`, the arms' image and the head's, on ptys).
//! Per board, with telemetry every cycle: the loop
//! period p50 / p99, its bus cycle p50 / p99 beside the wire limit of that cycle at 1 and 4 Mbaud,
//! and the link round trip (goals with a sequence number → the state that carries it back)
//! p50 / p99. All three boards are driven at once. Then the command → motion round trip through
//! the daemon's API on the in-process robot, the sim backend and the firmware path (a `reachy
//! firmware run` per limb over the physics servo buses) in the same run: a streamed 0.05 rad step of
//! `neck_yaw` until the first state whose *measured* position moved 5 mrad.
//!
//! `cargo build -p reachy && cargo bench --profile dev -p reachy-e2e --bench whole_robot` (the
//! benchmark runs the `reachy` binary of its own profile; QEMU needs `qemu-system-arm` and the
//! images: `cd firmware/boards/mps2-an386 && cargo build --release`, or `REACHY_FW_IMAGE`).
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use reachy_daemon::firmware_link::FirmwareLink;
use reachy_e2e::ChildGuard;
use reachy_firmware::link::{Command, SafetyConfig, Telemetry};

/// The limbs: servo-map bus and servo count.
const LIMBS: [(&str, usize); 3] = [("r_arm", 8), ("l_arm", 8), ("head", 5)];

/// Bytes on the wire in one cycle for `n` servos: sync write of 4-byte goals (14 + 5n), sync
/// read request (14 + n), `n` status packets of 10 data bytes (21n).
fn cycle_bytes(n: usize) -> usize {
    28 + 27 * n
}

/// p50 and p99 of `v` (sorted here).
fn p50_p99(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    (q(0.5), q(0.99))
}

/// Drive the boards on `links` (one per limb, in [`LIMBS`] order) for `rounds` rounds and print
/// each one's figures under `what`.
fn measure(what: &str, links: &[PathBuf], rounds: usize) {
    let mut ls: Vec<FirmwareLink> = links
        .iter()
        .map(|p| FirmwareLink::open(p.to_str().expect("utf8"), 1_000_000).expect("link"))
        .collect();
    for (l, (_, n)) in ls.iter_mut().zip(LIMBS) {
        l.send(&Command::Safety(SafetyConfig {
            telemetry_every: 1,
            ..Default::default()
        }))
        .expect("safety");
        l.send(&Command::Torque {
            mask: (1 << n) - 1,
            on: true,
        })
        .expect("torque");
    }
    let goals: Vec<Vec<(u8, f32)>> = LIMBS
        .iter()
        .map(|(_, n)| (0..*n as u8).map(|j| (j, 0.0)).collect())
        .collect();
    // settle: torque on, the first reads
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(500) {
        for (l, g) in ls.iter_mut().zip(&goals) {
            l.send_goals(g).expect("goals");
            let _ = l.poll();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut rtt: Vec<Vec<f64>> = vec![Vec::new(); ls.len()];
    let mut period: Vec<Vec<f64>> = vec![Vec::new(); ls.len()];
    let mut bus: Vec<Vec<f64>> = vec![Vec::new(); ls.len()];
    for _ in 0..rounds {
        let sent: Vec<(Instant, u32)> = ls
            .iter_mut()
            .zip(&goals)
            .map(|(l, g)| (Instant::now(), l.send_goals(g).expect("goals")))
            .collect();
        let mut back = vec![false; ls.len()];
        let t = Instant::now();
        while back.iter().any(|b| !b) && t.elapsed() < Duration::from_millis(500) {
            for (k, l) in ls.iter_mut().enumerate() {
                for m in l.poll().unwrap_or_default() {
                    if let Telemetry::State {
                        host_seq, stats, ..
                    } = m
                    {
                        period[k].push(stats.period_mean_us as f64);
                        bus[k].push(stats.bus_max_us as f64);
                        if !back[k] && host_seq == sent[k].1 {
                            rtt[k].push(sent[k].0.elapsed().as_secs_f64() * 1e6);
                            back[k] = true;
                        }
                    }
                }
            }
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for (k, (limb, n)) in LIMBS.iter().enumerate() {
        let bytes = cycle_bytes(*n);
        let (pp50, pp99) = p50_p99(&mut period[k]);
        let (bp50, bp99) = p50_p99(&mut bus[k]);
        let (rp50, rp99) = p50_p99(&mut rtt[k]);
        println!(
            "{what}, {limb} ({n} servos): loop period p50 {pp50:.0} µs, p99 {pp99:.0} µs; bus cycle \
             p50 {bp50:.0} µs, p99 {bp99:.0} µs (wire limit of its {bytes} B: {:.0} µs at 1 Mbaud, \
             {:.0} µs at 4 Mbaud); link round trip p50 {rp50:.0} µs, p99 {rp99:.0} µs ({} of \
             {rounds})",
            bytes as f64 * 10.0,
            bytes as f64 * 2.5,
            rtt[k].len()
        );
    }
}

/// `reachy ARGS` in the background, stderr silenced.
fn spawn(bin: &Path, args: &[&str]) -> ChildGuard {
    ChildGuard(
        Proc::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning reachy"),
    )
}

/// `reachy sim` (no scene, 1 kHz) with the physics robot's buses on ptys in `dir` named by
/// `tag`, taking a wire's time at `wire_baud` if given: the sim and the buses as `BUS=PATH`.
fn physics_buses(dir: &Path, tag: &str, wire_baud: Option<u32>) -> (ChildGuard, Vec<String>) {
    let specs: Vec<String> = LIMBS
        .iter()
        .map(|(b, _)| format!("{b}={}", dir.join(format!("bus-{tag}-{b}")).display()))
        .collect();
    let robot = format!("wb{tag}");
    let baud = wire_baud.map(|b| b.to_string());
    let mut args = vec!["sim", "--robot", &robot, "--no-scene", "--rate", "1000"];
    for s in &specs {
        args.extend(["--servo-bus", s.as_str()]);
    }
    if let Some(b) = &baud {
        args.extend(["--wire-baud", b.as_str()]);
    }
    let (sim, _) = reachy_e2e::start_listening(&args, "sim ready");
    for s in &specs {
        reachy_e2e::wait_for(Path::new(s.split_once('=').expect("BUS=PATH").1), 20);
    }
    (sim, specs)
}

/// Command → motion through the daemon on the in-process robot reached `through` the sim
/// backend or the firmware: p50 / p99 (µs) of `n` steps.
fn command_to_motion(through: reachy_apps::inprocess::Through, n: usize) -> (f64, f64) {
    use reachy_api::RobotIo;
    let mut cfg = reachy_sim::world::WorldConfig::new(reachy_kinematics::model::REACHY_URDF);
    cfg.scene = None;
    let sim = reachy_apps::inprocess::SimRobot::start(
        reachy_sim::world::World::new(cfg).expect("world"),
        reachy_kinematics::model::RobotModel::reachy().expect("model"),
        reachy_apps::inprocess::SimRobotOptions {
            robot: "cm".into(),
            through,
            ..Default::default()
        },
    )
    .expect("in-process robot");
    let mut c = reachy_api::client::RobotClient::connect(
        &sim.session,
        "cm",
        "bench",
        "teleop",
        Duration::from_secs(5),
    )
    .expect("lease");
    c.wait_for_state(Duration::from_secs(10), |s| s.faults.is_empty())
        .expect("every servo at torque on");
    let i = c
        .joint_names()
        .iter()
        .position(|j| j == "neck_yaw")
        .expect("neck_yaw");
    let mut rt = Vec::new();
    for k in 0..n {
        let q0 = c.positions().expect("state")[i];
        let goal = q0 + if k % 2 == 0 { 0.05 } else { -0.05 };
        let t = Instant::now();
        c.command(&[i], &[goal]).expect("command");
        if c.wait_for_state(Duration::from_secs(2), |s| {
            (s.position[i] - q0).abs() > 0.005
        })
        .is_ok()
        {
            rt.push(t.elapsed().as_secs_f64() * 1e6);
        }
        // settle at the new pose
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(c);
    sim.stop().expect("stop");
    p50_p99(&mut rt)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for (label, through) in [
        ("sim backend", reachy_apps::inprocess::Through::Sim),
        (
            "firmware path (a `reachy firmware run` per limb, physics servo buses)",
            reachy_apps::inprocess::Through::Firmware {
                program: Some(reachy_e2e::reachy_bin()),
            },
        ),
    ] {
        let (p50, p99) = command_to_motion(through, 40);
        println!(
            "command → motion through the daemon (in-process robot, daemon at 100 Hz, sim at 1 kHz), \
             {label}: p50 {:.1} ms, p99 {:.1} ms",
            p50 / 1e3,
            p99 / 1e3
        );
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|d| d.join("reachy")))
        .filter(|b| b.exists());
    let Some(bin) = bin else {
        eprintln!("whole robot: SKIPPED (build the reachy binary in this profile first)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("reachy-bench-wb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rounds = 400;
    // the buses as ptys move bytes at once; then as wires at 1 and 4 Mbaud, the boards
    // configured for that rate
    for wire in [None, Some(1_000_000u32), Some(4_000_000)] {
        let tag = wire.map_or("pty".to_string(), |b| format!("{}M", b / 1_000_000));
        let (_sim, specs) = physics_buses(&dir, &tag, wire);
        let baud = wire.unwrap_or(1_000_000).to_string();
        let links: Vec<PathBuf> = LIMBS
            .iter()
            .map(|(b, _)| dir.join(format!("link-{tag}-{b}")))
            .collect();
        let _boards: Vec<ChildGuard> = specs
            .iter()
            .zip(&links)
            .map(|(s, l)| {
                spawn(
                    &bin,
                    &[
                        "firmware",
                        "run",
                        "--link",
                        l.to_str().expect("utf8"),
                        "--bus",
                        s,
                        "--baud",
                        &baud,
                    ],
                )
            })
            .collect();
        for l in &links {
            reachy_e2e::wait_for(l, 20);
        }
        let what = match wire {
            None => "firmware run processes, buses on ptys (no wire time)".to_string(),
            Some(b) => format!(
                "firmware run processes, buses as wires at {} Mbaud",
                b / 1_000_000
            ),
        };
        measure(&what, &links, rounds);
    }
    let (_sim, specs) = physics_buses(&dir, "qemu", None);
    let buses: Vec<PathBuf> = specs
        .iter()
        .map(|s| PathBuf::from(s.split_once('=').expect("BUS=PATH").1))
        .collect();
    let image = reachy_apps::qemu::default_image();
    let head = reachy_apps::qemu::limb_image(&image, "head");
    if !image.exists() || !head.exists() {
        eprintln!("QEMU boards: SKIPPED (no images: cd firmware/boards/mps2-an386 && cargo build --release)");
        return;
    }
    let links: Vec<PathBuf> = LIMBS
        .iter()
        .map(|(b, _)| dir.join(format!("qlink-{b}")))
        .collect();
    let _boards: Vec<ChildGuard> = LIMBS
        .iter()
        .zip(&links)
        .zip(&buses)
        .map(|(((limb, _), l), b)| {
            let img = reachy_apps::qemu::limb_image(&image, limb);
            spawn(
                &bin,
                &[
                    "firmware",
                    "qemu",
                    "--image",
                    img.to_str().expect("utf8"),
                    "--link",
                    l.to_str().expect("utf8"),
                    "--bus",
                    b.to_str().expect("utf8"),
                ],
            )
        })
        .collect();
    for l in &links {
        reachy_e2e::wait_for(l, 30);
    }
    measure("QEMU boards", &links, rounds / 4);
    let _ = std::fs::remove_dir_all(&dir);
}
