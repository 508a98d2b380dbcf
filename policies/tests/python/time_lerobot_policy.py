"""Time lerobot's policy (ACT or SmolVLA, by the checkpoint's type) on an existing checkpoint:
pre-processor → predict_action_chunk → post-processor, CPU, torch.set_num_threads(THREADS).
Prints JSON {"lerobot_ms": mean, "lerobot_p50_ms", "lerobot_min_ms", ...}; also the load time
and the process's peak memory.

usage: time_lerobot_policy.py CHECKPOINT_DIR OBS.safetensors ITERS THREADS [TASK]
(SmolVLA: the task text goes through lerobot's tokenizer step; a `noise` tensor in the
observation file is the sampler's start, as `reachy policy predict` uses it)
"""
import json
import resource
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from lerobot.policies.factory import get_policy_class
from lerobot.processor import PolicyProcessorPipeline
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

ckpt, obs_path, iters, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
task = sys.argv[5] if len(sys.argv) > 5 else None
torch.set_num_threads(threads)
kind = json.loads((Path(ckpt) / "config.json").read_text())["type"]
t0 = time.perf_counter()
policy = get_policy_class(kind).from_pretrained(ckpt).eval()
pre = PolicyProcessorPipeline.from_pretrained(ckpt, config_filename="policy_preprocessor.json")
post = PolicyProcessorPipeline.from_pretrained(
    ckpt,
    config_filename="policy_postprocessor.json",
    to_transition=policy_action_to_transition,
    to_output=transition_to_policy_action,
)
load_s = time.perf_counter() - t0
obs = load_file(obs_path)
noise = obs.pop("noise", None)
if task is not None:
    obs = {k: v for k, v in obs.items() if not k.startswith("observation.language.")}


def once():
    batch = pre({**{k: v.clone() for k, v in obs.items()}, **({"task": task} if task else {})})
    kw = {"noise": noise.clone()} if noise is not None else {}
    return post(policy.predict_action_chunk(batch, **kw))


with torch.no_grad():
    once()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print(json.dumps({"lerobot_ms": sum(times) / len(times), "lerobot_p50_ms": times[len(times) // 2],
                  "lerobot_min_ms": times[0],
                  "lerobot_load_s": load_s,
                  "lerobot_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "threads": threads, "torch": torch.__version__}))
