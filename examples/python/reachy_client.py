"""Read Reachy's state and send a goto through the daemon, with the `reachy_rs` SDK.

Needs only `pip install ./host/python` (eclipse-zenoh, cbor2, numpy). Start a robot first, e.g.:

    reachy sim --listen tcp/127.0.0.1:7447 &
    reachy daemon --connect tcp/127.0.0.1:7447 --listen tcp/127.0.0.1:7448 &
    python examples/python/reachy_client.py tcp/127.0.0.1:7448

The SDK's calls: host/python/README.md; the keys and messages under it: docs/zenoh-api.md.
"""

import json
import sys

from reachy_rs import Reachy

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp/127.0.0.1:7448"
robot = sys.argv[2] if len(sys.argv) > 2 else "reachy"

# connects and waits for the first state; disconnect() (here: the with block) releases the lease
# and closes the session, also when something raises
with Reachy(endpoint, robot=robot, client="python-example", priority="policy") as reachy:
    before = reachy.head.neck_yaw.present_position
    # turn the head 0.3 rad in 0.5 s; with wait=True it returns when the motion is done
    g = reachy.head.goto([0.3, 0.0, 0.0], duration=0.5, wait=True)
    seq = reachy.state.seq
    st = reachy.wait_for_state(lambda s: s.seq > seq)  # a state from after the motion
    print(json.dumps({
        "backend": reachy.info["backend"],
        "joints": len(reachy.joints),
        "goto": reachy.get_goto_result(g)["status"],
        "neck_yaw_before": before,
        "neck_yaw_after": float(st.position[st.joint("neck_yaw")]),
        "tcp": {arm: pose[:3, 3].tolist() for arm, pose in st.tcp.items()},
        "gripper": st.gripper,
    }))
