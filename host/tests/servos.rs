//! `reachy servos setup` and `calibrate` against simulated servos on a pty that the test plugs
//! in and moves by hand: factory servos (ID 1) get their servo-map ID, baud rate, no return
//! delay and the URDF's limits; an empty bus is said and asked again; a calibration writes the
//! mounting the daemon then reads.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reachy_firmware::dynamixel::control_table::{rad_to_position, regs};
use reachy_firmware::dynamixel::Model;
use reachy_sim::servo::{SimBus, SimServo};

/// A bus on a pty whose servos the test swaps (`plug`) and moves (`hold`: ID → rad).
struct Bench {
    port: std::path::PathBuf,
    plug: Arc<Mutex<Option<Vec<SimServo>>>>,
    hold: Arc<Mutex<Vec<(u8, f32)>>>,
    /// The servos as they are now (after each packet).
    seen: Arc<Mutex<Vec<SimServo>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bench {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("reachy-servos-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = dir.join("bus");
        let plug: Arc<Mutex<Option<Vec<SimServo>>>> = Default::default();
        let hold: Arc<Mutex<Vec<(u8, f32)>>> = Default::default();
        let seen: Arc<Mutex<Vec<SimServo>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, h, sn, st, path) = (
            plug.clone(),
            hold.clone(),
            seen.clone(),
            stop.clone(),
            port.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut bus = SimBus::new(&[], Model::Xm430W350);
            let mut pty = reachy_sim::servo_pty::PtyEndpoint::create(&path).unwrap();
            reachy_sim::servo_pty::serve_with(
                &mut bus,
                &mut pty,
                &st,
                Default::default(),
                &mut |bus| {
                    if let Some(s) = p.lock().unwrap().take() {
                        bus.servos = s;
                    }
                    for (id, rad) in h.lock().unwrap().iter() {
                        if let Some(s) = bus.servo_mut(*id) {
                            s.set_position(*rad);
                        }
                    }
                    *sn.lock().unwrap() = bus.servos.clone();
                },
            )
            .unwrap();
        });
        reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            port.exists()
        });
        Self {
            port,
            plug,
            hold,
            seen,
            stop,
            thread: Some(thread),
        }
    }
    fn plug(&self, servos: Vec<SimServo>) {
        *self.plug.lock().unwrap() = Some(servos);
        // applied by the bus thread between packets: wait until it is
        reachy_api::net::wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
            self.plug.lock().unwrap().is_none()
        });
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `reachy ARGS` with piped stdin and stdout; its stderr lines (the prompts) down a channel.
fn spawn(args: &[&str]) -> (crate::common::Kill, std::sync::mpsc::Receiver<String>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(c.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("servos: {l}");
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (crate::common::Kill(c), rx)
}

fn expect(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line with `{what}`: {e}"),
        }
    }
}

#[test]
fn setup_gives_factory_servos_their_place_in_the_servo_map() {
    let bench = Bench::new("setup");
    let port = bench.port.to_str().unwrap().to_string();
    let (mut k, rx) = spawn(&[
        "servos",
        "setup",
        "--port",
        &port,
        "--bus",
        "r_arm",
        "--joints",
        "r_shoulder_pitch,r_elbow_pitch",
    ]);
    let mut stdin = k.0.stdin.take().unwrap();
    // the shoulder's servo, straight from the box
    expect(&rx, "connect only the servo of r_shoulder_pitch");
    bench.plug(vec![SimServo::new(1, Model::Xm430W350)]);
    writeln!(stdin).unwrap();
    // the elbow's: first nothing on the bus (said, asked again), then its servo
    expect(&rx, "connect only the servo of r_elbow_pitch");
    bench.plug(vec![]);
    writeln!(stdin).unwrap();
    expect(&rx, "no servo answered");
    expect(&rx, "connect only the servo of r_elbow_pitch");
    bench.plug(vec![SimServo::new(1, Model::Xm430W350)]);
    writeln!(stdin).unwrap();
    expect(&rx, "2 servo(s) set up on bus r_arm");
    let status = k.0.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut k.0.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    let reports: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2, "{out}");
    assert_eq!(reports[0]["found"], serde_json::json!([1, 57600]), "{out}");
    assert_eq!(
        reports[1]["now"],
        serde_json::json!([4, 1_000_000]),
        "{out}"
    );
    // the elbow's servo as it is now: ID 4, 1 Mbaud (code 3), no return delay, the URDF's range
    let s = bench.seen.lock().unwrap()[0].clone();
    assert_eq!(s.id(), 4);
    assert_eq!(s.get(&regs::BAUD_RATE), 3);
    assert_eq!(s.get(&regs::RETURN_DELAY_TIME), 0);
    let (_, model) = reachy_kinematics::model::RobotModel::load(None).unwrap();
    let j = model
        .joints
        .iter()
        .find(|j| j.name == "r_elbow_pitch")
        .unwrap();
    assert_eq!(
        s.get(&regs::MIN_POSITION_LIMIT),
        rad_to_position(j.lower as f32) as i64
    );
    assert_eq!(
        s.get(&regs::MAX_POSITION_LIMIT),
        rad_to_position(j.upper as f32) as i64
    );
}

#[test]
fn calibrate_writes_the_mounting_the_daemon_reads() {
    let bench = Bench::new("cal");
    let port = bench.port.to_str().unwrap().to_string();
    bench.plug(vec![SimServo::new(4, Model::Xm430W350)]);
    let dir = std::env::temp_dir().join(format!("reachy-servos-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("robot.toml");
    // a config with something of its own to keep
    std::fs::write(&cfg, "# my robot\nrate_hz = 200.0\n").unwrap();
    let (mut k, rx) = spawn(&[
        "servos",
        "calibrate",
        "--port",
        &port,
        "--bus",
        "r_arm",
        "--joints",
        "r_elbow_pitch",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let mut stdin = k.0.stdin.take().unwrap();
    // at the joint's zero the servo reads −0.3 rad; the joint's positive way turns it negative
    expect(&rx, "Hold it at its zero");
    *bench.hold.lock().unwrap() = vec![(4, -0.3)];
    std::thread::sleep(Duration::from_millis(50));
    writeln!(stdin).unwrap();
    expect(&rx, "its positive way");
    *bench.hold.lock().unwrap() = vec![(4, -0.8)];
    std::thread::sleep(Duration::from_millis(50));
    writeln!(stdin).unwrap();
    expect(&rx, "mountings written");
    assert!(k.0.wait().unwrap().success());
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("# my robot") && text.contains("rate_hz = 200.0"),
        "{text}"
    );
    let c = reachy_daemon::config::Config::load(&cfg).unwrap();
    let m = c.servos["r_elbow_pitch"];
    assert_eq!(m.direction, -1, "{text}");
    // joint = direction × servo + offset is 0 at the zero pose
    assert!(
        (f32::from(m.direction) * -0.3 + m.offset).abs() < 2e-3,
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
