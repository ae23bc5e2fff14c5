"""MaleniaSegment's Slicer logic (`MaleniaSegmentLogic`) and its parameter node.

MaleniaLogic (logic.py) on slicer.mrmlScene, plus the Slicer services it needs (pip, DICOM database),
and the parameterNodeWrapper that keeps a run's inputs in the scene. Runs inside Slicer only.
"""

import logging
import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
from slicer.parameterNodeWrapper import parameterNodeWrapper

from .logic import MaleniaLogic


@parameterNodeWrapper
class MaleniaSegmentParameterNode:
    """The inputs of a Segment Lesions run, kept in the scene (a saved scene restores them)."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    useModelFolder: bool = False
    modelFolder: str = ""
    device: str = "auto"
    roi: slicer.vtkMRMLMarkupsROINode
    refine: bool = False  # segment --refine
    lesionFilter: str = "model"  # segment_run.LESION_FILTERS: the model's cut, --verifier-cut 0.2, --no-verifier


class MaleniaSegmentLogic(ScriptedLoadableModuleLogic, MaleniaLogic):
    """MaleniaSegmentLib.logic.MaleniaLogic on slicer.mrmlScene, plus Slicer services (pip, DICOM database)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)  # its super().__init__() runs MaleniaLogic.__init__() first
        MaleniaLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return MaleniaSegmentParameterNode(super().getParameterNode())

    def ensureDependencies(self, confirm, log=logging.info):
        """Asks (confirm(text) -> bool) and installs missing packages; raises deps.DependencyError."""
        from MaleniaCommon import deps

        return deps.install_with_consent(deps.plan_installation(), confirm, deps.slicer_pip_install, log,
                                         busy=slicer.util.WaitCursor)

    @staticmethod
    def dicomFiles(volume):
        """The DICOM files a volume was loaded from (empty when not from the DICOM database)."""
        uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split() if volume else []
        if not uids or not getattr(slicer, "dicomDatabase", None):
            return []
        files = [slicer.dicomDatabase.fileForInstance(uid) for uid in uids]
        return files if all(f and os.path.isfile(f) for f in files) else []

