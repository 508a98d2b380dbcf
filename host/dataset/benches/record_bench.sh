#!/usr/bin/env bash
# The recording benchmark of the README: three 640x480 cameras at 30 fps plus state from the
# in-process sim (`reachy record`), then, on one camera's frames of that recording, the
# recorder's encoder alone beside lerobot's `encode_video_frames` (its defaults), in one run.
# usage (repo root): host/dataset/benches/record_bench.sh [OUTDIR] [SECONDS]
set -euo pipefail
out="${1:-/tmp/reachy-record-bench}"
secs="${2:-20}"
py="${REACHY_PYTHON:-.venv/bin/python}"
rm -rf "$out" && mkdir -p "$out"
cargo build -q --bin reachy
export LP_NUM_THREADS="${LP_NUM_THREADS:-1}"
target/debug/reachy record --backend sim --cameras all --camera-size 640x480 --fps 30 \
  --episodes 1 --episode-time "$secs" --root "$out/ds" --report "$out/record.json"
"$py" host/dataset/benches/lerobot_encode.py \
  "$out/ds/videos/observation.images.head/chunk-000/file-000.mp4" "$out" > "$out/lerobot.json"
REACHY_BENCH_RAW="$out/frames.rgb" REACHY_BENCH_SIZE=640x480 \
  cargo bench -q -p reachy-dataset --bench encode > "$out/ours.json"
"$py" - "$out" "$secs" <<'PY'
import json, sys
out, secs = sys.argv[1], float(sys.argv[2])
rec = json.load(open(f"{out}/record.json"))
ep = rec["episodes"][0]
cams = len(rec["cameras"])
lr = json.loads(open(f"{out}/lerobot.json").read())
ours = json.loads(open(f"{out}/ours.json").read().strip().splitlines()[-1])
video_s = ep["frames"] / 30 * cams
print(json.dumps({
    "cameras": cams,
    "frames_per_camera": ep["frames"],
    "loop_fps": round(ep["achieved_fps"], 2),
    "late_ticks": ep["late"],
    "repeated_camera_frames": sum(r[1] for r in ep["repeated_images"]),
    "queue_full": ep["queue_full"],
    "durable_after_end_s": round(ep["commit_s"], 3),
    "mb_per_minute": round(ep["video_bytes"] / 1e6 / (ep["frames"] / 30) * 60, 1),
    "encoder_x_realtime_while_rendering": round(video_s / ep["encode_s"], 2),
    "encoder_alone_x_realtime": round(ours["x_realtime"], 2),
    "lerobot_encoder_x_realtime": round(lr["x_realtime"], 2),
    "ratio_to_lerobot": round(ours["x_realtime"] / lr["x_realtime"], 1),
    "bytes_per_frame_ours": round(ours["bytes"] / ours["frames"]),
    "bytes_per_frame_lerobot": round(lr["bytes"] / lr["frames"]),
}, indent=1))
PY
