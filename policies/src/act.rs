//! ACT (Action Chunking Transformer) inference on candle, weight-compatible with LeRobot's
//! `ACTPolicy`: the same `model.safetensors` names, the same computation as
//! `predict_action_chunk` (VAE latent = 0 at inference).
//!
//! Backbone: torchvision ResNet (BasicBlock 18/34, Bottleneck 50/101/152) up to `layer4`, with
//! frozen batch-norm folded into the convolutions at load time. Then a 1×1 projection, the 2-D
//! sinusoidal image position embedding, learned 1-D embeddings for the latent and state tokens, a
//! post-norm (or pre-norm) transformer encoder, a decoder fed with zeros and learned positions,
//! and the action head.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use crate::features::Io;
use crate::linear::FastLinear as Linear;
use crate::normalize::NormMode;
use crate::PolicyError;

/// `config.json` of a LeRobot ACT checkpoint (fields inference needs).
#[derive(Debug, Clone, Deserialize)]
pub struct ActConfig {
    /// Policy type; must be `act`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Input and output features, in checkpoint order.
    #[serde(flatten)]
    pub io: Io,
    /// Actions per chunk.
    pub chunk_size: usize,
    /// Actions executed per chunk.
    pub n_action_steps: usize,
    /// Normalisation per feature type.
    #[serde(default)]
    pub normalization_mapping: serde_json::Map<String, serde_json::Value>,
    /// torchvision backbone name.
    pub vision_backbone: String,
    /// Dilation instead of stride in layer4.
    #[serde(default)]
    pub replace_final_stride_with_dilation: serde_json::Value,
    /// Pre-norm transformer blocks.
    pub pre_norm: bool,
    /// Transformer width.
    pub dim_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width.
    pub dim_feedforward: usize,
    /// `relu` or `gelu`.
    pub feedforward_activation: String,
    /// Encoder layers.
    pub n_encoder_layers: usize,
    /// Decoder layers.
    pub n_decoder_layers: usize,
    /// VAE used in training.
    pub use_vae: bool,
    /// VAE latent size.
    pub latent_dim: usize,
    /// Temporal ensembling coefficient, if used.
    pub temporal_ensemble_coeff: Option<f64>,
    /// Frames of observation history (ACT: 1).
    #[serde(default = "one")]
    pub n_obs_steps: usize,
}

fn one() -> usize {
    1
}

impl std::ops::Deref for ActConfig {
    type Target = Io;
    fn deref(&self) -> &Io {
        &self.io
    }
}

impl ActConfig {
    /// The normalisation mode of a feature type.
    pub fn norm_mode(&self, t: &str) -> NormMode {
        self.normalization_mapping
            .get(t)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or(NormMode::Identity)
    }
}

/// A convolution with frozen batch-norm folded in: `y = conv(x, w·s) + (b − m·s)`, with an
/// optional fused ReLU. On the CPU in f32 it runs [`crate::conv`]'s im2col + gemm kernel.
struct ConvBn {
    w: Tensor,
    b: Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
    relu: bool,
    fast: Option<crate::conv::ConvOp>,
}

/// Convolution geometry: kernel, stride, padding, dilation.
#[derive(Clone, Copy)]
struct Geom(usize, usize, usize, usize);

impl ConvBn {
    fn load(
        conv: VarBuilder,
        bn: VarBuilder,
        cin: usize,
        cout: usize,
        g: Geom,
        relu: bool,
    ) -> candle_core::Result<Self> {
        let k = g.0;
        let w = conv.get((cout, cin, k, k), "weight")?;
        let gamma = bn.get(cout, "weight")?;
        let beta = bn.get(cout, "bias")?;
        let mean = bn.get(cout, "running_mean")?;
        let var = bn.get(cout, "running_var")?;
        // torchvision FrozenBatchNorm2d: eps 1e-5
        let scale = (gamma * (var + 1e-5)?.recip()?.sqrt()?)?;
        let b = (beta - (mean * &scale)?)?;
        let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        Self::new(w, b, g, relu)
    }

    /// A plain convolution: `w` (cout, cin, k, k), bias `b` (cout).
    fn new(w: Tensor, b: Tensor, g: Geom, relu: bool) -> candle_core::Result<Self> {
        let Geom(k, stride, padding, dilation) = g;
        let (cout, cin, _, _) = w.dims4()?;
        let fast = if w.device().is_cpu() && w.dtype() == DType::F32 {
            Some(crate::conv::ConvOp::new(
                w.flatten_all()?.to_vec1::<f32>()?,
                b.to_vec1::<f32>()?,
                (cin, cout, k),
                (stride, padding, dilation),
                relu,
                crate::linear::Isa::detect(),
            ))
        } else {
            None
        };
        Ok(Self {
            w,
            b: b.reshape((1, cout, 1, 1))?,
            stride,
            padding,
            dilation,
            relu,
            fast,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(op) = &self.fast {
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                return crate::conv::conv(x, op);
            }
        }
        let y = x
            .conv2d(&self.w, self.padding, self.stride, self.dilation, 1)?
            .broadcast_add(&self.b)?;
        if self.relu {
            y.relu()
        } else {
            Ok(y)
        }
    }
}

enum Block {
    Basic {
        c1: ConvBn,
        c2: ConvBn,
        down: Option<ConvBn>,
    },
    Bottleneck {
        c1: ConvBn,
        c2: ConvBn,
        c3: ConvBn,
        down: Option<ConvBn>,
    },
}

impl Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (y, down) = match self {
            Block::Basic { c1, c2, down } => (c2.forward(&c1.forward(x)?)?, down),
            Block::Bottleneck { c1, c2, c3, down } => (
                c3.forward(&c2.forward(&c1.forward(x)?.relu()?)?.relu()?)?,
                down,
            ),
        };
        let skip = match down {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (y + skip)?.relu()
    }
}

/// torchvision ResNet trunk up to `layer4` (the `feature_map` ACT uses).
struct ResNet {
    stem: ConvBn,
    layers: Vec<Block>,
    out_channels: usize,
}

impl ResNet {
    fn load(vb: VarBuilder, name: &str, dilate_last: bool) -> Result<Self, PolicyError> {
        let (bottleneck, counts): (bool, [usize; 4]) = match name {
            "resnet18" => (false, [2, 2, 2, 2]),
            "resnet34" => (false, [3, 4, 6, 3]),
            "resnet50" => (true, [3, 4, 6, 3]),
            "resnet101" => (true, [3, 4, 23, 3]),
            "resnet152" => (true, [3, 8, 36, 3]),
            other => {
                return Err(PolicyError::Unsupported(format!(
                    "vision backbone `{other}`"
                )))
            }
        };
        if dilate_last && !bottleneck {
            return Err(PolicyError::Unsupported(
                "dilation in layer4 of a BasicBlock ResNet (torchvision refuses it too)".into(),
            ));
        }
        let stem = ConvBn::load(vb.pp("conv1"), vb.pp("bn1"), 3, 64, Geom(7, 2, 3, 1), true)?;
        let expansion = if bottleneck { 4 } else { 1 };
        let mut layers = Vec::new();
        let mut cin = 64;
        let mut dilation = 1;
        for (li, &n) in counts.iter().enumerate() {
            let width = 64 << li;
            let mut stride = if li == 0 { 1 } else { 2 };
            let prev_dilation = dilation;
            if li == 3 && dilate_last {
                dilation *= stride;
                stride = 1;
            }
            let lvb = vb.pp(format!("layer{}", li + 1));
            for bi in 0..n {
                let b = lvb.pp(bi.to_string());
                let s = if bi == 0 { stride } else { 1 };
                let d = if bi == 0 { prev_dilation } else { dilation };
                let cout = width * expansion;
                let down = if bi == 0 && (stride != 1 || cin != cout) {
                    Some(ConvBn::load(
                        b.pp("downsample.0"),
                        b.pp("downsample.1"),
                        cin,
                        cout,
                        Geom(1, stride, 0, 1),
                        false,
                    )?)
                } else {
                    None
                };
                let block = if bottleneck {
                    Block::Bottleneck {
                        c1: ConvBn::load(
                            b.pp("conv1"),
                            b.pp("bn1"),
                            cin,
                            width,
                            Geom(1, 1, 0, 1),
                            true,
                        )?,
                        c2: ConvBn::load(
                            b.pp("conv2"),
                            b.pp("bn2"),
                            width,
                            width,
                            Geom(3, s, d, d),
                            true,
                        )?,
                        c3: ConvBn::load(
                            b.pp("conv3"),
                            b.pp("bn3"),
                            width,
                            cout,
                            Geom(1, 1, 0, 1),
                            false,
                        )?,
                        down,
                    }
                } else {
                    Block::Basic {
                        c1: ConvBn::load(
                            b.pp("conv1"),
                            b.pp("bn1"),
                            cin,
                            width,
                            Geom(3, s, 1, 1),
                            true,
                        )?,
                        c2: ConvBn::load(
                            b.pp("conv2"),
                            b.pp("bn2"),
                            width,
                            width,
                            Geom(3, 1, 1, 1),
                            false,
                        )?,
                        down,
                    }
                };
                layers.push(block);
                cin = cout;
            }
        }
        Ok(Self {
            stem,
            layers,
            out_channels: cin,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.stem.forward(x)?;
        // max-pool 3×3, stride 2, padding 1; after ReLU every value is ≥ 0, so zero padding
        // gives the same maxima as torch's −∞ padding
        let mut x = if x.device().is_cpu() && x.dtype() == DType::F32 {
            x.contiguous()?.apply_op1_no_bwd(&crate::conv::MaxPool3s2)?
        } else {
            x.pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .max_pool2d_with_stride(3, 2)?
        };
        for b in &self.layers {
            x = b.forward(&x)?;
        }
        Ok(x)
    }
}

/// `nn.MultiheadAttention` with packed input projections (batch-first tensors here).
struct Attention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    out: Linear,
    heads: usize,
}

/// A linear layer `in → out` of `vb` (`weight`, `bias`), on the CPU kernel where it applies.
fn linear(inp: usize, out: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    Linear::new(vb.get((out, inp), "weight")?, Some(vb.get(out, "bias")?))
}

impl Attention {
    fn load(vb: VarBuilder, d: usize, heads: usize) -> candle_core::Result<Self> {
        let w = vb.get((3 * d, d), "in_proj_weight")?;
        let b = vb.get(3 * d, "in_proj_bias")?;
        let part = |i: usize| -> candle_core::Result<Linear> {
            Linear::new(
                w.narrow(0, i * d, d)?.contiguous()?,
                Some(b.narrow(0, i * d, d)?.contiguous()?),
            )
        };
        Ok(Self {
            wq: part(0)?,
            wk: part(1)?,
            wv: part(2)?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// q: (B, Sq, D), k and v: (B, Sk, D).
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        let (b, sq, d) = q.dims3()?;
        let sk = k.dim(1)?;
        let hd = d / self.heads;
        let split = |x: Tensor, s: usize| -> candle_core::Result<Tensor> {
            x.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.wq.forward(q)? * (1.0 / (hd as f64).sqrt()))?, sq)?;
        let k = split(self.wk.forward(k)?, sk)?;
        let v = split(self.wv.forward(v)?, sk)?;
        // q is scaled already
        if let Some(y) = crate::linear::attention_tensors(&q, &k, &v, None, 1.0)? {
            return self.out.forward(&y);
        }
        let att = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, sq, d))?;
        self.out.forward(&y)
    }
}

enum Activation {
    Relu,
    Gelu,
}

impl Activation {
    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

struct EncoderLayer {
    attn: Attention,
    l1: Linear,
    l2: Linear,
    n1: LayerNorm,
    n2: LayerNorm,
}

struct DecoderLayer {
    self_attn: Attention,
    cross: Attention,
    l1: Linear,
    l2: Linear,
    n1: LayerNorm,
    n2: LayerNorm,
    n3: LayerNorm,
}

/// The ACT network for inference.
pub struct Act {
    cfg: ActConfig,
    /// Parsed once at load: camera keys (checkpoint order), state and environment inputs.
    inputs: ActInputs,
    backbone: Option<ResNet>,
    /// The backbone's features to `dim_model` (a 1×1 convolution).
    img_proj: Option<ConvBn>,
    latent_token: Tensor,
    state_proj: Option<Linear>,
    env_proj: Option<Linear>,
    pos_1d: Tensor,
    encoder: Vec<EncoderLayer>,
    encoder_norm: Option<LayerNorm>,
    decoder: Vec<DecoderLayer>,
    decoder_norm: LayerNorm,
    decoder_pos: Tensor,
    head: Linear,
    act: Activation,
    device: Device,
}

/// The inputs an ACT checkpoint expects, parsed from its config.
#[derive(Debug, Clone, PartialEq)]
pub struct ActInputs {
    /// Camera keys, in checkpoint order.
    pub images: Vec<String>,
    /// `(key, dim)` of the robot state input.
    pub state: Option<(String, usize)>,
    /// `(key, dim)` of the environment state input.
    pub env: Option<(String, usize)>,
}

fn ln(vb: VarBuilder, d: usize) -> candle_core::Result<LayerNorm> {
    candle_nn::layer_norm(d, 1e-5, vb)
}

impl Act {
    /// Build from a config and a var builder over `model.safetensors` (names prefixed `model.`).
    pub fn load(cfg: ActConfig, vb: VarBuilder) -> Result<Self, PolicyError> {
        let vb = vb.pp("model");
        let d = cfg.dim_model;
        if cfg.n_heads == 0 || !d.is_multiple_of(cfg.n_heads) {
            return Err(PolicyError::Format(format!(
                "dim_model {d} is not a multiple of n_heads {}",
                cfg.n_heads
            )));
        }
        let act = match cfg.feedforward_activation.as_str() {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(PolicyError::Unsupported(format!(
                    "feed-forward activation `{other}`"
                )))
            }
        };
        let inputs = ActInputs {
            images: cfg.image_keys()?,
            state: cfg.state_feature()?,
            env: cfg.env_feature()?,
        };
        let images = &inputs.images;
        let dilate = matches!(
            &cfg.replace_final_stride_with_dilation,
            serde_json::Value::Bool(true)
        ) || cfg.replace_final_stride_with_dilation.as_i64().unwrap_or(0) != 0;
        let (backbone, img_proj) = if images.is_empty() {
            (None, None)
        } else {
            let r = ResNet::load(vb.pp("backbone"), &cfg.vision_backbone, dilate)?;
            let p = vb.pp("encoder_img_feat_input_proj");
            let w = p.get((d, r.out_channels, 1, 1), "weight")?;
            let b = p.get(d, "bias")?;
            (Some(r), Some(ConvBn::new(w, b, Geom(1, 1, 0, 1), false)?))
        };
        let (state, env) = (&inputs.state, &inputs.env);
        let n1d = 1 + state.is_some() as usize + env.is_some() as usize;
        // the latent is zero at inference: its token is the projection's bias
        let latent_token = vb.pp("encoder_latent_input_proj").get(d, "bias")?;
        vb.pp("encoder_latent_input_proj")
            .get((d, cfg.latent_dim), "weight")?;
        let state_proj = match &state {
            Some((_, n)) => Some(linear(*n, d, vb.pp("encoder_robot_state_input_proj"))?),
            None => None,
        };
        let env_proj = match &env {
            Some((_, n)) => Some(linear(*n, d, vb.pp("encoder_env_state_input_proj"))?),
            None => None,
        };
        let pos_1d = Embedding::new(
            vb.pp("encoder_1d_feature_pos_embed")
                .get((n1d, d), "weight")?,
            d,
        );
        let mut encoder = Vec::new();
        for i in 0..cfg.n_encoder_layers {
            let l = vb.pp(format!("encoder.layers.{i}"));
            encoder.push(EncoderLayer {
                attn: Attention::load(l.pp("self_attn"), d, cfg.n_heads)?,
                l1: linear(d, cfg.dim_feedforward, l.pp("linear1"))?,
                l2: linear(cfg.dim_feedforward, d, l.pp("linear2"))?,
                n1: ln(l.pp("norm1"), d)?,
                n2: ln(l.pp("norm2"), d)?,
            });
        }
        let encoder_norm = if cfg.pre_norm {
            Some(ln(vb.pp("encoder.norm"), d)?)
        } else {
            None
        };
        let mut decoder = Vec::new();
        for i in 0..cfg.n_decoder_layers {
            let l = vb.pp(format!("decoder.layers.{i}"));
            decoder.push(DecoderLayer {
                self_attn: Attention::load(l.pp("self_attn"), d, cfg.n_heads)?,
                cross: Attention::load(l.pp("multihead_attn"), d, cfg.n_heads)?,
                l1: linear(d, cfg.dim_feedforward, l.pp("linear1"))?,
                l2: linear(cfg.dim_feedforward, d, l.pp("linear2"))?,
                n1: ln(l.pp("norm1"), d)?,
                n2: ln(l.pp("norm2"), d)?,
                n3: ln(l.pp("norm3"), d)?,
            });
        }
        let decoder_norm = ln(vb.pp("decoder.norm"), d)?;
        let decoder_pos = vb
            .pp("decoder_pos_embed")
            .get((cfg.chunk_size, d), "weight")?;
        let head = linear(d, cfg.action_dim()?, vb.pp("action_head"))?;
        Ok(Self {
            device: vb.device().clone(),
            inputs,
            cfg,
            backbone,
            img_proj,
            latent_token,
            state_proj,
            env_proj,
            pos_1d: pos_1d.embeddings().clone(),
            encoder,
            encoder_norm,
            decoder,
            decoder_norm,
            decoder_pos,
            head,
            act,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ActConfig {
        &self.cfg
    }

    /// The inputs the model expects.
    pub fn inputs(&self) -> &ActInputs {
        &self.inputs
    }

    /// 2-D sinusoidal position embedding of a (h, w) feature map: (h·w, D), row-major like
    /// `rearrange(b c h w -> (h w) b c)`. Computed in f32 exactly as LeRobot does.
    fn pos_2d(&self, h: usize, w: usize) -> candle_core::Result<Tensor> {
        let half = self.cfg.dim_model / 2;
        let two_pi = 2.0 * std::f64::consts::PI;
        let eps = 1e-6f32;
        let inv: Vec<f32> = (0..half)
            .map(|i| 10000f32.powf((2 * (i / 2)) as f32 / half as f32))
            .collect();
        let mut out = vec![0f32; h * w * 2 * half];
        for y in 0..h {
            for x in 0..w {
                let yr = ((y + 1) as f32 / (h as f32 + eps)) * two_pi as f32;
                let xr = ((x + 1) as f32 / (w as f32 + eps)) * two_pi as f32;
                let row = &mut out[(y * w + x) * 2 * half..(y * w + x + 1) * 2 * half];
                for i in 0..half {
                    let (vy, vx) = (yr / inv[i], xr / inv[i]);
                    row[i] = if i % 2 == 0 { vy.sin() } else { vy.cos() };
                    row[half + i] = if i % 2 == 0 { vx.sin() } else { vx.cos() };
                }
            }
        }
        Tensor::from_vec(out, (h * w, 2 * half), &self.device)
    }

    /// One forward pass on normalised inputs: `state` (B, S) if the model has a state input,
    /// `env` (B, E) if it has an environment input, `images` one (B, 3, H, W) per camera in
    /// checkpoint order. Returns normalised actions (B, chunk, A).
    pub fn forward(
        &self,
        state: Option<&Tensor>,
        env: Option<&Tensor>,
        images: &[Tensor],
    ) -> Result<Tensor, PolicyError> {
        let d = self.cfg.dim_model;
        let b = match (images.first(), state, env) {
            (Some(i), _, _) => i.dim(0)?,
            (None, Some(s), _) => s.dim(0)?,
            (None, None, Some(e)) => e.dim(0)?,
            _ => return Err(PolicyError::Input("no inputs".into())),
        };
        let mut tokens = vec![self
            .latent_token
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?
            .contiguous()?];
        let mut pos = vec![self.pos_1d.clone()];
        match (&self.state_proj, state) {
            (Some(p), Some(s)) => tokens.push(p.forward(s)?.unsqueeze(1)?),
            (Some(_), None) => {
                return Err(PolicyError::Input(
                    "the policy needs `observation.state`".into(),
                ))
            }
            _ => {}
        }
        match (&self.env_proj, env) {
            (Some(p), Some(e)) => tokens.push(p.forward(e)?.unsqueeze(1)?),
            (Some(_), None) => {
                return Err(PolicyError::Input(
                    "the policy needs the environment state".into(),
                ))
            }
            _ => {}
        }
        if let (Some(bb), Some(proj)) = (&self.backbone, &self.img_proj) {
            for img in images {
                let f = proj.forward(&bb.forward(img)?)?;
                let (_, _, h, wd) = f.dims4()?;
                // (B, D, h, w) → (B, h·w, D)
                tokens.push(f.flatten_from(2)?.transpose(1, 2)?.contiguous()?);
                pos.push(self.pos_2d(h, wd)?);
            }
        }
        let x = Tensor::cat(&tokens, 1)?;
        let pos = Tensor::cat(&pos, 0)?.unsqueeze(0)?; // (1, S, D)
        let mut x = x;
        for l in &self.encoder {
            x = self.encoder_layer(l, &x, &pos)?;
        }
        if let Some(n) = &self.encoder_norm {
            x = n.forward(&x)?;
        }
        let enc = x;
        let dpos = self.decoder_pos.unsqueeze(0)?;
        let mut y = Tensor::zeros((b, self.cfg.chunk_size, d), DType::F32, &self.device)?
            .to_dtype(enc.dtype())?;
        for l in &self.decoder {
            y = self.decoder_layer(l, &y, &enc, &dpos, &pos)?;
        }
        let y = self.decoder_norm.forward(&y)?;
        Ok(self.head.forward(&y)?)
    }

    /// Self-attention sub-layer with positions added to queries and keys, then the residual.
    /// Returns (input of the next sub-layer, its skip).
    fn self_attention(
        &self,
        attn: &Attention,
        n1: &LayerNorm,
        n2: &LayerNorm,
        x: &Tensor,
        pos: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let pre = self.cfg.pre_norm;
        let h = if pre { n1.forward(x)? } else { x.clone() };
        let qk = h.broadcast_add(pos)?;
        let h = attn.forward(&qk, &qk, &h)?;
        add_norm(pre, x.clone(), h, n1, n2)
    }

    fn feed_forward(&self, l1: &Linear, l2: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        l2.forward(&self.act.apply(&l1.forward(x)?)?)
    }

    fn encoder_layer(
        &self,
        l: &EncoderLayer,
        x: &Tensor,
        pos: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (x, skip) = self.self_attention(&l.attn, &l.n1, &l.n2, x, pos)?;
        finish(
            self.cfg.pre_norm,
            skip,
            self.feed_forward(&l.l1, &l.l2, &x)?,
            &l.n2,
        )
    }

    fn decoder_layer(
        &self,
        l: &DecoderLayer,
        x: &Tensor,
        enc: &Tensor,
        dpos: &Tensor,
        epos: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let pre = self.cfg.pre_norm;
        let (x, skip) = self.self_attention(&l.self_attn, &l.n1, &l.n2, x, dpos)?;
        let h = l
            .cross
            .forward(&x.broadcast_add(dpos)?, &enc.broadcast_add(epos)?, enc)?;
        let (x, skip) = add_norm(pre, skip, h, &l.n2, &l.n3)?;
        finish(pre, skip, self.feed_forward(&l.l1, &l.l2, &x)?, &l.n3)
    }
}

/// Residual add between two sub-layers, as LeRobot's ACT layers do it. Post-norm: normalise the
/// sum with `post`; it is both the next input and the next skip. Pre-norm: the sum is the next
/// skip and `next_pre` normalises the next sub-layer's input. Returns (input, skip).
fn add_norm(
    pre: bool,
    skip: Tensor,
    h: Tensor,
    post: &LayerNorm,
    next_pre: &LayerNorm,
) -> candle_core::Result<(Tensor, Tensor)> {
    let x = (skip + h)?;
    if pre {
        Ok((next_pre.forward(&x)?, x))
    } else {
        let n = post.forward(&x)?;
        Ok((n.clone(), n))
    }
}

/// Last residual add of a layer: post-norm normalises it, pre-norm leaves it.
fn finish(pre: bool, skip: Tensor, h: Tensor, post: &LayerNorm) -> candle_core::Result<Tensor> {
    let x = (skip + h)?;
    if pre {
        Ok(x)
    } else {
        post.forward(&x)
    }
}
