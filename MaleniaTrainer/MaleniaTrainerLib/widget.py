"""MaleniaTrainer's panel (Slicer's `MaleniaTrainerWidget`): the TrainerPanel of panels.py in the module panel.

Imported by the module file MaleniaTrainer.py, which only declares the module (as SlicerNNUNet keeps its
widget in its Lib); Slicer finds this class by its name there. Runs inside Slicer only.
"""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget

from .module_logic import MaleniaTrainerLogic


class MaleniaTrainerWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from .panels import TrainerPanel

        self.logic = MaleniaTrainerLogic()
        self.panel = TrainerPanel(self.logic.core, before_connect=self.onBeforeConnect)
        self.layout.addWidget(self.panel.widget)
        self.layout.addStretch(1)

    def enter(self):
        # Slicer calls enter() each time the module is shown (qSlicerModulePanel::addModule): corrections saved in
        # MaleniaSegment meanwhile are listed, with the user's ticks kept.
        if getattr(self, "panel", None) is not None:
            self.panel.refresh_corrections()

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
