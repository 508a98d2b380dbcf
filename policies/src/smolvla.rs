//! SmolVLA, LeRobot's vision-language-action policy, on candle: weight-compatible with
//! lerobot 0.4.x's `SmolVLAPolicy` (`modeling_smolvla.py`, `smolvlm_with_expert.py`) and computing
//! what its `predict_action_chunk` computes.
//!
//! - Vision: the SmolVLM SigLIP encoder (patch embedding, bucketed position ids, pre-norm
//!   layers), the pixel-shuffle connector and the modality projection.
//! - Prefix: image tokens, language tokens (both × √width), one state token; bidirectional among
//!   images and language, the state token sees everything before it. Its keys and values are
//!   computed once per chunk through the first `num_vlm_layers` SmolLM2 layers.
//! - Action expert: a narrower SmolLM2 stack; even layers attend over the cached prefix and the
//!   action tokens (causal among themselves), odd layers cross-attend to the cached prefix keys
//!   and values re-projected by the expert — re-projected once per chunk here, not once per step.
//! - Flow matching: `num_steps` Euler steps from t = 1 to 0.
//!
//! Matching lerobot 0.4.4 with transformers 4.57 as trained: the SigLIP position ids are
//! transformers' fp32 buckets (`[0, 0, 1, …, n−2]` per axis, transformers #41190) unless
//! [`PositionIds::Exact`] is asked for; RoPE is split-half with max wavelength 10 000 in fp32;
//! masks use the dtype's finite minimum; attention runs in f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use crate::features::Io;
use crate::linear::FastLinear as Linear;
use crate::normalize::Normalizer;
use crate::PolicyError;

/// The VLM backbone SmolVLA checkpoints name by default.
pub const SMOLVLM2_500M: &str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct";

/// `config.json` of a LeRobot SmolVLA checkpoint (the fields inference needs).
#[derive(Debug, Clone, Deserialize)]
pub struct SmolVlaConfig {
    /// Policy type; must be `smolvla`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Input and output features, in checkpoint order.
    #[serde(flatten)]
    pub io: Io,
    /// Actions per chunk.
    pub chunk_size: usize,
    /// Actions executed per chunk.
    pub n_action_steps: usize,
    /// State vectors are zero-padded to this size.
    #[serde(default = "d32")]
    pub max_state_dim: usize,
    /// Action vectors are zero-padded to this size.
    #[serde(default = "d32")]
    pub max_action_dim: usize,
    /// Images are resized keeping their aspect and padded to `(width, height)`.
    #[serde(default)]
    pub resize_imgs_with_padding: Option<(usize, usize)>,
    /// Blank cameras added for image features absent from the observation.
    #[serde(default)]
    pub empty_cameras: usize,
    /// Aloha joint-space conversion (not supported).
    #[serde(default)]
    pub adapt_to_pi_aloha: bool,
    /// Tokenizer truncation length.
    #[serde(default = "d48")]
    pub tokenizer_max_length: usize,
    /// Euler steps of the flow-matching sampler.
    #[serde(default = "d10")]
    pub num_steps: usize,
    /// The VLM backbone: a hub name or a local directory.
    #[serde(default = "vlm_name")]
    pub vlm_model_name: String,
    /// Special tokens around image features (not supported).
    #[serde(default)]
    pub add_image_special_tokens: bool,
    /// `cross_attn` (interleaved) or `self_attn`.
    #[serde(default = "cross")]
    pub attention_mode: String,
    /// Prefix padding length (≤ 0: none).
    #[serde(default = "minus1")]
    pub prefix_length: i64,
    /// `longest` or `max_length`.
    #[serde(default = "longest")]
    pub pad_language_to: String,
    /// Expert depth (≤ 0: the VLM's).
    #[serde(default = "minus1")]
    pub num_expert_layers: i64,
    /// VLM layers kept.
    #[serde(default = "d16i")]
    pub num_vlm_layers: i64,
    /// Every n-th expert layer attends jointly; the others cross-attend.
    #[serde(default = "d2i")]
    pub self_attn_every_n_layers: i64,
    /// Expert width relative to the VLM's.
    #[serde(default = "p75")]
    pub expert_width_multiplier: f64,
    /// Time embedding's shortest period.
    #[serde(default = "min_period")]
    pub min_period: f64,
    /// Time embedding's longest period.
    #[serde(default = "max_period")]
    pub max_period: f64,
}

fn d32() -> usize {
    32
}
fn d48() -> usize {
    48
}
fn d10() -> usize {
    10
}
fn d16i() -> i64 {
    16
}
fn d2i() -> i64 {
    2
}
fn minus1() -> i64 {
    -1
}
fn p75() -> f64 {
    0.75
}
fn min_period() -> f64 {
    4e-3
}
fn max_period() -> f64 {
    4.0
}
fn vlm_name() -> String {
    SMOLVLM2_500M.into()
}
fn cross() -> String {
    "cross_attn".into()
}
fn longest() -> String {
    "longest".into()
}

/// The SigLIP encoder's sizes (`vision_config` of the backbone).
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Depth.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Patch side (px).
    pub patch_size: usize,
    /// Image side the position table covers (px).
    pub image_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "eps6")]
    pub layer_norm_eps: f64,
    /// `gelu_pytorch_tanh` or `gelu`.
    #[serde(default = "gelu_tanh")]
    pub hidden_act: String,
}

/// The SmolLM2 decoder's sizes (`text_config` of the backbone).
#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Depth (before SmolVLA keeps the first `num_vlm_layers`).
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: Option<usize>,
    /// Head width (default width / heads).
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "eps5")]
    pub rms_norm_eps: f64,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Bias in the attention projections.
    #[serde(default)]
    pub attention_bias: bool,
}

impl TextConfig {
    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

/// The backbone's `config.json` (a SmolVLM / Idefics3 configuration).
#[derive(Debug, Clone, Deserialize)]
pub struct VlmConfig {
    /// SigLIP.
    pub vision_config: VisionConfig,
    /// SmolLM2.
    pub text_config: TextConfig,
    /// Pixel-shuffle factor of the connector.
    #[serde(default = "d2u")]
    pub scale_factor: usize,
}

fn eps6() -> f64 {
    1e-6
}
fn eps5() -> f64 {
    1e-5
}
fn d2u() -> usize {
    2
}
fn gelu_tanh() -> String {
    "gelu_pytorch_tanh".into()
}

impl VlmConfig {
    /// SmolVLM2-500M's sizes (what `HuggingFaceTB/SmolVLM2-500M-Video-Instruct` declares).
    pub fn smolvlm2_500m() -> Self {
        Self {
            vision_config: VisionConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                patch_size: 16,
                image_size: 512,
                layer_norm_eps: 1e-6,
                hidden_act: gelu_tanh(),
            },
            text_config: TextConfig {
                hidden_size: 960,
                intermediate_size: 2560,
                num_hidden_layers: 32,
                num_attention_heads: 15,
                num_key_value_heads: Some(5),
                head_dim: Some(64),
                rms_norm_eps: 1e-5,
                vocab_size: 49280,
                attention_bias: false,
            },
            scale_factor: 4,
        }
    }
}

/// How the SigLIP patch position ids are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PositionIds {
    /// As transformers 4.55–4.57 computes them (fp32 buckets `[0, 0, 1, …, n−2]` per axis):
    /// what lerobot 0.4.4 checkpoints were trained and evaluated with.
    #[default]
    Lerobot,
    /// `0 … n−1` per axis (transformers before 4.55, and after the fix of #41190).
    Exact,
}

/// Places the backbone's files may be: `vlm_config.json` / `tokenizer.json` beside the
/// checkpoint, the `vlm_model_name` directory, the Hugging Face hub cache.
fn backbone_dirs(ckpt: &Path, vlm_model_name: &str) -> Vec<PathBuf> {
    let mut dirs = vec![ckpt.to_path_buf()];
    let local = PathBuf::from(vlm_model_name);
    if local.is_dir() {
        dirs.push(local);
    }
    let cache = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
        });
    if let Some(cache) = cache {
        let snaps = cache
            .join(format!("models--{}", vlm_model_name.replace('/', "--")))
            .join("snapshots");
        if let Ok(rd) = std::fs::read_dir(&snaps) {
            dirs.extend(rd.flatten().map(|e| e.path()));
        }
    }
    dirs
}

impl VlmConfig {
    /// The backbone's configuration for a checkpoint: `ckpt/vlm_config.json`, else the
    /// `config.json` of the `vlm_model_name` directory (or its hub-cache snapshot), else
    /// SmolVLM2-500M's known sizes when that is the backbone named.
    pub fn find(ckpt: &Path, vlm_model_name: &str) -> Result<Self, PolicyError> {
        for (i, dir) in backbone_dirs(ckpt, vlm_model_name).iter().enumerate() {
            let path = dir.join(if i == 0 {
                "vlm_config.json"
            } else {
                "config.json"
            });
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, e))?;
                return serde_json::from_str(&text)
                    .map_err(|e| PolicyError::Format(format!("{}: {e}", path.display())));
            }
        }
        if vlm_model_name == SMOLVLM2_500M {
            return Ok(Self::smolvlm2_500m());
        }
        Err(PolicyError::Format(format!(
            "the checkpoint's backbone `{vlm_model_name}` has no configuration here: put its \
             config.json beside the checkpoint as vlm_config.json"
        )))
    }
}

/// A linear layer with the shape the configuration implies checked against the weights.
fn linear_sized(
    vb: &VarBuilder,
    name: &str,
    (inp, out): (usize, usize),
    bias: bool,
) -> Result<Linear, PolicyError> {
    let vb = vb.pp(name);
    let w = vb.get((out, inp), "weight")?;
    let b = if bias {
        Some(vb.get(out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b)?)
}

fn layer_norm(vb: &VarBuilder, name: &str, dim: usize, eps: f64) -> Result<LayerNorm, PolicyError> {
    let vb = vb.pp(name);
    Ok(LayerNorm::new(
        vb.get(dim, "weight")?,
        vb.get(dim, "bias")?,
        eps,
    ))
}

/// Scaled dot-product attention as lerobot's `eager_attention_forward`: grouped KV heads (query
/// head h reads KV head h / (heads / kv_heads)), scores ·head_dim^−½, an additive mask of 0 or
/// the f32 minimum, softmax in f32. `q` [B, H, Lq, D], `k`/`v` [B, KVH, Lk, D], `mask`
/// [Lq, Lk] or `None`; returns [B, Lq, H·D] in `v`'s dtype.
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor, PolicyError> {
    let (b, h, lq, d) = q.dims4()?;
    let kvh = k.dim(1)?;
    let lk = k.dim(2)?;
    let g = h / kvh;
    let dtype = v.dtype();
    let scale = (d as f64).powf(-0.5);
    if let Some(o) = crate::linear::attention_tensors(q, k, v, mask, scale as f32)? {
        return Ok(o);
    }
    let q = q.to_dtype(DType::F32)?.reshape((b, kvh, g * lq, d))?;
    let kt = k.to_dtype(DType::F32)?.transpose(2, 3)?.contiguous()?;
    let s = (q.matmul(&kt)? * scale)?.reshape((b, h, lq, lk))?;
    let s = match mask {
        Some(m) => s.broadcast_add(m)?,
        None => s,
    };
    let p = candle_nn::ops::softmax_last_dim(&s)?
        .to_dtype(dtype)?
        .reshape((b, kvh, g * lq, lk))?;
    let o = p.matmul(&v.contiguous()?)?.reshape((b, h, lq, d))?;
    Ok(o.transpose(1, 2)?.reshape((b, lq, h * d))?)
}

/// Additive mask from a boolean one: 0 where allowed, f32's minimum elsewhere (never −inf, so
/// a fully masked row gives a uniform softmax, not NaN — as lerobot does).
fn additive_mask(
    allowed: &[bool],
    rows: usize,
    cols: usize,
    dev: &Device,
) -> Result<Tensor, PolicyError> {
    let v: Vec<f32> = allowed
        .iter()
        .map(|&a| if a { 0.0 } else { f32::MIN })
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), dev)?)
}

/// RoPE tables as lerobot's `apply_rope` computes them in fp32: `cos`/`sin` [L, D/2] of
/// `position / 10000^(2i/D)`.
fn rope_tables(
    positions: &[f32],
    head_dim: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor), PolicyError> {
    let half = head_dim / 2;
    let e = 2.0f32 / head_dim as f32;
    let timescale: Vec<f32> = (0..half).map(|i| 10_000f32.powf(e * i as f32)).collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for t in &timescale {
            let r = p / t;
            cos.push(r.cos());
            sin.push(r.sin());
        }
    }
    let l = positions.len();
    Ok((
        Tensor::from_vec(cos, (l, half), dev)?,
        Tensor::from_vec(sin, (l, half), dev)?,
    ))
}

/// Rotate `x` [B, H, L, D] (split-half), computing in f32.
fn rope(x: &Tensor, (cos, sin): &(Tensor, Tensor)) -> Result<Tensor, PolicyError> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    Ok(candle_nn::rotary_emb::rope(&x, cos, sin)?.to_dtype(dtype)?)
}

struct VisionLayer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// SigLIP encoder + pixel-shuffle connector + modality projection.
struct Vision {
    patch: Linear,
    pos: Tensor,
    layers: Vec<VisionLayer>,
    post_ln: LayerNorm,
    proj: Linear,
    cfg: VisionConfig,
    scale_factor: usize,
    exact_gelu: bool,
}

impl Vision {
    fn load(vb: &VarBuilder, cfg: &VlmConfig) -> Result<Self, PolicyError> {
        let c = cfg.vision_config.clone();
        let w = c.hidden_size;
        let vm = vb.pp("vision_model");
        let pe = vm.pp("embeddings").pp("patch_embedding");
        let pw = pe
            .get((w, 3, c.patch_size, c.patch_size), "weight")?
            .reshape((w, 3 * c.patch_size * c.patch_size))?;
        let patch = Linear::new(pw, Some(pe.get(w, "bias")?))?;
        let per_side = c.image_size / c.patch_size;
        let pos = vm
            .pp("embeddings")
            .pp("position_embedding")
            .get((per_side * per_side, w), "weight")?;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let l = vm.pp("encoder").pp("layers").pp(i);
            let a = l.pp("self_attn");
            layers.push(VisionLayer {
                ln1: layer_norm(&l, "layer_norm1", w, c.layer_norm_eps)?,
                q: linear_sized(&a, "q_proj", (w, w), true)?,
                k: linear_sized(&a, "k_proj", (w, w), true)?,
                v: linear_sized(&a, "v_proj", (w, w), true)?,
                out: linear_sized(&a, "out_proj", (w, w), true)?,
                ln2: layer_norm(&l, "layer_norm2", w, c.layer_norm_eps)?,
                fc1: linear_sized(&l.pp("mlp"), "fc1", (w, c.intermediate_size), true)?,
                fc2: linear_sized(&l.pp("mlp"), "fc2", (c.intermediate_size, w), true)?,
            });
        }
        let post_ln = layer_norm(&vm, "post_layernorm", w, c.layer_norm_eps)?;
        let sf = cfg.scale_factor;
        let proj = linear_sized(
            &vb.pp("connector").pp("modality_projection"),
            "proj",
            (w * sf * sf, cfg.text_config.hidden_size),
            false,
        )?;
        let exact_gelu = match c.hidden_act.as_str() {
            "gelu_pytorch_tanh" => false,
            "gelu" => true,
            a => return Err(PolicyError::Unsupported(format!("vision activation `{a}`"))),
        };
        Ok(Self {
            patch,
            pos,
            layers,
            post_ln,
            proj,
            cfg: c,
            scale_factor: sf,
            exact_gelu,
        })
    }

    /// Position ids of an `nh × nw` patch grid, as transformers' `SmolVLMVisionEmbeddings`.
    fn position_ids(&self, nh: usize, nw: usize, mode: PositionIds) -> Vec<u32> {
        let n = self.cfg.image_size / self.cfg.patch_size;
        let buckets = |count: usize| -> Vec<u32> {
            match mode {
                PositionIds::Exact => (0..count as u32).collect(),
                PositionIds::Lerobot => {
                    // torch.arange(1/n, 1.0, 1/n) in f32 (computed in f64, as torch does)
                    let step = 1.0 / n as f64;
                    let len = ((1.0 - step) / step).ceil() as usize;
                    let bounds: Vec<f32> =
                        (0..len).map(|i| (step + i as f64 * step) as f32).collect();
                    let shrink = (1.0 - 1e-6) as f32;
                    (0..count)
                        .map(|i| {
                            let x = (i as f32 / count as f32) * shrink;
                            // bucketize(right=True): how many boundaries are <= x
                            bounds.iter().filter(|&&b| b <= x).count() as u32
                        })
                        .collect()
                }
            }
        };
        let (bh, bw) = (buckets(nh), buckets(nw));
        let mut ids = Vec::with_capacity(nh * nw);
        for h in &bh {
            for w in &bw {
                ids.push(h * n as u32 + w);
            }
        }
        ids
    }

    /// `img` [B, 3, S, S] in [−1, 1] → image tokens [B, (S/patch)²/scale², text width].
    fn forward(&self, img: &Tensor, mode: PositionIds) -> Result<Tensor, PolicyError> {
        let (b, c, h, w) = img.dims4()?;
        let p = self.cfg.patch_size;
        let (nh, nw) = (h / p, w / p);
        let x = img
            .narrow(2, 0, nh * p)?
            .narrow(3, 0, nw * p)?
            .reshape((b, c, nh, p, nw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, nh * nw, c * p * p))?;
        let x = self.patch.forward(&x)?;
        let ids = Tensor::new(self.position_ids(nh, nw, mode), img.device())?;
        let mut x = x.broadcast_add(&self.pos.index_select(&ids, 0)?)?;
        let heads = self.cfg.num_attention_heads;
        let width = self.cfg.hidden_size;
        let hd = width / heads;
        let n = nh * nw;
        for l in &self.layers {
            let y = l.ln1.forward(&x)?;
            let split = |t: Tensor| -> Result<Tensor, PolicyError> {
                Ok(t.reshape((b, n, heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = split(l.q.forward(&y)?)?;
            let k = split(l.k.forward(&y)?)?;
            let v = split(l.v.forward(&y)?)?;
            let a = attention(&q, &k, &v, None)?;
            x = (x + l.out.forward(&a)?)?;
            let y = l.fc1.forward(&l.ln2.forward(&x)?)?;
            let y = if self.exact_gelu {
                y.gelu_erf()?
            } else {
                crate::linear::gelu_tanh(&y)?
            };
            x = (x + l.fc2.forward(&y)?)?;
        }
        let x = self.post_ln.forward(&x)?;
        // the connector's pixel shuffle, step by step as transformers writes it
        let sf = self.scale_factor;
        let side = (n as f64).sqrt() as usize;
        if side * side != n || !side.is_multiple_of(sf) {
            return Err(PolicyError::Input(format!(
                "{nh}×{nw} patches cannot be pixel-shuffled by {sf}: images must be square \
                 multiples of {} px",
                p * sf
            )));
        }
        let e = width;
        let x = x
            .reshape((b, side, side / sf, e * sf))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b, side / sf, side / sf, e * sf * sf))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b, n / (sf * sf), e * sf * sf))?;
        Ok(self.proj.forward(&x)?)
    }
}

/// One SmolLM2 (Llama) decoder layer.
struct Decoder {
    input_ln: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_ln: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    eps: f32,
}

impl Decoder {
    fn load(
        vb: &VarBuilder,
        width: usize,
        ff: usize,
        (heads, kv_heads, hd): (usize, usize, usize),
        kv_in: usize,
        cfg: &TextConfig,
    ) -> Result<Self, PolicyError> {
        let a = vb.pp("self_attn");
        let bias = cfg.attention_bias;
        let m = vb.pp("mlp");
        Ok(Self {
            input_ln: vb.pp("input_layernorm").get(width, "weight")?,
            q: linear_sized(&a, "q_proj", (width, heads * hd), bias)?,
            k: linear_sized(&a, "k_proj", (kv_in, kv_heads * hd), bias)?,
            v: linear_sized(&a, "v_proj", (kv_in, kv_heads * hd), bias)?,
            o: linear_sized(&a, "o_proj", (heads * hd, width), false)?,
            post_ln: vb.pp("post_attention_layernorm").get(width, "weight")?,
            gate: linear_sized(&m, "gate_proj", (width, ff), false)?,
            up: linear_sized(&m, "up_proj", (width, ff), false)?,
            down: linear_sized(&m, "down_proj", (ff, width), false)?,
            eps: cfg.rms_norm_eps as f32,
        })
    }

    fn norm1(&self, x: &Tensor) -> Result<Tensor, PolicyError> {
        rms(x, &self.input_ln, self.eps)
    }

    /// `x + o(att)`, then the MLP block with its residual.
    fn finish(&self, x: &Tensor, att: &Tensor) -> Result<Tensor, PolicyError> {
        let x = (x + self.o.forward(att)?)?;
        let y = rms(&x, &self.post_ln, self.eps)?;
        let y = (self.gate.forward(&y)?.silu()? * self.up.forward(&y)?)?;
        Ok((&x + self.down.forward(&y)?)?)
    }
}

/// RMSNorm in f32, as transformers' `LlamaRMSNorm`.
fn rms(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor, PolicyError> {
    let dtype = x.dtype();
    let y = candle_nn::ops::rms_norm(&x.to_dtype(DType::F32)?, &w.to_dtype(DType::F32)?, eps)?;
    Ok(y.to_dtype(dtype)?)
}

/// Split a projection [B, L, H·D] into heads [B, H, L, D].
fn heads(t: &Tensor, h: usize, d: usize) -> Result<Tensor, PolicyError> {
    let (b, l, _) = t.dims3()?;
    Ok(t.reshape((b, l, h, d))?.transpose(1, 2)?.contiguous()?)
}

/// The model: vision, the VLM's first layers, the action expert and SmolVLA's projections.
pub struct SmolVla {
    cfg: SmolVlaConfig,
    vlm: VlmConfig,
    vision: Vision,
    embed: Embedding,
    text: Vec<Decoder>,
    expert: Vec<Decoder>,
    expert_norm: Tensor,
    state_proj: Linear,
    action_in: Linear,
    action_out: Linear,
    time_in: Linear,
    time_out: Linear,
    expert_width: usize,
    dtype: DType,
    device: Device,
    /// SigLIP position ids (default: as lerobot 0.4.4 with transformers 4.57).
    pub position_ids: PositionIds,
}

/// The expert's MLP width as lerobot's `get_intermediate_size` computes it.
fn expert_intermediate(width: usize) -> usize {
    let h = (2 * width) / 3;
    let h = 4 * h;
    256 * h.div_ceil(256)
}

/// The prefix a chunk is conditioned on: per-layer keys and values, and what the denoise steps
/// need about it.
struct Prefix {
    /// Per VLM layer: RoPE'd keys and values [B, KVH, Lp, D]; for cross-attending expert layers,
    /// the expert's re-projections instead.
    kv: Vec<(Tensor, Tensor)>,
    pad: Vec<bool>,
    valid: usize,
}

/// Intermediate results of one prediction, for parity checks.
pub struct Stages {
    /// Connector output per camera [1, tokens, width] (before the √width scale).
    pub vision: Vec<Tensor>,
    /// Prefix embeddings [1, Lp, width].
    pub prefix: Tensor,
    /// The first denoise step's velocity [1, chunk, max_action_dim].
    pub velocity0: Tensor,
    /// The final x₀ [1, chunk, max_action_dim] (normalised, padded).
    pub x0: Tensor,
}

impl SmolVla {
    /// Build from a checkpoint's weights (`vb` at the file's root).
    pub fn load(cfg: SmolVlaConfig, vlm: VlmConfig, vb: VarBuilder) -> Result<Self, PolicyError> {
        if cfg.adapt_to_pi_aloha {
            return Err(PolicyError::Unsupported(
                "adapt_to_pi_aloha (Aloha joint-space conversion)".into(),
            ));
        }
        if cfg.add_image_special_tokens {
            return Err(PolicyError::Unsupported("add_image_special_tokens".into()));
        }
        if cfg.prefix_length > 0 {
            return Err(PolicyError::Unsupported("prefix_length > 0".into()));
        }
        let t = &vlm.text_config;
        let n_vlm = if cfg.num_vlm_layers > 0 {
            (cfg.num_vlm_layers as usize).min(t.num_hidden_layers)
        } else {
            t.num_hidden_layers
        };
        if cfg.num_expert_layers > 0 && cfg.num_expert_layers as usize != n_vlm {
            return Err(PolicyError::Unsupported(format!(
                "an expert of {} layers beside {n_vlm} VLM layers",
                cfg.num_expert_layers
            )));
        }
        let cross = match cfg.attention_mode.as_str() {
            "cross_attn" => true,
            "self_attn" => false,
            m => return Err(PolicyError::Unsupported(format!("attention_mode `{m}`"))),
        };
        let m = vb.pp("model");
        let vwe = m.pp("vlm_with_expert");
        let vm = vwe.pp("vlm").pp("model");
        let vision = Vision::load(&vm, &vlm)?;
        let w = t.hidden_size;
        let embed = Embedding::new(
            vm.pp("text_model")
                .pp("embed_tokens")
                .get((t.vocab_size, w), "weight")?,
            w,
        );
        let hd = t.head_dim();
        let shape = (t.num_attention_heads, t.kv_heads(), hd);
        let text = (0..n_vlm)
            .map(|i| {
                Decoder::load(
                    &vm.pp("text_model").pp("layers").pp(i),
                    w,
                    t.intermediate_size,
                    shape,
                    w,
                    t,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ew = (w as f64 * cfg.expert_width_multiplier) as usize;
        let eff = expert_intermediate(ew);
        let every = cfg.self_attn_every_n_layers;
        let expert = (0..n_vlm)
            .map(|i| {
                let is_cross = cross && !(every > 0 && i as i64 % every == 0);
                let kv_in = if is_cross { t.kv_heads() * hd } else { ew };
                Decoder::load(
                    &vwe.pp("lm_expert").pp("layers").pp(i),
                    ew,
                    eff,
                    shape,
                    kv_in,
                    t,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expert_norm = vwe.pp("lm_expert").pp("norm").get(ew, "weight")?;
        let (sd, ad) = (cfg.max_state_dim, cfg.max_action_dim);
        Ok(Self {
            state_proj: linear_sized(&m, "state_proj", (sd, w), true)?,
            action_in: linear_sized(&m, "action_in_proj", (ad, ew), true)?,
            action_out: linear_sized(&m, "action_out_proj", (ew, ad), true)?,
            time_in: linear_sized(&m, "action_time_mlp_in", (2 * ew, ew), true)?,
            time_out: linear_sized(&m, "action_time_mlp_out", (ew, ew), true)?,
            expert_norm,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            cfg,
            vlm,
            vision,
            embed,
            text,
            expert,
            expert_width: ew,
            position_ids: PositionIds::default(),
        })
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &SmolVlaConfig {
        &self.cfg
    }

    /// The backbone's configuration in use.
    pub fn vlm_config(&self) -> &VlmConfig {
        &self.vlm
    }

    fn is_cross(&self, layer: usize) -> bool {
        let every = self.cfg.self_attn_every_n_layers;
        self.cfg.attention_mode == "cross_attn" && !(every > 0 && layer as i64 % every == 0)
    }

    /// Image [1, 3, S, S] in [−1, 1] → connector output [1, tokens, width].
    pub fn embed_image(&self, img: &Tensor) -> Result<Tensor, PolicyError> {
        self.vision
            .forward(&img.to_dtype(self.dtype)?, self.position_ids)
    }

    /// Prefix embeddings with their pad mask and attention-block mask (`true`: starts a block).
    fn embed_prefix(
        &self,
        images: &[(Tensor, bool)],
        tokens: &[u32],
        lang_mask: &[bool],
        state: &Tensor,
        vision_out: &mut Vec<Tensor>,
    ) -> Result<(Tensor, Vec<bool>, Vec<bool>), PolicyError> {
        let w = self.vlm.text_config.hidden_size;
        let scale = (w as f64).sqrt();
        let mut embs = Vec::new();
        let mut pad = Vec::new();
        let mut blocks = Vec::new();
        for (img, present) in images {
            let e = self.embed_image(img)?;
            vision_out.push(e.clone());
            let n = e.dim(1)?;
            embs.push((e * (scale as f32) as f64)?);
            pad.extend(std::iter::repeat_n(*present, n));
            blocks.extend(std::iter::repeat_n(false, n));
        }
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        embs.push((self.embed.forward(&ids)? * scale)?);
        pad.extend_from_slice(lang_mask);
        blocks.extend(std::iter::repeat_n(false, tokens.len()));
        embs.push(
            self.state_proj
                .forward(&state.to_dtype(self.dtype)?)?
                .unsqueeze(1)?,
        );
        pad.push(true);
        blocks.push(true);
        Ok((Tensor::cat(&embs, 1)?, pad, blocks))
    }

    /// Run the prefix through the VLM layers, keeping each layer's keys and values; re-project
    /// them for the cross-attending expert layers.
    fn fill_cache(&self, x: Tensor, pad: &[bool], blocks: &[bool]) -> Result<Prefix, PolicyError> {
        let t = &self.vlm.text_config;
        let (h, kvh, hd) = (t.num_attention_heads, t.kv_heads(), t.head_dim());
        let lp = pad.len();
        // make_att_2d_masks: j visible from i if cumsum(blocks)[j] <= cumsum(blocks)[i], both valid
        let mut cum = Vec::with_capacity(lp);
        let mut c = 0u32;
        for &b in blocks {
            c += b as u32;
            cum.push(c);
        }
        let mut allowed = Vec::with_capacity(lp * lp);
        for i in 0..lp {
            for j in 0..lp {
                allowed.push(cum[j] <= cum[i] && pad[i] && pad[j]);
            }
        }
        let mask = additive_mask(&allowed, lp, lp, &self.device)?;
        let mut p = 0i64;
        let positions: Vec<f32> = pad
            .iter()
            .map(|&v| {
                p += v as i64;
                (p - 1) as f32
            })
            .collect();
        let tables = rope_tables(&positions, hd, &self.device)?;
        let mut x = x;
        let mut kv = Vec::with_capacity(self.text.len());
        let last = self.text.len().saturating_sub(1);
        for (l, layer) in self.text.iter().enumerate() {
            let y = layer.norm1(&x)?;
            let k = rope(&heads(&layer.k.forward(&y)?, kvh, hd)?, &tables)?;
            let v = heads(&layer.v.forward(&y)?, kvh, hd)?;
            if l < last {
                let q = rope(&heads(&layer.q.forward(&y)?, h, hd)?, &tables)?;
                let a = attention(&q, &k, &v, Some(&mask))?;
                x = layer.finish(&x, &a)?;
            }
            kv.push((k, v));
        }
        // the expert's cross-attending layers project the cached keys/values once per chunk
        for (l, e) in self.expert.iter().enumerate() {
            if self.is_cross(l) {
                let (k, v) = &kv[l];
                let flat = |t: &Tensor| -> Result<Tensor, PolicyError> {
                    let (b, _, n, _) = t.dims4()?;
                    Ok(t.transpose(1, 2)?.reshape((b, n, kvh * hd))?)
                };
                let ek = heads(&e.k.forward(&flat(k)?)?, kvh, hd)?;
                let ev = heads(&e.v.forward(&flat(v)?)?, kvh, hd)?;
                kv[l] = (ek, ev);
            }
        }
        Ok(Prefix {
            kv,
            valid: pad.iter().filter(|&&v| v).count(),
            pad: pad.to_vec(),
        })
    }

    /// Sinusoidal time embedding [1, width] as lerobot computes it (f64, then the model dtype).
    fn time_embedding(&self, t: f32) -> Result<Tensor, PolicyError> {
        let half = self.expert_width / 2;
        let (lo, hi) = (self.cfg.min_period, self.cfg.max_period);
        let step = if half > 1 {
            1.0 / (half - 1) as f64
        } else {
            0.0
        };
        // torch.linspace fills from both ends
        let fraction = |i: usize| {
            if i < half / 2 {
                i as f64 * step
            } else {
                1.0 - (half - 1 - i) as f64 * step
            }
        };
        let t = t as f64;
        let mut v = vec![0f32; 2 * half];
        for i in 0..half {
            let period = lo * (hi / lo).powf(fraction(i));
            let x = 1.0 / period * 2.0 * std::f64::consts::PI * t;
            v[i] = x.sin() as f32;
            v[half + i] = x.cos() as f32;
        }
        Ok(Tensor::from_vec(v, (1, 2 * half), &self.device)?.to_dtype(self.dtype)?)
    }

    /// One denoise step: the velocity [1, chunk, max_action_dim] at `x_t`, time `t`.
    fn denoise_step(
        &self,
        prefix: &Prefix,
        tables: &(Tensor, Tensor),
        cross_tables: &(Tensor, Tensor),
        masks: &(Tensor, Tensor),
        x_t: &Tensor,
        t: f32,
    ) -> Result<Tensor, PolicyError> {
        let tc = &self.vlm.text_config;
        let (h, kvh, hd) = (tc.num_attention_heads, tc.kv_heads(), tc.head_dim());
        let a = self.action_in.forward(&x_t.to_dtype(self.dtype)?)?;
        let (b, c, ew) = a.dims3()?;
        let te = self
            .time_embedding(t)?
            .unsqueeze(1)?
            .broadcast_as((b, c, ew))?;
        let at = Tensor::cat(&[&a, &te], 2)?;
        let mut x = self.time_out.forward(&self.time_in.forward(&at)?.silu()?)?;
        for (l, layer) in self.expert.iter().enumerate() {
            let y = layer.norm1(&x)?;
            let (k, v) = &prefix.kv[l];
            let att = if self.is_cross(l) {
                let q = rope(&heads(&layer.q.forward(&y)?, h, hd)?, cross_tables)?;
                attention(&q, k, v, Some(&masks.1))?
            } else {
                let q = rope(&heads(&layer.q.forward(&y)?, h, hd)?, tables)?;
                let ks = rope(&heads(&layer.k.forward(&y)?, kvh, hd)?, tables)?;
                let vs = heads(&layer.v.forward(&y)?, kvh, hd)?;
                let kk = Tensor::cat(&[k, &ks], 2)?;
                let vv = Tensor::cat(&[v, &vs], 2)?;
                attention(&q, &kk, &vv, Some(&masks.0))?
            };
            x = layer.finish(&x, &att)?;
        }
        let x = rms(&x, &self.expert_norm, tc.rms_norm_eps as f32)?;
        Ok(self.action_out.forward(&x)?)
    }

    /// Flow-matching sampling: images (each [1, 3, S, S] in [−1, 1], with whether it is a real
    /// camera), language token ids and mask, the normalised state padded to `max_state_dim`
    /// [1, max_state_dim], and the initial noise [1, chunk, max_action_dim]. Returns the stages.
    pub fn sample(
        &self,
        images: &[(Tensor, bool)],
        tokens: &[u32],
        lang_mask: &[bool],
        state: &Tensor,
        noise: &Tensor,
    ) -> Result<Stages, PolicyError> {
        let mut vision = Vec::new();
        let (prefix_embs, pad, blocks) =
            self.embed_prefix(images, tokens, lang_mask, state, &mut vision)?;
        let prefix = self.fill_cache(prefix_embs.clone(), &pad, &blocks)?;
        let chunk = self.cfg.chunk_size;
        let hd = self.vlm.text_config.head_dim();
        let lp = prefix.pad.len();
        // suffix positions continue after the valid prefix tokens; cross layers' queries at 0…
        let pos: Vec<f32> = (0..chunk).map(|i| (prefix.valid + i) as f32).collect();
        let tables = rope_tables(&pos, hd, &self.device)?;
        let pos0: Vec<f32> = (0..chunk).map(|i| i as f32).collect();
        let cross_tables = rope_tables(&pos0, hd, &self.device)?;
        let mut self_allowed = Vec::with_capacity(chunk * (lp + chunk));
        for i in 0..chunk {
            self_allowed.extend_from_slice(&prefix.pad);
            self_allowed.extend((0..chunk).map(|j| j <= i));
        }
        let cross_allowed: Vec<bool> = (0..chunk)
            .flat_map(|_| prefix.pad.iter().copied())
            .collect();
        let masks = (
            additive_mask(&self_allowed, chunk, lp + chunk, &self.device)?,
            additive_mask(&cross_allowed, chunk, lp, &self.device)?,
        );
        let steps = self.cfg.num_steps.max(1);
        let dt = -1.0 / steps as f64;
        let mut x_t = noise.to_device(&self.device)?.to_dtype(DType::F32)?;
        let mut velocity0 = None;
        for step in 0..steps {
            let t = (1.0 + step as f64 * dt) as f32;
            let v = self
                .denoise_step(&prefix, &tables, &cross_tables, &masks, &x_t, t)?
                .to_dtype(DType::F32)?;
            x_t = (x_t + (v.clone() * (dt as f32) as f64)?)?;
            velocity0.get_or_insert(v);
        }
        Ok(Stages {
            vision,
            prefix: prefix_embs,
            velocity0: velocity0.expect("at least one step"),
            x0: x_t,
        })
    }
}

/// `resize_with_pad` of lerobot's SmolVLA on one image `[3, h, w]` (row-major f32): resize
/// keeping the aspect (ratio = max(w/W, h/H), sizes truncated), bilinear with
/// align_corners=False and no antialias, then zero padding on the left and top to `W × H`.
pub fn resize_with_pad(src: &[f32], h: usize, w: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    let ratio = (w as f64 / out_w as f64).max(h as f64 / out_h as f64);
    let rh = (h as f64 / ratio) as usize;
    let rw = (w as f64 / ratio) as usize;
    let (rh, rw) = (rh.min(out_h), rw.min(out_w));
    let (ph, pw) = (out_h - rh, out_w - rw);
    // torch's upsample_bilinear2d source indices and weights (f32 arithmetic)
    let axis = |inp: usize, out: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(inp - 1);
                let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
                let l1 = (s - i0 as f32).clamp(0.0, 1.0);
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let (ay, ax) = (axis(h, rh), axis(w, rw));
    let mut out = vec![0f32; 3 * out_h * out_w];
    for c in 0..3 {
        let plane = &src[c * h * w..(c + 1) * h * w];
        for (y, &(y0, y1, wy0, wy1)) in ay.iter().enumerate() {
            for (x, &(x0, x1, wx0, wx1)) in ax.iter().enumerate() {
                let v = wy0 * (wx0 * plane[y0 * w + x0] + wx1 * plane[y0 * w + x1])
                    + wy1 * (wx0 * plane[y1 * w + x0] + wx1 * plane[y1 * w + x1]);
                out[(c * out_h + ph + y) * out_w + pw + x] = v;
            }
        }
    }
    out
}

/// Language tokens for a task text, as lerobot's SmolVLA pre-processor makes them: a newline
/// appended, the checkpoint's tokenizer (`tokenizer.json`) with its special tokens, truncated to
/// `tokenizer_max_length`, padded on the right (`max_length`) or not (`longest`, one prompt).
pub struct TaskTokenizer {
    tok: tokenizers::Tokenizer,
    pad_id: Option<u32>,
    max_len: usize,
    pad_to_max: bool,
}

impl TaskTokenizer {
    /// Find `tokenizer.json` beside the checkpoint, in the backbone directory or its hub-cache
    /// snapshot.
    pub fn find(ckpt: &Path, cfg: &SmolVlaConfig) -> Result<Self, PolicyError> {
        let dir = backbone_dirs(ckpt, &cfg.vlm_model_name)
            .into_iter()
            .find(|d| d.join("tokenizer.json").is_file())
            .ok_or_else(|| {
                PolicyError::Format(format!(
                    "no tokenizer.json for `{}` beside the checkpoint or in its backbone \
                     directory: copy the backbone's tokenizer.json into {}, or give the tokens \
                     in the observation (observation.language.tokens / .attention_mask)",
                    cfg.vlm_model_name,
                    ckpt.display()
                ))
            })?;
        Self::load(&dir, cfg)
    }

    /// Load `dir/tokenizer.json` (and the pad token from `dir/tokenizer_config.json`).
    pub fn load(dir: &Path, cfg: &SmolVlaConfig) -> Result<Self, PolicyError> {
        let path = dir.join("tokenizer.json");
        let tok = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| PolicyError::Format(format!("{}: {e}", path.display())))?;
        let pad_token = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| match &v["pad_token"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
                _ => None,
            });
        let pad_id = pad_token
            .and_then(|t| tok.token_to_id(&t))
            .or_else(|| tok.get_padding().map(|p| p.pad_id));
        let pad_to_max = match cfg.pad_language_to.as_str() {
            "longest" => false,
            "max_length" => true,
            p => return Err(PolicyError::Unsupported(format!("pad_language_to `{p}`"))),
        };
        Ok(Self {
            tok,
            pad_id,
            max_len: cfg.tokenizer_max_length,
            pad_to_max,
        })
    }

    /// Token ids and attention mask for `task`.
    pub fn encode(&self, task: &str) -> Result<(Vec<u32>, Vec<bool>), PolicyError> {
        let text = if task.ends_with('\n') {
            task.to_string()
        } else {
            format!("{task}\n")
        };
        let enc = self
            .tok
            .encode(text, true)
            .map_err(|e| PolicyError::Input(format!("tokenizing the task: {e}")))?;
        let mut ids: Vec<u32> = enc.get_ids().to_vec();
        ids.truncate(self.max_len);
        let mut mask = vec![true; ids.len()];
        if self.pad_to_max && ids.len() < self.max_len {
            let pad = self.pad_id.ok_or_else(|| {
                PolicyError::Format("the tokenizer has no pad token to pad the task with".into())
            })?;
            mask.resize(self.max_len, false);
            ids.resize(self.max_len, pad);
        }
        Ok((ids, mask))
    }
}

/// Integer ids from an observation tensor (int64, uint32 or uint8), batch 1.
pub(crate) fn ids_of(t: &Tensor, what: &str) -> Result<Vec<u32>, PolicyError> {
    let t = if t.rank() == 2 {
        t.squeeze(0)?
    } else {
        t.clone()
    };
    if t.rank() != 1 {
        return Err(PolicyError::Input(format!(
            "`{what}` must be [1, L], got {:?}",
            t.dims()
        )));
    }
    let v: Vec<i64> = t.to_dtype(DType::I64)?.to_vec1()?;
    v.into_iter()
        .map(|x| {
            u32::try_from(x)
                .map_err(|_| PolicyError::Input(format!("`{what}` holds {x}, not a token id")))
        })
        .collect()
}

/// A LeRobot SmolVLA checkpoint with its processors: lerobot's pre-processor →
/// `predict_action_chunk` → post-processor.
pub struct SmolVlaPolicy {
    model: SmolVla,
    pre: Normalizer,
    post: Normalizer,
    tokenizer: Result<TaskTokenizer, String>,
    device: Device,
}

impl SmolVlaPolicy {
    /// Load `dir` (as lerobot's `save_pretrained` writes it) on `device` in `dtype`, with the
    /// backbone's configuration and tokenizer found as [`VlmConfig::find`] and
    /// [`TaskTokenizer::find`] say.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, PolicyError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| PolicyError::io(&cfg_path, e))?;
        let cfg: SmolVlaConfig = serde_json::from_str(&text)
            .map_err(|e| PolicyError::Format(format!("{}: {e}", cfg_path.display())))?;
        if cfg.kind != "smolvla" {
            return Err(PolicyError::Unsupported(format!(
                "policy type `{}` (this loader reads `smolvla`)",
                cfg.kind
            )));
        }
        let vlm = VlmConfig::find(dir, &cfg.vlm_model_name)?;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(PolicyError::io(
                &weights,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        // SAFETY: the file is memory-mapped read-only; it must not change while loaded.
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device) }
            .map_err(|e| PolicyError::Format(format!("{}: {e}", weights.display())))?;
        let pre = Normalizer::load(dir, "policy_preprocessor", "normalizer_processor", device)?;
        let post = Normalizer::load(
            dir,
            "policy_postprocessor",
            "unnormalizer_processor",
            device,
        )?;
        // lerobot #4415: statistics keyed under other names leave inputs silently unnormalised
        if let Some((k, _)) = cfg.io.state_feature()? {
            pre.require_stats(&k)?;
        }
        post.require_stats("action")?;
        let tokenizer = TaskTokenizer::find(dir, &cfg).map_err(|e| e.to_string());
        let model = SmolVla::load(cfg, vlm, vb)
            .map_err(|e| PolicyError::Format(format!("{}: {e}", weights.display())))?;
        Ok(Self {
            model,
            pre,
            post,
            tokenizer,
            device: device.clone(),
        })
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &SmolVlaConfig {
        self.model.config()
    }

    /// The model (for its stages and options).
    pub fn model_mut(&mut self) -> &mut SmolVla {
        &mut self.model
    }

    /// Predict one action chunk, un-normalised [1, chunk, A] f32 on the CPU. `obs` holds
    /// `observation.state` [1, S], `observation.images.<cam>` [1, 3, H, W] in [0, 1], and the
    /// language as `observation.language.tokens` / `.attention_mask` [1, L] (int64) or, without
    /// them, `task` tokenized with the checkpoint's tokenizer; an optional `noise`
    /// [1, chunk, max_action_dim] f32 fixes the sampler's start (random otherwise).
    pub fn predict_chunk(
        &self,
        obs: &HashMap<String, Tensor>,
        task: Option<&str>,
    ) -> Result<Tensor, PolicyError> {
        Ok(self.predict_stages(obs, task)?.0)
    }

    /// [`Self::predict_chunk`] with the intermediate [`Stages`].
    pub fn predict_stages(
        &self,
        obs: &HashMap<String, Tensor>,
        task: Option<&str>,
    ) -> Result<(Tensor, Stages), PolicyError> {
        let cfg = self.model.config();
        let cpu = Device::Cpu;
        let batch1 = |k: &str, t: &Tensor, rank: usize| -> Result<Tensor, PolicyError> {
            let t = if t.rank() == rank - 1 {
                t.unsqueeze(0)?
            } else {
                t.clone()
            };
            if t.rank() != rank || t.dim(0)? != 1 {
                return Err(PolicyError::Input(format!(
                    "`{k}` has shape {:?}; expected a batch of one, rank {rank}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        // images, resized and padded, in [-1, 1]
        let mut images = Vec::new();
        for (k, _) in cfg.io.image_shapes()? {
            let Some(t) = obs.get(&k) else {
                let missing = images
                    .iter()
                    .filter(|(_, real): &&(Tensor, bool)| !real)
                    .count();
                if missing >= cfg.empty_cameras {
                    return Err(PolicyError::Input(format!("missing `{k}`")));
                }
                let like: &Tensor = images
                    .first()
                    .map(|(t, _): &(Tensor, bool)| t)
                    .ok_or_else(|| PolicyError::Input(format!("missing `{k}`")))?;
                images.push(((like.ones_like()? * -1.0)?, false));
                continue;
            };
            let t = self
                .pre
                .apply(&k, &batch1(&k, t, 4)?, false)?
                .to_device(&cpu)?;
            let (_, c, h, w) = t.dims4()?;
            if c != 3 {
                return Err(PolicyError::Input(format!(
                    "`{k}` must be (1, 3, H, W), got {:?}",
                    t.dims()
                )));
            }
            let (data, (oh, ow)) = match cfg.resize_imgs_with_padding {
                Some((rw, rh)) => (
                    resize_with_pad(&t.flatten_all()?.to_vec1::<f32>()?, h, w, rw, rh),
                    (rh, rw),
                ),
                None => (t.flatten_all()?.to_vec1::<f32>()?, (h, w)),
            };
            let img = Tensor::from_vec(data, (1, 3, oh, ow), &cpu)?.affine(2.0, -1.0)?;
            images.push((img.to_device(&self.device)?, true));
        }
        // state, normalised and zero-padded
        let (sk, sn) = cfg.io.state_feature()?.ok_or_else(|| {
            PolicyError::Format("SmolVLA needs an observation.state feature".into())
        })?;
        let state = obs
            .get(&sk)
            .ok_or_else(|| PolicyError::Input(format!("missing `{sk}`")))?;
        let state = self
            .pre
            .apply(&sk, &batch1(&sk, state, 2)?.to_device(&self.device)?, false)?;
        if state.dim(1)? != sn || sn > cfg.max_state_dim {
            return Err(PolicyError::Input(format!(
                "`{sk}` has {} values; the policy expects {sn}",
                state.dim(1)?
            )));
        }
        let state = state.pad_with_zeros(1, 0, cfg.max_state_dim - sn)?;
        // language
        let (tokens, mask) = match obs.get("observation.language.tokens") {
            Some(t) => {
                let ids = ids_of(t, "observation.language.tokens")?;
                let mask = match obs.get("observation.language.attention_mask") {
                    Some(m) => ids_of(m, "observation.language.attention_mask")?
                        .into_iter()
                        .map(|v| v != 0)
                        .collect(),
                    None => vec![true; ids.len()],
                };
                if mask.len() != ids.len() {
                    return Err(PolicyError::Input(
                        "observation.language.attention_mask and .tokens differ in length".into(),
                    ));
                }
                (ids, mask)
            }
            None => {
                let task = task.ok_or_else(|| {
                    PolicyError::Input(
                        "SmolVLA needs a task: give --task TEXT, or observation.language.tokens"
                            .into(),
                    )
                })?;
                self.tokenizer
                    .as_ref()
                    .map_err(|e| PolicyError::Format(e.clone()))?
                    .encode(task)?
            }
        };
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.model.vlm.text_config.vocab_size)
        {
            return Err(PolicyError::Input(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.model.vlm.text_config.vocab_size
            )));
        }
        let shape = (1, cfg.chunk_size, cfg.max_action_dim);
        let noise = match obs.get("noise") {
            Some(n) => {
                if n.dims() != [1, cfg.chunk_size, cfg.max_action_dim] {
                    return Err(PolicyError::Input(format!(
                        "`noise` has shape {:?}; expected {shape:?}",
                        n.dims()
                    )));
                }
                n.to_dtype(DType::F32)?
            }
            None => Tensor::randn(0f32, 1f32, shape, &self.device)?,
        };
        let stages = self.model.sample(&images, &tokens, &mask, &state, &noise)?;
        let ad = cfg.io.action_dim()?;
        let actions = stages.x0.narrow(2, 0, ad)?.to_dtype(DType::F32)?;
        let actions = self.post.apply("action", &actions, true)?.to_device(&cpu)?;
        Ok((actions, stages))
    }
}
