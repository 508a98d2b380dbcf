//! Numerical parity with LeRobot's PyTorch SmolVLA: lerobot builds a small SmolVLA with random
//! weights (its SmolVLM backbone configured in the fixture, as no weights can be downloaded),
//! runs its pre-processor → `predict_action_chunk(batch, noise)` → post-processor, and this
//! crate must agree stage by stage — vision features, prefix embeddings, the first denoise
//! step's velocity, the un-normalised chunk (≤ 1e-4) — and the full-size configuration's
//! weight names and shapes against lerobot's own module tree.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use reachy_policies::smolvla::{PositionIds, Stages, VlmConfig, SMOLVLM2_500M};
use reachy_policies::{Policy, SmolVla, SmolVlaConfig, SmolVlaPolicy};

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
        let d = reachy_test_support::max_abs_diff(&st.vision[i], &exp[&format!("vision.{cam}")]);
        eprintln!("{name}: vision.{cam} max diff {d:.2e}");
        assert!(d <= 1e-4, "{name}: vision features of {cam} differ by {d}");
    }
    let d = reachy_test_support::max_abs_diff(&st.prefix, &exp["prefix"]);
    eprintln!("{name}: prefix max diff {d:.2e}");
    assert!(d <= 1e-4, "{name}: prefix embeddings differ by {d}");
    let d = reachy_test_support::max_abs_diff(&st.velocity0, &exp["velocity0"]);
    eprintln!("{name}: velocity0 max diff {d:.2e}");
    assert!(d <= 1e-4, "{name}: first velocity differs by {d}");
    let d = reachy_test_support::max_abs_diff(action, &exp["action"]);
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
        let d = reachy_test_support::max_abs_diff(&by_text, &exp["action"]);
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
        reachy_test_support::max_abs_diff(&exact, &exp["action"]) > 1e-3,
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

/// A weight source that records every tensor the loader asks for (name and shape) and hands
/// back zeros: the loader's contract without the weights.
struct Recorder(Arc<Mutex<Asked>>);

/// Tensor names and shapes, in the order asked.
type Asked = Vec<(String, Vec<usize>)>;

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .push((name.into(), s.dims().to_vec()));
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("the loader asked for `{name}` without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

#[test]
fn smolvla_full_size_weights_are_named_and_shaped_as_lerobots() {
    let dir = std::env::temp_dir().join(format!("reachy-smolvla-contract-{}", std::process::id()));
    // lerobot builds the full-size SmolVLA (SmolVLM2-500M's shapes, 16 VLM layers) on the meta
    // device and lists its state dict; its config.json names the hub backbone as real ones do
    if fixture(&dir, &["--contract", "--cameras", "1"]).is_none() {
        return;
    }
    let ckpt = dir.join("checkpoint");
    let cfg: SmolVlaConfig =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg.vlm_model_name, SMOLVLM2_500M);
    // no backbone files beside it: the known SmolVLM2-500M sizes
    let vlm = VlmConfig::find(&ckpt, &cfg.vlm_model_name).unwrap();
    assert_eq!(vlm.text_config.hidden_size, 960);
    let theirs: BTreeMap<String, Vec<usize>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("names.json")).unwrap()).unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let vb = VarBuilder::from_backend(Box::new(Recorder(asked.clone())), DType::F32, Device::Cpu);
    let model = SmolVla::load(cfg, vlm, vb).unwrap();
    assert_eq!(model.config().chunk_size, 50);
    let asked = asked.lock().unwrap();
    let mut values = 0;
    for (name, shape) in asked.iter() {
        match theirs.get(name) {
            Some(s) => assert_eq!(s, shape, "{name}: lerobot's shape {s:?}, ours {shape:?}"),
            None => panic!("the loader asks for `{name}` {shape:?}, which lerobot does not have"),
        }
        values += shape.iter().product::<usize>();
    }
    // everything else lerobot holds is what inference never reads: the LM head (next-token
    // logits) and the text model's final norm (the prefix only fills the KV cache)
    let unused: Vec<&str> = theirs
        .keys()
        .filter(|k| !asked.iter().any(|(n, _)| n == *k))
        .map(String::as_str)
        .collect();
    assert_eq!(
        unused,
        [
            "model.vlm_with_expert.vlm.lm_head.weight",
            "model.vlm_with_expert.vlm.model.text_model.norm.weight"
        ],
        "lerobot tensors the loader leaves out"
    );
    eprintln!(
        "contract: {} tensors, {:.1} M values loaded",
        asked.len(),
        values as f64 / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}
