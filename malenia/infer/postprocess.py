"""The one step from the network's foreground probability (model grid) to lesions on the input's grid.

`malenia segment`, the Slicer module, `malenia evaluate`, `calibrate` and `ablate` all turn the
probability into lesions here, so what is measured is what ships. The step is pure (no network):
`calibrate` runs the network once per case and sweeps thresholds and minimum volumes offline
through these same functions.

    lesion_map(pm, threshold)      components of probability >= threshold (26-connectivity, model
                                   grid) -> those mostly outside the body's outline dropped (air in
                                   front of the patient, the table: inside_body_share) -> grown by
                                   up to 2 model voxels (nearest component) ->
                                   nearest-neighbour onto the input grid -> voxels whose linearly
                                   interpolated probability is under the threshold cleared (smooth
                                   borders on a finer input grid) -> voxels outside --roi cleared
    kept(lesion_map, min_volume)   the components whose volume ON THE INPUT GRID (the volume
                                   report.json measures) is at least the minimum, largest first
    relabel(lesion_map, order)     labels 1..K in that order

Choices (issue 13; the two former predictors differed here):
- one removal of small lesions, on the input grid after borders and the ROI (a lesion is never
  reported smaller than the minimum volume, and a sliver cut off by the ROI goes); none on the
  model grid. A lesion needs at least one voxel: min_voxels = max(1, ceil(min_volume / voxel - 1e-9));
- no cap on the number of lesions: the minimum volume is the guard against specks, and a cap
  would hide lesions silently;
- smooth borders (interpolated probability) rather than nearest-neighbour label resampling: on
  a finer input grid nearest neighbour gives staircase borders 2.5 mm steps wide;
- padding and all-air windows are the window runner's (malenia.infer.windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

GROW_VOXELS = 2.0  # how far (model voxels) a lesion may follow the interpolated probability outward
BODY_HU = -500.0  # above it: fat, soft tissue, bone; below: air, lung, the thinnest foam pads
MIN_INSIDE_BODY = 0.5  # a component with less of itself inside the body's outline is not a lesion


@dataclass
class ProbabilityMap:
    """The network's foreground probability on the model grid and the geometry to map it back."""

    probability: np.ndarray  # float32 (z, y, x) on prepared.grid
    prepared: object  # malenia.data.preprocess.PreparedVolume of `image` (or of its ROI crop)
    image: sitk.Image  # the input CT: its grid is the output grid
    region: tuple | None = None  # ((i0, i1), (j0, j1), (k0, k1)): the crop of `image` that was prepared
    roi: object | None = None  # malenia.infer.roi.RasBox: voxels outside it are cleared
    _fine: np.ndarray | None = field(default=None, repr=False)
    _body: tuple | None = field(default=None, repr=False)

    def fine_probability(self) -> np.ndarray:
        """The probability linearly interpolated onto the (cropped) input grid; computed once."""
        if self._fine is None:
            self._fine = sitk.GetArrayFromImage(self.prepared.to_original(self.probability, is_label=False))
        return self._fine

    def body(self) -> tuple[np.ndarray, object]:
        """(mask, Grid): the body on the model grid of the WHOLE scan (under a --roi crop too: a box inside a lung
        holds no body to outline), the largest connected region above BODY_HU (the trunk, and what touches it: the
        arms when they lie against it, on a 2.5 mm grid they mostly do); computed once."""
        if self._body is None:
            from scipy import ndimage

            from malenia.data.geometry import Grid
            from malenia.data.preprocess import CANONICAL_ORIENTATION

            grid = self.prepared.grid
            if self.region is not None:
                grid = self.prepared.preprocessor.target_grid(Grid.of(sitk.DICOMOrient(self.image, CANONICAL_ORIENTATION)))
            hu = sitk.GetArrayFromImage(grid.resample(sitk.Cast(self.image, sitk.sitkFloat32), sitk.sitkLinear, -1024.0))
            regions, n = ndimage.label(hu > BODY_HU)
            sizes = np.bincount(regions.ravel())
            sizes[0] = 0
            # no tissue at all (a test volume of air): nothing to tell inside from outside by, so all counts as inside
            self._body = (regions == int(np.argmax(sizes)) if n else np.ones(hu.shape, bool), grid)
        return self._body

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(reversed(self.image.GetSize()))  # type: ignore[return-value]

    @property
    def voxel_mm3(self) -> float:
        return float(np.prod(self.image.GetSpacing()))


@dataclass
class LesionMap:
    """Every lesion at one threshold: model-grid components 1..n and their voxels on the input grid."""

    threshold: float
    model_labels: np.ndarray  # int32 (z, y, x) model grid, components 1..n in scan order
    labels: np.ndarray  # uint16/uint32 (z, y, x) input grid, the same ids (some may have vanished)
    n: int
    voxels: np.ndarray  # int64 [n + 1]: input-grid voxel count per id (index 0: background)
    voxel_mm3: float  # input voxel volume


def min_voxels(min_volume_mm3: float, voxel_mm3: float) -> int:
    """Voxels a lesion needs to reach `min_volume_mm3` (at least one; tolerant of float round-off)."""
    return max(1, int(math.ceil(float(min_volume_mm3) / float(voxel_mm3) - 1e-9)))


def lesion_map(pm: ProbabilityMap, threshold: float) -> LesionMap:
    from malenia.infer.instances import components

    model_labels, n = components(pm.probability, threshold, 1)
    if n:
        outside = inside_body_share(*pm.body(), model_labels, pm.prepared.grid, n) < MIN_INSIDE_BODY
        outside[0] = False
        if outside.any():  # their ids stay (and count no voxels), so that every caller numbers lesions alike
            model_labels = np.where(outside[model_labels], 0, model_labels).astype(model_labels.dtype)
    dtype = np.uint16 if n < 65535 else np.uint32
    labels = np.zeros(pm.shape, dtype)
    if model_labels.any():
        fine = sitk.GetArrayFromImage(pm.prepared.to_original(_grow(model_labels, dtype), is_label=True))
        fine[pm.fine_probability() < threshold] = 0
        if pm.region is None:
            labels = fine
        else:
            (i0, i1), (j0, j1), (k0, k1) = pm.region
            labels[k0:k1, j0:j1, i0:i1] = fine
    labels, voxels = _inside_roi(pm, labels, n)
    return LesionMap(float(threshold), model_labels, labels, n, voxels, pm.voxel_mm3)


def inside_body_share(body: np.ndarray, body_grid, labels: np.ndarray, labels_grid, n: int) -> np.ndarray:
    """Per component 0..n of `labels`, the share of its voxels inside the body's outline: in each axial slice of
    `body`, the convex hull of the body's section. Lungs, bowel gas and a lateral body part cut off by the field of
    view are inside it; air in front of the patient and the table under it are not (on the example DICOM series
    the network marked 400 ml of air there, named kidney tumours). The grids may differ (a --roi crop)."""
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    points = np.argwhere(labels > 0)
    ids = labels[tuple(points.T)]
    if body_grid != labels_grid:
        points = np.rint(body_grid.physical_to_index(labels_grid.index_to_physical(points))).astype(np.int64)
    usable = np.all((points >= 0) & (points < np.array(body.shape)), axis=1)
    inside = np.zeros(len(points), bool)
    for z in np.unique(points[usable, 0]):
        section = np.argwhere(body[z])
        if len(section) < 3:
            continue
        try:
            hull = Delaunay(section[ConvexHull(section).vertices])
        except QhullError:  # a body section along a line: nothing is inside it
            continue
        here = usable & (points[:, 0] == z)
        inside[here] = hull.find_simplex(points[here, 1:]) >= 0
    total = np.maximum(np.bincount(ids, minlength=n + 1)[: n + 1], 1)
    return np.bincount(ids[inside], minlength=n + 1)[: n + 1] / total


def with_labels(lm: LesionMap, pm: ProbabilityMap, labels: np.ndarray) -> LesionMap:
    """`lm` with new input-grid labels (the same ids; e.g. malenia.infer.refine's borders), cut to the ROI
    and recounted as lesion_map does."""
    from dataclasses import replace

    labels, voxels = _inside_roi(pm, labels, lm.n)
    return replace(lm, labels=labels, voxels=voxels)


def _inside_roi(pm: ProbabilityMap, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels with the voxels outside --roi cleared, input-grid voxel count per id 0..n)."""
    if pm.roi is not None:
        from malenia.infer.roi import clear_outside

        clear_outside(labels, pm.image, pm.roi)
    # count the lesion voxels only: bincount over the whole input grid (52 M voxels for a 512 x 512 x 200 CT)
    # first widens it to int64 and took 1.5 s of `segment`; lesions are a tiny share of it
    inside = labels[labels != 0]
    voxels = np.bincount(inside, minlength=n + 1)[: n + 1].astype(np.int64)
    voxels[0] = labels.size - inside.size
    return labels, voxels


def _grow(model_labels: np.ndarray, dtype) -> np.ndarray:
    """Each voxel within GROW_VOXELS of a lesion takes the nearest lesion's label (EDT on the
    lesions' bounding box only: exact, since no voxel farther out can be reached)."""
    from scipy import ndimage

    mask = model_labels > 0
    margin = int(math.ceil(GROW_VOXELS)) + 1
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, int(hit[0]) - margin), min(mask.shape[axis], int(hit[-1]) + 1 + margin)))
    sub = model_labels[tuple(box)]
    dist, idx = ndimage.distance_transform_edt(sub == 0, return_indices=True)
    grown_sub = sub[tuple(idx)].astype(dtype)
    grown_sub[dist > GROW_VOXELS] = 0
    grown = np.zeros(model_labels.shape, dtype)
    grown[tuple(box)] = grown_sub
    return grown


def kept(lm: LesionMap, min_volume_mm3: float) -> list[int]:
    """Ids of the lesions of at least `min_volume_mm3` on the input grid, by decreasing volume
    (ties: lower id): the output label of `order[k]` is k + 1."""
    need = min_voxels(min_volume_mm3, lm.voxel_mm3)
    ids = np.flatnonzero(lm.voxels[1:] >= need) + 1
    return [int(k) for k in sorted(ids.tolist(), key=lambda k: (-int(lm.voxels[k]), k))]


def relabel(lm: LesionMap, order: list[int]) -> np.ndarray:
    """The input-grid labels renumbered 1..K in `order`; every other id becomes background."""
    lut = np.zeros(lm.n + 1, lm.labels.dtype)
    lut[order] = np.arange(1, len(order) + 1, dtype=lm.labels.dtype)
    return lut[lm.labels]


def relabel_model(lm: LesionMap, order: list[int]) -> np.ndarray:
    """The model-grid components renumbered like `relabel` (int32), for describing the kept lesions."""
    lut = np.zeros(lm.n + 1, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[lm.model_labels]
