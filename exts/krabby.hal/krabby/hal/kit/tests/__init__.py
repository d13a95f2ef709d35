"""Kit tests of krabby.hal (omni.kit.test runs them inside Kit; pytest never collects them: see the file names).

Run: ``<isaac-sim>/kit/kit --empty --enable omni.kit.test --ext-folder <repo>/exts
--/exts/omni.kit.test/testExts/0='krabby.hal' --/exts/omni.kit.test/runTestsAndQuit=true --no-window``
(or the Extensions window's TESTS tab).
"""

from .extension_tests import *  # noqa: F401,F403
