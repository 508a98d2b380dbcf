"""Time lerobot's ACT on an existing checkpoint: pre-processor → predict_action_chunk →
post-processor, CPU, torch.set_num_threads(THREADS). Prints JSON {"lerobot_ms": mean, ...}.

usage: time_lerobot_act.py CHECKPOINT_DIR OBS.safetensors ITERS THREADS
"""
import json
import sys
import time

import torch
from safetensors.torch import load_file

from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.processor import PolicyProcessorPipeline
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

ckpt, obs_path, iters, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
policy = ACTPolicy.from_pretrained(ckpt).eval()
pre = PolicyProcessorPipeline.from_pretrained(ckpt, config_filename="policy_preprocessor.json")
post = PolicyProcessorPipeline.from_pretrained(
    ckpt,
    config_filename="policy_postprocessor.json",
    to_transition=policy_action_to_transition,
    to_output=transition_to_policy_action,
)
obs = load_file(obs_path)


def once():
    batch = pre({k: v.clone() for k, v in obs.items()})
    return post(policy.predict_action_chunk(batch))


with torch.no_grad():
    once()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print(json.dumps({"lerobot_ms": sum(times) / len(times), "lerobot_p50_ms": times[len(times) // 2],
                  "threads": threads, "torch": torch.__version__}))
