"""Stage preparation with USD: the PhysicsScene rate, and contact reporting on the feet.

The training ran physics at 200 Hz; a stage's PhysicsScene often runs at PhysX's default 60 Hz.
``timeStepsPerSecond`` (PhysxSceneAPI) sets the fixed physics rate.
"""

from __future__ import annotations

from typing import Iterable, Optional

from pxr import PhysxSchema, UsdPhysics


def physics_scene_rates(stage) -> list[tuple[str, Optional[float]]]:
    """(path, timeStepsPerSecond or None when not authored) of every PhysicsScene on the stage."""
    out = []
    for prim in stage.Traverse():
        if prim.IsA(UsdPhysics.Scene):
            attr = PhysxSchema.PhysxSceneAPI(prim).GetTimeStepsPerSecondAttr()
            value = attr.Get() if attr and attr.IsValid() else None
            out.append((str(prim.GetPath()), None if value is None else float(value)))
    return out


def set_physics_rate(stage, rate_hz: float, default_scene_path: str = "/physicsScene") -> list[str]:
    """Set every PhysicsScene (creating one if the stage has none) to ``rate_hz``; returns the paths changed."""
    scenes = [p for p in stage.Traverse() if p.IsA(UsdPhysics.Scene)]
    if not scenes:
        scenes = [UsdPhysics.Scene.Define(stage, default_scene_path).GetPrim()]
    changed = []
    for prim in scenes:
        api = PhysxSchema.PhysxSceneAPI.Apply(prim)
        attr = api.GetTimeStepsPerSecondAttr()
        if not attr or not attr.IsValid():
            attr = api.CreateTimeStepsPerSecondAttr()
        if attr.Get() != int(round(rate_hz)):
            attr.Set(int(round(rate_hz)))
            changed.append(str(prim.GetPath()))
    return changed


def enable_contact_reports(stage, body_paths: Iterable[str]) -> list[str]:
    """Apply PhysxContactReportAPI (threshold 0) to each rigid body so its net contact force is reported.

    Returns the paths skipped: missing prims and prims that are not rigid bodies (never made bodies here).
    """
    skipped = []
    for path in body_paths:
        prim = stage.GetPrimAtPath(path)
        if not prim.IsValid() or not prim.HasAPI(UsdPhysics.RigidBodyAPI):
            skipped.append(path)
            continue
        api = PhysxSchema.PhysxContactReportAPI.Apply(prim)
        api.CreateThresholdAttr().Set(0.0)
    return skipped


__all__ = ["physics_scene_rates", "set_physics_rate", "enable_contact_reports"]
