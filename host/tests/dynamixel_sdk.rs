//! ROBOTIS's official Dynamixel SDK (`pip install dynamixel-sdk`) drives `reachy sim servos` on
//! a pseudo-terminal: broadcast ping, ping, read, write, sync read, sync write.

use crate::common;

use std::process::Command;

/// Run the SDK client on `link` with `goals` (servos 1–4, raw steps) and check every answer;
/// positions within `tol` steps of their goals.
fn sdk_session(
    py: &std::path::Path,
    link: &std::path::Path,
    ids: &[u8],
    goals: [i64; 4],
    tol: i64,
) {
    let g = serde_json::json!({"1": goals[0], "2": goals[1], "3": goals[2], "4": goals[3]});
    let out = Command::new(py)
        .arg(common::repo_root().join("host/tests/python/dxl_sdk_client.py"))
        .arg(link)
        .arg(g.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{v:#}");
    assert_eq!(v["broadcast_ping"]["result"], 0);
    assert_eq!(v["broadcast_ping"]["ids"], serde_json::json!(ids));
    assert_eq!(v["broadcast_ping"]["models"], serde_json::json!([1020]));
    assert_eq!(
        v["ping"],
        serde_json::json!({"result": 0, "error": 0, "model": 1020})
    );
    assert_eq!(v["read_fw"]["value"], 46);
    assert_eq!(
        v["write_torque"],
        serde_json::json!({"result": 0, "error": 0})
    );
    assert_eq!(
        v["write_goal"],
        serde_json::json!({"result": 0, "error": 0})
    );
    assert_eq!(
        v["write_eeprom_locked"]["error"], 7,
        "EEPROM is locked while torque is on"
    );
    let pos = v["read_pos"]["value"].as_i64().unwrap();
    assert!(
        (pos - goals[0]).abs() <= tol,
        "servo 1 reached its goal: {pos}"
    );
    assert_eq!(v["sync_write_torque"], 0);
    assert_eq!(v["sync_write_goal"], 0);
    assert_eq!(v["sync_read"]["result"], 0);
    for (id, goal) in [("2", goals[1]), ("3", goals[2]), ("4", goals[3])] {
        let p = v["sync_read"]["values"][id].as_i64().unwrap();
        assert!((p - goal).abs() <= tol, "servo {id}: {p} vs {goal}");
    }
    assert_eq!(v["read_goal_3"]["value"], goals[2]);
}

#[test]
fn robotis_sdk_talks_to_simulated_servos() {
    let Some(py) = common::python_with("dynamixel_sdk", "dynamixel-sdk") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("reachy-dxl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("bus");
    let _sim = common::sim_servos(&link, "1-6");
    sdk_session(&py, &link, &[1, 2, 3, 4, 5, 6], [3072, 1000, 2048, 3000], 5);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same SDK session against the physics robot's right-arm bus (`reachy sim --servo-bus`):
/// the joints move in the physics, goals inside their ranges and clear of the body.
#[test]
fn robotis_sdk_talks_to_the_physics_robots_servo_bus() {
    let Some(py) = common::python_with("dynamixel_sdk", "dynamixel-sdk") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("reachy-dxl-phys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("arm");
    let bus = format!("r_arm={}", link.display());
    let (_sim, _) = common::start_listening(
        &[
            "sim",
            "--robot",
            "dxlp",
            "--no-scene",
            "--rate",
            "1000",
            "--servo-bus",
            &bus,
        ],
        "sim ready",
    );
    assert!(reachy_api::net::wait_until(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(20),
        || link.exists()
    ));
    // shoulder pitch +45°, shoulder roll −57° (out to the side), elbow yaw 0, elbow −57°
    let step = |rad: f64| (2048.0 + rad * 4096.0 / std::f64::consts::TAU).round() as i64;
    sdk_session(
        &py,
        &link,
        &[1, 2, 3, 4, 5, 6, 7, 8],
        [step(0.785), step(-1.0), 2048, step(-1.0)],
        30,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
