//! `reachy policy` argument and input errors are clear and never panic.

use std::process::Command;

fn reachy(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_checkpoints_and_arguments_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("reachy-policy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let obs = dir.join("obs.safetensors");
    std::fs::write(&obs, b"not a safetensors file").unwrap();
    let (code, err) = reachy(&[
        "policy",
        "predict",
        "--checkpoint",
        d,
        "--observation",
        obs.to_str().unwrap(),
        "--out",
        "/tmp/x.safetensors",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(dir.join("config.json"), b"{\"type\": \"act\"").unwrap();
    let (code, err) = reachy(&[
        "policy",
        "predict",
        "--checkpoint",
        d,
        "--observation",
        obs.to_str().unwrap(),
        "--out",
        "/tmp/x.safetensors",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("bad checkpoint"), "{err}");
    let (code, err) = reachy(&[
        "policy",
        "bench",
        "--checkpoint",
        d,
        "--observation",
        "x",
        "--device",
        "tpu",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--device must be"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
