"""krabby.parkour under Kit: startup next to krabby.hal, start errors are one line, the panel's buttons.

Named ``*_tests.py`` on purpose: these need Kit and must not be collected by pytest.
"""

import omni.kit.app
import omni.kit.test

from krabby.parkour.kit import current


class TestKrabbyParkourExtension(omni.kit.test.AsyncTestCase):
    async def test_started_next_to_the_hal(self):
        from krabby.hal.kit import current as hal_current

        self.assertIsNotNone(current())
        self.assertIsNotNone(hal_current())

    async def test_start_without_checkpoint_says_so(self):
        message = current().start_policy("")
        self.assertIn("checkpoint", message)
        self.assertFalse(current().runner.running)

    async def test_missing_checkpoint_file(self):
        message = current().start_policy("/nonexistent/model.pt")
        self.assertIn("not found", message)

    async def test_panel_start_button_reports_errors(self):
        from omni.kit import ui_test

        ext = current()
        ext.show_window(True)
        await omni.kit.app.get_app().next_update_async()
        await ui_test.find("Krabby Parkour//Frame/**/Button[*].text=='Start policy'").click()
        self.assertFalse(ext.runner.running)
        ext.show_window(False)
