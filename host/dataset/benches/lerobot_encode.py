"""lerobot's own encoder on the frames of a recorded episode (one camera): the frames decoded
from our MP4, written as the PNGs lerobot's recorder writes, then `encode_video_frames` with its
defaults (libsvtav1), timed. Also writes the frames raw for the Rust side of the comparison.

usage: lerobot_encode.py VIDEO OUTDIR  → OUTDIR/frames.rgb, prints a JSON line
"""
import json
import sys
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image
from lerobot.datasets.video_utils import encode_video_frames

video, out = sys.argv[1], Path(sys.argv[2])
imgs = out / "pngs"
imgs.mkdir(parents=True, exist_ok=True)
with av.open(video) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
np.stack(frames).tofile(out / "frames.rgb")
for i, f in enumerate(frames):
    Image.fromarray(f).save(imgs / f"frame-{i:06d}.png")
dst = out / "lerobot.mp4"
t0 = time.perf_counter()
encode_video_frames(imgs, dst, fps=30, overwrite=True)
secs = time.perf_counter() - t0
print(json.dumps({
    "encoder": "lerobot encode_video_frames (defaults: libsvtav1)",
    "frames": len(frames),
    "seconds": secs,
    "fps": len(frames) / secs,
    "x_realtime": len(frames) / 30 / secs,
    "bytes": dst.stat().st_size,
    "size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
}))
