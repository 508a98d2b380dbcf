"""`Reachy`: the robot behind a `reachy daemon`, named as Pollen's `reachy2_sdk` names it.

Positions are radians and metres everywhere (`degrees=True` on `goto` takes degrees, as
Pollen's SDK does by default); poses are 4x4 homogeneous matrices in the robot's base frame.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._zenoh import Api, Lease, ReachyError, open_session

#: Verdicts after which a motion request raises: nothing moved, or the request was refused.
_FAILED = ("rejected", "unreachable")

Pose = np.ndarray


def pose_matrix(position: Sequence[float], orientation: Sequence[float]) -> Pose:
    """A 4x4 pose from a position and an [x, y, z, w] quaternion."""
    x, y, z, w = (float(v) for v in orientation)
    n = x * x + y * y + z * z + w * w
    s = 2.0 / n if n > 0 else 0.0
    m = np.eye(4)
    m[:3, :3] = [
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ]
    m[:3, 3] = [float(v) for v in position]
    return m


def pose_parts(pose: Pose) -> Tuple[List[float], List[float]]:
    """A 4x4 pose as (position, [x, y, z, w] quaternion)."""
    m = np.asarray(pose, dtype=float)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"a pose is a finite 4x4 matrix, not {m.shape}")
    r = m[:3, :3]
    t = float(np.trace(r))
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    return [float(v) for v in m[:3, 3]], [float(v) for v in q]


@dataclass(frozen=True)
class GoToId:
    """A motion request (`goto`, `look_at`, gripper); `reachy.is_goto_finished(id)` tells."""

    id: int


@dataclass
class Fault:
    joint: str
    fault: str


@dataclass
class RobotState:
    """The daemon's last state message, typed."""

    seq: int
    t: float
    backend: str
    names: List[str]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    target: np.ndarray
    #: TCP poses (4x4) by arm, from the measured joints.
    tcp: Dict[str, Pose]
    #: Gripper openings in [0, 1] by side (`r`, `l`).
    gripper: Dict[str, float]
    torque: bool
    estop: bool
    lease: Optional[str]
    moving: bool
    stale: bool
    rejected: int
    faults: List[Fault] = field(default_factory=list)
    #: The head camera's pose (4x4; it looks along its +z), when the daemon reports it.
    gaze: Optional[Pose] = None

    @staticmethod
    def from_msg(m: Dict[str, Any]) -> "RobotState":
        def pose(p: Dict[str, Any]) -> Pose:
            return pose_matrix(p["position"], p["orientation"])

        grip = list(m.get("gripper") or [])
        return RobotState(
            seq=int(m["seq"]),
            t=float(m["t"]),
            backend=m.get("backend", ""),
            names=list(m["names"]),
            position=np.asarray(m["position"], dtype=float),
            velocity=np.asarray(m.get("velocity", []), dtype=float),
            effort=np.asarray(m.get("effort", []), dtype=float),
            target=np.asarray(m.get("target", []), dtype=float),
            tcp={p["name"]: pose(p["pose"]) for p in m.get("tcp") or []},
            gripper=dict(zip(("r", "l"), (float(g) for g in grip))),
            torque=bool(m.get("torque", True)),
            estop=bool(m.get("estop", False)),
            lease=m.get("lease"),
            moving=bool(m.get("moving", False)),
            stale=bool(m.get("stale", False)),
            rejected=int(m.get("rejected", 0)),
            faults=[Fault(f["joint"], f["fault"]) for f in m.get("faults") or []],
            gaze=pose(m["gaze"]) if m.get("gaze") else None,
        )

    def joint(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no joint `{name}` (the robot has {', '.join(self.names)})") from None


class Joint:
    """One joint, read from the latest state (radians)."""

    def __init__(self, reachy: "Reachy", name: str):
        self._reachy = reachy
        self.name = name

    def _get(self, what: str) -> float:
        st = self._reachy.state
        return float(getattr(st, what)[st.joint(self.name)])

    @property
    def present_position(self) -> float:
        """Measured position (rad)."""
        return self._get("position")

    @property
    def goal_position(self) -> float:
        """What the daemon sent this period (rad, after its limits)."""
        return self._get("target")

    @property
    def present_speed(self) -> float:
        return self._get("velocity")

    @property
    def present_load(self) -> float:
        return self._get("effort")

    def __repr__(self) -> str:
        return f"<Joint {self.name} present_position={self.present_position:.4f}>"


class _Part:
    """A chain of joints (`r_arm`, `l_arm`, `head`), its joints as attributes."""

    def __init__(self, reachy: "Reachy", name: str, joints: List[str], prefix: str):
        self._reachy = reachy
        self.name = name
        self.joint_names = joints
        self._joints = {j[len(prefix):] if j.startswith(prefix) else j: Joint(reachy, j) for j in joints}

    def __getattr__(self, attr: str) -> Joint:
        joints = self.__dict__.get("_joints", {})
        if attr in joints:
            return joints[attr]
        raise AttributeError(f"{self.__dict__.get('name', 'part')} has no `{attr}` (joints: {', '.join(joints)})")

    def __dir__(self) -> List[str]:
        return list(super().__dir__()) + list(self._joints)

    @property
    def joints(self) -> Dict[str, Joint]:
        """Joints by short name (`shoulder_pitch`, `neck_yaw`)."""
        return dict(self._joints)

    def get_current_positions(self) -> List[float]:
        """Measured positions of the part's joints (rad)."""
        st = self._reachy.state
        return [float(st.position[st.joint(j)]) for j in self.joint_names]

    def goto(
        self,
        target: Union[Sequence[float], Pose],
        duration: float = 2.0,
        wait: bool = False,
        interpolation_mode: str = "minimum_jerk",
        degrees: bool = False,
    ) -> GoToId:
        """Move the part's joints to `target` (one per joint) in `duration` s, minimum-jerk.

        `wait=True` returns once the motion ended (and raises ReachyError when it was refused);
        otherwise at once, with an id for `is_goto_finished`.
        """
        _check_mode(interpolation_mode)
        q = np.asarray(target, dtype=float).reshape(-1)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"{self.name} takes {len(self.joint_names)} joint positions, not {q.size}")
        if degrees:
            q = np.deg2rad(q)
        return self._reachy._request(
            "goto",
            {"names": self.joint_names, "position": [float(v) for v in q], "duration": float(duration)},
            wait,
        )


def _check_mode(mode: str) -> None:
    if mode != "minimum_jerk":
        raise ValueError(f"interpolation_mode `{mode}`: the daemon interpolates minimum_jerk only")


class Gripper:
    """An arm's gripper; openings in percent (0 closed, 100 open), as Pollen's SDK."""

    def __init__(self, reachy: "Reachy", side: str):
        self._reachy = reachy
        self.side = side

    @property
    def opening(self) -> float:
        """Measured opening (percent)."""
        return 100.0 * self._reachy.state.gripper[self.side]

    def set_opening(self, percent: float, duration: float = 0.5, wait: bool = True) -> GoToId:
        p = float(percent)
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"an opening is a percentage within 0..100, not {p}")
        return self._reachy._request(
            "gripper", {"side": self.side, "opening": p / 100.0, "duration": float(duration)}, wait
        )

    def open(self, duration: float = 0.5, wait: bool = True) -> GoToId:
        return self.set_opening(100.0, duration, wait)

    def close(self, duration: float = 0.5, wait: bool = True) -> GoToId:
        return self.set_opening(0.0, duration, wait)


class Arm(_Part):
    """`reachy.r_arm`, `reachy.l_arm`: 7 joints, a gripper, Cartesian motion through the daemon's IK."""

    def __init__(self, reachy: "Reachy", name: str, joints: List[str]):
        super().__init__(reachy, name, joints, name[0] + "_")
        self.gripper = Gripper(reachy, name[0])

    def goto(  # type: ignore[override]
        self,
        target: Union[Sequence[float], Pose],
        duration: float = 2.0,
        wait: bool = False,
        interpolation_mode: str = "minimum_jerk",
        degrees: bool = False,
    ) -> GoToId:
        """To 7 joint positions, or the TCP to a 4x4 pose (solved by the daemon's IK)."""
        t = np.asarray(target, dtype=float)
        if t.shape == (4, 4):
            _check_mode(interpolation_mode)
            position, orientation = pose_parts(t)
            return self._reachy._request(
                "cartesian",
                {"arm": self.name, "position": position, "orientation": orientation, "duration": float(duration)},
                wait,
            )
        return super().goto(target, duration, wait, interpolation_mode, degrees)

    def forward_kinematics(self, joints_positions: Optional[Sequence[float]] = None) -> Pose:
        """The TCP's 4x4 pose: of the measured joints, or of `joints_positions` (rad)."""
        if joints_positions is None:
            st = self._reachy.state
            if self.name not in st.tcp:
                raise ReachyError("unavailable", f"the state carries no TCP of {self.name}")
            return st.tcp[self.name]
        q = [float(v) for v in joints_positions]
        r = self._reachy._api.ask("kinematics", {"arm": self.name, "q": q})
        _raise_on(r)
        return pose_matrix(r["pose"]["position"], r["pose"]["orientation"])

    def inverse_kinematics(self, target: Pose, q0: Optional[Sequence[float]] = None) -> List[float]:
        """7 joint positions putting the TCP at `target` (from `q0`, default the current
        targets); ReachyError with the reason when it is out of reach."""
        position, orientation = pose_parts(target)
        msg: Dict[str, Any] = {"arm": self.name, "position": position, "orientation": orientation}
        if q0 is not None:
            msg["q"] = [float(v) for v in q0]
        r = self._reachy._api.ask("kinematics", msg)
        _raise_on(r)
        return [float(v) for v in r["q"]]


class Head(_Part):
    """`reachy.head`: the neck (`neck_yaw`, `neck_pitch`, `neck_roll`)."""

    def __init__(self, reachy: "Reachy", joints: List[str]):
        super().__init__(reachy, "head", joints, "")

    def look_at(self, x: float, y: float, z: float, duration: float = 1.0, wait: bool = True) -> GoToId:
        """Point the head camera at (x, y, z) in the base frame (m)."""
        return self._reachy._request("look_at", {"point": [float(x), float(y), float(z)], "duration": float(duration)}, wait)


class Camera:
    """A camera the daemon re-publishes; frames as H x W x 3 uint8 arrays."""

    def __init__(self, reachy: "Reachy", name: str, width: int, height: int, fps: float):
        self._reachy = reachy
        self.name = name
        self.width, self.height, self.fps = width, height, fps
        self._frame: Optional[Tuple[np.ndarray, float]] = None
        self._new = threading.Condition()
        self._sub: Any = None

    def _on(self, m: Dict[str, Any]) -> None:
        w, h = int(m.get("width", 0)), int(m.get("height", 0))
        data = m.get("data", b"")
        if m.get("encoding") != "rgb8" or len(data) != w * h * 3:
            return
        img = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
        with self._new:
            self._frame = (img, float(m.get("t", 0.0)))
            self._new.notify_all()

    def get_frame(self, timeout: float = 10.0) -> Tuple[np.ndarray, float]:
        """The latest frame and its (robot) time; waits for the first one."""
        with self._new:
            if self._sub is None:
                self._sub = self._reachy._api.subscribe(f"camera/{self.name}", self._on)
            if not self._new.wait_for(lambda: self._frame is not None, timeout):
                raise ReachyError(
                    "unavailable",
                    f"camera `{self.name}` sent no frame within {timeout} s (a sim started without --cameras?)",
                )
            assert self._frame is not None
            return self._frame


class Cameras(dict):
    """Cameras by name; `head`, `r_wrist`, `l_wrist` also stand for `head_camera` & co."""

    def __missing__(self, key: str) -> Camera:
        full = f"{key}_camera"
        if full in self:
            return self[full]
        raise KeyError(f"no camera `{key}` (the robot has {', '.join(self) or 'none'})")


def _raise_on(r: Dict[str, Any]) -> None:
    if r.get("status") in _FAILED:
        raise ReachyError(r["status"], r.get("reason"))


class Reachy:
    """The robot behind a `reachy daemon` at `endpoint`: connects and waits for the first state.

    `client` and `priority` (`script`, `policy` or `teleop`) name this program to the daemon's
    lease, which is taken on the first command and kept alive while connected.
    """

    def __init__(
        self,
        endpoint: str = "tcp/127.0.0.1:7448",
        robot: str = "reachy",
        client: str = "reachy_rs",
        priority: str = "script",
        timeout: float = 10.0,
    ):
        self.endpoint = endpoint
        self.robot = robot
        self._session = open_session(endpoint)
        self._api = Api(self._session, robot, timeout)
        self._lease = Lease(self._api, client, priority)
        self._state_lock = threading.Condition()
        self._state: Optional[RobotState] = None
        self._callbacks: List[Callable[[RobotState], None]] = []
        self._ids = itertools.count(1)
        self._gotos: Dict[int, Tuple[threading.Event, Dict[str, Any]]] = {}
        self._sub = self._api.subscribe("state", self._on_state)
        try:
            with self._state_lock:
                if not self._state_lock.wait_for(lambda: self._state is not None, timeout):
                    raise ReachyError(
                        "unavailable",
                        f"no state from robot `{robot}` at {endpoint} within {timeout} s: is its daemon "
                        f"running (`reachy daemon --robot {robot} --listen {endpoint}`)?",
                    )
            self.info: Dict[str, Any] = self._api.ask("info")
        except BaseException:
            self._session.close()
            raise
        chains = {name: list(joints) for name, joints in self.info["chains"]}
        self.r_arm = Arm(self, "r_arm", chains["r_arm"] + ["r_gripper"])
        self.r_arm.joint_names = chains["r_arm"]
        self.l_arm = Arm(self, "l_arm", chains["l_arm"] + ["l_gripper"])
        self.l_arm.joint_names = chains["l_arm"]
        self.head = Head(self, chains["head"])
        self.cameras = Cameras(
            {c["name"]: Camera(self, c["name"], c["width"], c["height"], c["fps"]) for c in self.info.get("cameras", [])}
        )

    # state
    def _on_state(self, m: Dict[str, Any]) -> None:
        try:
            st = RobotState.from_msg(m)
        except (KeyError, TypeError, ValueError):
            return
        with self._state_lock:
            self._state = st
            self._state_lock.notify_all()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(st)

    @property
    def state(self) -> RobotState:
        """The last state the daemon published."""
        assert self._state is not None
        return self._state

    @property
    def joints(self) -> Dict[str, float]:
        """Every joint's measured position (rad), by name."""
        st = self.state
        return {n: float(p) for n, p in zip(st.names, st.position)}

    def on_state(self, callback: Callable[[RobotState], None]) -> Callable[[], None]:
        """Call `callback` with every new state (on zenoh's thread); returns the unsubscriber."""
        with self._state_lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._state_lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def wait_for_state(self, ok: Callable[[RobotState], bool], timeout: float = 10.0) -> RobotState:
        """The first state for which `ok` holds; ReachyError after `timeout`."""
        with self._state_lock:
            if not self._state_lock.wait_for(lambda: self._state is not None and ok(self._state), timeout):
                raise ReachyError("timeout", f"no such state within {timeout} s")
            assert self._state is not None
            return self._state

    # motion
    def _request(self, name: str, msg: Dict[str, Any], wait: bool) -> GoToId:
        gid = GoToId(next(self._ids))
        done = threading.Event()
        slot: Dict[str, Any] = {}
        self._gotos[gid.id] = (done, slot)
        full = {"lease": self._lease.token(), **msg}
        # the daemon answers a motion when it ended: up to its duration, and a margin
        timeout = float(msg.get("duration", 1.0)) + 10.0

        def run() -> None:
            try:
                slot["reply"] = self._api.ask(name, full, timeout=timeout)
            except ReachyError as e:
                slot["reply"] = {"status": e.status, "reason": e.reason}
            done.set()

        if wait:
            run()
            _raise_on(slot["reply"])
        else:
            threading.Thread(target=run, name=f"reachy-{name}", daemon=True).start()
        return gid

    def is_goto_finished(self, goto_id: GoToId) -> bool:
        """Whether the motion `goto_id` ended (reached, missed, cancelled or refused)."""
        return self._gotos[goto_id.id][0].is_set()

    def get_goto_result(self, goto_id: GoToId, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The daemon's verdict on `goto_id` (`status`, `reason`), waiting for it."""
        done, slot = self._gotos[goto_id.id]
        if not done.wait(timeout):
            raise ReachyError("timeout", f"goto {goto_id.id} still running")
        return dict(slot["reply"])

    def cancel_all_goto(self) -> None:
        """Stop the running motion where the robot is."""
        _raise_on(self._api.ask("cancel", {"lease": self._lease.token()}))

    def send_goal_positions(self, positions: Dict[str, float]) -> None:
        """Stream joint targets (rad) by name: applied at once, through the daemon's limits."""
        names = list(positions)
        self._api.put(
            "command/joints",
            {"lease": self._lease.token(), "names": names, "position": [float(positions[n]) for n in names]},
        )

    # power and safety
    def turn_on(self) -> None:
        """Torque on, holding where the robot is (takes the lease)."""
        _raise_on(self._api.ask("torque", {"lease": self._lease.token(), "on": True}))

    def turn_off(self) -> None:
        """Torque off: the joints go compliant."""
        _raise_on(self._api.ask("torque", {"lease": self._lease.token(), "on": False}))

    def emergency_stop(self) -> None:
        """Latch the e-stop (anyone may): torque off, the running motion dropped."""
        _raise_on(self._api.ask("estop", {"engage": True}))

    def clear_emergency_stop(self) -> None:
        """Clear the e-stop (needs the lease); the robot holds where it stands."""
        _raise_on(self._api.ask("estop", {"engage": False, "lease": self._lease.token()}))

    @property
    def is_connected(self) -> bool:
        return self._session is not None

    def disconnect(self) -> None:
        """Release the lease and close the session."""
        if self._session is None:
            return
        self._lease.release()
        try:
            self._sub.undeclare()
        except Exception:
            pass
        self._session.close()
        self._session = None  # type: ignore[assignment]

    def __enter__(self) -> "Reachy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        return f"<Reachy robot={self.robot!r} endpoint={self.endpoint!r}>"


def wait_until(ok: Callable[[], bool], timeout: float, every: float = 0.01) -> bool:
    """Poll `ok` until it holds or `timeout` passes."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ok():
            return True
        time.sleep(every)
    return ok()
