"""The backend interface every HAL backend implements (MuJoCo, Isaac Sim, the robot, the test double).

Shaped after ros2_control's hardware interface: per control step the server calls ``read()`` and
then ``apply()``. A backend never sees the policy or the wire; the HAL server never touches
hardware except through these two calls.
"""

from __future__ import annotations

import abc

from .robot_profile import RobotProfile
from .types import ActuatorCommand, SensorFrame


class HalBackend(abc.ABC):
    """Sensors in, joint targets out. Subclasses live one per file under ``krabby/hal/backends/``."""

    profile: RobotProfile

    #: Which optional telemetry this backend produces (declared before connect, as LeRobot does).
    provides_depth: bool = False
    provides_height_scan: bool = False
    provides_navigation: bool = False

    #: Episode counter: a simulator adds 1 at every respawn, a robot stays at 0. The server writes it into
    #: every telemetry header, so a client resets its history on exactly the first state of a new episode.
    episode: int = 0

    def connect(self) -> None:
        """Acquire devices or build the simulation. Default: nothing to do."""

    def disconnect(self) -> None:
        """Release devices. Must be safe to call twice."""

    @abc.abstractmethod
    def read(self) -> SensorFrame:
        """Return the newest sensor data with its capture timestamps."""

    @abc.abstractmethod
    def apply(self, command: ActuatorCommand) -> None:
        """Hold these joint targets/gains until the next call (the backend runs the PD at its own rate)."""

    def __enter__(self) -> "HalBackend":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
