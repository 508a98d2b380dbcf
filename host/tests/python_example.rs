//! `examples/python/reachy_client.py` (on the `reachy_rs` SDK) against `reachy sim` and
//! `reachy daemon` running as separate processes linked by zenoh endpoints.

use crate::common;

use crate::common::{run_python_json, start_listening, start_reachy};

#[test]
fn python_example_reads_state_and_sends_a_goto() {
    let Some(py) = common::python_with("reachy_rs", "-e ./host/python") else {
        return;
    };
    let _robot = crate::common::sim_and_daemon("ex");
    let b = _robot.endpoint.clone();
    let r = run_python_json(&py, "examples/python/reachy_client.py", &[&b, "ex"]);
    assert_eq!(r["backend"], "sim");
    assert_eq!(r["joints"], 21);
    assert_eq!(r["goto"], "ok");
    let after = r["neck_yaw_after"].as_f64().unwrap();
    assert!((after - 0.3).abs() < 0.03, "{after}");
    assert_eq!(r["tcp"].as_object().unwrap().len(), 2);
}

/// The same three processes meeting only through `reachy router` (every one `--connect`s to it,
/// none listens), as they would across hosts.
#[test]
fn python_example_through_a_router() {
    let Some(py) = common::python_with("reachy_rs", "-e ./host/python") else {
        return;
    };
    let (_router, r) = start_listening(&["router"], "router ready");
    let _sim = start_reachy(&["sim", "--robot", "routed", "--connect", &r], "sim ready");
    let _daemon = start_reachy(
        &["daemon", "--robot", "routed", "--connect", &r],
        "daemon ready",
    );
    let out = run_python_json(&py, "examples/python/reachy_client.py", &[&r, "routed"]);
    assert_eq!(out["backend"], "sim");
    assert_eq!(out["goto"], "ok");
}
