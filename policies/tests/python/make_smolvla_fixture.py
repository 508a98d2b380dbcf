"""Build a small LeRobot SmolVLA with random weights using lerobot itself (no download: the
SmolVLM backbone's configuration, tokenizer and processor are made here and saved in a local
directory that the policy's `vlm_model_name` names), run lerobot's pre-processor →
`predict_action_chunk(batch, noise=…)` → post-processor, and save what the Rust parity test
compares, stage by stage.

usage: make_smolvla_fixture.py OUT_DIR [--seed S] [--height H] [--width W] [--cameras N]
       [--mean V,V,… [--std S]] (MEAN_STD statistics centred on a robot pose)
       [--full-size]   (the real SmolVLM2-500M shapes with random weights: for benchmarks)
       [--time N]      (print lerobot's mean CPU time of N chunk predictions, ms, as JSON)
       [--contract]    (full size, no weights: OUT_DIR/checkpoint/config.json naming SmolVLM2-500M
                        and OUT_DIR/names.json, every tensor of lerobot's state dict and its shape)

OUT_DIR/backbone/     the SmolVLM backbone's config.json, tokenizer.json, processor files
OUT_DIR/checkpoint/   config.json, model.safetensors, policy_{pre,post}processor*.json/.safetensors
OUT_DIR/obs.safetensors       observation.state [1,S], observation.images.<cam> [1,3,H,W] in [0,1],
                              observation.language.tokens / .attention_mask [1,L] (int64), noise
OUT_DIR/expected.safetensors  action [1,chunk,A] un-normalised; stages: vision.<cam> (connector
                              output), prefix (prefix embeddings), velocity0 (first denoise step)
OUT_DIR/task.txt              the task text the tokens come from
"""
import argparse
import json
import sys
import time
from pathlib import Path

print("make_smolvla_fixture: loading torch, transformers and lerobot …", file=sys.stderr, flush=True)
import torch  # noqa: E402
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor,
                          SmolVLMVideoProcessor)

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--height", type=int, default=48)
p.add_argument("--width", type=int, default=80)
p.add_argument("--cameras", type=int, default=2)
p.add_argument("--chunk", type=int, default=6)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--state-dim", type=int, default=7)
p.add_argument("--action-dim", type=int, default=7)
p.add_argument("--full-size", action="store_true")
p.add_argument("--contract", action="store_true")
p.add_argument("--pad-to", default="longest", help="the processor's pad_language_to")
p.add_argument("--task", default="pick up the red cube and put it in the box")
p.add_argument("--mean", help="comma-separated mean of observation.state and action (robot units)")
p.add_argument("--std", type=float, default=0.02, help="std of state and action with --mean")
p.add_argument("--time", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
a.full_size = a.full_size or a.contract
out = Path(a.out)
torch.manual_seed(a.seed)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
           "<global-img>", "<end_of_utterance>"]


def make_backbone(d: Path):
    """A SmolVLM backbone directory as `from_pretrained` reads it: config, tokenizer, processor."""
    d.mkdir(parents=True, exist_ok=True)
    # a byte-level BPE like SmolLM2's, trained on a few robot sentences
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    corpus = ["pick up the red cube and put it in the box", "open the drawer", "wave hello",
              "place the green block on the plate", "hand me the cup\n"] * 10
    vocab = 300
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                              "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"},
    )
    fast.save_pretrained(d)
    if a.full_size:
        cfg = SmolVLMConfig(
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, patch_size=16, image_size=512),
            text_config=dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                             num_attention_heads=15, num_key_value_heads=5, head_dim=64, vocab_size=49280,
                             rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192),
            scale_factor=4, image_token_id=fast.convert_tokens_to_ids("<image>"),
        )
    else:
        cfg = SmolVLMConfig(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               patch_size=8, image_size=64),
            text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=len(fast),
                             rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=512),
            scale_factor=2, image_token_id=fast.convert_tokens_to_ids("<image>"),
        )
    cfg.save_pretrained(d)
    size = cfg.vision_config.image_size
    img = SmolVLMImageProcessor(size={"longest_edge": size}, max_image_size={"longest_edge": size})
    SmolVLMProcessor(image_processor=img, tokenizer=fast, video_processor=SmolVLMVideoProcessor(), image_seq_len=(size // cfg.vision_config.patch_size) ** 2
                     // cfg.scale_factor**2).save_pretrained(d)
    return cfg


backbone = out / "backbone"
vlm_cfg = make_backbone(backbone)
ckpt = out / "checkpoint"
ckpt.mkdir(parents=True, exist_ok=True)

cams = ["head", "left_wrist", "right_wrist"][: a.cameras]
inputs = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(a.state_dim,))}
for c in cams:
    inputs[f"observation.images.{c}"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, a.height, a.width))
outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(a.action_dim,))}
size = vlm_cfg.vision_config.image_size
cfg = SmolVLAConfig(
    input_features=inputs,
    output_features=outputs,
    device="cpu",
    vlm_model_name=str(backbone.resolve()),
    load_vlm_weights=False,
    chunk_size=50 if a.full_size else a.chunk,
    n_action_steps=50 if a.full_size else a.chunk,
    num_steps=a.steps,
    num_vlm_layers=16 if a.full_size else 4,
    resize_imgs_with_padding=(size, size),
    pad_language_to=a.pad_to,
    tokenizer_max_length=48,
)
if a.contract:
    # the module tree and its shapes only (meta tensors: no memory, no weights)
    with torch.device("meta"):
        policy = SmolVLAPolicy(cfg)
    policy.config._save_pretrained(ckpt)
    c = json.loads((ckpt / "config.json").read_text())
    c["vlm_model_name"] = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"  # as real checkpoints say
    (ckpt / "config.json").write_text(json.dumps(c, indent=2))
    names = {k: list(v.shape) for k, v in policy.state_dict().items()}
    (out / "names.json").write_text(json.dumps(names, indent=1))
    print(f"make_smolvla_fixture: {len(names)} tensors, "
          f"{sum(torch.Size(s).numel() for s in names.values()) / 1e6:.1f} M values", file=sys.stderr)
    sys.exit(0)
policy = SmolVLAPolicy(cfg)
# random weights everywhere (the constructors leave norms at 1 and some biases at 0)
with torch.no_grad():
    for name, prm in policy.named_parameters():
        if a.full_size:
            prm.copy_(torch.randn_like(prm) * 0.02 + (1.0 if "norm" in name else 0.0))
        elif "norm" in name:
            prm.copy_(1.0 + 0.2 * torch.randn_like(prm))
        else:
            prm.copy_(torch.randn_like(prm) * (0.5 / max(1, prm.shape[-1]) ** 0.5 if prm.ndim > 1 else 0.1))
policy.eval()


def stats(dim):
    return {"mean": torch.randn(dim) * 0.5, "std": torch.rand(dim) + 0.5,
            "min": torch.randn(dim) - 2.0, "max": torch.randn(dim) + 2.0}


ds_stats = {"observation.state": stats(a.state_dim), "action": stats(a.action_dim)}
if a.mean:  # a checkpoint for running on the robot: its actions sit near this pose
    mean = torch.tensor([float(v) for v in a.mean.split(",")])
    assert mean.numel() == a.state_dim == a.action_dim, "--mean needs state dim == action dim"
    for k in ("observation.state", "action"):
        ds_stats[k]["mean"] = mean.clone()
        ds_stats[k]["std"] = torch.full_like(mean, a.std)
pre, post = make_smolvla_pre_post_processors(cfg, dataset_stats=ds_stats)
policy.save_pretrained(ckpt)
pre.save_pretrained(ckpt)
post.save_pretrained(ckpt)

obs = {"observation.state": torch.randn(1, a.state_dim)}
for c in cams:
    obs[f"observation.images.{c}"] = torch.rand(1, 3, a.height, a.width)
noise = torch.randn(1, cfg.chunk_size, cfg.max_action_dim)

stages = {}
model = policy.model
embed_image = model.vlm_with_expert.embed_image
seen = []


def tap_image(img):
    y = embed_image(img)
    stages[f"vision.{cams[len(seen)]}"] = y.detach().clone()
    seen.append(1)
    return y


model.vlm_with_expert.embed_image = tap_image
embed_prefix = model.embed_prefix


def tap_prefix(*args, **kw):
    embs, pad, att = embed_prefix(*args, **kw)
    stages["prefix"] = embs.detach().clone()
    return embs, pad, att


model.embed_prefix = tap_prefix
denoise = model.denoise_step


def tap_denoise(**kw):
    v = denoise(**kw)
    stages.setdefault("velocity0", v.detach().clone())
    return v


model.denoise_step = tap_denoise

with torch.no_grad():
    batch = pre({**{k: v.clone() for k, v in obs.items()}, "task": a.task})
    chunk = policy.predict_action_chunk(batch, noise=noise.clone())
    action = post(chunk)

obs["observation.language.tokens"] = batch["observation.language.tokens"].to(torch.int64)
obs["observation.language.attention_mask"] = batch["observation.language.attention_mask"].to(torch.int64)
obs["noise"] = noise
save_file({k: v.contiguous() for k, v in obs.items()}, str(out / "obs.safetensors"))
save_file({"action": action.contiguous(), **{k: v.contiguous() for k, v in stages.items()}},
          str(out / "expected.safetensors"))
(out / "task.txt").write_text(a.task)
print(f"make_smolvla_fixture: wrote {ckpt}/ (the checkpoint), {backbone}/ (the backbone), "
      f"{out / 'obs.safetensors'} and {out / 'expected.safetensors'}", file=sys.stderr, flush=True)

if a.time:
    torch.set_num_threads(a.threads)
    model.vlm_with_expert.embed_image = embed_image
    model.embed_prefix = embed_prefix
    model.denoise_step = denoise

    def once():
        b = pre({**{k: v.clone() for k, v in obs.items() if k.startswith("observation.")
                    and "language" not in k}, "task": a.task})
        return post(policy.predict_action_chunk(b, noise=noise.clone()))

    with torch.no_grad():
        once()
        t0 = time.perf_counter()
        for _ in range(a.time):
            once()
        dt = (time.perf_counter() - t0) / a.time
    print(json.dumps({"lerobot_ms": dt * 1e3, "torch": torch.__version__, "threads": a.threads}))
