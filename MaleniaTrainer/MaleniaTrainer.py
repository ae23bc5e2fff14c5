"""MaleniaTrainer: send radiologists' corrections to a retraining backend and bring improved models back.

The module file only declares the module. As in SlicerNNUNet, its widget, logic and self-test live in
MaleniaTrainerLib (widget.py, module_logic.py, self_test.py); Slicer looks up <Module>Widget,
<Module>Logic and <Module>Test by name in this file's namespace. The rest of the Lib is tested outside
Slicer: corrections.py (what MaleniaSegment saved), backends.py (retraining server or local mode),
logic.py (settings, upload, jobs, versions), panels.py (the Qt panels). Developer mode's Reload
re-reads this file only: restart Slicer after editing the Lib.
"""

import os
import sys

from slicer.ScriptedLoadableModule import ScriptedLoadableModule

# MaleniaCommon (shared with MaleniaSegment) sits in the parent folder in a checkout; the built
# extension installs it beside the modules, already on sys.path.
_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_PARENT, "MaleniaCommon")) and _PARENT not in sys.path:
    sys.path.append(_PARENT)

from MaleniaCommon.paths import ensure_malenia_importable  # noqa: E402

ensure_malenia_importable()

from MaleniaTrainerLib.module_logic import MaleniaTrainerLogic  # noqa: E402,F401
from MaleniaTrainerLib.self_test import MaleniaTrainerTest  # noqa: E402,F401
from MaleniaTrainerLib.widget import MaleniaTrainerWidget  # noqa: E402,F401


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
