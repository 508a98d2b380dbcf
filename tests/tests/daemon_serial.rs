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
) -> (Daemon, reachy_api::client::RobotClient) {
    let model = RobotModel::reachy().unwrap();
    let backend =
        SerialBackend::open(link.to_str().unwrap(), 1_000_000, &model, "r_arm", &mounts).unwrap();
    let session = reachy_api::net::ZenohOptions::default().open().unwrap();
    let daemon = Daemon::spawn(
        session.clone(),
        model,
        Box::new(backend),
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
    (daemon, c)
}

#[test]
fn daemon_drives_the_firmware_like_the_sim() {
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos("dsr", "1-8", |bus| format!("r_arm={}", bus.display()));
    // the elbow's servo mounted 0.2 rad off: the daemon speaks joint angles either way
    let mounts = [(
        "r_elbow_pitch".to_string(),
        reachy_daemon::config::ServoMount {
            offset: 0.2,
            direction: 1,
        },
    )]
    .into_iter()
    .collect();
    let (daemon, c) = serve(&linkp, "hw", mounts);
    let st = c.state().unwrap();
    assert_eq!(st.backend, "serial");
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
    std::thread::sleep(Duration::from_millis(500));
    let st = c.state().unwrap();
    assert!(
        (st.position[3] + 0.8).abs() < 0.03,
        "elbow {}",
        st.position[3]
    );
    assert!(
        (st.position[0] - 0.3).abs() < 0.03,
        "shoulder {}",
        st.position[0]
    );
    assert_eq!(st.tcp.len(), 1, "the r_arm's TCP only");
    drop(c);
    daemon.stop().unwrap();
}

#[test]
fn a_dead_servo_shows_in_the_state() {
    let (_servos, _fw, linkp) =
        spawn_firmware_on_sim_servos_with("dsd", "1-8", &["--dead", "4"], |bus| {
            format!("r_arm={}", bus.display())
        });
    let (daemon, c) = serve(&linkp, "hwd", Default::default());
    std::thread::sleep(Duration::from_millis(500));
    let st = c.state().unwrap();
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
