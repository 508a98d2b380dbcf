"""Load a dataset with lerobot itself, offline, with its default video decoder, read every frame
of every camera of every episode, and summarise it as JSON.

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
images = {}
for key in ds.meta.video_keys:
    imgs = torch.stack([f[key] for f in frames])
    images[key] = {
        "shape": list(imgs.shape),
        "min": float(imgs.min()),
        "max": float(imgs.max()),
        # how much the picture changes over the episode: a moving arm is seen
        "change": float((imgs[-1] - imgs[0]).abs().mean()),
        "stats_mean": [float(x) for x in ds.meta.stats[key]["mean"].flatten()],
        "pixel_mean": [float(x) for x in imgs.mean(dim=(0, 2, 3))],
    }
print(json.dumps({
    "len": len(ds),
    "episodes": ds.meta.total_episodes,
    "fps": ds.fps,
    "video_backend": ds.video_backend,
    "task": frames[-1]["task"],
    "names": ds.features["action"]["names"],
    "action_span": (actions.max(0).values - actions.min(0).values).tolist(),
    "state_span": (states.max(0).values - states.min(0).values).tolist(),
    "episode_index": [int(f["episode_index"]) for f in frames],
    "timestamps": [float(f["timestamp"]) for f in frames],
    "images": images,
}))
