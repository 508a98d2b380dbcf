"""Latency of the `reachy_rs` SDK against a running daemon (p50 / p99, ms).

    reachy sim --listen tcp/127.0.0.1:7447 &
    reachy daemon --connect tcp/127.0.0.1:7447 --listen tcp/127.0.0.1:7448 &
    python host/python/benches/sdk_latency.py tcp/127.0.0.1:7448 [N]

- goto accepted: `r_arm.goto(..., wait=False)` called → the first state with `moving` (the
  daemon took the goto and its profile runs);
- command → state: `send_goal_positions` → the first state whose `target` moved towards it (the
  daemon applies streaming targets on arrival and publishes a state at once);
- state callbacks: the interval between `on_state` callbacks (the daemon publishes at its rate).
"""

import json
import sys
import threading
import time

import numpy as np

from reachy_rs import Reachy

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp/127.0.0.1:7448"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200


def pct(v):
    a = np.asarray(v) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3), "n": len(a)}


reachy = Reachy(endpoint, client="sdk-bench")
try:
    reachy.turn_on()
    home = reachy.head.get_current_positions()
    # goto request → accepted (moving)
    accepted = []
    for k in range(n // 4):
        reachy.wait_for_state(lambda s: not s.moving, timeout=10)
        yaw = 0.2 if k % 2 == 0 else -0.2
        t0 = time.perf_counter()
        g = reachy.head.goto([yaw, 0.0, 0.0], duration=0.05)
        reachy.wait_for_state(lambda s: s.moving, timeout=10)
        accepted.append(time.perf_counter() - t0)
        reachy.get_goto_result(g, timeout=10)
    # streaming command → acknowledging state
    lock = threading.Condition()
    seen = {}

    def on(st):
        i = st.joint("neck_yaw")
        with lock:
            seen["target"] = float(st.target[i])
            seen["t"] = time.perf_counter()
            lock.notify_all()

    remove = reachy.on_state(on)
    acked = []
    reachy.send_goal_positions({"neck_yaw": 0.1})
    time.sleep(0.5)
    for k in range(n):
        target = 0.1 + 0.001 * (k % 2)
        with lock:
            prev = seen["target"]
        t0 = time.perf_counter()
        reachy.send_goal_positions({"neck_yaw": target})
        # the first state whose target moved towards the command (the daemon's acceleration
        # limit may spread the move over a few periods; the first step is the acknowledgement)
        toward = 1.0 if target > prev else -1.0
        with lock:
            lock.wait_for(lambda: (seen["target"] - prev) * toward > 1e-7, timeout=5)
            acked.append(seen["t"] - t0)
        time.sleep(0.02)
    remove()
    # callback intervals
    stamps = []
    remove = reachy.on_state(lambda st: stamps.append(time.perf_counter()))
    time.sleep(3.0)
    remove()
    intervals = np.diff(stamps)
    print(json.dumps({
        "goto_accepted": pct(accepted),
        "command_to_state": pct(acked),
        "state_callback_interval": pct(intervals),
        "rate_hz": reachy.info["rate_hz"],
    }))
finally:
    reachy.disconnect()
