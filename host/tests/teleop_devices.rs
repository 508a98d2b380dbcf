//! `reachy teleop`'s devices driven as a person would, against `reachy sim` + `reachy daemon`:
//! keys typed into a terminal (tmux), gamepad events injected into the jog loop, a leader arm of
//! simulated servos on a pty moved by a "hand". Each checks where the robot went, that letting
//! go (keys, dead-man) stops it, and that bad input is said and holds the robot.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reachy_api::schema::RobotState;
use reachy_api::{RobotClient, ZenohOptions};

use crate::common::{sim_and_daemon, SimAndDaemon};

/// The daemon's states, as a viewer sees them (no lease).
struct Watch {
    _session: zenoh::Session,
    latest: reachy_api::net::Latest<RobotState>,
    _sub: zenoh::pubsub::Subscriber<()>,
}

impl Watch {
    fn new(r: &SimAndDaemon, robot: &str) -> Self {
        let session = ZenohOptions {
            connect: vec![r.endpoint.clone()],
            ..Default::default()
        }
        .open()
        .unwrap();
        let (latest, sub) = reachy_api::net::subscribe_latest(
            &session,
            &reachy_api::schema::keys::state(robot),
            |b| reachy_api::schema::decode_robot::<RobotState>(b).ok(),
        )
        .unwrap();
        let w = Self {
            _session: session,
            latest,
            _sub: sub,
        };
        w.until("a first state", 20, |_| true);
        w
    }
    fn now(&self) -> RobotState {
        self.latest.lock().unwrap().clone().expect("a state")
    }
    /// The first state for which `ok` holds, within `secs`.
    fn until(&self, what: &str, secs: u64, ok: impl Fn(&RobotState) -> bool) -> RobotState {
        let mut last = None;
        let got = reachy_api::net::wait_until(
            Duration::from_secs(secs),
            Duration::from_millis(5),
            || {
                last = self.latest.lock().unwrap().clone();
                last.as_ref().is_some_and(&ok)
            },
        );
        assert!(got, "no state with {what} in {secs} s; the last: {last:?}");
        last.unwrap()
    }
    fn tcp(&self, arm: &str) -> [f32; 3] {
        tcp(&self.now(), arm)
    }
    /// Wait until the arm's TCP has not moved by 0.5 mm over 30 states in a row.
    fn settled(&self, arm: &str) -> [f32; 3] {
        let mut seq = 0;
        let mut run = 0;
        let mut prev = self.tcp(arm);
        let mut seen = std::collections::VecDeque::new();
        let ok =
            reachy_api::net::wait_until(Duration::from_secs(20), Duration::from_millis(2), || {
                let s = self.now();
                if s.seq == seq {
                    return false;
                }
                seq = s.seq;
                let p = tcp(&s, arm);
                seen.push_back((s.seq, p));
                if seen.len() > 8 {
                    seen.pop_front();
                }
                if dist(p, prev) < 5e-4 {
                    run += 1;
                } else {
                    run = 0;
                    prev = p;
                }
                run >= 30
            });
        assert!(
            ok,
            "{arm} never settled: the last states (seq, TCP) {seen:?}"
        );
        prev
    }
}

fn tcp(s: &RobotState, arm: &str) -> [f32; 3] {
    s.tcp
        .iter()
        .find(|p| p.name == arm)
        .map(|p| p.pose.position)
        .expect("the arm's TCP")
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Start `cmd` (a `reachy teleop`), its stderr lines echoed and sent down the channel.
fn spawn_teleop(cmd: &mut Command) -> (crate::common::Kill, std::sync::mpsc::Receiver<String>) {
    let mut c = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let err = BufReader::new(c.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("teleop: {l}");
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (crate::common::Kill(c), rx)
}

/// SIGTERM `k`, wait for it to exit 0, and return its last stdout line (the summary) as JSON.
fn term(k: &mut crate::common::Kill) -> serde_json::Value {
    let pid = k.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut k.0.stdout.take().unwrap(), &mut out).unwrap();
    let status = k.0.wait().unwrap();
    assert!(status.success(), "{status}: {out}");
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Headless Chromium, as the machine's probe starts it (no network beyond loopback).
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=800,700",
];

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// `url` open in a headless Chromium until the guard drops.
fn open_in_chromium(
    chromium: &str,
    url: &str,
    profile: &std::path::Path,
    extra: &[&str],
) -> crate::common::Kill {
    crate::common::Kill(
        Command::new(chromium)
            .args(CHROMIUM_FLAGS)
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Keys typed into a real terminal: held `d` (its auto-repeat) jogs the TCP right, letting go
/// stops it, an unknown key is said and moves nothing, Tab goes to the other arm, `q` quits with
/// a summary.
#[test]
fn keyboard_jogs_the_tcp_from_a_terminal_and_stops_with_the_keys() {
    let robot = "tkb";
    let r = sim_and_daemon(robot);
    let w = Watch::new(&r, robot);
    let cmd = format!(
        "{} teleop --source keyboard --speed 0.08 0.5 --robot {robot} --connect {}; sleep 600",
        env!("CARGO_BIN_EXE_reachy"),
        r.endpoint
    );
    let Some(term) = crate::common::Tmux::start("teleop-kb", 220, &cmd) else {
        return;
    };
    let wait_screen = |what: &str| term.wait_for(what, 1, 60);
    wait_screen("part r_arm");
    w.until("the teleop lease", 10, |s| {
        s.lease.as_ref().is_some_and(|l| l.starts_with("teleop"))
    });
    let x0 = w.settled("r_arm");
    // a held key, as a terminal repeats it: every 30 ms for 1.2 s. `d` (−y): the right hand
    // out to its side (forward, under the table's edge, it would meet the table)
    for _ in 0..40 {
        term.send("d");
        std::thread::sleep(Duration::from_millis(30));
    }
    let x1 = w.settled("r_arm");
    let moved = x0[1] - x1[1];
    assert!(
        (0.03..0.15).contains(&moved),
        "held `d` for 1.2 s at 8 cm/s moved the TCP {moved} m right ({x0:?} → {x1:?})"
    );
    assert!(
        (x1[0] - x0[0]).abs() < 0.015 && (x1[2] - x0[2]).abs() < 0.015,
        "sideways only: {x0:?} → {x1:?}"
    );
    wait_screen("holding");
    // an unknown key: said, and nothing moves
    term.send("z");
    wait_screen("`z` does nothing");
    let x2 = w.settled("r_arm");
    assert!(dist(x1, x2) < 0.003, "{x1:?} → {x2:?}");
    // Tab: the left arm; `a` moves it left (+y, out to its side), the right arm stays
    term.send("Tab");
    wait_screen("part l_arm");
    let l0 = w.settled("l_arm");
    for _ in 0..25 {
        term.send("a");
        std::thread::sleep(Duration::from_millis(30));
    }
    let l1 = w.settled("l_arm");
    assert!(l1[1] - l0[1] > 0.02, "{l0:?} → {l1:?}");
    assert!(dist(w.tcp("r_arm"), x2) < 0.003, "the right arm held");
    term.send("q");
    wait_screen("\"ended\":\"quit\"");
    let text = term.screen();
    assert!(text.contains("\"targets\":"), "{text}");
}

/// Gamepad events injected into the jog loop (the same loop `--source gamepad` runs on gilrs'
/// events): the stick moves the TCP only while the dead-man is held, and letting go of it stops
/// the arm; the right trigger closes the gripper.
#[test]
fn gamepad_moves_only_with_the_deadman_held() {
    use reachy_apps::teleop::gamepad::{Gamepad, Mapping, PadInput};
    use reachy_apps::teleop::jog::{jog, JogConfig};
    let robot = "tgp";
    let r = sim_and_daemon(robot);
    let w = Watch::new(&r, robot);
    let session = ZenohOptions {
        connect: vec![r.endpoint.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let mut client =
        RobotClient::connect(&session, robot, "pad", "teleop", Duration::from_secs(10)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let map = Mapping::new(&reachy_daemon::config::GamepadMapping::default()).unwrap();
    let stop = AtomicBool::new(false);
    let x0 = w.settled("r_arm");
    let g0 = w.now().gripper[0];
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut pad = Gamepad::new(rx, map);
            let cfg = JogConfig {
                speed: 0.08,
                ..Default::default()
            };
            jog(&mut client, &mut pad, &cfg, &stop, &mut |_| {}).unwrap()
        });
        // the stick pushed right without the dead-man: nothing moves
        tx.send(PadInput::Axis("LeftStickX".into(), 1.0)).unwrap();
        let s0 = w.now().seq;
        w.until("60 more states", 10, |s| s.seq > s0 + 60);
        assert!(
            dist(w.tcp("r_arm"), x0) < 0.003,
            "moved without the dead-man"
        );
        // held: it moves right (−y, the hand out to its side)
        tx.send(PadInput::Button("LeftTrigger".into(), true))
            .unwrap();
        w.until("the TCP 3 cm right", 10, |s| {
            tcp(s, "r_arm")[1] < x0[1] - 0.03
        });
        // let go, the stick still pushed: it stops
        tx.send(PadInput::Button("LeftTrigger".into(), false))
            .unwrap();
        let x1 = w.settled("r_arm");
        let s1 = w.now().seq;
        w.until("60 more states", 10, |s| s.seq > s1 + 60);
        assert!(
            dist(w.tcp("r_arm"), x1) < 0.003,
            "moved after the dead-man was let go"
        );
        // the right trigger with the dead-man: the gripper closes
        tx.send(PadInput::Axis("LeftStickX".into(), 0.0)).unwrap();
        tx.send(PadInput::Button("LeftTrigger".into(), true))
            .unwrap();
        tx.send(PadInput::Axis("RightTrigger2".into(), 1.0))
            .unwrap();
        w.until("the gripper closing", 10, |s| s.gripper[0] < g0 - 0.2);
        // the pad unplugged: the loop ends, the robot holds
        drop(tx);
        let summary = h.join().unwrap();
        assert!(summary.ended.contains("disconnected"), "{summary:?}");
        stop.store(true, Ordering::Relaxed);
    });
    let x2 = w.settled("r_arm");
    assert!(x2[1] < x0[1] - 0.03);
}

/// No gamepad on this machine: a clear message naming what was looked for, at once.
#[test]
fn gamepad_without_a_pad_says_what_it_looked_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["teleop", "--source", "gamepad", "--robot", "tgp-none"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no gamepad found") || err.contains("gilrs"),
        "{err}"
    );
    assert!(err.contains("/dev/input"), "{err}");
}

/// A leader arm: simulated servos on a pty, torque off, moved by a "hand". The first run
/// calibrates (middle, then the sweep; saved as JSON), the follower approaches the leader's
/// pose with a goto and then mirrors it; a leader servo that stops answering is said and the
/// robot holds; when it answers again the follower approaches anew. The second run reuses the
/// calibration.
#[test]
fn leader_arm_is_calibrated_and_mirrored_onto_the_robot() {
    use reachy_sim::servo::SimBus;
    use reachy_sim::servo_pty::{serve_with, PtyEndpoint};
    let robot = "tld";
    let r = sim_and_daemon(robot);
    let w = Watch::new(&r, robot);
    let dir = std::env::temp_dir().join(format!("reachy-leader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = dir.join("leader");
    let cal = dir.join("r_arm.json");
    // the hand: where it holds each of the 8 leader servos (rad), and a servo it unplugs
    let hand = Arc::new(Mutex::new(vec![0.0f32; 8]));
    let unplugged = Arc::new(Mutex::new(None::<u8>));
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (hand, unplugged, stop, port) =
            (hand.clone(), unplugged.clone(), stop.clone(), port.clone());
        std::thread::spawn(move || {
            let ids: Vec<u8> = (1..=8).collect();
            let mut bus = SimBus::new(&ids, reachy_firmware::dynamixel::Model::Xm430W350);
            let mut pty = PtyEndpoint::create(&port).unwrap();
            serve_with(&mut bus, &mut pty, &stop, Default::default(), &mut |bus| {
                let h = hand.lock().unwrap().clone();
                let dead = *unplugged.lock().unwrap();
                for (k, id) in (1..=8u8).enumerate() {
                    let s = bus.servo_mut(id).unwrap();
                    s.set_position(h[k]);
                    s.faults.dead = dead == Some(id);
                }
            })
            .unwrap();
        })
    };
    reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        port.exists()
    });
    let info = reachy_api::client::daemon_info(&w._session, robot, Duration::from_secs(5)).unwrap();
    // the leader's servos: the right arm's bus of the servo map, IDs 1..=8
    let (_, model) = reachy_kinematics::model::RobotModel::load(None).unwrap();
    let map = reachy_apps::teleop::leader::leader_map(&model, "r_arm");
    assert_eq!(
        map.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<u8>>()
    );
    let arm: Vec<String> = map.into_iter().map(|(j, _)| j).collect();
    let limits: Vec<(f32, f32)> = arm
        .iter()
        .map(|n| {
            let j = info.joints.iter().find(|j| j.name == *n).unwrap();
            (j.lower, j.upper)
        })
        .collect();
    let idx: Vec<usize> = arm
        .iter()
        .map(|n| w.now().names.iter().position(|m| m == n).unwrap())
        .collect();
    // where the follower should be for a hand pose (middle = all zeros; gripper range ±0.4)
    let expect = |h: &[f32]| -> Vec<f32> {
        h.iter()
            .zip(&limits)
            .enumerate()
            .map(|(k, (x, (lo, hi)))| {
                if k == 7 {
                    lo + (x + 0.4) / 0.8 * (hi - lo)
                } else {
                    ((lo + hi) / 2.0 + x).clamp(*lo, *hi)
                }
            })
            .collect()
    };
    let at = |s: &RobotState, want: &[f32], tol: f32| {
        let off: Vec<(&str, f32)> = idx
            .iter()
            .zip(want)
            .zip(&arm)
            .filter(|((&i, x), _)| (s.position[i] - *x).abs() >= tol)
            .map(|((&i, x), n)| (n.as_str(), s.position[i] - x))
            .collect();
        if !off.is_empty() && s.seq.is_multiple_of(200) {
            eprintln!("off the leader's pose by: {off:?}");
        }
        off.is_empty()
    };
    let start = || {
        spawn_teleop(
            Command::new(env!("CARGO_BIN_EXE_reachy"))
                .args(["teleop", "--source", "leader", "--leader-port"])
                .arg(&port)
                .arg("--calibration")
                .arg(&cal)
                .args(["--robot", robot, "--connect", &r.endpoint])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )
    };
    let expect_line = |rx: &std::sync::mpsc::Receiver<String>, what: &str| loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line with `{what}` from teleop: {e}"),
        }
    };
    let (mut kill, rx) = start();
    let mut stdin = kill.0.stdin.take().unwrap();
    expect_line(&rx, "middle of its range");
    writeln!(stdin).unwrap();
    expect_line(&rx, "whole range");
    // sweep every joint through ±0.4 rad, a step at a time (the loop reads at 200 Hz)
    for k in 0..8 {
        for x in [-0.4f32, 0.4, 0.0] {
            hand.lock().unwrap()[k] = x;
            // until the leader has read it: the sweep polls every 5 ms
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    // Follower poses clear of the table and the torso: the robot's home pose and a bit. The
    // hand holds the leader where they map to (the middle of each joint's range maps to the
    // middle of the follower's; the gripper's swept range onto the follower's range).
    let home = reachy_sim::physics::home_pose(&arm.iter().map(String::as_str).collect::<Vec<_>>());
    let hand_for = |d: [f32; 8]| -> Vec<f32> {
        (0..8)
            .map(|k| {
                let (lo, hi) = limits[k];
                if k == 7 {
                    d[7] * 0.8 - 0.4
                } else {
                    home[k] + d[k] - (lo + hi) / 2.0
                }
            })
            .collect()
    };
    let pose = hand_for([0.2, 0.1, 0.1, -0.3, 0.1, 0.2, -0.1, 0.3]);
    *hand.lock().unwrap() = pose.clone();
    std::thread::sleep(Duration::from_millis(40));
    writeln!(stdin).unwrap();
    expect_line(&rx, "calibration saved");
    // the follower approaches the leader's pose, then follows it
    expect_line(&rx, "moving to the leader's pose");
    expect_line(&rx, "following the leader");
    let want = expect(&pose);
    w.until("the follower at the leader's pose", 20, |s| {
        at(s, &want, 0.03)
    });
    // the hand moves on, smoothly, for a second: the follower mirrors it
    let pose_b = hand_for([0.1, 0.2, 0.0, -0.2, 0.0, 0.1, 0.0, 0.5]);
    for k in 1..=50 {
        let f = k as f32 / 50.0;
        *hand.lock().unwrap() = pose
            .iter()
            .zip(&pose_b)
            .map(|(a, b)| a + f * (b - a))
            .collect();
        std::thread::sleep(Duration::from_millis(20));
    }
    let want_b = expect(&pose_b);
    w.until("the follower at the hand's new pose", 20, |s| {
        at(s, &want_b, 0.03)
    });
    // a leader servo stops answering: said, and the robot holds while the hand moves on
    *unplugged.lock().unwrap() = Some(4);
    expect_line(&rx, "not answering");
    let held = w.now();
    let pose2 = hand_for([-0.1, 0.15, 0.0, 0.1, -0.1, 0.0, 0.1, 0.8]);
    *hand.lock().unwrap() = pose2.clone();
    let s0 = w.now().seq;
    w.until("100 more states", 10, |s| s.seq > s0 + 100);
    assert!(
        at(
            &w.now(),
            &idx.iter().map(|&i| held.position[i]).collect::<Vec<_>>(),
            0.02
        ),
        "the follower moved while the leader was silent"
    );
    // back: a new approach, then the new pose
    *unplugged.lock().unwrap() = None;
    expect_line(&rx, "moving to the leader's pose");
    let want2 = expect(&pose2);
    w.until("the follower at the new pose", 20, |s| at(s, &want2, 0.03));
    // SIGTERM, as Ctrl-C: the loop ends with its summary and gives the lease back
    let summary = term(&mut kill);
    assert!(summary["approaches"].as_u64().unwrap() >= 2, "{summary}");
    assert!(summary["silent_ticks"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["mirrored"].as_u64().unwrap() > 100, "{summary}");
    // the calibration was saved and is reused
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    assert_eq!(c["arm"], "r_arm");
    assert_eq!(c["joints"].as_array().unwrap().len(), 8);
    let (kill2, rx2) = start();
    expect_line(&rx2, "leader calibration from");
    expect_line(&rx2, "following the leader");
    w.until("the follower still at the pose", 20, |s| {
        at(s, &want2, 0.03)
    });
    let mut kill2 = kill2;
    term(&mut kill2);
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// The pose stream from a remote operator station: the same JSON lines published on a zenoh
/// key; the verdicts come back on `KEY/answer`, a bad payload gets its error there too.
#[test]
fn pose_stream_from_a_zenoh_key_answers_on_the_key() {
    use zenoh::Wait;
    let robot = "tpk";
    let r = sim_and_daemon(robot);
    let w = Watch::new(&r, robot);
    let key = format!("reachy/{robot}/teleop/pose");
    let teleop = crate::common::Kill(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args([
                "teleop",
                "--pose-key",
                &key,
                "--robot",
                robot,
                "--connect",
                &r.endpoint,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let station = ZenohOptions {
        connect: vec![r.endpoint.clone()],
        ..Default::default()
    }
    .open()
    .unwrap();
    let (answers, _sub) =
        reachy_api::net::subscribe_latest(&station, &format!("{key}/answer"), |b| {
            serde_json::from_slice::<serde_json::Value>(b).ok()
        })
        .unwrap();
    w.until("the teleop lease", 30, |s| {
        s.lease.as_ref().is_some_and(|l| l.starts_with("teleop"))
    });
    let goal = [0.15f32, -0.40, 0.50];
    let target = format!(r#"{{"arm": "r_arm", "position": {goal:?}}}"#);
    // until the teleop's subscriber is up, a put may go nowhere: send until it is answered
    let answered =
        reachy_api::net::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            station.put(&key, target.clone()).wait().unwrap();
            answers
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|a| a["status"] == "ok")
        });
    assert!(
        answered,
        "no verdict on {key}/answer: {:?}",
        answers.lock().unwrap()
    );
    station.put(&key, r#"{"hold": 3}"#).wait().unwrap();
    w.until("the TCP at the target", 20, |s| {
        dist(tcp(s, "r_arm"), goal) < 0.01
    });
    station.put(&key, "not json").wait().unwrap();
    let bad =
        reachy_api::net::wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            answers
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|a| a["error"].is_string())
        });
    assert!(
        bad,
        "no error for a bad payload: {:?}",
        answers.lock().unwrap()
    );
    drop(teleop);
}

/// The WebXR page: headless Chromium loads it without script errors (a screenshot goes to the
/// test's output), and a WebSocket client sending what the page sends in a headset moves the
/// TCP with the controller while the grip is squeezed, holds when it is let go and when the
/// stream goes quiet, and gets the head camera's frames.
#[test]
fn webxr_page_loads_and_its_websocket_drives_the_hand() {
    use tungstenite::Message;
    let robot = "txr";
    let r = crate::common::sim_and_daemon_with(
        robot,
        &["--cameras", "--camera-size", "64x48", "--camera-fps", "10"],
    );
    let w = Watch::new(&r, robot);
    let (_teleop, rx) = spawn_teleop(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(["teleop", "--source", "webxr", "--listen", "127.0.0.1:0"])
            .args(["--robot", robot, "--connect", &r.endpoint])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let seen = std::cell::RefCell::new(Vec::<String>::new());
    let expect_line = |what: &str| loop {
        if let Some(l) = seen.borrow().iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => seen.borrow_mut().push(l),
            Err(e) => panic!(
                "no line with `{what}` from teleop: {e}; saw {:?}",
                seen.borrow()
            ),
        }
    };
    let url = expect_line("webxr page: ")
        .split_whitespace()
        .find(|t| t.starts_with("http://"))
        .unwrap()
        .to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // 1. headless Chromium loads the page: it connects and reports no script errors
    match chromium() {
        None => reachy_test_support::missing("chromium", "apt install chromium"),
        Some(chromium) => {
            let dir = std::env::temp_dir().join(format!("reachy-webxr-{}", std::process::id()));
            // the page open in a browser that stays up until its WebSocket said hello (however
            // long a loaded machine takes), then a screenshot of it
            let browser = open_in_chromium(chromium, &url, &dir.join("profile"), &[]);
            let hello = expect_line("page connected");
            drop(browser);
            let shot = dir.join("webxr.png");
            let out = Command::new(chromium)
                .args(CHROMIUM_FLAGS)
                .arg("--virtual-time-budget=3000")
                .arg(format!(
                    "--user-data-dir={}",
                    dir.join("profile2").display()
                ))
                .arg(format!("--screenshot={}", shot.display()))
                .arg(&url)
                .output()
                .unwrap();
            assert!(
                shot.exists(),
                "no screenshot: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("screenshot of the webxr page: {}", shot.display());
            assert!(hello.contains("script errors: none"), "{hello}");
            assert!(
                !seen.borrow().iter().any(|l| l.contains("page error")),
                "{:?}",
                seen.borrow()
            );
        }
    }
    // 2. a WebSocket client sending what the page sends in a headset
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws")).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    }
    let frame = |grip: bool, trigger: f32, x: f32| {
        Message::text(format!(
            r#"{{"t": 0, "head": {{"position": [0, 1.6, 0], "orientation": [0, 0, 0, 1]}},
               "hands": [{{"hand": "right", "grip": {grip}, "trigger": {trigger},
                           "position": [{x}, 1.2, -0.4], "orientation": [0, 0, 0, 1]}}]}}"#
        ))
    };
    let mut camera_frames = 0;
    let mut pump = |ws: &mut tungstenite::WebSocket<_>, m: Message| {
        ws.send(m).unwrap();
        while let Ok(m) = ws.read() {
            if let Message::Binary(b) = m {
                let (fw, fh) = (
                    u16::from_le_bytes([b[0], b[1]]) as usize,
                    u16::from_le_bytes([b[2], b[3]]) as usize,
                );
                assert_eq!(b.len(), 4 + fw * fh * 3, "a camera frame of {fw}x{fh}");
                camera_frames += 1;
            }
        }
        // the headset's frame rate
        std::thread::sleep(Duration::from_millis(11));
    };
    let x0 = w.settled("r_arm");
    // not squeezed: the controller moves, the arm does not
    for k in 0..40 {
        pump(&mut ws, frame(false, 0.0, 0.1 + 0.002 * k as f32));
    }
    assert!(dist(w.tcp("r_arm"), x0) < 0.003, "moved without the grip");
    // squeezed at x = 0.18, then 10 cm right (+x in WebXR) over ~1 s: the TCP follows −y (the
    // hand out to its side, clear of the table)
    for k in 0..90 {
        pump(&mut ws, frame(true, 0.0, 0.18 + 0.1 * (k as f32 / 89.0)));
    }
    for _ in 0..60 {
        pump(&mut ws, frame(true, 0.0, 0.28));
    }
    let x1 = w.settled("r_arm");
    assert!((x0[1] - x1[1] - 0.1).abs() < 0.02, "{x0:?} → {x1:?}");
    assert!(
        (x1[0] - x0[0]).abs() < 0.02 && (x1[2] - x0[2]).abs() < 0.02,
        "{x0:?} → {x1:?}"
    );
    // let go and move on: it holds
    for k in 0..60 {
        pump(&mut ws, frame(false, 0.0, 0.28 + 0.002 * k as f32));
    }
    assert!(dist(w.settled("r_arm"), x1) < 0.005);
    // garbage from the page: dropped and said, nothing moves
    pump(&mut ws, Message::text("{\"hands\": 5}"));
    expect_line("not a pose frame");
    assert!(camera_frames > 0, "no head camera frames on the WebSocket");
    // the stream goes quiet: said, the robot holds
    expect_line("went quiet");
    assert!(dist(w.settled("r_arm"), x1) < 0.005);
}

/// Off loopback the page is served over HTTPS (WebXR needs a secure context) with a certificate
/// made at start: a browser that accepts it loads the page, and its WebSocket connects (wss).
#[test]
fn webxr_is_served_over_https_off_loopback() {
    let Some(chromium) = chromium() else {
        reachy_test_support::missing("chromium", "apt install chromium");
        return;
    };
    let robot = "txs";
    let r = sim_and_daemon(robot);
    let (_teleop, rx) = spawn_teleop(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(["teleop", "--source", "webxr", "--listen", "0.0.0.0:0"])
            .args(["--robot", robot, "--connect", &r.endpoint])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let line = |what: &str| loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line with `{what}` from teleop: {e}"),
        }
    };
    let page = line("webxr page: ");
    assert!(
        page.contains("https://") && page.contains("self-signed"),
        "{page}"
    );
    let port = page
        .split_whitespace()
        .find_map(|t| t.strip_prefix("https://0.0.0.0:"))
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    // plain HTTP on that port is not served
    let plain = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut b = [0u8; 64];
            let n = std::io::Read::read(&mut s, &mut b).unwrap_or(0);
            Ok(String::from_utf8_lossy(&b[..n]).to_string())
        })
        .unwrap_or_default();
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    let dir = std::env::temp_dir().join(format!("reachy-webxr-tls-{}", std::process::id()));
    let _browser = open_in_chromium(
        chromium,
        &format!("https://127.0.0.1:{port}/"),
        &dir.join("profile"),
        &["--ignore-certificate-errors"],
    );
    let hello = line("page connected");
    assert!(hello.contains("script errors: none"), "{hello}");
    std::fs::remove_dir_all(&dir).ok();
}
