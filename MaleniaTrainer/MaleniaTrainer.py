"""MaleniaTrainer: send radiologists' corrections to a retraining backend and bring improved models back.

Thin Slicer glue only; everything else is in MaleniaTrainerLib (tested outside Slicer):
corrections.py (what MaleniaSegment saved), backends.py (retraining server or local mode),
logic.py (settings, upload, jobs, versions), panels.py (the Qt panels).
"""

import os

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)


def _ensure_paths():
    # The `malenia` package sits beside the modules (checkout or built extension); MaleniaSegmentLib
    # provides the shared Qt shim and its own path helper.
    from MaleniaSegmentLib.paths import ensure_malenia_importable

    ensure_malenia_importable()


class MaleniaTrainer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "Malenia Trainer"
        parent.categories = ["Segmentation"]
        parent.dependencies = ["MaleniaSegment"]
        parent.contributors = ["Malenia for 3D Slicer contributors"]
        parent.helpText = ("Upload the corrections saved in MaleniaSegment to a retraining server (or train on this "
                           "workstation), follow the fine-tuning, and make a new model version MaleniaSegment's model.")
        parent.acknowledgementText = "Implements the retraining loop of Malenia (ICLR 2025) for 3D Slicer."


class MaleniaTrainerWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        _ensure_paths()
        from MaleniaTrainerLib.panels import TrainerPanel

        self.logic = MaleniaTrainerLogic()
        self.panel = TrainerPanel(self.logic.core)
        self.layout.addWidget(self.panel.widget)
        self.layout.addStretch(1)

    def cleanup(self):
        if getattr(self, "panel", None) is not None:
            self.panel.close()
        if getattr(self, "logic", None) is not None:
            self.logic.core.close()


class MaleniaTrainerLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic object around MaleniaTrainerLib.logic.TrainerLogic (scene + Slicer settings)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        _ensure_paths()
        from MaleniaTrainerLib.logic import TrainerLogic

        self.core = TrainerLogic(slicer.mrmlScene, slicer.app.settings())


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
