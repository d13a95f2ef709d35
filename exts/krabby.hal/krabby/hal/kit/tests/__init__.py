"""Kit tests of krabby.hal (omni.kit.test runs them inside Kit; pytest never collects them: see the file names).

Run inside Isaac Sim 5.1 with ``apps/kit-tests.sh <isaac-sim root> krabby.hal`` (an empty Kit plus
Isaac Sim's extension folders, as Isaac Sim runs its own extension tests), or from the Extensions
window's TESTS tab of a running Isaac Sim.
"""

from .extension_tests import *  # noqa: F401,F403
