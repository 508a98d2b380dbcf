"""The leader's config: `--teleop.type=reachy_rs_leader --teleop.endpoint=… --teleop.robot=…`."""

from dataclasses import dataclass, field

from lerobot.teleoperators.config import TeleoperatorConfig


@TeleoperatorConfig.register_subclass("reachy_rs_leader")
@dataclass
class ReachyRsLeaderConfig(TeleoperatorConfig):
    #: Where the leader's daemon listens (`reachy daemon --listen …`).
    endpoint: str = "tcp/127.0.0.1:7448"
    #: The leader's robot name (`reachy daemon --robot …`).
    robot: str = "reachy"
    #: The joints that make the action (names without `.pos`); empty: all 21, as the
    #: `reachy_rs` robot's action has them.
    joints: list[str] = field(default_factory=list)
    #: Turn the leader's torque off on connect, so a person moves it by hand (this takes the
    #: leader's lease at teleop priority and keeps it until disconnect).
    release_torque: bool = False
    #: Seconds to wait for the leader's first state.
    connect_timeout_s: float = 10.0
