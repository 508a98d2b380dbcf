"""Forward kinematics with Pinocchio, the independent reference for host/tests/pinocchio.rs.

stdin: {"urdf": path, "cases": [{"base": link, "tip": link, "joints": [names], "q": [values]}]}
stdout: [{"t": [x, y, z], "R": [[row], [row], [row]]}]  -- tip pose in the base link frame
"""
import json
import sys

import numpy as np
import pinocchio as pin

req = json.load(sys.stdin)
model = pin.buildModelFromUrdf(req["urdf"])
data = model.createData()
out = []
for case in req["cases"]:
    q = pin.neutral(model)
    for name, value in zip(case["joints"], case["q"]):
        jid = model.getJointId(name)
        q[model.joints[jid].idx_q] = value
    pin.framesForwardKinematics(model, data, q)
    base = data.oMf[model.getFrameId(case["base"])]
    tip = data.oMf[model.getFrameId(case["tip"])]
    rel = base.actInv(tip)
    out.append({"t": rel.translation.tolist(), "R": np.asarray(rel.rotation).tolist()})
json.dump(out, sys.stdout)
