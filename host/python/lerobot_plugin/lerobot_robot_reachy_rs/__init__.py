"""LeRobot robot plugin: `--robot.type=reachy_rs` drives the Rust stack's `reachy daemon`.

lerobot's `register_third_party_plugins()` imports this package (its name starts with
`lerobot_robot_`), which registers the config below; `lerobot-record`, `lerobot-replay`,
`lerobot-teleoperate` and the async-inference robot client then reach the daemon — real or
simulated — unchanged:

    lerobot-record --robot.type=reachy_rs --robot.endpoint=tcp/127.0.0.1:7448 \\
        --robot.camera_names='[head]' --dataset.repo_id=me/reachy_demo ...

Observations and actions are named as LeRobot's own `reachy2` robot names them
(`r_shoulder_pitch.pos` … `r_gripper.pos`, `l_…`, `neck_yaw.pos` …, `l_antenna.pos`), and as
`reachy record` names them: a dataset recorded either way has the same features.
"""

from .config_reachy_rs import ReachyRsConfig
from .reachy_rs import ReachyRs

__all__ = ["ReachyRs", "ReachyRsConfig"]
