"""Forward dynamics with Pinocchio (articulated-body algorithm, no joint torque), the independent
reference for the sim's multibody dynamics in host/tests/pinocchio.rs.

stdin: {"urdf": path, "cases": [{"joints": [names], "q": [values], "v": [values]}]}
stdout: [[joint accelerations, in the case's joint order]]
"""
import json
import sys

import pinocchio as pin

req = json.load(sys.stdin)
model = pin.buildModelFromUrdf(req["urdf"])
data = model.createData()
out = []
for case in req["cases"]:
    q = pin.neutral(model)
    v = pin.utils.zero(model.nv)
    for name, qi, vi in zip(case["joints"], case["q"], case["v"]):
        joint = model.joints[model.getJointId(name)]
        q[joint.idx_q] = qi
        v[joint.idx_v] = vi
    a = pin.aba(model, data, q, v, pin.utils.zero(model.nv))
    out.append([float(a[model.joints[model.getJointId(n)].idx_v]) for n in case["joints"]])
json.dump(out, sys.stdout)
