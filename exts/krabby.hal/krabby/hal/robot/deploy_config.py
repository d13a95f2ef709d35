"""The robot runner's sections of a deployment profile: how *this* robot is wired (DDS, calibration, camera mount, limits).

The robot profile (config/robots/go2.toml) holds what every Go2 shares; a deployment profile
(config/deploy/*.toml, loaded by ``krabby.hal.deploy.profile.load_deployment``, the only reader) holds what
belongs to one installation. Its runner sections ([dds], [zed], [supervisor], [operator]) are typed in
``krabby.hal.deploy.robot_sections``; this is the runner's view of them::

    deploy = DeployConfig.from_deployment(load_deployment("go2_jetson"))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

from ..deploy.profile import DeploymentProfile
from ..deploy.robot_sections import RUNNER_SECTIONS, DdsSection, OperatorSection, ZedSection
from .supervisor import SupervisorConfig


@dataclass
class DeployConfig:
    """What the robot runner takes from a deployment profile: the profile itself and its runner sections (fresh copies)."""

    deployment: DeploymentProfile
    robot: str
    dds: DdsSection = field(default_factory=DdsSection)
    zed: ZedSection = field(default_factory=ZedSection)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    operator: OperatorSection = field(default_factory=OperatorSection)

    @classmethod
    def from_deployment(cls, dep: DeploymentProfile, robot: Optional[str] = None) -> "DeployConfig":
        """``robot`` overrides [deployment] robot (the runner's --robot)."""
        sections = {name: copy.deepcopy(dep.sections[name]) for name in RUNNER_SECTIONS if name in dep.sections}
        return cls(deployment=dep, robot=robot or dep.robot, **sections)


__all__ = ["DeployConfig"]
