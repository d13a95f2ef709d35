"""Kit side of krabby.parkour: the omni.ext.IExt and the policy panel (the only parkour code importing omni/carb)."""

from .extension import KrabbyParkourExtension, current

__all__ = ["KrabbyParkourExtension", "current"]
