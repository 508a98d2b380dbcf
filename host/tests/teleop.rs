//! `reachy teleop` on the simulated robot started in its process: a Cartesian pose stream on stdin
//! moves the right arm's TCP there through the daemon's IK; unreachable targets, unknown arms and
//! malformed lines each get their verdict or error line, and nothing else is lost.

use std::io::Write;
use std::process::{Command, Stdio};

fn dist(a: &serde_json::Value, b: [f64; 3]) -> f64 {
    let a: Vec<f64> = a
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

#[test]
fn teleop_streams_cartesian_targets_with_verdicts() {
    let rrd = std::env::temp_dir().join(format!("reachy-teleop-{}.rrd", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["teleop", "--robot", "tele", "--rerun", "save"])
        .arg(&rrd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // beside the table (its edge is at x = 0.25 m, its top at 0.64 m), out and up
    let goal = [0.15, -0.42, 0.55];
    let input = [
        r#"{"arm": "r_arm", "position": [0.15, -0.35, 0.45]}"#,
        r#"{"arm": "r_arm", "position": [0.15, -0.40, 0.50], "gripper": 1.0}"#,
        r#"{"arm": "r_arm", "position": [0.15, -0.42, 0.55]}"#,
        r#"{"hold": 2.5}"#,
        r#"{"arm": "r_arm", "position": [1.5, 0.0, 1.0]}"#,
        r#"{"arm": "r_arm", "position": [0.15, -0.42]}"#,
        r#"{"arm": "x_arm", "position": [0.3, 0.0, 1.0]}"#,
        r#"{"hold": 0.3}"#,
    ];
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in input {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        input.len() + 1,
        "one line per input and a summary"
    );
    for l in &lines[..3] {
        assert_eq!(l["status"], "ok", "{l}");
    }
    // after holding, the TCP is where the stream ended
    let d = dist(&lines[3]["tcp"]["r_arm"], goal);
    assert!(d < 0.01, "TCP {d} m from the last target: {}", lines[3]);
    assert_eq!(lines[4]["status"], "unreachable");
    assert!(
        lines[4]["reason"]
            .as_str()
            .unwrap()
            .contains("out of reach"),
        "{}",
        lines[4]
    );
    assert!(lines[5]["error"].is_string(), "{}", lines[5]);
    assert!(
        lines[6]["error"].as_str().unwrap().contains("x_arm"),
        "{}",
        lines[6]
    );
    // the unreachable target moved nothing
    let d = dist(&lines[7]["tcp"]["r_arm"], goal);
    assert!(d < 0.01, "{}", lines[7]);
    let s = &lines[8]["summary"];
    assert_eq!(s["bad_lines"], 2, "{s}");
    assert_eq!(s["verdicts"]["ok"], 3, "{s}");
    assert_eq!(s["verdicts"]["unreachable"], 1, "{s}");
    assert!(
        !out.status.success(),
        "bad lines make the exit code non-zero"
    );
}

/// One target and the end of the input, no `hold`: the arm still gets there before teleop exits.
#[test]
fn a_stream_that_ends_holds_until_the_arm_is_there() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(["teleop", "--robot", "tele-end"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let goal = [0.15, -0.40, 0.50];
    writeln!(
        child.stdin.take().unwrap(),
        r#"{{"arm": "r_arm", "position": {goal:?}}}"#
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let d = dist(&summary["summary"]["tcp"]["r_arm"], goal);
    assert!(d < 0.01, "the TCP stopped {d} m from the target: {text}");
}
