"""Disease-agnostic image measurements of a lesion: what a reader sees without knowing the disease.

Used by the measured attributes (malenia.knowledge.measured_attributes): fitted on the reference masks
of training lesions, applied to the masks `malenia segment` predicts; and, with the lesion's
probability (`lesion_rows`), by the lesion verifier (malenia.model.lesion_verifier). Every measurement is taken
in the canonical LPS orientation (sitk.DICOMOrient, as the preprocessing), in millimetres and HU,
on the image's own grid, so it means the same on a 3 mm synthetic case and a 0.7 mm clinical scan.

    hu_mean, hu_std, hu_p10, hu_p90   CT values of the lesion's core (voxels deeper than 1.5
                                      voxels; the whole lesion when it is too small for a core)
    log_hu_std                        natural log of hu_std (at least 0.5 HU): spreads differ by
                                      factors (a water cyst 14 HU, a calcified stone 150), so a
                                      boundary on the log scale is not set by the widest ones
    ring_mean, ring_std               CT values of the shell 1-6 mm outside the lesion (the host)
    ring_air, ring_bone               share of that shell under -500 HU (lung, bowel gas) / over 200 HU
    ring_fluid                        share of that shell at fluid density (-20 to 30 HU: bile, urine, cyst
                                      fluid): a stone in the gallbladder lumen lies in bile, a wall mass
                                      against the wall, the liver and fat
    ring_vessel                       share of that shell at least 40 HU brighter than its median and
                                      under 400 HU: enhanced vessels (or other enhancing tissue) along
                                      the lesion, what "closely related to the vessels" is read from
    contrast                          hu_mean minus the shell's median: hypo-, iso-, hyperdense
    sphericity                        1 for a ball, lower for irregular shapes (co-area surface)
    elongation, flatness              square roots of the 2nd/1st and 3rd/1st principal variances
    solidity                          lesion volume / convex hull volume: lobulated, spiculated < 1
    edge_mm                           lesion-host contrast / steepest radial slope: sharp ~1 voxel,
                                      blurred margins wider (capped at 9 mm)
    log_volume                        natural log of the volume in mm³
    pos_z, pos_y, pos_x               the lesion's centroid inside the body's bounding box (0..1;
                                      z toward superior, y toward posterior, x toward the patient's
                                      left): a coarse atlas position, which a 64³ patch cannot see

The two shape and edge measures are those that check the synthetic renderer
(malenia.data.synthesis.measure), so a rendered attribute and its measurement agree by test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

FEATURES = ("hu_mean", "hu_std", "log_hu_std", "hu_p10", "hu_p90", "ring_mean", "ring_std", "ring_air", "ring_bone", "ring_fluid",
            "ring_vessel", "contrast",
            "sphericity", "elongation", "flatness", "solidity", "edge_mm", "log_volume", "pos_z", "pos_y", "pos_x")
BODY_HU = -300.0  # denser than this is the body (fat is about -100 HU, lung about -850)
RING_MM = (1.0, 6.0)
MAX_EDGE_MM = 9.0
VESSEL_ABOVE_HOST_HU = 40.0  # an enhanced vessel stands this far above the parenchyma around it (portal phase: 30-60 HU)
VESSEL_MAX_HU = 400.0  # denser is bone or calcium, not blood
FLUID_HU = (-20.0, 30.0)  # water-like content (bile, urine, cyst fluid) with CT noise around it
SOLIDITY_MAX_VOXELS = 200_000
BODY_STEP_MM = 4.0  # the body's bounding box is found on a grid this coarse (a few milliseconds)


@dataclass
class FeatureImage:
    """A CT in LPS orientation with what every lesion's measurement needs."""

    hu: np.ndarray  # float32 (z, y, x)
    spacing: np.ndarray  # (z, y, x) mm
    body_lo: np.ndarray  # (z, y, x) first voxel of the body's bounding box
    body_hi: np.ndarray  # one past the last

    @staticmethod
    def of(image: sitk.Image) -> "FeatureImage":
        oriented = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "LPS")
        hu = sitk.GetArrayFromImage(oriented)
        spacing = np.array(oriented.GetSpacing()[::-1], float)
        lo, hi = body_box(hu, spacing)
        return FeatureImage(hu, spacing, lo, hi)


def oriented_labels(labels: sitk.Image) -> np.ndarray:
    """A label image as an array (z, y, x) in the orientation of FeatureImage.of."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(labels, "LPS"))


def body_box(hu: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of the largest connected region denser than BODY_HU (the whole volume if none)."""
    step = np.maximum(1, np.round(BODY_STEP_MM / spacing)).astype(int)
    coarse = hu[:: step[0], :: step[1], :: step[2]] > BODY_HU
    lab, n = ndimage.label(coarse)
    if n == 0:
        return np.zeros(3, int), np.array(hu.shape)
    biggest = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    box = ndimage.find_objects((lab == biggest).astype(np.int8))[0]
    lo = np.array([s.start * k for s, k in zip(box, step)])
    hi = np.minimum(np.array([s.stop * k for s, k in zip(box, step)]), hu.shape)
    return lo, hi


def features_of_labels(fimg: FeatureImage, labels: np.ndarray, ids: list[int] | None = None) -> dict[int, dict[str, float]]:
    """{label: features} for each label id in `labels` (LPS array on fimg's grid; default: all ids)."""
    boxes = ndimage.find_objects(labels)
    ids = [k for k in range(1, len(boxes) + 1) if boxes[k - 1] is not None] if ids is None else ids
    out = {}
    for k in ids:
        box = boxes[k - 1] if k - 1 < len(boxes) else None
        if box is None:
            continue
        out[k] = lesion_features(fimg, labels, k, box)
    return out


def lesion_rows(pm, lm, order: list[int]) -> dict[int, dict[str, float]]:
    """{lesion id of `lm`: features} for the predicted lesions `order` (malenia.infer.postprocess): the
    measurements of each lesion's mask on the input grid and its probability on the model grid (what the
    lesion verifier, malenia.model.lesion_verifier, reads)."""
    from malenia.infer.postprocess import relabel

    if not order:
        return {}
    label_image = sitk.GetImageFromArray(relabel(lm, order))
    label_image.CopyInformation(pm.image)
    measured = features_of_labels(FeatureImage.of(pm.image), oriented_labels(label_image))
    index = np.asarray(order)
    peak = ndimage.maximum(pm.probability, lm.model_labels, index=index)
    mean = ndimage.mean(pm.probability, lm.model_labels, index=index)
    rows = {}
    for k, lesion_id in enumerate(order):
        if k + 1 in measured:  # a lesion too thin to survive on the input grid has no measurement
            rows[lesion_id] = measured[k + 1] | {"peak_probability": float(peak[k]), "mean_probability": float(mean[k])}
    return rows


def lesion_features(fimg: FeatureImage, labels: np.ndarray, label: int, box: tuple[slice, ...]) -> dict[str, float]:
    from malenia.data.synthesis.measure import edge_width, sphericity

    sp = fimg.spacing
    crop = _grown(box, labels.shape, int(np.ceil(max(RING_MM[1], MAX_EDGE_MM + 1) / sp.min())) + 1)
    mask = labels[crop] == label
    hu = fimg.hu[crop]
    core, ring = core_and_shell(mask, sp)
    inner, host = hu[core], hu[ring] if ring.any() else hu[core]
    host_median = float(np.median(host))  # the host's level: contrast and the vessel share both read it
    voxels = np.argwhere(mask)
    volume = float(mask.sum() * np.prod(sp))
    ev = _principal_variances(voxels * sp)
    with warnings.catch_warnings():  # too small for an inner plateau: nan, read as MAX_EDGE_MM
        warnings.simplefilter("ignore", RuntimeWarning)
        edge = edge_width(hu, mask, sp) if mask.sum() > 5 else MAX_EDGE_MM
    centre = voxels.mean(0) + np.array([s.start for s in crop])
    pos = (centre - fimg.body_lo) / np.maximum(fimg.body_hi - fimg.body_lo, 1)
    return {
        "hu_mean": float(inner.mean()), "hu_std": float(inner.std()), "log_hu_std": float(np.log(max(inner.std(), 0.5))),
        "hu_p10": float(np.percentile(inner, 10)), "hu_p90": float(np.percentile(inner, 90)),
        "ring_mean": float(host.mean()), "ring_std": float(host.std()),
        "ring_air": float((host < -500).mean()), "ring_bone": float((host > 200).mean()),
        "ring_fluid": float(((host >= FLUID_HU[0]) & (host <= FLUID_HU[1])).mean()),
        "ring_vessel": _vessel_share(host, host_median),
        "contrast": float(inner.mean() - host_median),
        "sphericity": float(sphericity(mask, sp)),
        "elongation": float(np.sqrt(ev[1] / ev[0])), "flatness": float(np.sqrt(ev[2] / ev[0])),
        "solidity": _solidity(mask),
        "edge_mm": float(np.clip(edge if np.isfinite(edge) else MAX_EDGE_MM, 0.0, MAX_EDGE_MM)),
        "log_volume": float(np.log(max(volume, 1e-3))),
        "pos_z": float(pos[0]), "pos_y": float(pos[1]), "pos_x": float(pos[2]),
    }


def core_and_shell(mask: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lesion's core (deeper than 1.5 voxels; the whole lesion when that leaves under 5 voxels) and its
    host shell (RING_MM outside it), as masks of `mask`'s shape; `sp` the (z, y, x) spacing in mm. `mask` needs
    a margin of RING_MM[1] around the lesion for a whole shell."""
    depth = ndimage.distance_transform_edt(mask, sampling=sp)
    outside = ndimage.distance_transform_edt(~mask, sampling=sp)
    core = mask & (depth > 1.5 * sp.min())
    core = core if core.sum() >= 5 else mask
    return core, ~mask & (outside > RING_MM[0]) & (outside <= RING_MM[1])


def lesion_contrasts(hu: np.ndarray, labels: np.ndarray, spacing_zyx, ids=None) -> dict[int, float]:
    """Per lesion label (all of `labels`' non-zero ones, or `ids`): the `contrast` measurement, its core's mean
    HU minus its host shell's median, on any (z, y, x) grid (orientation does not change it). A lesion absent
    from `labels` is left out."""
    sp = np.asarray(spacing_zyx, dtype=float)
    margin = int(np.ceil(RING_MM[1] / sp.min())) + 1
    boxes = ndimage.find_objects(labels)
    wanted = [int(i) for i in (ids if ids is not None else np.unique(labels[labels > 0]))]
    out: dict[int, float] = {}
    for label in wanted:
        box = boxes[label - 1] if 0 < label <= len(boxes) else None
        if box is None:
            continue
        crop = _grown(box, labels.shape, margin)
        core, ring = core_and_shell(labels[crop] == label, sp)
        host = hu[crop][ring] if ring.any() else hu[crop][core]
        out[label] = float(hu[crop][core].mean() - np.median(host))
    return out


def _grown(box: tuple[slice, ...], shape, margin: int) -> tuple[slice, ...]:
    """`box` grown by `margin` voxels on every side, within `shape`."""
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, shape))


def _vessel_share(host: np.ndarray, host_median: float) -> float:
    """Share of the host shell's voxels that stand VESSEL_ABOVE_HOST_HU above its median, below VESSEL_MAX_HU."""
    bright = (host >= host_median + VESSEL_ABOVE_HOST_HU) & (host < VESSEL_MAX_HU)
    return float(bright.mean())


def _principal_variances(points: np.ndarray) -> np.ndarray:
    if len(points) < 2:
        return np.ones(3)
    cov = np.cov((points - points.mean(0)).T) + 1e-6 * np.eye(3)
    return np.maximum(np.sort(np.linalg.eigvalsh(cov))[::-1], 1e-9)


def _solidity(mask: np.ndarray) -> float:
    """Voxels of the lesion / voxels whose centre lies in the convex hull of its voxel centres
    (skimage's solidity, in 3D): 1 for any convex lesion whatever its size, less for lobulated or
    spiculated ones. Large lesions are measured on every n-th voxel, which keeps the ratio. Only the
    hull's vertices are triangulated and only voxels outside the lesion tested (the lesion's own voxels
    lie in its hull): a triangulation of every surface voxel made this 100 times slower on a 60 ml lesion."""
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    sub = mask[box]
    step = max(1, int(np.ceil((sub.size / SOLIDITY_MAX_VOXELS) ** (1 / 3))))
    sub = sub[::step, ::step, ::step]
    inside = int(sub.sum())
    if inside < 5:
        return 1.0
    surface = np.argwhere(sub & ~ndimage.binary_erosion(sub))
    try:
        hull = Delaunay(surface[ConvexHull(surface).vertices])
    except QhullError:  # flat: all voxels in one plane
        return 1.0
    in_hull = inside + int((hull.find_simplex(np.argwhere(~sub)) >= 0).sum())
    return float(min(1.0, inside / in_hull))
