//! Numerical parity with LeRobot's PyTorch ACT: lerobot itself builds a checkpoint with random
//! weights (ResNet-18 backbone with random frozen batch-norm statistics, two cameras, state,
//! random dataset statistics) for each normalisation mode, runs its pre-processor →
//! `predict_action_chunk` → post-processor, and this crate must agree to 1e-4 on the
//! un-normalised action chunk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use candle_core::{DType, Device};
use reachy_policies::ActPolicy;

#[test]
fn act_chunk_matches_lerobot() {
    let Some(py) = reachy_test_support::python_with("lerobot", "lerobot") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("reachy-act-{}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_act_fixture.py");
    let modes = ["MEAN_STD", "MIN_MAX", "QUANTILES"];
    let status = Command::new(&py)
        .arg(&script)
        .arg(&dir)
        .args(["--norm", &modes.join(",")])
        .status()
        .unwrap();
    assert!(status.success(), "fixture generation failed");
    // pre-norm transformer blocks, one camera
    let status = Command::new(&py)
        .arg(&script)
        .arg(dir.join("PRE_NORM"))
        .args(["--pre-norm", "--cameras", "1", "--seed", "3"])
        .status()
        .unwrap();
    assert!(status.success(), "fixture generation failed");
    for mode in modes.iter().chain(&["PRE_NORM"]) {
        let d = dir.join(mode);
        let policy = ActPolicy::load(&d.join("checkpoint"), &Device::Cpu, DType::F32).unwrap();
        let obs: HashMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(d.join("obs.safetensors"), &Device::Cpu).unwrap();
        let expected = candle_core::safetensors::load(d.join("expected.safetensors"), &Device::Cpu)
            .unwrap()["action"]
            .clone();
        let got = policy.predict_chunk(&obs).unwrap();
        let diff = reachy_test_support::max_abs_diff(&got, &expected);
        let scale = reachy_test_support::max_abs_diff(&expected, &expected.zeros_like().unwrap());
        eprintln!("{mode}: max |candle - lerobot| = {diff:.3e} (max |action| {scale:.3})");
        assert!(diff <= 1e-4, "{mode}: max abs difference {diff}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
