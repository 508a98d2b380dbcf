"""reachy_rs: Python SDK for the Rust Reachy control stack.

```python
from reachy_rs import Reachy
reachy = Reachy("tcp/127.0.0.1:7448", robot="reachy")
reachy.turn_on()
reachy.r_arm.goto([0.3, -1.2, 0.0, -0.8, 0.0, 0.2, 0.0], duration=2.0, wait=True)
reachy.head.look_at(0.5, 0.0, 1.0, duration=1.0)
frame, t = reachy.cameras["head"].get_frame()
reachy.disconnect()
```

Pure Python over the daemon's zenoh API (`eclipse-zenoh`, `cbor2`, `numpy`); names follow
Pollen's `reachy2_sdk`.
"""

from ._zenoh import SCHEMA_VERSION, ReachyError
from .reachy import (
    Arm,
    Camera,
    Fault,
    GoToId,
    Gripper,
    Head,
    Joint,
    Reachy,
    RobotState,
    pose_matrix,
    pose_parts,
)

__all__ = [
    "Arm",
    "Camera",
    "Fault",
    "GoToId",
    "Gripper",
    "Head",
    "Joint",
    "Reachy",
    "ReachyError",
    "RobotState",
    "SCHEMA_VERSION",
    "pose_matrix",
    "pose_parts",
]
__version__ = "0.1.0"
