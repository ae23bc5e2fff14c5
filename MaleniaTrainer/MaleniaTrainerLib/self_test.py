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
        logic = MaleniaTrainerLogic().core
        self.assertIsInstance(logic.corrections(), list)
        url, token = os.environ.get("MALENIA_TEST_SERVER"), os.environ.get("MALENIA_TEST_TOKEN")
        if url and token:
            logic.configure(url=url, token=token, mode="server")
            info = logic.connect()
            self.assertIn("api_version", info)
        self.delayDisplay("MaleniaTrainer logic test passed")
