"""Kit tests of krabby.parkour (omni.kit.test; not collected by pytest): ``apps/kit-tests.sh <isaac-sim root> krabby.parkour``."""

from .extension_tests import *  # noqa: F401,F403
