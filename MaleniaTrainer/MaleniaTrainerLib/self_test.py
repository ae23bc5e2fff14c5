"""MaleniaTrainer's self-test (`MaleniaTrainerTest`), run by Slicer's Reload and Test and by ctest.

Imported by the module file MaleniaTrainer.py, where ScriptedLoadableModule.runTest() looks it up by name.
"""

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .module_logic import MaleniaTrainerLogic


class MaleniaTrainerTest(ScriptedLoadableModuleTest):
    """Runs in Slicer: lists corrections and, when MALENIA_TEST_SERVER/MALENIA_TEST_TOKEN are set, connects."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_logic()

    def test_logic(self):
        from .logic import KEY_CORRECTIONS, MemorySettings, TrainerLogic

        # The user's corrections are listed, but the server URL, token and mode the test sets stay in memory:
        # slicer.app.settings() is the user's Slicer.ini (qSlicerCoreApplication::userSettings()).
        user = MaleniaTrainerLogic().core
        self.assertIsInstance(user.corrections(), list)
        logic = TrainerLogic(slicer.mrmlScene, MemorySettings({KEY_CORRECTIONS: str(user.corrections_dir)}))
        url, token = os.environ.get("MALENIA_TEST_SERVER"), os.environ.get("MALENIA_TEST_TOKEN")
        try:
            if url and token:
                logic.configure(url=url, token=token, mode="server")
                info = logic.connect()
                self.assertIn("api_version", info)
        finally:
            logic.close()  # the HTTP client
        self.delayDisplay("MaleniaTrainer logic test passed")
