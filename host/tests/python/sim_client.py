"""A stock Python zenoh + cbor2 client of `reachy sim --lockstep`.

Usage: sim_client.py ENDPOINT ROBOT
Connects (multicast scouting off), reads `info`, subscribes to the joint states, steps the sim,
commands a joint, sends malformed commands, and prints one JSON summary line.
"""

import json
import sys
import threading
import time

import cbor2
import zenoh

endpoint, robot = sys.argv[1], sys.argv[2]
prefix = f"reachy/{robot}/sim"

conf = zenoh.Config()
conf.insert_json5("mode", '"client"')
conf.insert_json5("connect/endpoints", json.dumps([endpoint]))
conf.insert_json5("scouting/multicast/enabled", "false")
session = zenoh.open(conf)


def query(name, payload=None):
    kw = {"timeout": 10.0}
    if payload is not None:
        kw["payload"] = cbor2.dumps(payload)
    for reply in session.get(f"{prefix}/{name}", **kw):
        if reply.ok is not None:
            return True, cbor2.loads(reply.ok.payload.to_bytes())
        return False, cbor2.loads(reply.err.payload.to_bytes())
    raise SystemExit(f"no reply to {name}")


states = []
lock = threading.Lock()


def on_state(sample):
    msg = cbor2.loads(sample.payload.to_bytes())
    with lock:
        states.append(msg)


sub = session.declare_subscriber(f"{prefix}/joint_state", on_state)
time.sleep(0.5)

ok, info = query("info")
assert ok, info
names = [j["name"] for j in info["joints"]]

# step 20 control periods: 20 states must arrive, in order
ok, r = query("step", {"v": 1, "n": 20})
assert ok, r
deadline = time.time() + 5
while time.time() < deadline:
    with lock:
        if len(states) >= 20:
            break
    time.sleep(0.02)

# command the right elbow, step half a second, read where it went
target = 0.5
session.put(f"{prefix}/joint_command", cbor2.dumps({"v": 1, "names": ["neck_yaw"], "position": [target]}))
time.sleep(0.2)
ok, r = query("step", {"v": 1, "n": 50})
assert ok, r
elbow = r["state"]["position"][names.index("neck_yaw")]

# malformed commands: garbage bytes, wrong schema version, unknown joint, NaN, length mismatch
session.put(f"{prefix}/joint_command", b"\xff\x00garbage")
session.put(f"{prefix}/joint_command", cbor2.dumps({"v": 99, "names": ["neck_yaw"], "position": [0.0]}))
session.put(f"{prefix}/joint_command", cbor2.dumps({"v": 1, "names": ["no_such_joint"], "position": [0.0]}))
session.put(f"{prefix}/joint_command", cbor2.dumps({"v": 1, "names": ["neck_yaw"], "position": [float("nan")]}))
session.put(f"{prefix}/joint_command", cbor2.dumps({"v": 1, "names": ["neck_yaw", "l_elbow_pitch"], "position": [0.0]}))
bad_step_ok, bad_step = query("step", {"v": 1, "n": "many"})
time.sleep(0.3)
ok, r = query("step", {"v": 1, "n": 10})
assert ok, r
elbow_after = r["state"]["position"][names.index("neck_yaw")]
ok, info2 = query("info")

with lock:
    seqs = [s["seq"] for s in states]
    first = states[0] if states else {}
print(json.dumps({
    "joints": len(names),
    "state_names_match": first.get("names") == names,
    "fields": sorted(first.keys()),
    "n_states": len(states),
    "seqs_increasing": all(b > a for a, b in zip(seqs, seqs[1:])),
    "t_of_seq_20": next((s["t"] for s in states if s["seq"] == 20), None),
    "neck_yaw": elbow,
    "neck_yaw_after_malformed": elbow_after,
    "bad_step_rejected": not bad_step_ok,
    "bad_step_error": bad_step.get("error"),
    "accepted": info2["commands_accepted"],
    "rejected": info2["commands_rejected"],
    "rate_hz": info["rate_hz"],
    "lockstep": info["lockstep"],
    "objects": info["objects"],
}))
session.close()
