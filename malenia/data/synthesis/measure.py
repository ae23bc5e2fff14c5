"""Measurements of rendered attributes: what a reader of the image would see.

Used by the tests (each attribute must be measurable in the image it produced) and handy when
checking a synthetic dataset.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def sphericity(mask: np.ndarray, spacing_zyx) -> float:
    """pi^(1/3) (6 V)^(2/3) / A: 1 for a ball, lower for irregular shapes.

    The area is the co-area integral of the gradient magnitude of the slightly smoothed
    indicator, which does not carry the staircase over-estimate of counting voxel faces.
    """
    sp = np.asarray(spacing_zyx, float)
    box = _bbox(mask, 3)
    m = ndi.gaussian_filter(mask[box].astype(np.float32), 0.6)
    grads = np.gradient(m, *sp)
    area = float(np.sqrt(sum(g * g for g in grads)).sum() * np.prod(sp))
    vol = float(mask.sum() * np.prod(sp))
    return float(np.pi ** (1 / 3) * (6 * vol) ** (2 / 3) / area) if area > 0 else 0.0


def edge_profile(image: np.ndarray, mask: np.ndarray, spacing_zyx, reach_mm: float = 12.0,
                 restrict: np.ndarray | None = None, bin_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean HU against signed distance to the lesion boundary (mm, + outside), binned by `bin_mm`
    (default half the finest spacing). `restrict` keeps only outside voxels in that mask (the host)."""
    sp = np.asarray(spacing_zyx, float)
    margin = int(np.ceil(reach_mm / sp.min())) + 1
    box = _bbox(mask, margin)
    m = mask[box]
    half = float(sp.min()) / 2
    # voxel centres: the boundary lies half a voxel beyond the last inside voxel
    sd = np.where(m, half - ndi.distance_transform_edt(m, sampling=sp), ndi.distance_transform_edt(~m, sampling=sp) - half)
    img = image[box]
    keep = np.abs(sd) <= reach_mm
    if restrict is not None:
        keep &= restrict[box] | m
    step = bin_mm or half
    bins = np.round(sd[keep] / step).astype(int)
    vals = img[keep]
    centres = np.unique(bins)
    means = np.array([vals[bins == b].mean() for b in centres])
    return centres * step, means


def edge_width(image: np.ndarray, mask: np.ndarray, spacing_zyx, reach_mm: float = 9.0,
               restrict: np.ndarray | None = None) -> float:
    """Edge width (mm): the lesion-host contrast divided by the steepest slope of the radial
    profile near the boundary. About one voxel for a sharp, partial-volume edge; wider for a
    blurred, infiltrative one."""
    d, p = edge_profile(image, mask, spacing_zyx, reach_mm, restrict)
    inside = p[(d <= -0.5 * reach_mm)].mean()
    outside = p[(d >= 0.5 * reach_mm)].mean()
    near = np.abs(d) <= 0.5 * reach_mm
    slopes = np.abs(np.diff(p[near]) / np.diff(d[near]))
    if slopes.size == 0 or slopes.max() == 0:
        return float("inf")
    return float(abs(outside - inside) / slopes.max())


def fraction_inside(mask: np.ndarray, region: np.ndarray) -> float:
    n = int(mask.sum())
    return float((mask & region).sum() / n) if n else 0.0
