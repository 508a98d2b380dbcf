"""`ReachyRsLeader`: a LeRobot `Teleoperator` whose action is a leader Reachy's joint positions."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot_robot_reachy_rs.reachy_rs import JOINTS

from reachy_rs import Reachy, ReachyError

from .config_reachy_rs_leader import ReachyRsLeaderConfig

logger = logging.getLogger(__name__)


class ReachyRsLeader(Teleoperator):
    """A Reachy behind a `reachy daemon` (real or simulated) as a leader."""

    config_class = ReachyRsLeaderConfig
    name = "reachy_rs_leader"

    def __init__(self, config: ReachyRsLeaderConfig):
        super().__init__(config)
        self.config = config
        unknown = [j for j in config.joints if j not in JOINTS]
        if unknown:
            raise ValueError(
                f"unknown joints {', '.join(unknown)} in --teleop.joints; known: {', '.join(JOINTS)}"
            )
        self.joints = tuple(config.joints) or JOINTS
        self.reachy: Reachy | None = None

    @cached_property
    def action_features(self) -> dict[str, type]:
        return {f"{j}.pos": float for j in self.joints}

    @cached_property
    def feedback_features(self) -> dict[str, type]:
        return {}

    @property
    def is_connected(self) -> bool:
        return self.reachy is not None and self.reachy.is_connected

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise RuntimeError(f"{self} is already connected")
        reachy = Reachy(
            self.config.endpoint,
            robot=self.config.robot,
            client=f"lerobot-leader-{self.id or 'reachy_rs'}",
            priority="teleop",
            timeout=self.config.connect_timeout_s,
        )
        try:
            missing = [j for j in self.joints if j not in reachy.state.names]
            if missing:
                raise ReachyError("rejected", f"the leader's robot has no {', '.join(missing)}")
            if self.config.release_torque:
                reachy.turn_off()
        except BaseException:
            reachy.disconnect()
            raise
        self.reachy = reachy
        logger.info("%s connected to %s", self, self.config.endpoint)

    @property
    def is_calibrated(self) -> bool:
        # the leader's servos are calibrated by its own daemon's setup
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_action(self) -> dict[str, float]:
        if self.reachy is None:
            raise RuntimeError(f"{self} is not connected")
        st = self.reachy.state
        return {f"{j}.pos": float(st.position[st.joint(j)]) for j in self.joints}

    def send_feedback(self, feedback: dict[str, Any]) -> None:
        # no force feedback on a Reachy leader
        pass

    def disconnect(self) -> None:
        if self.reachy is None:
            raise RuntimeError(f"{self} is not connected")
        self.reachy.disconnect()
        self.reachy = None
        logger.info("%s disconnected", self)
