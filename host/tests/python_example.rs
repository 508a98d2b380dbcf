//! `examples/python/reachy_client.py` (eclipse-zenoh + cbor2 only) against `reachy sim` and
//! `reachy daemon` running as separate processes linked by zenoh endpoints.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(args: &[&str], ready: &str) -> Kill {
    let mut c = Kill(
        Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(c.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with(ready), "{args:?}: {line:?}");
    c
}

#[test]
fn python_example_reads_state_and_sends_a_goto() {
    let Some(py) = common::python_with("zenoh", "eclipse-zenoh==1.10.2") else {
        return;
    };
    let (a, b) = (
        format!("tcp/127.0.0.1:{}", port()),
        format!("tcp/127.0.0.1:{}", port()),
    );
    let _sim = start(&["sim", "--robot", "ex", "--listen", &a], "sim ready");
    let _daemon = start(
        &["daemon", "--robot", "ex", "--connect", &a, "--listen", &b],
        "daemon ready",
    );
    let out = Command::new(&py)
        .arg(common::repo_root().join("examples/python/reachy_client.py"))
        .args([&b, "ex"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    eprintln!("{r}");
    assert_eq!(r["backend"], "sim");
    assert_eq!(r["joints"], 21);
    assert_eq!(r["goto"], "ok");
    let after = r["neck_yaw_after"].as_f64().unwrap();
    assert!((after - 0.3).abs() < 0.03, "{after}");
    assert_eq!(r["tcp"].as_object().unwrap().len(), 2);
}
