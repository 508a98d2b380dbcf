"""The plugin's robot config: `--robot.type=reachy_rs --robot.endpoint=… --robot.camera_names='[head]'`."""

from dataclasses import dataclass, field

from lerobot.robots.config import RobotConfig


@RobotConfig.register_subclass("reachy_rs")
@dataclass
class ReachyRsConfig(RobotConfig):
    #: Where the daemon listens (`reachy daemon --listen …`).
    endpoint: str = "tcp/127.0.0.1:7448"
    #: The daemon's robot name (`reachy daemon --robot …`).
    robot: str = "reachy"
    #: Cameras as observations (`head`, `r_wrist`, `l_wrist`), at the size below; the daemon must
    #: publish them (`reachy sim --cameras --camera-size WxH`). (Not `cameras`: LeRobot's base
    #: config takes that for camera drivers of its own; these come from the daemon.)
    camera_names: list[str] = field(default_factory=lambda: ["head"])
    camera_width: int = 640
    camera_height: int = 480
    #: Largest change of a joint target per action (rad), as LeRobot robots clamp it; None: none
    #: (the daemon's velocity and position limits still apply).
    max_relative_target: float | None = None
    #: The lease's priority: `policy` (lerobot-record with a policy, replay) or `teleop`.
    priority: str = "policy"
    #: Seconds to wait for the daemon's first state.
    connect_timeout_s: float = 10.0
