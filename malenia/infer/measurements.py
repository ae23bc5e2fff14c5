"""Per-lesion measurements that radiologists report: size (RECIST 1.1), volume, position, density.

Definitions (all on the label map's own grid, physical units from its spacing and direction):

- voxel_count: voxels carrying the lesion's label.
- volume_ml: voxel_count x voxel volume (product of the spacing, mm^3) / 1000.
- centroid_ras_mm: mean of the lesion's voxel centres in physical space. ITK/SimpleITK physical
  points are LPS; RAS = (-x, -y, z) (Slicer's convention).
- axial slices: the image index axis whose direction is closest to the patient's superior axis
  (largest |z| component of its direction column); the other two axes span the slice plane.
  For axial acquisitions this is k. Oblique acquisitions are measured in their own slice plane.
- Each voxel is taken as its full pixel square in the slice (centre +/- half the spacing), so a
  lesion is the union of its pixel squares and a single pixel measures one spacing across.
- long_axis_mm (RECIST 1.1 longest diameter): on every slice, the maximum Feret diameter of the
  lesion's pixel squares (the largest distance between two corners of their convex hull, using
  physical spacing); the slice with the largest value is the RECIST slice (ties: larger area, then
  lower index). Its two hull corners are the long axis end points.
- short_axis_mm: on the RECIST slice, the longest chord perpendicular to the long axis: over all
  lines perpendicular to the long axis, the longest single segment lying inside the lesion (the
  union of pixel squares). The chord length is piecewise linear in the line's offset, with breaks
  only where the line passes a corner of a boundary pixel, so evaluating the lines through those
  corners gives the exact maximum (above MAX_CHORD_LINES candidates, an even sample of offsets).
- max_area_slice: the slice with the most lesion pixels (ties: lower index), the report's key slice.
- hu_mean / hu_std: mean and population standard deviation (ddof=0) of the CT values in HU.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull

from malenia.infer.results import Measurements

MAX_CHORD_LINES = 4096
_EPS = 1e-9


def axial_axis(image: sitk.Image) -> int:
    """Index axis (0 = i, 1 = j, 2 = k) most aligned with the patient's superior-inferior axis."""
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return int(np.argmax(np.abs(d[2, :])))


def lps_to_ras(p) -> tuple[float, float, float]:
    return (-float(p[0]), -float(p[1]), float(p[2]))


def _index_to_ras(image: sitk.Image, index_xyz: np.ndarray) -> tuple[float, float, float]:
    return lps_to_ras(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index_xyz]))


def feret_2d(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[float, np.ndarray, np.ndarray]:
    """Max Feret diameter of a 2-D mask's pixel squares: (length mm, end A, end B) in scaled coordinates.

    Coordinates are (index * spacing) along the mask's two axes, pixel centres at integer indices.
    """
    corners = _boundary_corners(mask) * np.asarray(spacing, dtype=float)
    hull = corners[ConvexHull(corners).vertices] if len(corners) > 4 else corners
    diff = hull[:, None, :] - hull[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", diff, diff)
    a, b = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    return math.sqrt(float(dist2[a, b])), hull[a], hull[b]


def longest_perpendicular_chord(mask: np.ndarray, spacing: tuple[float, float], a: np.ndarray, b: np.ndarray,
                                max_lines: int = MAX_CHORD_LINES) -> tuple[float, np.ndarray, np.ndarray]:
    """Longest segment inside the mask's pixel squares perpendicular to the line a-b (scaled coordinates)."""
    sp = np.asarray(spacing, dtype=float)
    half = sp / 2.0
    u = (b - a) / np.linalg.norm(b - a)
    v = np.array([-u[1], u[0]])
    centres = np.argwhere(mask).astype(float) * sp
    reach = abs(half[0] * u[0]) + abs(half[1] * u[1])  # half-extent of a pixel square along u
    proj = centres @ u
    offsets = np.unique(np.round(_boundary_corners(mask) * sp @ u, 9))
    if len(offsets) > max_lines:
        offsets = np.linspace(offsets[0], offsets[-1], max_lines)
    best = (0.0, centres[0], centres[0])
    for s in offsets:
        sel = np.abs(proj - s) <= reach + _EPS
        c = centres[sel]
        base = s * u  # the line is base + t v
        lo = np.full(len(c), -np.inf)
        hi = np.full(len(c), np.inf)
        for ax in (0, 1):
            if abs(v[ax]) < 1e-12:
                inside = np.abs(base[ax] - c[:, ax]) <= half[ax] + _EPS
                lo[~inside], hi[~inside] = np.inf, -np.inf
            else:
                t1 = (c[:, ax] - half[ax] - base[ax]) / v[ax]
                t2 = (c[:, ax] + half[ax] - base[ax]) / v[ax]
                lo = np.maximum(lo, np.minimum(t1, t2))
                hi = np.minimum(hi, np.maximum(t1, t2))
        keep = hi > lo + _EPS
        if not keep.any():
            continue
        lo, hi = lo[keep], hi[keep]
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        reach_hi = np.maximum.accumulate(hi)
        new_run = np.concatenate(([True], lo[1:] > reach_hi[:-1] + 1e-7))
        starts = lo[new_run]
        ends = np.maximum.reduceat(hi, np.flatnonzero(new_run))
        lengths = ends - starts
        r = int(np.argmax(lengths))
        if lengths[r] > best[0] + _EPS:
            best = (float(lengths[r]), base + starts[r] * v, base + ends[r] * v)
    return best


def _boundary_corners(mask: np.ndarray) -> np.ndarray:
    """Corners (index units, pixel centres at integers) of the pixels on the mask's boundary."""
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    pts = np.argwhere(edge).astype(float)
    offs = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    return np.unique((pts[:, None, :] + offs[None, :, :]).reshape(-1, 2), axis=0)


def measure_lesions(labels: sitk.Image, image: sitk.Image | None = None,
                    label_values: list[int] | None = None) -> dict[int, Measurements]:
    """Measurements of every lesion label (or of `label_values`) in `labels`; HU from `image` if given."""
    if image is not None and tuple(image.GetSize()) != tuple(labels.GetSize()):
        raise ValueError(f"image grid {image.GetSize()} != label grid {labels.GetSize()}")
    lab = sitk.GetArrayViewFromImage(labels)  # [z, y, x]
    hu = sitk.GetArrayViewFromImage(image) if image is not None else None
    boxes = ndimage.find_objects(np.asarray(lab, dtype=np.int64) if lab.dtype.kind not in "iu" else lab)
    if label_values is None:
        label_values = [i + 1 for i, box in enumerate(boxes) if box is not None]
    spacing = np.asarray(labels.GetSpacing(), dtype=float)
    out: dict[int, Measurements] = {}
    for value in label_values:
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        if box is None:
            raise ValueError(f"label {value} has no voxels")
        out[value] = _measure_one(labels, lab, hu, value, box, spacing)
    return out


def _measure_one(labels: sitk.Image, lab: np.ndarray, hu: np.ndarray | None, value: int,
                 box: tuple[slice, ...], spacing: np.ndarray) -> Measurements:
    mask_zyx = lab[box] == value
    offset_xyz = np.array([box[2].start, box[1].start, box[0].start], dtype=float)
    idx_zyx = np.argwhere(mask_zyx)
    count = len(idx_zyx)
    centroid_idx = idx_zyx.mean(axis=0)[::-1] + offset_xyz

    ax = axial_axis(labels)
    mask = mask_zyx.transpose(2, 1, 0)  # [x, y, z] = sitk index order
    plane = [a for a in range(3) if a != ax]
    sp2 = (float(spacing[plane[0]]), float(spacing[plane[1]]))
    areas = mask.sum(axis=tuple(plane))

    def axial_slice(k: int) -> np.ndarray:  # a view; np.take would copy the whole (transposed) mask per slice
        return mask[(slice(None),) * ax + (int(k),)]

    best = None  # (long, area, -k, k, a, b)
    for k in np.flatnonzero(areas):
        sl = axial_slice(k)
        length, pa, pb = feret_2d(sl, sp2)
        key = (round(length, 9), int(areas[k]), -int(k))
        if best is None or key > best[0]:
            best = (key, int(k), length, pa, pb)
    _, k_rec, long_mm, pa, pb = best
    sl = axial_slice(k_rec)
    short_mm, qa, qb = longest_perpendicular_chord(sl, sp2, pa, pb)

    def to_ras(p2: np.ndarray) -> tuple[float, float, float]:
        idx = np.zeros(3)
        idx[plane[0]], idx[plane[1]] = p2[0] / sp2[0], p2[1] / sp2[1]
        idx[ax] = k_rec
        return _index_to_ras(labels, idx + offset_xyz)

    k_area = int(np.argmax(areas))
    hu_mean = hu_std = None
    if hu is not None:
        vals = np.asarray(hu[box][mask_zyx], dtype=np.float64)
        hu_mean, hu_std = float(vals.mean()), float(vals.std())
    return Measurements(
        voxel_count=int(count),
        volume_ml=float(count * np.prod(spacing) / 1000.0),
        centroid_ras_mm=_index_to_ras(labels, centroid_idx),
        long_axis_mm=float(long_mm),
        short_axis_mm=float(short_mm),
        long_axis_ras_mm=(to_ras(pa), to_ras(pb)),
        short_axis_ras_mm=(to_ras(qa), to_ras(qb)),
        axial_axis=ax,
        recist_slice=int(k_rec + offset_xyz[ax]),
        max_area_slice=int(k_area + offset_xyz[ax]),
        hu_mean=hu_mean,
        hu_std=hu_std,
    )
