"""`ReachyRs`: a LeRobot `Robot` over the daemon's zenoh API (through the `reachy_rs` SDK)."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from lerobot.robots.robot import Robot
from lerobot.robots.utils import ensure_safe_goal_position

from reachy_rs import Reachy, ReachyError

from .config_reachy_rs import ReachyRsConfig

logger = logging.getLogger(__name__)

#: Reachy's actuated joints in the daemon's state order (the built-in URDF's), as LeRobot's
#: `reachy2` robot and `reachy record` name them with `.pos`.
JOINTS = (
    "r_shoulder_pitch",
    "r_shoulder_roll",
    "r_elbow_yaw",
    "r_elbow_pitch",
    "r_wrist_roll",
    "r_wrist_pitch",
    "r_wrist_yaw",
    "r_gripper",
    "l_shoulder_pitch",
    "l_shoulder_roll",
    "l_elbow_yaw",
    "l_elbow_pitch",
    "l_wrist_roll",
    "l_wrist_pitch",
    "l_wrist_yaw",
    "l_gripper",
    "neck_yaw",
    "neck_pitch",
    "neck_roll",
    "l_antenna",
    "r_antenna",
)


class ReachyRs(Robot):
    """The Rust Reachy stack's robot, real or simulated, as a LeRobot robot."""

    config_class = ReachyRsConfig
    name = "reachy_rs"

    def __init__(self, config: ReachyRsConfig):
        super().__init__(config)
        self.config = config
        self.reachy: Reachy | None = None
        #: The cameras by name (lerobot-record sizes its image writer by them); the SDK's
        #: `Camera` objects once connected.
        self.cameras: dict[str, Any] = dict.fromkeys(config.camera_names)

    @cached_property
    def _motors_ft(self) -> dict[str, type]:
        return {f"{j}.pos": float for j in JOINTS}

    @cached_property
    def _cameras_ft(self) -> dict[str, tuple]:
        return {c: (self.config.camera_height, self.config.camera_width, 3) for c in self.config.camera_names}

    @cached_property
    def observation_features(self) -> dict[str, type | tuple]:
        return {**self._motors_ft, **self._cameras_ft}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return self._motors_ft

    @property
    def is_connected(self) -> bool:
        return self.reachy is not None and self.reachy.is_connected

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise RuntimeError(f"{self} is already connected")
        reachy = Reachy(
            self.config.endpoint,
            robot=self.config.robot,
            client=f"lerobot-{self.id or 'reachy_rs'}",
            priority=self.config.priority,
            timeout=self.config.connect_timeout_s,
        )
        try:
            missing = [j for j in JOINTS if j not in reachy.state.names]
            if missing:
                raise ReachyError("rejected", f"the daemon's robot has no {', '.join(missing)}")
            for c in self.config.camera_names:
                cam = reachy.cameras[c]
                if (cam.width, cam.height) != (self.config.camera_width, self.config.camera_height):
                    raise ReachyError(
                        "rejected",
                        f"camera `{c}` is {cam.width}x{cam.height}, the config says "
                        f"{self.config.camera_width}x{self.config.camera_height} (--robot.camera_width/height)",
                    )
        except BaseException:
            reachy.disconnect()
            raise
        self.reachy = reachy
        self.cameras = {c: reachy.cameras[c] for c in self.config.camera_names}
        self.configure()
        logger.info("%s connected to %s", self, self.config.endpoint)

    @property
    def is_calibrated(self) -> bool:
        # the daemon's servos are calibrated by their own setup (the URDF's servo map)
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def _reachy(self) -> Reachy:
        if self.reachy is None:
            raise RuntimeError(f"{self} is not connected")
        return self.reachy

    def get_observation(self) -> dict[str, Any]:
        r = self._reachy()
        st = r.state
        obs: dict[str, Any] = {f"{j}.pos": float(st.position[st.joint(j)]) for j in JOINTS}
        for c in self.config.camera_names:
            frame, _t = r.cameras[c].get_frame()
            obs[c] = frame
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        r = self._reachy()
        goal = {k.removesuffix(".pos"): float(v) for k, v in action.items() if k.endswith(".pos")}
        unknown = [k for k in goal if k not in JOINTS]
        if unknown:
            raise ValueError(f"unknown joints in the action: {', '.join(unknown)}")
        if self.config.max_relative_target is not None:
            st = r.state
            goal_present = {k: (g, float(st.position[st.joint(k)])) for k, g in goal.items()}
            goal = ensure_safe_goal_position(goal_present, float(self.config.max_relative_target))
        r.send_goal_positions(goal)
        return {f"{k}.pos": v for k, v in goal.items()}

    def disconnect(self) -> None:
        if self.reachy is None:
            raise RuntimeError(f"{self} is not connected")
        self.reachy.disconnect()
        self.reachy = None
        logger.info("%s disconnected", self)
