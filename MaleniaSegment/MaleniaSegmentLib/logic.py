"""The module logic without the Slicer application: runs, imports, corrections, exports.

Takes the MRML scene as input, so the same code runs inside Slicer (slicer.mrmlScene) and on
a slicer-core `vtkMRMLScene` in tests. MaleniaSegment.py's logic class adds only Slicer glue.
Heavy modules (numpy, SimpleITK, scipy, malenia.infer) are imported inside the methods: the
module must load in a fresh Slicer before the first-use installation of its Python packages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _default_root() -> Path:
    return Path(os.environ.get("MALENIA_SLICER_HOME", Path.home() / "Malenia"))


@dataclass
class Settings:
    results_dir: Path = field(default_factory=lambda: _default_root() / "results")
    corrections_dir: Path = field(default_factory=lambda: _default_root() / "corrections")


class MaleniaLogic:
    # Defaults on every argument: Slicer's ScriptedLoadableModuleLogic.__init__ calls super().__init__()
    # with none, which reaches this class in MaleniaSegmentLogic's method resolution order.
    def __init__(self, scene=None, settings: Settings | None = None):
        self.scene = scene
        self.settings = settings or Settings()
        self.session = None  # ReviewSession of the results on show

    # -- running ----------------------------------------------------------------------------
    def startSegmentation(self, request, **run_options):
        """Starts `malenia segment` in the background; returns the LesionRun to poll or cancel."""
        from .segment_run import LesionRun

        run = LesionRun(request, self.settings.results_dir, **run_options)
        run.start()
        return run

    def finishSegmentation(self, run, segmentation_node=None):
        from .runner import RunState

        if run.state is not RunState.SUCCEEDED:
            raise RuntimeError(run.error or f"segmentation {run.state.value}")
        return self.loadResults(run.out_dir, run.request.volume_node, segmentation_node, run.request.dicom_files)

    def loadResults(self, out_dir: str | Path, volume_node, segmentation_node=None, dicom_files: list[str] | None = None):
        """Shows an output folder of `malenia segment` on the volume it was computed from."""
        from .session import ReviewSession

        self.session = ReviewSession.import_output(self.scene, out_dir, volume_node, segmentation_node, dicom_files)
        return self.session

    def startDescribing(self, request, **run_options):
        """Starts `malenia segment --mask` on the outlines the model has not described in the open result (lesions
        drawn by hand, lesions re-outlined since; the request's volume, model and device, its outlines set here);
        returns the LesionRun to poll or cancel."""
        session = self._require_session()
        session.sync_with_segmentation()
        outlines = session.lesions_to_describe()
        if not outlines:
            raise ValueError("no outline to describe: draw a lesion as a new segment in the Segment Editor, "
                             "or edit a lesion's mask, first")
        request.volume_node = session.volume_node
        request.outlines = session.labels_image(outlines)
        return self.startSegmentation(request, **run_options)

    def finishDescribing(self, run):
        """The finished run's descriptions into the open result's lesions; returns those described."""
        from .runner import RunState
        from .session import read_result

        if run.state is not RunState.SUCCEEDED:
            raise RuntimeError(run.error or f"describing {run.state.value}")
        return self._require_session().take_descriptions(read_result(run.out_dir))

    # -- corrections ------------------------------------------------------------------------
    def _require_session(self):
        if self.session is None:
            raise RuntimeError("no Malenia results loaded")
        return self.session

    def saveCorrection(self, corrections_dir: str | Path | None = None):
        """Image, current masks and reviewed descriptions as the next version of this scan's case."""
        from malenia.data.dataset import Description

        from . import mrml_io
        from .corrections import case_name, save_correction

        session = self._require_session()
        session.sync_with_segmentation()
        image = mrml_io.volume_to_sitk(session.volume_node)
        labels = session.labels_image(relabel=True)
        enh = session.result.scan.enhancement
        details = {
            "model": session.result.model.to_json(),
            "malenia_output": str(session.out_dir),
            "volume_name": session.volume_node.GetName(),
            "masks_edited": bool(session.masks_edited),
            "series_instance_uid": session.result.scan.series_instance_uid,
        }
        return save_correction(corrections_dir or self.settings.corrections_dir,
                               case_name(session.volume_node.GetName(), image), image, labels, session.lesions,
                               Description(enh.text, enh.id) if enh else None, details)

    # -- export -----------------------------------------------------------------------------
    def export(self, kind: str, path: str | Path) -> Path:
        from . import export as export_mod

        session = self._require_session()
        session.sync_with_segmentation()
        return export_mod.export(session, kind, path)
