"""Which Isaac Sim / Isaac Lab releases Krabby runs on, and a one-line refusal for the others (pure Python).

Krabby's Kit and Isaac Lab code was read call by call against Isaac Sim 5.1 (Kit 107.3) and Isaac
Lab 2.3. The next releases changed APIs it uses, so they are refused at startup rather than failing
somewhere inside a physics step:

- Isaac Sim 6.x (Kit 110): physics-step callbacks come from ``omni.physics.core``'s simulation
  interface and take ``(dt, context)``; ``isaacsim.core.prims``, ``isaacsim.core.api`` and
  ``omni.isaac.ml_archive`` moved to ``source/deprecated`` (isaac-sim/IsaacSim @ v6.0.1:
  source/extensions/isaacsim.core.simulation_manager/python/impl/simulation_manager.py:61, 1179-1190).
- Isaac Lab 3.x: ``AppLauncher`` is a deprecated adapter over ``launch_simulation`` and the assets
  moved to per-backend packages (``isaaclab_physx``, ``isaaclab_newton``), so the env's data and
  action-term internals Krabby reads are not the 2.x ones (isaac-sim/IsaacLab @ 00b36b75:
  source/isaaclab/isaaclab/app/app_launcher.py, source/isaaclab/isaaclab/app/sim_launcher.py).
"""

from __future__ import annotations

from typing import Optional

SUPPORTED_ISAAC_SIM = "Isaac Sim 5.0 / 5.1 (Kit 107)"
SUPPORTED_ISAAC_LAB = "Isaac Lab 2.x (package isaaclab 0.x; read against 2.3) on Isaac Sim 5.x"
#: Kit kernel major of Isaac Sim 5.x (IS v5.1.0 deps/kit-sdk.packman.xml: kit-kernel 107.3.3; v6.0.1: 110.1.2).
KIT_MAJOR_OF_ISAAC_SIM_5 = 107


def _major(version: str) -> Optional[int]:
    head = (version or "").strip().split("+")[0].split("-")[0].split(".")[0]
    return int(head) if head.isdigit() else None


def isaac_sim_version_problem(isaac_sim_version: str, kit_version: str) -> Optional[str]:
    """None when this Isaac Sim is supported (or cannot be told), else one line naming the supported versions.

    ``isaac_sim_version`` is ``isaacsim.core.version.get_version()[0]`` ('' when Isaac Sim's VERSION file
    is not found); ``kit_version`` is ``omni.kit.app.get_app().get_build_version()``.
    """
    sim, kit = _major(isaac_sim_version), _major(kit_version)
    if sim == 5 or (sim is None and kit in (None, KIT_MAJOR_OF_ISAAC_SIM_5)):
        return None
    kit_text = (kit_version or "?").split("+")[0]
    found = f"Isaac Sim {isaac_sim_version} (Kit {kit_text})" if sim is not None else f"Kit {kit_text}"
    return f"krabby.hal supports {SUPPORTED_ISAAC_SIM}, not {found}: run it in Isaac Sim 5.1"


def isaac_lab_version_problem(isaaclab_version: str, has_isaaclab_physx: bool) -> Optional[str]:
    """None for Isaac Lab 2.x, else one line naming the supported versions.

    ``isaaclab_version`` is the ``isaaclab`` package's version (0.47.x in Isaac Lab 2.3, 3.x and later in
    Isaac Lab 3); ``has_isaaclab_physx`` tells whether Isaac Lab 3's ``isaaclab_physx`` package is installed.
    """
    major = _major(isaaclab_version)
    if not has_isaaclab_physx and major in (None, 0):
        return None
    return (
        f"krabby-hal-server-isaac supports {SUPPORTED_ISAAC_LAB}, not this Isaac Lab (isaaclab {isaaclab_version or '?'}"
        f"{', with isaaclab_physx' if has_isaaclab_physx else ''}): install Isaac Lab 2.3"
    )


__all__ = ["SUPPORTED_ISAAC_SIM", "SUPPORTED_ISAAC_LAB", "isaac_sim_version_problem", "isaac_lab_version_problem"]
