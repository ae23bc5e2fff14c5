"""MaleniaSegment's self-test (`MaleniaSegmentTest`), run by Slicer's Reload and Test and by ctest.

Imported by the module file MaleniaSegment.py, where ScriptedLoadableModule.runTest() looks it up by name.
"""

import os
import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .module_logic import MaleniaSegmentLogic


class MaleniaSegmentTest(ScriptedLoadableModuleTest):
    """Runs in Slicer: real `malenia segment` on a sample CT (inside a region of interest to keep it short),
    import, a lesion drawn by hand and described (`segment --mask`), a correction saved and read back, every
    export, and a cancelled run that leaves nothing.
    MALENIA_SELFTEST_VOLUME and MALENIA_SELFTEST_MODEL choose another CT file and model folder."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentReviewCorrectExport()
        self.setUp()
        self.test_CancelLeavesNothing()

    def _sampleVolume(self):
        path = os.environ.get("MALENIA_SELFTEST_VOLUME")
        if path:
            return slicer.util.loadVolume(path)
        import SampleData

        return SampleData.SampleDataLogic().downloadSample("CTChest")

    def _roiAround(self, volume, size_mm=90.0):
        bounds = [0.0] * 6
        volume.GetRASBounds(bounds)
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Malenia self-test region")
        roi.SetCenter([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
        roi.SetSize([size_mm, size_mm, min(size_mm, bounds[5] - bounds[4])])
        return roi

    def _tempLogic(self):
        import tempfile
        from pathlib import Path

        logic = MaleniaSegmentLogic()
        root = Path(tempfile.mkdtemp(prefix="malenia-selftest-"))
        logic.settings.results_dir, logic.settings.corrections_dir = root / "results", root / "corrections"
        return logic, root

    def _wait(self, run, timeout_s=3600):
        from MaleniaSegmentLib.runner import RunState

        start = time.time()
        while run.state is RunState.RUNNING:
            run.poll()
            slicer.app.processEvents()  # the GUI stays live while it runs
            self.assertLess(time.time() - start, timeout_s, "segmentation took too long")
            time.sleep(0.1)

    def test_SegmentReviewCorrectExport(self):
        from malenia.data.dataset import read_case
        from MaleniaSegmentLib.runner import RunState
        from MaleniaSegmentLib.segment_run import SegmentRequest

        self.delayDisplay("Loading sample CT")
        volume = self._sampleVolume()
        logic, root = self._tempLogic()
        self.assertTrue(logic.ensureDependencies(lambda text: True))
        self.delayDisplay("Segmenting lesions in a region of interest")
        run = logic.startSegmentation(SegmentRequest(volume, model_dir=os.environ.get("MALENIA_SELFTEST_MODEL"),
                                                      device="auto", roi_node=self._roiAround(volume)))
        self._wait(run)
        self.assertEqual(run.state, RunState.SUCCEEDED, run.error)
        session = logic.finishSegmentation(run)
        seg = session.segmentation_node
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), len(session.lesions))
        self.assertIs(seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()), volume)
        for lesion in session.lesions:
            segment = seg.GetSegmentation().GetSegment(lesion.segment_id)
            self.assertTrue(segment.GetName())
            self.assertEqual(len(lesion.aspects), 8)

        self._describeDrawnLesion(logic, session)

        self.delayDisplay("Correcting and saving")
        if session.lesions:
            lesion = session.lesions[0]
            lesion.aspects["specific_features"].choose("self-test: typed description")
            lesion.set_disease("liver_cyst", {"liver_cyst": "Liver cyst"})
            session.apply_to_segment(lesion)
        saved = logic.saveCorrection()
        case = read_case(logic.settings.corrections_dir, saved.case_id)
        self.assertEqual(len(case.report.lesions), len(session.lesions))
        if session.lesions:
            self.assertEqual(case.report.lesions[0].disease, "liver_cyst")
            self.assertEqual(case.report.lesions[0].attributes["specific_features"][0].text, "self-test: typed description")

        self.delayDisplay("Exporting")
        for kind, name in (("nifti", "l.nii.gz"), ("seg", "l.seg.nrrd"), ("json", "r.json"), ("html", "r.html")):
            path = logic.export(kind, root / "export" / name)
            self.assertTrue(path.is_file() and path.stat().st_size > 0)
        self.delayDisplay("Test passed")

    def _describeDrawnLesion(self, logic, session):
        """A lesion painted at the region's centre (as the Segment Editor adds one) is described by the model."""
        import numpy as np
        import SimpleITK as sitk

        from MaleniaSegmentLib import mrml_io
        from MaleniaSegmentLib.runner import RunState
        from MaleniaSegmentLib.segment_run import SegmentRequest

        self.delayDisplay("Describing a lesion drawn by hand")
        found = sitk.GetArrayFromImage(session.labels_image())
        drawn = np.zeros(found.shape, np.uint8)
        z, y, x = (n // 2 for n in found.shape)
        drawn[z - 2:z + 2, y - 4:y + 4, x - 4:x + 4] = 1
        drawn[found > 0] = 0
        image = sitk.GetImageFromArray(drawn)
        image.CopyInformation(mrml_io.volume_to_sitk(session.volume_node))
        node = mrml_io.add_volume_from_sitk(slicer.mrmlScene, image, "drawn lesion", labelmap=True)
        self.assertTrue(mrml_io.segmentations_logic(slicer.mrmlScene).ImportLabelmapToSegmentationNode(
            node, session.segmentation_node))
        slicer.mrmlScene.RemoveNode(node)
        run = logic.startDescribing(SegmentRequest(None, model_dir=os.environ.get("MALENIA_SELFTEST_MODEL"), device="auto"))
        self._wait(run)
        self.assertEqual(run.state, RunState.SUCCEEDED, run.error)
        (described,) = logic.finishDescribing(run)
        self.assertTrue(described.described and not described.from_model and not described.needs_description)
        self.assertTrue(all(a.matched is not None for a in described.aspects.values()))
        self.assertEqual(logic.session.lesions_to_describe(), [])

    def test_CancelLeavesNothing(self):
        from MaleniaSegmentLib.runner import RunState
        from MaleniaSegmentLib.segment_run import SegmentRequest

        volume = self._sampleVolume()
        logic, root = self._tempLogic()
        run = logic.startSegmentation(SegmentRequest(volume, model_dir=os.environ.get("MALENIA_SELFTEST_MODEL"), device="cpu"))
        start = time.time()
        while run.job.last_progress is None and run.state is RunState.RUNNING and time.time() - start < 300:
            run.poll()
            slicer.app.processEvents()
            time.sleep(0.1)
        run.cancel()
        self.assertEqual(run.state, RunState.CANCELLED)
        self.assertFalse(run.out_dir.exists())
        self.assertEqual(list(run.out_dir.parent.iterdir()), [])
        self.delayDisplay("Cancel test passed")
