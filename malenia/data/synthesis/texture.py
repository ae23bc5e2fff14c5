"""Noise, texture and edge profiles shared by the phantom and the lesion renderer.

CT noise is modelled as white Gaussian noise low-pass filtered by a Gaussian (the
reconstruction kernel correlates neighbouring voxels); tissue texture as a coarser filtered
noise field. Edges: a one-voxel linear ramp is the partial-volume fraction of a plane boundary
crossing a voxel; an ill-defined margin is that boundary blurred by a Gaussian of width s,
whose profile is the normal CDF of the signed distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.special import ndtr

NOISE_SIGMA_VOX = 0.6  # correlation of CT noise (Gaussian filter width, voxels)


def filtered_noise(shape: tuple[int, ...], sigma_vox: float | tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (float32)."""
    n = rng.standard_normal(shape, dtype=np.float32)
    if np.any(np.asarray(sigma_vox) > 0):
        n = ndi.gaussian_filter(n, sigma_vox, mode="reflect", truncate=3.0)
    std = float(n.std())
    return n / std if std > 0 else n


def pv_ramp(sd_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Partial-volume occupancy of a sharp boundary: 1 inside, 0 outside, linear across one voxel."""
    return np.clip(0.5 - sd_mm / voxel_mm, 0.0, 1.0).astype(np.float32)


def blurred_edge(sd_mm: np.ndarray, width_mm: float, voxel_mm: float) -> np.ndarray:
    """Occupancy of a boundary blurred by a Gaussian of std `width_mm` (infiltrative margin)."""
    s = float(np.hypot(width_mm, voxel_mm / np.sqrt(12.0)))  # plus the voxel's own box blur
    return ndtr(-sd_mm / s).astype(np.float32)


@dataclass(frozen=True)
class HostStats:
    """Robust intensity statistics of the host tissue (HU)."""

    mean: float  # trimmed mean (5-95 %)
    median: float
    std: float  # robust std (1.4826 MAD): texture + noise
    noise_std: float  # std of the high-pass residual: scanner noise
    voxels: int

    def to_json(self) -> dict[str, float]:
        return {"mean": round(self.mean, 2), "median": round(self.median, 2), "std": round(self.std, 2),
                "noise_std": round(self.noise_std, 2), "voxels": self.voxels}


def host_stats(image: np.ndarray, mask: np.ndarray, soft_tissue: bool = True, fallback_mean: float = 40.0) -> HostStats:
    """Statistics of `image` inside `mask`, eroded by one voxel when that leaves enough of it.

    soft_tissue keeps -50..250 HU so that fat clefts, air or bone inside a label (partial
    volume at a coarse spacing) do not pull the reference of a parenchymal organ.
    """
    box = _bbox(mask)
    if box is None:
        return HostStats(fallback_mean, fallback_mean, 15.0, 12.0, 0)
    m = mask[box]
    eroded = ndi.binary_erosion(m)
    core = eroded if eroded.sum() >= 50 else m
    img = image[box]
    vals = img[core]
    if soft_tissue:
        sel = vals[(vals > -50) & (vals < 250)]
        vals = sel if sel.size >= 20 else vals
    if vals.size == 0:
        return HostStats(fallback_mean, fallback_mean, 15.0, 12.0, 0)
    lo, hi = np.quantile(vals, [0.05, 0.95])
    trimmed = vals[(vals >= lo) & (vals <= hi)]
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med))) * 1.4826
    resid = (img - ndi.gaussian_filter(img.astype(np.float32), 1.0))[core]
    noise = float(np.median(np.abs(resid - np.median(resid)))) * 1.4826  # ~ the noise std for CT-like correlated noise
    return HostStats(float(trimmed.mean()) if trimmed.size else med, med, max(mad, 1.0), max(min(noise, mad), 1.0), int(vals.size))


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None
    lo = np.maximum(idx.min(0) - 2, 0)
    hi = np.minimum(idx.max(0) + 3, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
