"""Build a LeRobot ACT checkpoint with random weights using lerobot itself, run lerobot's
pre-processor → predict_action_chunk → post-processor on a random observation, and save
everything the Rust parity test needs.

usage: make_act_fixture.py OUT_DIR [--norm MODE[,MODE…]] (MEAN_STD, MIN_MAX, QUANTILES, QUANTILE10;
       several modes write OUT_DIR/<MODE>/…) [--height H] [--width W]
       [--dim-model D] [--cameras N] [--layers E] [--chunk C] [--seed S] [--time N]
       [--mean V,V,… [--std S]] (MEAN_STD statistics centred on a robot pose)

OUT_DIR/checkpoint/    config.json, model.safetensors, policy_{pre,post}processor*.json/.safetensors
OUT_DIR/obs.safetensors       observation.state [1,S], observation.images.<cam> [1,3,H,W] in [0,1]
OUT_DIR/expected.safetensors  action [1,chunk,A], un-normalised
With --time N, prints lerobot's mean CPU time of N chunk predictions (ms) as JSON.
"""
import argparse
import json
import sys
import time
from pathlib import Path

print("make_act_fixture: loading torch and lerobot …", file=sys.stderr, flush=True)
import torch  # noqa: E402
from safetensors.torch import save_file

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.act.processor_act import make_act_pre_post_processors

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--norm", default="MEAN_STD")
p.add_argument("--height", type=int, default=96)
p.add_argument("--width", type=int, default=128)
p.add_argument("--dim-model", type=int, default=64)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--ff", type=int, default=128)
p.add_argument("--cameras", type=int, default=2)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--chunk", type=int, default=10)
p.add_argument("--state-dim", type=int, default=14)
p.add_argument("--action-dim", type=int, default=14)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--time", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--pre-norm", action="store_true")
# a checkpoint for running on the robot: MEAN_STD statistics centred on a pose
p.add_argument("--mean", help="comma-separated mean of observation.state and action (robot units)")
p.add_argument("--std", type=float, default=0.02, help="std of state and action with --mean")
p.add_argument("--n-action-steps", type=int, default=0, help="default: the chunk size")
a = p.parse_args()

def make(out, mode_name):
    torch.manual_seed(a.seed)
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)

    cams = ["head", "left_wrist", "right_wrist"][: a.cameras]
    inputs = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(a.state_dim,))}
    for c in cams:
        inputs[f"observation.images.{c}"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, a.height, a.width))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(a.action_dim,))}
    mode = NormalizationMode[mode_name]
    cfg = ACTConfig(
        input_features=inputs,
        output_features=outputs,
        device="cpu",
        chunk_size=a.chunk,
        n_action_steps=a.n_action_steps or a.chunk,
        dim_model=a.dim_model,
        n_heads=a.heads,
        dim_feedforward=a.ff,
        n_encoder_layers=a.layers,
        n_decoder_layers=1,
        pre_norm=a.pre_norm,
        pretrained_backbone_weights=None,
        normalization_mapping={"VISUAL": NormalizationMode.MEAN_STD, "STATE": mode, "ACTION": mode},
    )
    policy = ACTPolicy(cfg)
    # random frozen batch-norm statistics, so the parity test exercises them
    with torch.no_grad():
        for name, buf in policy.named_buffers():
            if "running_mean" in name:
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif "running_var" in name:
                buf.copy_(torch.rand_like(buf) * 0.5 + 0.75)
        for name, prm in policy.named_parameters():
            if ".bn" in name or "downsample.1" in name:
                prm.copy_(torch.randn_like(prm) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    policy.eval()


    def stats(dim, shape=None):
        shape = shape or (dim,)
        lo = torch.randn(shape) - 2.0
        hi = lo + torch.rand(shape) * 3.0 + 0.5
        return {
            "mean": torch.randn(shape) * 0.5,
            "std": torch.rand(shape) + 0.5,
            "min": lo,
            "max": hi,
            "q01": lo + 0.1,
            "q99": hi - 0.1,
            "q10": lo + 0.2,
            "q90": hi - 0.2,
        }


    ds_stats = {"observation.state": stats(a.state_dim), "action": stats(a.action_dim)}
    if a.mean:
        mean = torch.tensor([float(v) for v in a.mean.split(",")])
        assert mean.numel() == a.state_dim == a.action_dim, "--mean needs state dim == action dim"
        for k in ("observation.state", "action"):
            ds_stats[k]["mean"] = mean.clone()
            ds_stats[k]["std"] = torch.full_like(mean, a.std)
    for c in cams:
        s = stats(3, (3, 1, 1))
        s["mean"] = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        s["std"] = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        ds_stats[f"observation.images.{c}"] = s
    pre, post = make_act_pre_post_processors(cfg, dataset_stats=ds_stats)
    policy.save_pretrained(ckpt)
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)

    obs = {"observation.state": torch.randn(1, a.state_dim)}
    for c in cams:
        obs[f"observation.images.{c}"] = torch.rand(1, 3, a.height, a.width)
    save_file({k: v.contiguous() for k, v in obs.items()}, str(out / "obs.safetensors"))

    with torch.no_grad():
        batch = pre({k: v.clone() for k, v in obs.items()})
        chunk = policy.predict_action_chunk(batch)
        action = post(chunk)
    save_file({"action": action.contiguous()}, str(out / "expected.safetensors"))
    print(f"make_act_fixture: wrote {ckpt}/ (the checkpoint), {out / 'obs.safetensors'} and "
          f"{out / 'expected.safetensors'}", file=sys.stderr, flush=True)

    if a.time:
        torch.set_num_threads(a.threads)
        with torch.no_grad():
            policy.predict_action_chunk(pre({k: v.clone() for k, v in obs.items()}))
            t0 = time.perf_counter()
            for _ in range(a.time):
                post(policy.predict_action_chunk(pre({k: v.clone() for k, v in obs.items()})))
            dt = (time.perf_counter() - t0) / a.time
        print(json.dumps({"lerobot_ms": dt * 1e3, "torch": torch.__version__, "threads": a.threads}))


for m in a.norm.split(','):
    make(Path(a.out) / m if ',' in a.norm else Path(a.out), m)
