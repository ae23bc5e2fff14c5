"""MaleniaSegment: segment lesions in a CT (also lesion types never trained on), review each lesion's
disease and 8 attribute descriptions, correct them, save corrections as training cases, export.

The module file only declares the module. As in SlicerNNUNet, its widget, logic and self-test live in
MaleniaSegmentLib (widget.py, module_logic.py, self_test.py; the rest of the Lib is testable without
Slicer): Slicer looks up <Module>Widget, <Module>Logic and <Module>Test by name in this file's
namespace, so importing them here is all it needs. Slicer adds this file's folder to sys.path, which
makes MaleniaSegmentLib importable. Developer mode's Reload re-reads this file only: restart Slicer
after editing the Lib.
"""

import os
import sys

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

# MaleniaCommon (shared with MaleniaTrainer) sits in the parent folder in a checkout; the built
# extension installs it beside the modules, already on sys.path.
_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_PARENT, "MaleniaCommon")) and _PARENT not in sys.path:
    sys.path.append(_PARENT)

from MaleniaCommon.paths import ensure_malenia_importable, malenia_root  # noqa: E402

ensure_malenia_importable()

from MaleniaSegmentLib.module_logic import MaleniaSegmentLogic, MaleniaSegmentParameterNode  # noqa: E402,F401
from MaleniaSegmentLib.self_test import MaleniaSegmentTest  # noqa: E402,F401
from MaleniaSegmentLib.widget import MaleniaSegmentWidget  # noqa: E402,F401


class MaleniaSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Malenia Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "Terminologies", "Markups"]
        self.parent.contributors = ["Malenia for 3D Slicer developers"]
        self.parent.helpText = (
            "Segments lesions in a CT, including lesion types the model was never trained on, and describes each "
            "lesion by 8 visual attributes (location, shape, density, density variations, surface, enhancement, "
            "relationship with surrounding organs, specific features) matched to text, with the disease inferred "
            "from them. Review and correct the descriptions and masks, save corrections as training cases, "
            "and export the segmentation and the report.")
        self.parent.acknowledgementText = (
            "Implements Malenia (Jiang et al., 'Zero-shot lesion segmentation by aligning lesion masks with "
            "elemental attributes', ICLR 2025). Research use only: not a medical device.")
        slicer.app.connect("startupCompleted()", self._registerTerminology)

    def _registerTerminology(self):
        # The lesion terminology (Resources/terminology) lets the Segment Editor show and pick these codes.
        root = malenia_root()
        folder = os.path.join(str(root), "Resources", "terminology") if root else None
        if not folder or not os.path.isdir(folder):
            return
        logic = slicer.modules.terminologies.logic()
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith("SegmentationCategoryTypeModifier"):
                logic.LoadTerminologyFromFile(path)
            elif name.startswith("AnatomicRegionAndModifier"):
                # LoadContextFromFile exists since 5.6; LoadAnatomicContextFromFile is deprecated on main.
                load = getattr(logic, "LoadContextFromFile", None) or logic.LoadAnatomicContextFromFile
                load(path)

