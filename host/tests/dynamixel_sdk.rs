//! ROBOTIS's official Dynamixel SDK (`pip install dynamixel-sdk`) drives `reachy sim servos` on
//! a pseudo-terminal: broadcast ping, ping, read, write, sync read, sync write.

use crate::common;

use std::process::Command;

#[test]
fn robotis_sdk_talks_to_simulated_servos() {
    let Some(py) = common::python_with("dynamixel_sdk", "dynamixel-sdk") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("reachy-dxl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("bus");
    let _sim = common::sim_servos(&link, "1-6");
    let out = Command::new(&py)
        .arg(common::repo_root().join("host/tests/python/dxl_sdk_client.py"))
        .arg(&link)
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
    assert_eq!(
        v["broadcast_ping"]["ids"],
        serde_json::json!([1, 2, 3, 4, 5, 6])
    );
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
    assert!((pos - 3072).abs() <= 5, "servo 1 reached its goal: {pos}");
    assert_eq!(v["sync_write_torque"], 0);
    assert_eq!(v["sync_write_goal"], 0);
    assert_eq!(v["sync_read"]["result"], 0);
    for (id, goal) in [("2", 1000), ("3", 2048), ("4", 3000)] {
        let p = v["sync_read"]["values"][id].as_i64().unwrap();
        assert!((p - goal).abs() <= 5, "servo {id}: {p} vs {goal}");
    }
    assert_eq!(v["read_goal_3"]["value"], 2048);
    let _ = std::fs::remove_dir_all(&dir);
}
