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
                 restrict: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean HU against signed distance to the lesion boundary (mm, + outside), 1-voxel bins."""
    sp = np.asarray(spacing_zyx, float)
    margin = int(np.ceil(reach_mm / sp.min())) + 1
    box = _bbox(mask, margin)
    m = mask[box]
    sd = ndi.distance_transform_edt(~m, sampling=sp) - ndi.distance_transform_edt(m, sampling=sp)
    step = float(sp.min())
    sd = np.where(m, sd + step / 2, sd - step / 2)  # boundary between the last inside and first outside voxel
    img = image[box]
    keep = np.abs(sd) <= reach_mm
    if restrict is not None:
        keep &= restrict[box] | m
    bins = np.round(sd[keep] / step).astype(int)
    vals = img[keep]
    centres = np.unique(bins)
    means = np.array([vals[bins == b].mean() for b in centres])
    return centres * step, means


def edge_width(image: np.ndarray, mask: np.ndarray, spacing_zyx, reach_mm: float = 12.0,
               restrict: np.ndarray | None = None) -> float:
    """10-90 % rise distance (mm) of the radial edge profile: small for a sharp margin."""
    d, p = edge_profile(image, mask, spacing_zyx, reach_mm, restrict)
    inside = p[d <= -0.6 * reach_mm].mean()
    outside = p[d >= 0.6 * reach_mm].mean()
    if abs(outside - inside) < 1e-6:
        return float("inf")
    f = (p - inside) / (outside - inside)
    f = np.maximum.accumulate(np.clip(f, 0, 1))  # monotone for the crossing search
    return float(np.interp(0.9, f, d) - np.interp(0.1, f, d))


def fraction_inside(mask: np.ndarray, region: np.ndarray) -> float:
    n = int(mask.sum())
    return float((mask & region).sum() / n) if n else 0.0
