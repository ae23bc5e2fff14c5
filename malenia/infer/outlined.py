"""`malenia segment --mask LABELS`: the attributes and diseases of lesions a reader outlined.

The model misses about two thirds of the lesion types it never trained on (docs/training.md); a reader who
outlines a missed lesion, or redraws an outline, still wants what Malenia says of a lesion: its eight
attributes, their scores and the disease. `Segmenter.describe_outlined` describes a label map's lesions with
the calls `segment` makes for its own (`Segmenter.describe`: the tokens of the windows over each lesion, the
measured attributes, the appearance check, the disease) and skips what decides whether there is a lesion
at all (threshold, minimum volume, verifier, --refine): the outline is the lesion.

    read_mask(path, image)      the label map on the CT's grid (resampled, nearest neighbour, when it lies on
                                another grid that overlaps the CT)
    lesion_ids(labels)          its non-zero values, ascending: one lesion each, however many pieces
                                (output labels 1..K in this order)
    region(image, labels, mm)   index box of the lesions plus context: the network runs there only
    lesion_map(pm, labels, ids) the LesionMap (malenia.infer.postprocess) that Segmenter.describe reads
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.data.geometry import Grid
from malenia.errors import InputError

MAX_LESIONS = 1000  # more distinct values than this is an intensity image given by mistake, not outlines


def read_mask(path: str | os.PathLike, image: sitk.Image, what: str = "--mask") -> np.ndarray:
    """The label map at `path` as an integer array (z, y, x) on `image`'s grid. InputError when it cannot be
    read, is not a label map or lies off the CT; `what` names it in the messages (`evaluate --label` reads its
    reference this way too, so both place a map on another grid by its physical position, never by index)."""
    _check_label_format(Path(path), what)
    try:
        mask = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"{what} {path}: not a readable image ({str(err).strip().splitlines()[-1]})") from None
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} {path}: a label map is one 3-D channel, got {mask.GetDimension()}-D with "
                         f"{mask.GetNumberOfComponentsPerPixel()} component(s) (export the segments as a label map)")
    values = sitk.GetArrayViewFromImage(mask)
    if values.dtype.kind == "f" and not np.all(np.mod(values, 1) == 0):
        raise InputError(f"{what} {path}: a label map holds whole numbers, this one fractions (a CT or a probability?)")
    if Grid.of(image).mismatch(Grid.of(mask)):  # another grid (e.g. a crop): the CT's grid decides
        outlines = bool(np.any(values))
        # no extrapolation: beyond the mask's own grid nothing is outlined
        mask = sitk.Resample(sitk.Cast(mask, sitk.sitkInt32), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        if outlines and not np.any(sitk.GetArrayViewFromImage(mask)):  # an empty map is lesion_ids' to judge
            raise InputError(f"{what} {path}: none of its lesions lies inside the CT")
    labels = sitk.GetArrayFromImage(mask)
    if labels.dtype.kind == "f" or labels.dtype.itemsize > 4:  # whole numbers checked above; int32 holds the ids
        labels = labels.astype(np.int32)
    if labels.min() < 0:
        raise InputError(f"{what} {path}: negative label values (a label map counts lesions 1, 2, ...)")
    return labels


def _check_label_format(path: Path, what: str) -> None:
    """NIfTI, NRRD or MetaImage only. ITK reads a DICOM SEG (lesions.dcm) too, but as a stack of its frames with
    every segment 1 and the first frame's geometry: one bogus lesion came back without a word."""
    from malenia.data.ct_io import FILE_SUFFIXES, is_dicom_file

    if path.name.lower().endswith(FILE_SUFFIXES) or not path.is_file():  # a missing file: the reader says so
        return
    if is_dicom_file(path):
        raise InputError(f"{what} {path}: a DICOM file (a DICOM SEG?); give a label map (NIfTI, NRRD, MetaImage), e.g. "
                         f"the lesions.nii.gz beside a lesions.dcm, or segments exported from Slicer as a label map")
    raise InputError(f"{what} {path}: unsupported format (expected a label map: {', '.join(FILE_SUFFIXES)})")


def lesion_ids(labels: np.ndarray, source: str = "the mask") -> list[int]:
    ids = np.unique(labels[labels != 0]).tolist()  # the lesion voxels only: a clinical CT is mostly background
    if not ids:
        raise InputError(f"{source} outlines no lesion (every voxel is 0)")
    if len(ids) > MAX_LESIONS:
        raise InputError(f"{source} holds {len(ids)} different values: not a label map of lesions (at most {MAX_LESIONS})")
    return ids


def region(image: sitk.Image, labels: np.ndarray, context_mm: np.ndarray) -> tuple[tuple[int, int], ...]:
    """((i0, i1), (j0, j1), (k0, k1)), stop exclusive: the lesions' index box grown by `context_mm` (x, y, z)
    and clipped to the image, as malenia.infer.roi.crop_region gives for a box."""
    nz = np.argwhere(labels > 0)  # (z, y, x)
    first, last = nz.min(0)[::-1], nz.max(0)[::-1]
    margin = np.ceil(np.asarray(context_mm, float) / np.array(image.GetSpacing())).astype(int)
    size = np.array(image.GetSize())
    lo = np.clip(first - margin, 0, size - 1)
    hi = np.clip(last + margin, 0, size - 1) + 1
    return tuple((int(a), int(b)) for a, b in zip(lo, hi))


def lesion_map(pm, labels: np.ndarray, ids: list[int]):
    """The outlines as the LesionMap `segment` would have made of them: ids 1..K in `ids`' order on the
    input grid, and on the model grid the nearest-neighbour image of each (a lesion thinner than a model voxel
    keeps the model voxel at its centre, so that its tokens can be read)."""
    from malenia.infer.postprocess import LesionMap

    inside = labels != 0
    full = np.zeros(labels.shape, np.uint16)  # MAX_LESIONS ids at most
    full[inside] = np.searchsorted(np.asarray(ids), labels[inside]) + 1  # value -> its place in `ids`, one pass
    cropped = full if pm.region is None else full[tuple(slice(a, b) for a, b in reversed(pm.region))]
    label_image = pm.prepared.original.image_from_array(cropped)
    model_labels = pm.prepared.to_prepared(label_image, is_label=True).astype(np.int32)
    _keep_thin(model_labels, cropped, pm.prepared, len(ids))
    voxels = np.bincount(full[inside], minlength=len(ids) + 1).astype(np.int64)
    voxels[0] = full.size - int(voxels[1:].sum())
    return LesionMap(float("nan"), model_labels, full, len(ids), voxels, pm.voxel_mm3)


def _keep_thin(model_labels: np.ndarray, cropped: np.ndarray, prepared, n: int) -> None:
    present = np.zeros(n + 1, bool)
    present[np.unique(model_labels)] = True
    for k in np.flatnonzero(~present[1:]) + 1:
        centre = prepared.original.index_to_physical(np.argwhere(cropped == k).mean(0, keepdims=True))[0]
        index = prepared.grid.image_from_array(model_labels).TransformPhysicalPointToIndex(centre.tolist())
        zyx = np.clip(index[::-1], 0, np.array(model_labels.shape) - 1)
        model_labels[tuple(zyx)] = k
