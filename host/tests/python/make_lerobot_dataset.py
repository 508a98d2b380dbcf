"""Write a small LeRobot v3 dataset with lerobot itself (no videos): two episodes of the right arm
and gripper, state and action named `r_*.pos`, at 30 fps. Episode e moves the shoulder and the
elbow on a sine of amplitude 0.2 * (e + 1) rad around the home pose.

With --video, also a 32x24 camera `observation.images.head` encoded by lerobot (its default
codec): both episodes share one data file and one video file, as lerobot writes them.

usage: make_lerobot_dataset.py OUT_DIR [--video]
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

out = Path(sys.argv[1])
video = "--video" in sys.argv[2:]
joints = ["r_shoulder_pitch", "r_shoulder_roll", "r_elbow_yaw", "r_elbow_pitch",
          "r_wrist_roll", "r_wrist_pitch", "r_wrist_yaw", "r_gripper"]
names = [f"{j}.pos" for j in joints]
home = np.array([0.0, -1.309, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
features = {
    "observation.state": {"dtype": "float32", "shape": (8,), "names": names},
    "action": {"dtype": "float32", "shape": (8,), "names": names},
}
if video:
    features["observation.images.head"] = {
        "dtype": "video", "shape": (24, 32, 3), "names": ["height", "width", "channels"]}
ds = LeRobotDataset.create(repo_id="local/replay", fps=30, features=features, root=out,
                           robot_type="reachy2", use_videos=video)
lengths = [45, 60]
last = []
for e, n in enumerate(lengths):
    for i in range(n):
        a = home.copy()
        s = 0.2 * (e + 1) * math.sin(2 * math.pi * i / n)
        a[0] += s
        a[3] -= abs(s)
        frame = {"observation.state": a.copy(), "action": a.copy(), "task": f"wave {e}"}
        if video:
            frame["observation.images.head"] = np.full((24, 32, 3), (i * 4) % 256, dtype=np.uint8)
        ds.add_frame(frame)
    ds.save_episode()
    last.append(a.tolist())
ds.finalize()
print(json.dumps({"lengths": lengths, "last": last}))
