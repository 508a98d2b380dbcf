"""Every call of the `reachy_rs` SDK against a running daemon, with its effect measured.

Usage: sdk_check.py ENDPOINT ROBOT. Prints one JSON line of measurements; host/tests/python_sdk.rs
asserts on them.
"""

import json
import sys

import numpy as np

from reachy_rs import Reachy, ReachyError

endpoint, robot = sys.argv[1], sys.argv[2]
out = {}


def refused(f):
    """The ReachyError `f` raises, as (status, reason); None when it raised nothing."""
    try:
        f()
    except ReachyError as e:
        return [e.status, e.reason]
    return None


reachy = Reachy(endpoint, robot=robot, client="sdk-check")
try:
    out["joints"] = len(reachy.joints)
    out["state_names"] = len(reachy.state.names)
    reachy.turn_on()

    # joints
    # the hand in front of the table's edge (a forearm pressed on the table would miss its goal)
    target = [0.3, -1.2, 0.0, -0.8, 0.0, 0.2, 0.0]
    g = reachy.r_arm.goto(target, duration=1.0, interpolation_mode="minimum_jerk", degrees=False, wait=True)
    out["goto_finished"] = reachy.is_goto_finished(g)
    out["goto_status"] = reachy.get_goto_result(g)["status"]
    out["goto_err"] = max(abs(a - b) for a, b in zip(reachy.r_arm.get_current_positions(), target))
    out["elbow_pitch"] = reachy.r_arm.elbow_pitch.present_position
    g = reachy.r_arm.goto(np.rad2deg(target) + [10, 0, 0, 0, 0, 0, 0], duration=0.5, degrees=True, wait=True)
    out["degrees_shoulder_pitch"] = reachy.r_arm.shoulder_pitch.present_position
    out["bad_mode"] = None
    try:
        reachy.r_arm.goto(target, interpolation_mode="linear")
    except ValueError as e:
        out["bad_mode"] = str(e)

    # kinematics
    pose = reachy.r_arm.forward_kinematics()
    fk = reachy.r_arm.forward_kinematics(reachy.r_arm.get_current_positions())
    out["fk_agrees"] = float(np.abs(pose - fk).max())
    # a pose the arm can reach: where the elbow bent 0.2 rad further would put the TCP
    up = reachy.r_arm.forward_kinematics(np.add(target, [0, 0, 0, -0.2, 0, 0, 0]))
    out["pose_moved"] = float(np.linalg.norm(up[:3, 3] - pose[:3, 3]))
    q = reachy.r_arm.inverse_kinematics(up)
    out["ik_joints"] = len(q)
    out["ik_fk_err"] = float(np.linalg.norm(reachy.r_arm.forward_kinematics(q)[:3, 3] - up[:3, 3]))
    reachy.r_arm.goto(up, duration=1.0, wait=True)
    out["cartesian_err"] = float(np.linalg.norm(reachy.r_arm.forward_kinematics()[:3, 3] - up[:3, 3]))
    far = np.eye(4)
    far[:3, 3] = [2.0, 0.0, 0.5]
    out["ik_unreachable"] = refused(lambda: reachy.r_arm.inverse_kinematics(far))
    before = reachy.r_arm.get_current_positions()
    out["goto_unreachable"] = refused(lambda: reachy.r_arm.goto(far, duration=1.0, wait=True))
    out["unreachable_moved"] = max(abs(a - b) for a, b in zip(reachy.r_arm.get_current_positions(), before))

    # gripper (percent)
    reachy.r_arm.gripper.close()
    out["gripper_closed"] = reachy.r_arm.gripper.opening
    reachy.r_arm.gripper.set_opening(50)
    out["gripper_half"] = reachy.r_arm.gripper.opening
    reachy.r_arm.gripper.open()
    out["gripper_open"] = reachy.r_arm.gripper.opening

    # head
    point = np.array([0.5, 0.2, 1.0])
    reachy.head.look_at(*point, duration=0.5)
    gaze = reachy.state.gaze
    ray = point - gaze[:3, 3]
    cos = float(np.dot(gaze[:3, 2], ray) / np.linalg.norm(ray))
    out["look_at_angle"] = float(np.arccos(min(1.0, cos)))
    out["neck_yaw"] = reachy.head.neck_yaw.present_position

    # camera
    frame, t = reachy.cameras["head"].get_frame()
    out["frame_shape"] = list(frame.shape)
    out["frame_dtype"] = str(frame.dtype)
    out["frame_std"] = float(frame.std())
    out["camera_advertised"] = [reachy.cameras["head"].height, reachy.cameras["head"].width]

    # a goto without waiting, then cancelled
    g = reachy.head.goto([-0.5, 0.0, 0.0], duration=3.0)
    reachy.wait_for_state(lambda s: s.moving, timeout=5)
    out["finished_while_running"] = reachy.is_goto_finished(g)
    reachy.cancel_all_goto()
    out["cancelled"] = reachy.get_goto_result(g, timeout=10)["status"]

    # a second client without the lease
    other = Reachy(endpoint, robot=robot, client="sdk-other", priority="script")
    try:
        out["other_refused"] = refused(lambda: other.head.goto([0.0, 0.0, 0.0], duration=0.5, wait=True))
    finally:
        other.disconnect()

    # state callbacks
    got = []
    remove = reachy.on_state(got.append)
    reachy.wait_for_state(lambda s: len(got) >= 5, timeout=5)
    remove()
    out["callbacks"] = len(got) >= 5
    out["callback_seq_increasing"] = all(b.seq > a.seq for a, b in zip(got, got[1:]))

    # e-stop, torque off
    reachy.emergency_stop()
    out["estop"] = reachy.wait_for_state(lambda s: s.estop, timeout=5).estop
    reachy.clear_emergency_stop()
    out["estop_cleared"] = not reachy.wait_for_state(lambda s: not s.estop, timeout=5).estop
    reachy.turn_off()
    out["torque_off"] = not reachy.wait_for_state(lambda s: not s.torque, timeout=5).torque
    reachy.turn_on()
finally:
    reachy.disconnect()

# no daemon: a clear error, not a hang
try:
    Reachy(endpoint, robot="nobody-here", timeout=2.0)
    out["missing_robot"] = None
except ReachyError as e:
    out["missing_robot"] = str(e)
print(json.dumps(out))
