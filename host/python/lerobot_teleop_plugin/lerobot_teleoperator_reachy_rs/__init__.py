"""LeRobot teleoperator plugin: `--teleop.type=reachy_rs_leader` reads a leader Reachy.

The leader is any robot behind a `reachy daemon` — a second arm moved by hand (torque off, see
`release_torque`), or a simulated one driven by a script. Its present joint positions are the
action, named as the `reachy_rs` robot names them, so a follower runs under LeRobot's own
scripts unchanged:

    lerobot-teleoperate --robot.type=reachy_rs --robot.endpoint=tcp/127.0.0.1:7448 \\
        --teleop.type=reachy_rs_leader --teleop.endpoint=tcp/127.0.0.1:7450 --teleop.robot=leader
"""

from .config_reachy_rs_leader import ReachyRsLeaderConfig
from .reachy_rs_leader import ReachyRsLeader

__all__ = ["ReachyRsLeader", "ReachyRsLeaderConfig"]
