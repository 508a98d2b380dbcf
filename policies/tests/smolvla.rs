//! Numerical parity with LeRobot's PyTorch SmolVLA: lerobot builds a small SmolVLA with random
//! weights (its SmolVLM backbone configured in the fixture, as no weights can be downloaded),
//! runs its pre-processor → `predict_action_chunk(batch, noise)` → post-processor, and this
//! crate must agree stage by stage — vision features, prefix embeddings, the first denoise
//! step's velocity, the un-normalised chunk (≤ 1e-4).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use reachy_policies::smolvla::{PositionIds, Stages};
use reachy_policies::{Policy, SmolVlaPolicy};

fn fixture(dir: &Path, args: &[&str]) -> Option<()> {
    let py = reachy_test_support::python_with("transformers", "transformers")?;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_smolvla_fixture.py");
    let status = Command::new(&py)
        .arg(&script)
        .arg(dir)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "fixture generation failed");
    Some(())
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn load(dir: &Path) -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let obs = candle_core::safetensors::load(dir.join("obs.safetensors"), &Device::Cpu).unwrap();
    let exp =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    (obs, exp)
}

/// Compare every stage; returns the chunk's max abs difference.
fn compare(
    name: &str,
    got: &(Tensor, Stages),
    exp: &HashMap<String, Tensor>,
    cams: &[&str],
) -> f32 {
    let (action, st) = got;
    for (i, cam) in cams.iter().enumerate() {
        let d = max_abs(&st.vision[i], &exp[&format!("vision.{cam}")]);
        eprintln!("{name}: vision.{cam} max diff {d:.2e}");
        assert!(d <= 1e-4, "{name}: vision features of {cam} differ by {d}");
    }
    let d = max_abs(&st.prefix, &exp["prefix"]);
    eprintln!("{name}: prefix max diff {d:.2e}");
    assert!(d <= 1e-4, "{name}: prefix embeddings differ by {d}");
    let d = max_abs(&st.velocity0, &exp["velocity0"]);
    eprintln!("{name}: velocity0 max diff {d:.2e}");
    assert!(d <= 1e-4, "{name}: first velocity differs by {d}");
    let d = max_abs(action, &exp["action"]);
    eprintln!("{name}: action chunk max diff {d:.2e}");
    d
}

#[test]
fn smolvla_chunk_matches_lerobot_stage_by_stage() {
    let root = std::env::temp_dir().join(format!("reachy-smolvla-{}", std::process::id()));
    // two cameras of 80×48 (padded to 64×64 on top), a 21-token prompt
    let a = root.join("two_cams");
    if fixture(&a, &[]).is_none() {
        return;
    }
    // one tall camera, padded language (max_length), another seed
    let b = root.join("tall_padded");
    fixture(
        &b,
        &[
            "--cameras",
            "1",
            "--height",
            "100",
            "--width",
            "36",
            "--pad-to",
            "max_length",
            "--seed",
            "5",
        ],
    )
    .unwrap();
    for (dir, cams) in [(&a, &["head", "left_wrist"][..]), (&b, &["head"][..])] {
        let name = dir.file_name().unwrap().to_str().unwrap();
        let ckpt = dir.join("checkpoint");
        let policy = SmolVlaPolicy::load(&ckpt, &Device::Cpu, DType::F32).unwrap();
        let (obs, exp) = load(dir);
        // tokens and noise from the observation file, as lerobot's tokenizer made them
        let got = policy.predict_stages(&obs, None).unwrap();
        let d = compare(name, &got, &exp, cams);
        assert!(d <= 1e-4, "{name}: action chunk differs by {d}");
        // the task text through the checkpoint's tokenizer gives the same chunk
        let task = std::fs::read_to_string(dir.join("task.txt")).unwrap();
        let mut text_obs = obs.clone();
        text_obs.remove("observation.language.tokens");
        text_obs.remove("observation.language.attention_mask");
        let by_text = Policy::load(&ckpt, &Device::Cpu, DType::F32)
            .unwrap()
            .predict_chunk(&text_obs, Some(&task))
            .unwrap();
        let d = max_abs(&by_text, &exp["action"]);
        assert!(
            d <= 1e-4,
            "{name}: --task tokenization gives a chunk {d} away"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn smolvla_position_id_option_and_bad_inputs() {
    let dir = std::env::temp_dir().join(format!("reachy-smolvla-opt-{}", std::process::id()));
    if fixture(&dir, &["--cameras", "1", "--seed", "2"]).is_none() {
        return;
    }
    let ckpt = dir.join("checkpoint");
    let (obs, exp) = load(&dir);
    let mut policy = SmolVlaPolicy::load(&ckpt, &Device::Cpu, DType::F32).unwrap();
    // the exact position ids are a different (documented) computation: the chunk moves
    policy.model_mut().position_ids = PositionIds::Exact;
    let exact = policy.predict_chunk(&obs, None).unwrap();
    assert!(
        max_abs(&exact, &exp["action"]) > 1e-3,
        "exact position ids changed nothing"
    );
    policy.model_mut().position_ids = PositionIds::Lerobot;
    // without tokens or a task: a clear error naming both
    let mut no_lang = obs.clone();
    no_lang.remove("observation.language.tokens");
    let e = policy
        .predict_chunk(&no_lang, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--task") && e.contains("observation.language.tokens"),
        "{e}"
    );
    // a token id outside the vocabulary
    let mut bad = obs.clone();
    bad.insert(
        "observation.language.tokens".into(),
        Tensor::new(&[[1i64, 99_999]], &Device::Cpu).unwrap(),
    );
    bad.insert(
        "observation.language.attention_mask".into(),
        Tensor::new(&[[1i64, 1]], &Device::Cpu).unwrap(),
    );
    let e = policy.predict_chunk(&bad, None).unwrap_err().to_string();
    assert!(e.contains("vocabulary"), "{e}");
    // noise of the wrong shape, a missing camera
    let mut bad = obs.clone();
    bad.insert(
        "noise".into(),
        Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(policy
        .predict_chunk(&bad, None)
        .unwrap_err()
        .to_string()
        .contains("noise"));
    let mut bad = obs.clone();
    bad.remove("observation.images.head");
    let e = policy.predict_chunk(&bad, None).unwrap_err().to_string();
    assert!(e.contains("observation.images.head"), "{e}");
    // statistics keyed under another name (lerobot #4415): loading fails, naming the feature
    let stats = ckpt.join("policy_preprocessor_step_5_normalizer_processor.safetensors");
    let mut t = candle_core::safetensors::load(&stats, &Device::Cpu).unwrap();
    let renamed: HashMap<String, Tensor> = t
        .drain()
        .map(|(k, v)| {
            (
                k.replace("observation.state", "observation.state_renamed"),
                v,
            )
        })
        .collect();
    candle_core::safetensors::save(&renamed, &stats).unwrap();
    let e = SmolVlaPolicy::load(&ckpt, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("observation.state") && e.contains("4415"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
