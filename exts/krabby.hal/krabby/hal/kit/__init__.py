"""Kit side of krabby.hal: the omni.ext.IExt, the Isaac Sim backend and the omni.ui panel.

The ONLY package of krabby.hal that imports omni / carb / pxr / isaacsim. Kit imports it because
``config/extension.toml`` names it in ``[[python.module]]`` and instantiates the IExt found here.
"""

from .extension import KrabbyHalExtension, current

__all__ = ["KrabbyHalExtension", "current"]
