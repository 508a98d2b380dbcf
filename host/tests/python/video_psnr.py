"""Decode an MP4 with PyAV (the `av` wheel's bundled FFmpeg) and compare every frame with the
raw RGB frames it was encoded from.

usage: video_psnr.py VIDEO RAW WIDTH HEIGHT  (RAW: the frames' rgb8 bytes, one after another)
prints {"frames": n, "mean_psnr": dB, "min_psnr": dB, "pts": [seconds…], "codec": name}
"""
import json
import sys

import av
import numpy as np

video, raw, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ref = np.fromfile(raw, dtype=np.uint8).reshape(-1, h, w, 3).astype(np.float64)
with av.open(video) as c:
    s = c.streams.video[0]
    decoded = [(f.to_ndarray(format="rgb24"), float(f.pts * s.time_base)) for f in c.decode(s)]
    codec = s.codec_context.name
psnr = []
for (img, _), r in zip(decoded, ref):
    mse = ((img.astype(np.float64) - r) ** 2).mean()
    psnr.append(99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
print(json.dumps({
    "frames": len(decoded),
    "reference_frames": int(ref.shape[0]),
    "mean_psnr": float(np.mean(psnr)),
    "min_psnr": float(np.min(psnr)),
    "pts": [p for _, p in decoded],
    "codec": codec,
}))
