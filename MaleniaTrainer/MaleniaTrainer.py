"""MaleniaTrainer: send radiologists' corrections to a retraining backend and bring improved models back.

Thin Slicer glue only; everything else is in MaleniaTrainerLib (tested outside Slicer):
corrections.py (what MaleniaSegment saved), backends.py (retraining server or local mode),
logic.py (settings, upload, jobs, versions), panels.py (the Qt panels).
"""

import logging
import os
import sys

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

# MaleniaCommon (shared with MaleniaSegment) sits in the parent folder in a checkout; the built
# extension installs it beside the modules, already on sys.path.
_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_PARENT, "MaleniaCommon")) and _PARENT not in sys.path:
    sys.path.append(_PARENT)


def _ensure_paths():
    from MaleniaCommon.paths import ensure_malenia_importable

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
        self.panel = TrainerPanel(self.logic.core, before_connect=self.onBeforeConnect)
        self.layout.addWidget(self.panel.widget)
        self.layout.addStretch(1)

    def onBeforeConnect(self, mode):
        """Server mode needs httpx, local mode the packages `malenia train` needs: asked, then installed."""
        from MaleniaCommon.deps import DependencyError

        try:
            return self.logic.ensureDependencies(mode, lambda text: slicer.util.confirmOkCancelDisplay(
                text, windowTitle="Malenia Trainer: install Python packages"))
        except DependencyError as err:
            slicer.util.errorDisplay(str(err), windowTitle="Malenia Trainer")
            return False

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

    def ensureDependencies(self, mode, confirm, log=logging.info):
        """Asks (confirm(text) -> bool) and installs what `mode` needs; raises deps.DependencyError."""
        from MaleniaCommon import deps

        requirements = deps.read_requirements(extra="server", only=("httpx",)) if mode == "server" else None
        plan = deps.plan_installation(requirements)
        if plan.empty:
            return True
        if not confirm(plan.describe("The Malenia Trainer needs")):
            raise deps.DependencyError("the Python packages the Trainer needs are not installed (installation was declined)")
        with slicer.util.WaitCursor():
            return deps.ensure_dependencies(lambda text: True, lambda args: slicer.util.pip_install(" ".join(args)),
                                            log, plan=plan)


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
