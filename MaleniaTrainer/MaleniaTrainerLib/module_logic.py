"""MaleniaTrainer's Slicer logic (`MaleniaTrainerLogic`): TrainerLogic (logic.py) on slicer.mrmlScene and
Slicer's settings, plus the consent-and-install plan of the Python packages each mode needs.

Runs inside Slicer only (the stand-in in Testing/slicer_standin in tests).
"""

import logging

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic


class MaleniaTrainerLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic object around MaleniaTrainerLib.logic.TrainerLogic (scene + Slicer settings)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from .logic import TrainerLogic

        self.core = TrainerLogic(slicer.mrmlScene, slicer.app.settings())

    def ensureDependencies(self, mode, confirm, log=logging.info):
        """Asks (confirm(text) -> bool) and installs what `mode` needs; raises deps.DependencyError."""
        from MaleniaCommon import deps

        requirements = deps.read_requirements(extra="server", only=("httpx",)) if mode == "server" else None
        return deps.install_with_consent(deps.plan_installation(requirements), confirm, deps.slicer_pip_install, log,
                                         purpose="The Malenia Trainer needs", busy=slicer.util.WaitCursor)
