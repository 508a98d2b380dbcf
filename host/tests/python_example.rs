//! `examples/python/reachy_client.py` (eclipse-zenoh + cbor2 only) against `reachy sim` and
//! `reachy daemon` running as separate processes linked by zenoh endpoints.

use crate::common;

use crate::common::{free_port, run_python_json, start_reachy};

#[test]
fn python_example_reads_state_and_sends_a_goto() {
    let Some(py) = common::python_with("zenoh", "eclipse-zenoh==1.10.2") else {
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
    let Some(py) = common::python_with("zenoh", "eclipse-zenoh==1.10.2") else {
        return;
    };
    let r = format!("tcp/127.0.0.1:{}", free_port());
    let _router = start_reachy(&["router", "--listen", &r], "router ready");
    let _sim = start_reachy(&["sim", "--robot", "routed", "--connect", &r], "sim ready");
    let _daemon = start_reachy(
        &["daemon", "--robot", "routed", "--connect", &r],
        "daemon ready",
    );
    let out = run_python_json(&py, "examples/python/reachy_client.py", &[&r, "routed"]);
    assert_eq!(out["backend"], "sim");
    assert_eq!(out["goto"], "ok");
}
