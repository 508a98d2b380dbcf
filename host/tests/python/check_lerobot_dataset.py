"""Load a dataset with lerobot itself, offline, read every frame, and summarise it as JSON.

usage: check_lerobot_dataset.py DIR
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
import torch  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

ds = LeRobotDataset("local/recorded", root=sys.argv[1])
frames = [ds[i] for i in range(len(ds))]
actions = torch.stack([f["action"] for f in frames])
states = torch.stack([f["observation.state"] for f in frames])
print(json.dumps({
    "len": len(ds),
    "episodes": ds.meta.total_episodes,
    "fps": ds.fps,
    "task": frames[-1]["task"],
    "names": ds.features["action"]["names"],
    "action_span": (actions.max(0).values - actions.min(0).values).tolist(),
    "state_span": (states.max(0).values - states.min(0).values).tolist(),
    "episode_index": [int(f["episode_index"]) for f in frames],
}))
