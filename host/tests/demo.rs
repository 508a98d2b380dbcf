//! `reachy demo`: sim and daemon in one process, a scripted pick-and-place through the zenoh
//! API, in real time; exit 0 only if the cube ended where it was meant to.

#[test]
fn demo_moves_the_cube_and_exits_zero() {
    let (stdout, _, out) =
        reachy_test_support::run_demo(env!("CARGO_BIN_EXE_reachy").as_ref(), "demo", &[]);
    assert!(stdout.contains("lifted"), "{stdout}");
    // the rerun recording: an .rrd file with the run in it
    let rrd = std::fs::read(out.join("demo.rrd")).unwrap();
    assert!(rrd.len() > 100_000, "{} bytes", rrd.len());
    assert_eq!(&rrd[..4], b"RRF2", "rerun's file magic");
    // read back with rerun's decoder: the blueprint and the URDF tree (issue 20)
    let s = reachy_viz::inspect::summarize(&out.join("demo.rrd")).unwrap();
    assert!(s.blueprint_activated);
    let plots: Vec<&str> = s
        .views
        .iter()
        .filter(|v| v.class == "TimeSeries")
        .map(|v| v.origin.as_str())
        .collect();
    assert!(plots.contains(&"joints/r_shoulder_pitch"), "{plots:?}");
    assert!(s.views.iter().any(|v| v.class == "3D"), "{:?}", s.views);
    // the URDF tree: the TCP link under the wrist, the moving arm's links posed as it moves
    assert!(s
        .temporal_rows
        .keys()
        .any(|e| e.starts_with("robot/") && e.ends_with("/r_wrist_2/r_hand/r_tcp")));
    let arm_rows: usize = s
        .temporal_rows
        .iter()
        .filter(|(e, _)| e.contains("/r_shoulder"))
        .map(|(_, n)| n)
        .sum();
    assert!(arm_rows > 500, "{:?}", s.temporal_rows);
    assert!(s.temporal_rows.contains_key("tcp/r_arm/target"));
    assert!(s.temporal_rows.contains_key("scene/objects/red_cube"));
    assert!(s.static_entities.iter().any(|e| e.contains("/visual/")));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn demo_rejects_an_unknown_object() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args([
            "demo",
            "--object",
            "purple_sphere",
            "--out",
            "/tmp/reachy-demo-bad",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("purple_sphere"));
}

/// The same pick-and-place through the firmware path (issue 14 §4): daemon → host links → the
/// firmware's control core per limb → Dynamixel buses on ptys → the physics robot's joints.
#[test]
fn demo_through_the_firmware_moves_the_cube_and_exits_zero() {
    let (stdout, _, out) = reachy_test_support::run_demo(
        env!("CARGO_BIN_EXE_reachy").as_ref(),
        "demo-fw",
        &["--backend", "firmware"],
    );
    assert!(
        stdout.contains("`reachy firmware run` processes"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&out).ok();
}
