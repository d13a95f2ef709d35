"""krabby.hal under Kit: startup, disable/enable (ports freed), Play/Stop/Play on a Go2 stage, panel buttons.

Named ``*_tests.py`` on purpose: these need Kit (omni.kit.test) and must not be collected by pytest.
The same behaviour is tested against fakes in the repository's tests/test_kit_*.py.
"""

import numpy as np
import omni.kit.app
import omni.kit.test
import omni.timeline
import omni.usd
from krabby.hal.kit import current
from krabby.hal.safety import SafetyState

GO2_ASSET = "/Isaac/Robots/Unitree/Go2/go2.usd"  # under the Isaac Sim assets root [unverified path]


async def _updates(n: int = 5) -> None:
    app = omni.kit.app.get_app()
    for _ in range(n):
        await app.next_update_async()


class TestKrabbyHalExtension(omni.kit.test.AsyncTestCase):
    async def setUp(self):
        self._manager = omni.kit.app.get_app().get_extension_manager()
        await omni.usd.get_context().new_stage_async()

    async def tearDown(self):
        omni.timeline.get_timeline_interface().stop()
        await _updates(2)

    async def test_server_is_up_after_startup(self):
        ext = current()
        self.assertIsNotNone(ext)
        self.assertEqual(ext.error, "")
        self.assertIsNotNone(ext.server)

    async def test_disable_enable_frees_endpoints(self):
        for _ in range(2):
            self._manager.set_extension_enabled_immediate("krabby.hal", False)
            await _updates(2)
            self.assertIsNone(current())
            self._manager.set_extension_enabled_immediate("krabby.hal", True)
            await _updates(2)
            self.assertIsNotNone(current())
            self.assertEqual(current().error, "", "re-enabling must rebind the same endpoints")

    async def test_panel_estop_and_clear(self):
        from omni.kit import ui_test

        ext = current()
        ext.show_window(True)
        await _updates(2)
        await ui_test.find("Krabby HAL//Frame/**/Button[*].text=='E-STOP'").click()
        self.assertEqual(ext.server.supervisor.state, SafetyState.ESTOP)
        await ui_test.find("Krabby HAL//Frame/**/Button[*].text=='Clear e-stop'").click()
        self.assertEqual(ext.server.supervisor.state, SafetyState.DISARMED)
        ext.show_window(False)

    async def test_play_stop_play_on_a_go2_stage(self):
        try:
            from isaacsim.core.utils.stage import add_reference_to_stage
            from isaacsim.storage.native import get_assets_root_path_async
        except ImportError:
            self.skipTest("isaacsim.core.utils / isaacsim.storage.native not available")
        root = await get_assets_root_path_async()
        if not root:
            self.skipTest("no Isaac Sim assets root (Nucleus) reachable")
        from isaacsim.core.api.objects import GroundPlane

        GroundPlane("/World/ground")
        add_reference_to_stage(root + GO2_ASSET, current().settings.robot_prim_path)
        ext = current()
        ext.prepare_stage()
        from pxr import UsdGeom

        robot = omni.usd.get_context().get_stage().GetPrimAtPath(ext.settings.robot_prim_path)
        ops_before = list(UsdGeom.Xformable(robot).GetXformOpOrderAttr().Get() or [])
        timeline = omni.timeline.get_timeline_interface()
        for attempt in range(2):  # Play, Stop, Play: handles must be re-acquired
            timeline.play()
            await _updates(30)
            self.assertTrue(ext.stepper.ready, ext.stepper.stats.last_error)
            self.assertGreater(ext.stepper.stats.control_steps, 0)
            self.assertAlmostEqual(ext.stepper.stats.last_dt_s, 0.005, places=6)
            self.assertEqual(ext.stepper.stats.initializations, attempt + 1)
            frame = ext.backend.read()
            self.assertTrue(np.all(np.isfinite(frame.state.joint_pos_rad)))
            self.assertEqual(ext.stepper.stats.rate_warning, "")
            timeline.stop()
            await _updates(2)
            self.assertFalse(ext.stepper.ready)
        # krabby never rewrites the robot's transform ops (views built with reset_xform_properties=False)
        self.assertEqual(list(UsdGeom.Xformable(robot).GetXformOpOrderAttr().Get() or []), ops_before)
