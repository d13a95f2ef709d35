"""Test helper: the robot stack (RobotStack) against a simulated Go2 node in this process, over real DDS on loopback."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional


def loopback_deploy(**sections: dict) -> Any:
    """The shipped go2_jetson deployment on loopback; ``sections={"operator": {"remote_timeout_s": 0.3}}`` edits it."""
    from krabby.hal.deploy.profile import load_deployment
    from krabby.hal.robot.deploy_config import DeployConfig

    deploy = DeployConfig.from_deployment(load_deployment("go2_jetson"))
    deploy.dds.network_interface = None
    deploy.dds.writer_lock_memory = False  # mlockall would lock the whole test process's memory
    for name, values in sections.items():
        for k, v in values.items():
            setattr(getattr(deploy, name), k, v)
    return deploy


@contextmanager
def stack_on_sim_node(profile, deploy: Any = None, before_start: Optional[Callable[[Any], None]] = None,
                      node_config: Optional[dict] = None, **options: Any) -> Iterator[tuple]:
    """(stack, node): a started RobotStack (no camera, no keyboard/gamepad unless given) and its simulated node."""
    from krabby.hal.robot.runner import RobotStack, StackOptions
    from krabby.hal.robot.sim_node import SimGo2Node, SimNodeConfig

    dom = random.randint(20, 99)
    node = SimGo2Node(profile, SimNodeConfig(domain_id=dom, physics="double", **(node_config or {}))).start()
    try:
        opts = {"camera": "none", "keyboard": False, "gamepad": False, **options, "domain_id": dom}
        stack = RobotStack(deploy or loopback_deploy(), StackOptions(**opts))
        if before_start is not None:
            before_start(stack)
        stack.start()
        try:
            yield stack, node
        finally:
            stack.stop()
    finally:
        node.stop()
