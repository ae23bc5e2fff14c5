"""Moving images between SimpleITK / files and MRML nodes, in Slicer and under slicer-core.

Everything takes the scene explicitly and uses only classes present in both the Slicer
application and the PyPI `slicer-core` package (which has no slicer.app, slicer.modules or Qt).
Geometry: MRML stores IJK->RAS, SimpleITK stores LPS origin/spacing/direction; the two differ
by a flip of the first two axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def slicer_module():
    import slicer  # Slicer's module in the application, slicer-core's elsewhere

    return slicer


def ensure_segmentation_converters() -> None:
    """Registers labelmap<->surface conversion rules once (the Slicer application does it at start-up)."""
    slicer = slicer_module()
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetName() for rule in factory.GetConverterRules()}
    for cls in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule, slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        rule = cls()
        if rule.GetName() not in present:
            factory.RegisterConverterRule(rule)


def segmentations_logic(scene):
    """The Segmentations module logic: the application's inside Slicer, a new one on `scene` elsewhere."""
    slicer = slicer_module()
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "segmentations") and getattr(slicer, "mrmlScene", None) is scene:
        return modules.segmentations.logic()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    return logic


def ijk_to_ras(image: sitk.Image) -> np.ndarray:
    spacing = np.asarray(image.GetSpacing(), float)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    m[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), float)
    return m


def node_ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(a: np.ndarray):
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def volume_to_sitk(node) -> sitk.Image:
    """A scalar or labelmap volume node as a SimpleITK image (own geometry; parent transforms not applied)."""
    from vtk.util.numpy_support import vtk_to_numpy

    image_data = node.GetImageData()
    if image_data is None:
        raise ValueError(f"volume {node.GetName()!r} has no image data")
    dims = image_data.GetDimensions()
    scalars = image_data.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"volume {node.GetName()!r} has {scalars.GetNumberOfComponents()} components; a CT has one")
    array = vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0]).copy()
    image = sitk.GetImageFromArray(array)
    m = node_ijk_to_ras(node)
    lps = LPS_TO_RAS @ m[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).flatten().tolist())
    image.SetOrigin((LPS_TO_RAS @ m[:3, 3]).tolist())
    return image


def set_volume_from_sitk(node, image: sitk.Image) -> None:
    """Fills a volume node with a SimpleITK image (voxels and geometry)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    array = sitk.GetArrayFromImage(image)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(image.GetSize())
    vtk_array = numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image_data.GetPointData().SetScalars(vtk_array)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(image)))
    node.SetAndObserveImageData(image_data)


def add_volume_from_sitk(scene, image: sitk.Image, name: str, labelmap: bool = False):
    slicer = slicer_module()
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    scene.AddNode(node)
    set_volume_from_sitk(node, image)
    node.CreateDefaultDisplayNodes()
    return node


def load_volume(scene, path: str | Path, name: str | None = None, labelmap: bool = False):
    """Reads a volume file into a new node (slicer.util.loadVolume needs the application)."""
    slicer = slicer_module()
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name or Path(path).name.split(".")[0])
    scene.AddNode(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if labelmap:
        storage.SetCenterImage(False)
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"cannot read volume {path}")
    node.CreateDefaultDisplayNodes()
    return node


def write_volume(node, path: str | Path) -> Path:
    """Writes a volume node to a file (format from the extension), e.g. the CLI's input."""
    slicer = slicer_module()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(node):
        raise OSError(f"cannot write volume {node.GetName()!r} to {path}")
    return Path(path)


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * max(1.0, max(a.GetSpacing())))
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))
