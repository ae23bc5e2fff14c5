"""MaleniaSegment's review session on real Slicer MRML (slicer-core): no helper nodes left behind by
label-map exports, and a transformed volume's results transformed once (issue 18, items 2 and 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slicer_segment_support import TOTALSEG, make_output, new_scene

from MaleniaSegmentLib import mrml_io
from MaleniaSegmentLib.logic import MaleniaLogic, Settings


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory, shared_data) -> Path:
    return make_output(tmp_path_factory.mktemp("malenia") / "out")


def _count(scene, cls: str) -> int:
    return scene.GetNumberOfNodesByClass(cls)


def _load(output_dir, tmp_path, transform=None):
    scene = new_scene()
    volume = mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen")
    if transform is not None:
        scene.AddNode(transform)
        volume.SetAndObserveTransformNodeID(transform.GetID())
    logic = MaleniaLogic(scene, Settings(tmp_path / "results", tmp_path / "corrections"))
    return scene, volume, logic, logic.loadResults(output_dir, volume)


def test_label_maps_saves_and_exports_leave_no_colour_display_or_labelmap_nodes(output_dir, tmp_path):
    scene, _, logic, session = _load(output_dir, tmp_path)
    classes = ("vtkMRMLColorNode", "vtkMRMLDisplayNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLStorageNode")
    session.labels_image()  # first call may create shared defaults; count from here
    before = {c: _count(scene, c) for c in classes}
    for _ in range(3):
        session.labels_image()
        session.labels_image(relabel=True)
    logic.saveCorrection()
    logic.export("nifti", tmp_path / "export" / "l.nii.gz")
    assert {c: _count(scene, c) for c in classes} == before


def test_transformed_volume_results_are_transformed_once(output_dir, tmp_path):
    import slicer
    import vtk

    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 40.0)
    shift.SetElement(2, 3, -25.0)
    transform = slicer.vtkMRMLLinearTransformNode()
    transform.SetMatrixTransformToParent(shift)
    _, volume, _, session = _load(output_dir, tmp_path, transform)
    seg = session.segmentation_node
    assert seg.GetTransformNodeID() == transform.GetID()
    # The segmentation's own (untransformed) geometry is the volume's own geometry.
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    geometry = seg.GetSegmentation().GetConversionParameter("Reference image geometry").split(";")
    origin = [float(geometry[i * 4 + 3]) for i in range(3)]
    assert np.allclose(origin, [ijk_to_ras.GetElement(i, 3) for i in range(3)], atol=1e-3)
    # and the lesions land in the same world position as the voxels they were computed on
    lesion = session.lesions[0]
    centre = np.array(seg.GetSegmentCenterRAS(lesion.segment_id))
    plain = _load(output_dir, tmp_path / "plain")[3]
    centre_plain = np.array(plain.segmentation_node.GetSegmentCenterRAS(lesion.segment_id))
    assert np.allclose(centre, centre_plain + [40.0, 0.0, -25.0], atol=1.0)
