//! The daemon on the serial backend: `reachy daemon --backend serial` → link pty →
//! `reachy firmware run` → bus pty → `reachy sim servos`; a client sees the same API as on the
//! sim backend (lease, goto with its reply, state with the arm's TCP).

use std::time::Duration;

use reachy_daemon::{Daemon, DaemonConfig, SerialBackend};
use reachy_e2e::{spawn_firmware_on_sim_servos, spawn_firmware_on_sim_servos_with};
use reachy_kinematics::model::RobotModel;

/// The daemon on the firmware at `link` (bus r_arm), and a client holding the lease.
fn serve(
    link: &std::path::Path,
    robot: &str,
    mounts: std::collections::BTreeMap<String, reachy_daemon::config::ServoMount>,
) -> (Daemon, reachy_api::client::RobotClient, zenoh::Session) {
    let model = RobotModel::reachy().unwrap();
    let backend =
        SerialBackend::open(link.to_str().unwrap(), 1_000_000, &model, "r_arm", &mounts).unwrap();
    serve_on(Box::new(backend), robot)
}

/// The daemon on the direct-bus backend: the firmware's control core in this process over
/// simulated servos at `bus` standing in for a USB adapter (bus r_arm).
fn serve_direct(
    bus: &std::path::Path,
    robot: &str,
    mounts: std::collections::BTreeMap<String, reachy_daemon::config::ServoMount>,
) -> (Daemon, reachy_api::client::RobotClient, zenoh::Session) {
    let model = RobotModel::reachy().unwrap();
    let backend = reachy_apps::direct::DirectBackend::open(
        &reachy_apps::direct::DirectOptions {
            bus: "r_arm".into(),
            port: bus.to_str().unwrap().into(),
            baud: 1_000_000,
            model: reachy_firmware::dynamixel::Model::Xm430W350,
            rate_hz: 1000,
        },
        &model,
        &mounts,
    )
    .unwrap();
    serve_on(Box::new(backend), robot)
}

/// The direct backend on the buses of `spec` (`BUS=PATH,…`): a control core per bus.
fn direct_on(spec: &str) -> Box<dyn reachy_daemon::Backend> {
    reachy_apps::direct::open_buses(
        &reachy_apps::direct::parse_buses(spec).unwrap(),
        1_000_000,
        reachy_firmware::dynamixel::Model::Xm430W350,
        &RobotModel::reachy().unwrap(),
        &Default::default(),
    )
    .unwrap()
}

fn serve_on(
    backend: Box<dyn reachy_daemon::Backend>,
    robot: &str,
) -> (Daemon, reachy_api::client::RobotClient, zenoh::Session) {
    let model = RobotModel::reachy().unwrap();
    let session = reachy_api::net::ZenohOptions::default().open().unwrap();
    let daemon = Daemon::spawn(
        session.clone(),
        model,
        backend,
        DaemonConfig {
            robot: robot.into(),
            ..Default::default()
        },
    )
    .unwrap();
    let c = reachy_api::client::RobotClient::connect(
        &session,
        robot,
        "test",
        "script",
        Duration::from_secs(5),
    )
    .unwrap();
    (daemon, c, session)
}

/// The elbow's servo mounted 0.2 rad off: the daemon speaks joint angles either way.
fn elbow_mounted_off() -> std::collections::BTreeMap<String, reachy_daemon::config::ServoMount> {
    [(
        "r_elbow_pitch".to_string(),
        reachy_daemon::config::ServoMount {
            offset: 0.2,
            direction: 1,
        },
    )]
    .into_iter()
    .collect()
}

/// Every servo but `silent` ones at torque on on backend `backend`, then a goto of two joints
/// answered `ok` when they are there (the mounted elbow included). The last state.
fn goto_arrives(
    c: &reachy_api::client::RobotClient,
    backend: &str,
    silent: usize,
) -> reachy_api::schema::RobotState {
    // every servo at torque on before the goto (a goto answers `ok` only when it arrives)
    let st = state_where(c, "every servo at torque on", |s| s.faults.len() == silent);
    assert_eq!(st.backend, backend);
    assert_eq!(st.names.len(), 8, "{:?}", st.names);
    assert_eq!(st.names[3], "r_elbow_pitch");
    let r = c
        .goto(
            &["r_elbow_pitch".into(), "r_shoulder_pitch".into()],
            &[-0.8, 0.3],
            0.6,
        )
        .unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    state_where(c, "the arm at the goal", |s| {
        (s.position[3] + 0.8).abs() < 0.03 && (s.position[0] - 0.3).abs() < 0.03
    })
}

#[test]
fn daemon_drives_the_firmware_like_the_sim() {
    let _cores = reachy_e2e::beside_others();
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos("dsr", "1-8", |bus| format!("r_arm={}", bus.display()));
    let (daemon, c, _) = serve(&linkp, "hw", elbow_mounted_off());
    let st = goto_arrives(&c, "serial", 0);
    assert_eq!(st.tcp.len(), 1, "the r_arm's TCP only");
    drop(c);
    daemon.stop().unwrap();
}

#[test]
fn a_dead_servo_shows_in_the_state() {
    let _cores = reachy_e2e::beside_others();
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos_with("dsd", "1-8", &["--dead", "4"], |bus| {
            format!("r_arm={}", bus.display())
        });
    let (daemon, c, _) = serve(&linkp, "hwd", Default::default());
    // until the firmware has given up on the dead servo (its no-reply delay) and said so
    let st = c
        .wait_for_state(Duration::from_secs(20), |st| {
            st.faults.iter().any(|f| f.fault.contains("not answering"))
        })
        .unwrap();
    let f: Vec<_> = st
        .faults
        .iter()
        .map(|f| (f.joint.as_str(), f.fault.as_str()))
        .collect();
    assert!(
        f.iter()
            .any(|(j, why)| *j == "r_elbow_pitch" && why.contains("not answering")),
        "servo 4 (r_elbow_pitch) is dead: {f:?}"
    );
    assert!(
        f.iter()
            .all(|(j, why)| *j == "r_elbow_pitch" || !why.contains("not answering")),
        "only that one is silent: {f:?}"
    );
    // the healthy servos reach torque on (the dead one slows the bus cycle, so it takes a
    // moment); then the only fault left is the silent servo
    let t0 = std::time::Instant::now();
    loop {
        let st = c.state().unwrap();
        if st.faults.len() == 1 {
            assert_eq!(st.faults[0].joint, "r_elbow_pitch", "{:?}", st.faults);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "healthy servos never reached torque on: {:?}",
            st.faults
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    daemon.stop().unwrap();
}

/// The first state for which `ok` holds (fails after 5 s).
fn state_where(
    c: &reachy_api::client::RobotClient,
    what: &str,
    ok: impl Fn(&reachy_api::schema::RobotState) -> bool,
) -> reachy_api::schema::RobotState {
    c.wait_for_state(Duration::from_secs(5), ok)
        .unwrap_or_else(|e| panic!("never: {what}: {e}"))
}

/// The `estop` queryable's reply.
fn estop(
    session: &zenoh::Session,
    robot: &str,
    engage: bool,
    lease: Option<u64>,
) -> reachy_api::schema::CommandReply {
    use reachy_api::schema;
    use zenoh::Wait;
    let r = session
        .get(schema::keys::daemon_query(robot, "estop"))
        .payload(schema::encode(&schema::EstopRequest {
            v: schema::ROBOT_SCHEMA_VERSION,
            engage,
            lease,
        }))
        .timeout(Duration::from_secs(5))
        .wait()
        .unwrap()
        .recv()
        .unwrap();
    schema::decode_robot(&r.result().ok().unwrap().payload().to_bytes()).unwrap()
}

#[test]
fn the_estop_latches_the_firmware_and_only_the_lease_holder_clears_it() {
    let _cores = reachy_e2e::beside_others();
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos("dse", "1-8", |bus| format!("r_arm={}", bus.display()));
    let (daemon, c, session) = serve(&linkp, "hwe", Default::default());
    state_where(&c, "every servo at torque on", |s| s.faults.is_empty());
    let elbow = ["r_elbow_pitch".to_string()];
    assert_eq!(c.goto(&elbow, &[-0.6], 0.5).unwrap().status, "ok");
    // anyone engages it; it is answered once the firmware's latched e-stop is written
    assert_eq!(estop(&session, "hwe", true, None).status, "ok");
    state_where(&c, "the e-stop in the state", |s| s.estop);
    let r = c.goto(&elbow, &[-0.2], 0.5).unwrap();
    assert_eq!(r.status, "rejected", "{r:?}");
    // clearing it takes the lease
    let r = estop(&session, "hwe", false, None);
    assert_eq!(r.status, "rejected", "{r:?}");
    let r = estop(&session, "hwe", false, Some(c.lease_token() ^ 1));
    assert_eq!(r.status, "rejected", "{r:?}");
    assert!(c.state().unwrap().estop);
    assert_eq!(
        estop(&session, "hwe", false, Some(c.lease_token())).status,
        "ok"
    );
    state_where(&c, "the e-stop cleared and torque back on", |s| {
        !s.estop && s.faults.is_empty()
    });
    // the firmware's latch released and torque back: the elbow moves to the goal again (a
    // firmware still latched would leave it limp, and the goto would answer `missed`)
    let r = c.goto(&elbow, &[-0.2], 0.5).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    let st = c.state().unwrap();
    assert!(!st.estop && st.faults.is_empty(), "{:?}", st.faults);
    drop(c);
    daemon.stop().unwrap();
}

/// `reachy firmware run` killed with SIGKILL under the daemon: the state goes stale, motion is
/// refused with the reason, the servos hold; a new firmware process on the same link path: the
/// daemon reopens the link, takes up where the arm stands, and moves it again.
#[test]
fn the_daemon_holds_while_the_firmware_is_dead_and_reconnects_when_it_returns() {
    let _cores = reachy_e2e::beside_others();
    let (_servos, mut fw, linkp) =
        spawn_firmware_on_sim_servos("dkf", "1-8", |bus| format!("r_arm={}", bus.display()));
    let (daemon, c, _) = serve(&linkp, "hwk", Default::default());
    state_where(&c, "every servo at torque on", |s| s.faults.is_empty());
    let elbow = ["r_elbow_pitch".to_string()];
    assert_eq!(c.goto(&elbow, &[-0.6], 0.5).unwrap().status, "ok");

    let _ = fw.0.kill(); // SIGKILL
    let _ = fw.0.wait();
    let st = state_where(&c, "the backend stale", |s| s.stale);
    assert!((st.position[3] + 0.6).abs() < 0.03, "{}", st.position[3]);
    let r = c.goto(&elbow, &[0.0], 0.5).unwrap();
    assert_eq!(r.status, "rejected", "{r:?}");
    assert!(r.reason.unwrap().contains("holding"));

    // a new firmware process creates its link pty at the same path
    let bus = linkp.with_file_name("bus");
    let _fw2 = reachy_e2e::spawn_firmware_run(&linkp, &format!("r_arm={}", bus.display()));
    let st = c
        .wait_for_state(Duration::from_secs(20), |s| !s.stale && s.faults.is_empty())
        .expect("fresh states from the new firmware");
    assert!(
        (st.target[3] + 0.6).abs() < 0.05,
        "no jump: target {}",
        st.target[3]
    );
    let r = c.goto(&elbow, &[-0.2], 0.5).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    drop(c);
    daemon.stop().unwrap();
}

/// Servos straight from an adapter (issue 18 §1): the same API as through a board — state,
/// mounts, goto replies, e-stop latch.
#[test]
fn the_direct_backend_drives_servos_from_an_adapter() {
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-direct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = dir.join("adapter");
    let _servos = reachy_e2e::spawn_sim_servos(&bus, "1-8");
    let (daemon, c, session) = serve_direct(&bus, "dx", elbow_mounted_off());
    let st = goto_arrives(&c, "dynamixel", 0);
    assert!(!st.estop);
    assert_eq!(estop(&session, "dx", true, None).status, "ok");
    state_where(&c, "the e-stop in the state", |s| s.estop);
    let r = c.goto(&["r_elbow_pitch".into()], &[-0.2], 0.5).unwrap();
    assert_eq!(r.status, "rejected", "{r:?}");
    drop(c);
    daemon.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// On the direct backend, a servo that stops answering shows in the state, named, and the
/// others still answer their gotos.
#[test]
fn the_direct_backend_reports_a_silent_servo() {
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-direct-dead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = dir.join("adapter");
    let _servos = reachy_e2e::spawn_sim_servos_with(&bus, "1-8", &["--dead", "6"]);
    let (daemon, c, _) = serve_direct(&bus, "dxd", Default::default());
    let st = state_where(&c, "the healthy servos at torque on", |s| {
        s.faults.len() == 1
    });
    assert_eq!(st.faults[0].joint, "r_wrist_pitch", "servo 6 is silent");
    assert!(
        st.faults[0].fault.contains("not answering"),
        "{:?}",
        st.faults
    );
    // the others still move at their speed: the dead servo is left out of the bus cycle's
    // reads (probed now and then), and state keeps flowing
    let st = goto_arrives(&c, "dynamixel", 1);
    assert_eq!(st.faults[0].joint, "r_wrist_pitch");
    drop(c);
    daemon.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The direct backend over two adapters at once (`--bus r_arm=A --bus head=B`): a control core
/// per bus, one robot in the API: both limbs in the state, a goto across both arrives, an e-stop
/// latches both.
#[test]
fn the_direct_backend_drives_several_buses() {
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-direct-two-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (arm, head) = (dir.join("arm"), dir.join("head"));
    let _arm = reachy_e2e::spawn_sim_servos(&arm, "1-8");
    let _head = reachy_e2e::spawn_sim_servos(&head, "1-5");
    let spec = format!("r_arm={},head={}", arm.display(), head.display());
    let backend = direct_on(&spec);
    let (daemon, c, session) = serve_on(backend, "dx2");
    let st = state_where(&c, "both buses at torque on", |s| {
        s.faults.is_empty() && s.names.len() == 13
    });
    assert_eq!(st.backend, "dynamixel");
    let (elbow, yaw) = (
        st.names.iter().position(|n| n == "r_elbow_pitch").unwrap(),
        st.names.iter().position(|n| n == "neck_yaw").unwrap(),
    );
    let r = c
        .goto(
            &["r_elbow_pitch".into(), "neck_yaw".into()],
            &[-0.7, 0.4],
            0.6,
        )
        .unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    state_where(&c, "the arm and the head at the goal", |s| {
        (s.position[elbow] + 0.7).abs() < 0.03 && (s.position[yaw] - 0.4).abs() < 0.03
    });
    assert_eq!(estop(&session, "dx2", true, None).status, "ok");
    state_where(&c, "the e-stop in the state", |s| s.estop);
    drop(c);
    daemon.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// On the direct backend, a servo that reports a hardware error (overload, which its shutdown
/// mask turns into torque off) shows in the state with its error, and the others still move.
#[test]
fn the_direct_backend_reports_a_hardware_error() {
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-direct-hwerr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = dir.join("adapter");
    let _servos = reachy_e2e::spawn_sim_servos_with(&bus, "1-8", &["--hardware-error", "6=0x20"]);
    let (daemon, c, _) = serve_direct(&bus, "dxh", Default::default());
    let st = state_where(&c, "servo 6's fault", |s| s.faults.len() == 1);
    assert_eq!(st.faults[0].joint, "r_wrist_pitch");
    assert!(
        st.faults[0].fault.contains("0x20"),
        "the error bits are named: {:?}",
        st.faults
    );
    let st = goto_arrives(&c, "dynamixel", 1);
    assert_eq!(st.faults[0].joint, "r_wrist_pitch");
    drop(c);
    daemon.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The direct backend's watchdog is the board's: when the daemon's loop stops writing (a
/// stall), the bus thread's control core holds, then drops torque, and the state says so.
#[test]
fn the_direct_backend_drops_torque_when_the_daemon_stalls() {
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-direct-wd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = dir.join("adapter");
    let _servos = reachy_e2e::spawn_sim_servos(&bus, "1-8");
    let model = RobotModel::reachy().unwrap();
    let mut b = reachy_apps::direct::open_buses(
        &[("r_arm".into(), bus.to_str().unwrap().into())],
        1_000_000,
        reachy_firmware::dynamixel::Model::Xm430W350,
        &model,
        &Default::default(),
    )
    .unwrap();
    let n = b.joint_names().len();
    // the daemon's loop, writing at 100 Hz, until every servo has torque on
    let t0 = std::time::Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(10) {
        b.write(&vec![0.0; n], true).unwrap();
        if let Some(m) = b.read() {
            last = Some(m.faults.clone());
            if m.faults.iter().all(Option::is_none) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        last.as_ref().is_some_and(|f| f.iter().all(Option::is_none)),
        "torque never on everywhere: {last:?}"
    );
    // the loop stalls: no more writes; the core holds, then drops torque on every servo
    let dropped =
        reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
            b.read().is_some_and(|m| {
                m.faults
                    .iter()
                    .all(|f| f.as_deref().is_some_and(|f| f.contains("torque off")))
            })
        });
    assert!(dropped, "torque still on after the daemon went silent");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `reachy sim` for `robot` (no scene, 1 kHz) with the physics robot's joints as servo buses
/// (`BUS=PATH` each, ready when it returns), and the sim's own joint state as it comes.
struct PhysicsSim {
    state: reachy_api::net::Latest<reachy_api::schema::JointState>,
    _sub: zenoh::pubsub::Subscriber<()>,
    _session: zenoh::Session,
    _sim: reachy_e2e::ChildGuard,
}

impl PhysicsSim {
    fn start(robot: &str, buses: &[(&str, &std::path::Path)]) -> Self {
        let specs: Vec<String> = buses
            .iter()
            .map(|(b, p)| format!("{b}={}", p.display()))
            .collect();
        let mut args = vec!["sim", "--robot", robot, "--no-scene", "--rate", "1000"];
        for s in &specs {
            args.extend(["--servo-bus", s.as_str()]);
        }
        let (sim, endpoint) = reachy_e2e::start_listening(&args, "sim ready");
        for (_, p) in buses {
            reachy_e2e::wait_for(p, 20);
        }
        let session = reachy_api::net::ZenohOptions {
            connect: vec![endpoint],
            ..Default::default()
        }
        .open()
        .unwrap();
        let (state, sub) = reachy_api::net::subscribe_latest(
            &session,
            &reachy_api::schema::keys::sim_joint_state(robot),
            |b| reachy_api::schema::decode_sim::<reachy_api::schema::JointState>(b).ok(),
        )
        .unwrap();
        Self {
            state,
            _sub: sub,
            _session: session,
            _sim: sim,
        }
    }

    /// Where the physics has `joint` now.
    fn joint(&self, joint: &str) -> Option<f32> {
        self.state.lock().unwrap().as_ref().and_then(|s| {
            let i = s.names.iter().position(|n| n == joint)?;
            Some(s.position[i])
        })
    }
}

/// The physics robot's joints as servo buses (`reachy sim --servo-bus`): the daemon drives
/// them through the direct backend's control cores (arm and head), and the physics moves — the
/// sim's own joint state shows the joints where the goto sent them.
#[test]
fn the_physics_robot_is_driven_through_its_servo_buses() {
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-physbus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (arm, head) = (dir.join("arm"), dir.join("head"));
    let sim = PhysicsSim::start("pbus", &[("r_arm", &arm), ("head", &head)]);
    let spec = format!("r_arm={},head={}", arm.display(), head.display());
    let backend = direct_on(&spec);
    let (daemon, c, _session) = serve_on(backend, "pbus-d");
    state_where(&c, "every servo at torque on", |s| {
        s.faults.is_empty() && s.names.len() == 13
    });
    let r = c
        .goto(
            &["r_elbow_pitch".into(), "neck_yaw".into()],
            &[-1.0, 0.4],
            1.0,
        )
        .unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    let physics_at =
        |name: &str, want: f32| sim.joint(name).is_some_and(|q| (q - want).abs() < 0.03);
    assert!(
        reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
            physics_at("r_elbow_pitch", -1.0) && physics_at("neck_yaw", 0.4)
        }),
        "the physics joints are not where the servos were sent: {:?} {:?}",
        sim.joint("r_elbow_pitch"),
        sim.joint("neck_yaw")
    );
    drop(c);
    daemon.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One board per limb (issue 14 §2, the daemon's side): `reachy daemon --backend serial --link
/// r_arm=A --link head=B` drives two `reachy firmware run` boards as one robot: both limbs in
/// the state, a goto across both arrives, the e-stop latches both boards.
#[test]
fn the_daemon_drives_a_board_per_limb() {
    let _cores = reachy_e2e::beside_others();
    let (_s1, _fw1, arm) =
        spawn_firmware_on_sim_servos("bpl-arm", "1-8", |bus| format!("r_arm={}", bus.display()));
    let (_s2, _fw2, head) =
        spawn_firmware_on_sim_servos("bpl-head", "1-5", |bus| format!("head={}", bus.display()));
    let robot = "bpl";
    let arm_link = format!("r_arm={}", arm.display());
    let head_link = format!("head={}", head.display());
    let (_daemon, endpoint) = reachy_e2e::start_listening(
        &[
            "daemon",
            "--backend",
            "serial",
            "--robot",
            robot,
            "--link",
            &arm_link,
            "--link",
            &head_link,
        ],
        "daemon ready",
    );
    let session = reachy_api::net::ZenohOptions {
        connect: vec![endpoint],
        ..Default::default()
    }
    .open()
    .unwrap();
    let c = reachy_api::client::RobotClient::connect(
        &session,
        robot,
        "test",
        "script",
        Duration::from_secs(10),
    )
    .unwrap();
    let st = state_where(&c, "both boards at torque on", |s| {
        s.faults.is_empty() && s.names.len() == 13
    });
    assert_eq!(st.backend, "serial");
    let (elbow, yaw) = (
        st.names.iter().position(|n| n == "r_elbow_pitch").unwrap(),
        st.names.iter().position(|n| n == "neck_yaw").unwrap(),
    );
    let r = c
        .goto(
            &["r_elbow_pitch".into(), "neck_yaw".into()],
            &[-0.7, 0.4],
            0.6,
        )
        .unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    state_where(&c, "the arm and the head at the goal", |s| {
        (s.position[elbow] + 0.7).abs() < 0.03 && (s.position[yaw] - 0.4).abs() < 0.03
    });
    assert_eq!(estop(&session, robot, true, None).status, "ok");
    state_where(&c, "the e-stop in the state", |s| s.estop);
}

/// Faults across the real path (issue 14 §5): the daemon dies while the physics arm holds a
/// bent elbow through `reachy firmware run`; the firmware's watchdog holds the pose, then turns
/// torque off, and the physics arm sags under gravity — seen in the firmware's telemetry and in
/// the sim's own joint state.
#[test]
fn the_arm_sags_under_gravity_once_the_firmware_drops_torque_after_the_daemon_dies() {
    use reachy_firmware::link::{state_flags, Telemetry};
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-sag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (arm, link) = (dir.join("arm"), dir.join("link"));
    let sim = PhysicsSim::start("sag", &[("r_arm", &arm)]);
    let _fw = reachy_e2e::spawn_firmware_run(&link, &format!("r_arm={}", arm.display()));
    let elbow_in_physics = || sim.joint("r_elbow_pitch");
    // the forearm raised forward: gravity pulls it back down towards 0
    let target = -1.3f32;
    let (daemon, c, _session) = serve(&link, "sag-d", Default::default());
    state_where(&c, "every servo at torque on", |s| s.faults.is_empty());
    let r = c.goto(&["r_elbow_pitch".into()], &[target], 1.0).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    assert!(
        reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
            elbow_in_physics().is_some_and(|q| (q - target).abs() < 0.05)
        }),
        "the physics elbow never got there: {:?}",
        elbow_in_physics()
    );
    // the daemon dies: its link goes silent
    drop(c);
    daemon.stop().unwrap();
    // listen to the firmware's telemetry (sending nothing): HOLD first, then torque off
    let mut fw =
        reachy_daemon::firmware_link::FirmwareLink::open(link.to_str().unwrap(), 1_000_000)
            .unwrap();
    let mut flags_seen = Vec::new();
    let mut held_at = None;
    let dropped =
        reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
            for t in fw.poll().unwrap_or_default() {
                if let Telemetry::State { flags, .. } = t {
                    if flags_seen.last() != Some(&flags) {
                        flags_seen.push(flags);
                    }
                    if flags & state_flags::HOLD != 0 && held_at.is_none() {
                        held_at = elbow_in_physics();
                    }
                    if flags & state_flags::WATCHDOG_TORQUE_OFF != 0 {
                        return true;
                    }
                }
            }
            false
        });
    assert!(
        dropped,
        "the firmware never dropped torque: flags {flags_seen:?}"
    );
    let held_at = held_at.unwrap_or_else(|| panic!("no HOLD before torque off: {flags_seen:?}"));
    assert!(
        (held_at - target).abs() < 0.05,
        "the watchdog's hold did not hold the pose: {held_at} (target {target})"
    );
    let off_at = elbow_in_physics().unwrap();
    assert!(
        (off_at - target).abs() < 0.05,
        "the pose was lost before torque went off: {off_at} (target {target})"
    );
    // torque off: the forearm falls
    assert!(
        reachy_api::net::wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
            elbow_in_physics().is_some_and(|q| q > target + 0.3)
        }),
        "the arm did not sag with torque off: elbow at {:?} (held at {target})",
        elbow_in_physics()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Faults across the real path (issue 14 §5): a whole bus stops answering (the head's servos
/// gone: its process killed) — the daemon names each of its joints in the faults, and the
/// other limb keeps working (a goto of the arm arrives).
#[test]
fn a_dead_bus_is_reported_and_the_other_limb_keeps_working() {
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-dead-bus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (arm, head) = (dir.join("arm"), dir.join("head"));
    let _arm = reachy_e2e::spawn_sim_servos(&arm, "1-8");
    let mut head_servos = reachy_e2e::spawn_sim_servos(&head, "1-5");
    let model = RobotModel::reachy().unwrap();
    let spec = format!("r_arm={},head={}", arm.display(), head.display());
    let backend = direct_on(&spec);
    let (daemon, c, _session) = serve_on(backend, "dbus");
    state_where(&c, "both buses at torque on", |s| {
        s.faults.is_empty() && s.names.len() == 13
    });
    let head_joints: Vec<String> = model
        .servo_map()
        .into_iter()
        .filter(|a| a.bus == "head")
        .map(|a| a.joint)
        .collect();
    let _ = head_servos.0.kill(); // SIGKILL: the bus falls silent
    let _ = head_servos.0.wait();
    let st = c
        .wait_for_state(Duration::from_secs(10), |s| {
            head_joints.iter().all(|j| {
                s.faults
                    .iter()
                    .any(|f| &f.joint == j && f.fault.contains("not answering"))
            })
        })
        .unwrap_or_else(|e| panic!("the dead head bus is not in the faults: {e}"));
    assert!(
        st.faults.iter().all(|f| head_joints.contains(&f.joint)),
        "only the head's joints are faulted: {:?}",
        st.faults
    );
    assert!(!st.stale, "the arm's bus still reports");
    let elbow = st.names.iter().position(|n| n == "r_elbow_pitch").unwrap();
    let r = c.goto(&["r_elbow_pitch".into()], &[-0.7], 0.6).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    state_where(&c, "the arm at the goal beside the dead bus", |s| {
        (s.position[elbow] + 0.7).abs() < 0.03
    });
    drop(c);
    daemon.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Faults across the real path (issue 14 §5): noise on the host link of `reachy firmware run`
/// driving the physics arm — random bytes, and copies of a goal frame for another pose with one
/// byte changed (which would move the elbow if one got through) — written into the link beside
/// the host's own frames (heartbeats meanwhile, so a wrong goal would stay the goal). The firmware counts them as link errors and drops them; the
/// physics elbow never leaves the pose the valid frames hold, and valid goals still apply after.
#[test]
fn noise_on_the_host_link_is_counted_and_dropped_with_no_wrong_motion() {
    use reachy_firmware::link::{self, Command as LinkCommand, Telemetry};
    use std::io::Write;
    let _cores = reachy_e2e::beside_others();
    let dir = std::env::temp_dir().join(format!("reachy-noise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (arm, linkp) = (dir.join("arm"), dir.join("link"));
    let sim = PhysicsSim::start("noise", &[("r_arm", &arm)]);
    let _fw = reachy_e2e::spawn_firmware_run(&linkp, &format!("r_arm={}", arm.display()));
    let mut host =
        reachy_daemon::firmware_link::FirmwareLink::open(linkp.to_str().unwrap(), 1_000_000)
            .unwrap();
    // a second writer on the link, for the noise: a plain open of the tty (the host's open set
    // it raw; its lock is an advisory one a plain writer does not take)
    let mut noise = std::fs::OpenOptions::new()
        .write(true)
        .open(&linkp)
        .unwrap();
    host.send(&LinkCommand::Torque {
        mask: 0xFF,
        on: true,
    })
    .unwrap();
    // r_elbow_pitch is the arm's joint 3
    let hold: Vec<(u8, f32)> = (0..8u8)
        .map(|j| (j, if j == 3 { -0.8 } else { 0.0 }))
        .collect();
    let mut link_errors = 0;
    // the host's goal stream: one frame, then the telemetry (the link errors counted so far)
    fn stream(
        host: &mut reachy_daemon::firmware_link::FirmwareLink,
        goals: &[(u8, f32)],
        link_errors: &mut u32,
    ) {
        host.send_goals(goals).unwrap();
        for t in host.poll().unwrap_or_default() {
            if let Telemetry::State { stats, .. } = t {
                *link_errors = stats.link_errors;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let at = |want: f32| {
        sim.joint("r_elbow_pitch")
            .is_some_and(|q| (q - want).abs() < 0.05)
    };
    let t0 = std::time::Instant::now();
    while !at(-0.8) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the elbow never reached the pose: {:?}",
            sim.joint("r_elbow_pitch")
        );
        stream(&mut host, &hold, &mut link_errors);
    }
    let before = link_errors;
    let wrong = LinkCommand::position_goals(7, &[(3, 0.5)]).unwrap();
    let mut frame = [0u8; link::MAX_FRAME];
    let n = link::encode(&wrong, &mut frame).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut sent_bad = 0;
    for round in 0..300 {
        let mut bad = frame[..n].to_vec();
        if round % 2 == 0 {
            // the wrong pose's frame, one byte changed (never the terminator)
            let k = (next() as usize) % (n - 1);
            bad[k] ^= 1 + (next() % 255) as u8;
        } else {
            // random bytes, ended by a frame delimiter
            bad = (0..1 + next() % 40).map(|_| next() as u8).collect();
            bad.push(0);
        }
        noise.write_all(&bad).unwrap();
        sent_bad += 1;
        // the host only keeps the link alive meanwhile: a wrong goal that got through would
        // stay the goal
        host.send(&LinkCommand::Heartbeat { seq: round }).unwrap();
        for t in host.poll().unwrap_or_default() {
            if let Telemetry::State { stats, .. } = t {
                link_errors = stats.link_errors;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            at(-0.8),
            "the elbow moved under link noise: {:?} (round {round})",
            sim.joint("r_elbow_pitch")
        );
    }
    drop(noise);
    for _ in 0..50 {
        stream(&mut host, &hold, &mut link_errors);
    }
    assert!(
        link_errors - before >= sent_bad / 2,
        "{} link errors counted for {sent_bad} corrupt frames",
        link_errors - before
    );
    // valid frames still apply after the noise
    let moved: Vec<(u8, f32)> = (0..8u8)
        .map(|j| (j, if j == 3 { -0.4 } else { 0.0 }))
        .collect();
    let t0 = std::time::Instant::now();
    while !at(-0.4) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a valid goal after the noise did not apply: {:?}",
            sim.joint("r_elbow_pitch")
        );
        stream(&mut host, &moved, &mut link_errors);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Faults across the real path (issue 14 §5): a servo working against a load overheats
/// (`reachy sim servos --load`) behind `reachy firmware run` — it shuts down, the daemon names
/// it with its temperature, and the rest of the arm still moves.
#[test]
fn an_overheating_servo_shuts_down_and_is_reported() {
    let _cores = reachy_e2e::beside_others();
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos_with("ovt", "1-8", &["--load", "4=3.5"], |bus| {
            format!("r_arm={}", bus.display())
        });
    let (daemon, c, _) = serve(&linkp, "ovt", Default::default());
    let st = c
        .wait_for_state(Duration::from_secs(20), |s| {
            s.faults
                .iter()
                .any(|f| f.joint == "r_elbow_pitch" && f.fault.contains("shut down"))
        })
        .unwrap_or_else(|e| panic!("the loaded elbow never shut down: {e}"));
    let f = st
        .faults
        .iter()
        .find(|f| f.joint == "r_elbow_pitch")
        .unwrap();
    assert!(f.fault.contains("°C"), "{f:?}");
    assert_eq!(st.faults.len(), 1, "only the elbow: {:?}", st.faults);
    let r = c.goto(&["r_shoulder_pitch".into()], &[0.3], 0.6).unwrap();
    assert_eq!(r.status, "ok", "{r:?}");
    state_where(&c, "the shoulder at the goal beside the hot elbow", |s| {
        (s.position[0] - 0.3).abs() < 0.03
    });
    drop(c);
    daemon.stop().unwrap();
}
