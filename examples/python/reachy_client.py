"""Read Reachy's state and send a goto through the daemon's zenoh API.

Needs only `pip install eclipse-zenoh==1.10.2 cbor2`. Start a robot first, e.g.:

    reachy sim --listen tcp/127.0.0.1:7447 &
    reachy daemon --connect tcp/127.0.0.1:7447 --listen tcp/127.0.0.1:7448 &
    python examples/python/reachy_client.py tcp/127.0.0.1:7448

Keys and messages: docs/zenoh-api.md.
"""

import json
import sys
import threading

import cbor2
import zenoh

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp/127.0.0.1:7448"
robot = sys.argv[2] if len(sys.argv) > 2 else "reachy"

conf = zenoh.Config()
conf.insert_json5("mode", '"client"')
conf.insert_json5("connect/endpoints", json.dumps([endpoint]))
conf.insert_json5("scouting/multicast/enabled", "false")
session = zenoh.open(conf)


def ask(name, payload):
    """One query to the daemon; returns the decoded reply."""
    for reply in session.get(f"reachy/{robot}/{name}", payload=cbor2.dumps(payload), timeout=10.0):
        if reply.ok is not None:
            return cbor2.loads(reply.ok.payload.to_bytes())
        raise SystemExit(f"{name}: error reply")
    raise SystemExit(f"{name}: no reply (is the daemon running on {endpoint}?)")


def main():
    """Read the state, take the lease, turn the head, print what happened."""
    latest = {}
    got_state = threading.Event()

    def on_state(sample):
        latest.update(cbor2.loads(sample.payload.to_bytes()))
        got_state.set()

    sub = session.declare_subscriber(f"reachy/{robot}/state", on_state)
    if not got_state.wait(10):
        raise SystemExit("no state")
    before = dict(latest)

    info = ask("info", {"v": 1})
    lease = ask("lease", {"v": 1, "client": "python-example", "priority": "policy"})
    if not lease["granted"]:
        raise SystemExit(f"lease refused: {lease['reason']}")

    # turn the head 0.3 rad in 0.5 s; the reply comes when the motion is done
    reply = ask("goto", {"v": 1, "lease": lease["token"], "names": ["neck_yaw"],
                         "position": [0.3], "duration": 0.5})
    got_state.clear()
    got_state.wait(2)
    after = dict(latest)
    i = after["names"].index("neck_yaw")
    ask("lease", {"v": 1, "client": "python-example", "priority": "policy", "release": lease["token"]})
    print(json.dumps({
        "backend": info["backend"],
        "joints": len(info["joints"]),
        "goto": reply["status"],
        "neck_yaw_before": before["position"][i],
        "neck_yaw_after": after["position"][i],
        "tcp": {p["name"]: p["pose"]["position"] for p in after["tcp"]},
        "gripper": after["gripper"],
    }))
    sub.undeclare()


try:
    main()
finally:
    # an open session keeps the interpreter alive, also when main() exits on an error
    session.close()
