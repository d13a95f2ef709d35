"""Kit tests of krabby.parkour (omni.kit.test; not collected by pytest)."""

from .extension_tests import *  # noqa: F401,F403
