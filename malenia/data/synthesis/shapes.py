"""Lesion shape fields: a perturbed, elastically deformed ellipsoid (after Hu et al., CVPR 2023).

A shape is a signed distance field in millimetres (negative inside) evaluated on a local grid of
offsets from the lesion centre. The boundary is star-shaped around the centre: along a unit
direction u of the (rotated, axis-scaled) ellipsoid frame the boundary lies at f(u) times the
ellipsoid's radius, with

    f(u) = 1 + sum_k a_k cos(w_k . u + phi_k)        low-order spherical "harmonics" (irregularity)
             + sum_j b_j max(0, u . v_j) ** p_j       lobules bulging towards directions v_j

and the sampling grid itself is displaced by a smooth random field (elastic deformation).
Spicules are thin tapering tubes leaving the surface. Vocabulary shapes map to parameter ranges:

    round      near-equal axes (0.85-1), tiny perturbation
    oval       one axis 1, others 0.5-0.8
    lobulated  3-6 lobules of 20-40 % of the radius, notches between them
    irregular  unequal axes, strong low-order perturbation (15-30 %) and elastic deformation
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from malenia.data.synthesis.texture import filtered_noise

SHAPE_IDS = ("shape.round", "shape.oval", "shape.lobulated", "shape.irregular")


@dataclass
class Spicule:
    direction: np.ndarray  # unit, local (z, y, x)
    length: float  # beyond the surface, in radii
    base_mm: float  # radius at the surface
    tip_mm: float


@dataclass
class ShapeParams:
    shape_id: str
    radius_mm: float
    axes: np.ndarray  # semi-axes (mm) in the shape frame
    rotation: np.ndarray  # 3x3, shape frame -> local (z, y, x)
    harmonics: list[tuple[np.ndarray, float, float]] = field(default_factory=list)  # (w, phase, amplitude)
    lobes: list[tuple[np.ndarray, float, float]] = field(default_factory=list)  # (direction, amplitude, power)
    elastic_mm: float = 0.0
    elastic_sigma_mm: float = 8.0
    spicules: list[Spicule] = field(default_factory=list)

    def reach(self) -> float:
        """Upper bound of the distance from the centre to any boundary point (mm)."""
        amp = 1.0 + sum(abs(a) for _, _, a in self.harmonics) + sum(b for _, b, _ in self.lobes)
        r = float(self.axes.max()) * amp + 2.0 * self.elastic_mm
        if self.spicules:
            r = max(r, float(self.axes.max()) * (1.0 + max(s.length for s in self.spicules)))
        return r

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": self.shape_id,
            "radius_mm": round(self.radius_mm, 2),
            "axes_mm": [round(float(a), 2) for a in self.axes],
            "rotation": np.round(self.rotation, 4).tolist(),
            "harmonics": [{"w": np.round(w, 3).tolist(), "phase": round(p, 3), "amp": round(a, 3)} for w, p, a in self.harmonics],
            "lobes": [{"dir": np.round(v, 3).tolist(), "amp": round(b, 3), "power": round(p, 2)} for v, b, p in self.lobes],
            "elastic_mm": round(self.elastic_mm, 2),
            "elastic_sigma_mm": round(self.elastic_sigma_mm, 2),
            "spicules": len(self.spicules),
        }


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sample_shape(shape_id: str, radius_mm: float, rng: np.random.Generator) -> ShapeParams:
    """Parameters of a shape of the vocabulary id `shape_id` with equivalent radius `radius_mm`."""
    if shape_id == "shape.round":
        ratios = np.array([1.0, rng.uniform(0.88, 1.0), rng.uniform(0.88, 1.0)])
        n_h, amp, freq, n_lobes, elastic = 2, (0.0, 0.03), (1.0, 2.0), 0, 0.02
    elif shape_id == "shape.oval":
        ratios = np.array([1.0, rng.uniform(0.55, 0.8), rng.uniform(0.5, 0.8)])
        n_h, amp, freq, n_lobes, elastic = 2, (0.0, 0.04), (1.0, 2.0), 0, 0.03
    elif shape_id == "shape.lobulated":
        ratios = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.0)])
        n_h, amp, freq, n_lobes, elastic = 2, (0.0, 0.05), (1.0, 2.5), int(rng.integers(3, 7)), 0.05
    elif shape_id == "shape.irregular":
        ratios = np.array([1.0, rng.uniform(0.55, 0.95), rng.uniform(0.5, 0.9)])
        n_h, amp, freq, n_lobes, elastic = 5, (0.08, 0.18), (2.0, 4.5), int(rng.integers(0, 3)), 0.14
    else:
        raise ValueError(f"unknown shape id {shape_id!r}")
    ratios = rng.permutation(ratios)
    axes = radius_mm * ratios / np.prod(ratios) ** (1.0 / 3.0)  # same volume as the sphere
    harmonics = [(_unit(rng, 1)[0] * rng.uniform(*freq), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(*amp)))
                 for _ in range(n_h)]
    lobes = [(v, float(rng.uniform(0.2, 0.4)), float(rng.uniform(5.0, 12.0))) for v in _unit(rng, n_lobes)] if n_lobes else []
    return ShapeParams(shape_id, float(radius_mm), axes, random_rotation(rng), harmonics, lobes,
                       elastic_mm=float(elastic * radius_mm * rng.uniform(0.7, 1.3)),
                       elastic_sigma_mm=float(max(0.35 * radius_mm, 3.0)))


def sample_spicules(params: ShapeParams, rng: np.random.Generator, voxel_mm: float) -> None:
    """Adds 6-16 tapering spicules (spiculated margin) to `params`."""
    n = int(rng.integers(6, 17))
    params.spicules = [Spicule(d, float(rng.uniform(0.35, 1.0)), float(max(rng.uniform(0.9, 1.6), 0.35 * voxel_mm)), 0.3)
                       for d in _unit(rng, n)]


def radial_factor(params: ShapeParams, u: np.ndarray) -> np.ndarray:
    """f(u) for unit directions u of shape (3, ...) in the shape frame."""
    f = np.ones(u.shape[1:], np.float32)
    for w, phase, a in params.harmonics:
        f += a * np.cos(np.tensordot(w, u, axes=1) + phase)
    for v, b, p in params.lobes:
        f += b * np.maximum(np.tensordot(v, u, axes=1), 0.0) ** p
    return np.maximum(f, 0.25)


def shape_sdf(offsets_mm: np.ndarray, params: ShapeParams, rng: np.random.Generator, spacing_zyx: np.ndarray) -> np.ndarray:
    """Signed distance (mm, along the ray from the centre; negative inside) on a local grid.

    offsets_mm: (3, Z, Y, X) offsets of each voxel from the centre in mm along the array axes.
    """
    p = offsets_mm.astype(np.float32)
    if params.elastic_mm > 0:
        sigma = params.elastic_sigma_mm / spacing_zyx
        disp = np.stack([filtered_noise(p.shape[1:], sigma, rng) for _ in range(3)]) * params.elastic_mm
        p = p + disp
    q = np.tensordot(params.rotation.T.astype(np.float32), p, axes=1)  # into the shape frame
    s = q / params.axes.astype(np.float32)[:, None, None, None]
    rho = np.sqrt((s * s).sum(0)) + 1e-6
    u = s / rho
    f = radial_factor(params, u)
    qn = np.sqrt((q * q).sum(0))
    scale = qn / rho  # ellipsoid radius along this ray
    sd = qn - f * scale
    for sp in params.spicules:
        sd = np.minimum(sd, _spicule_sdf(offsets_mm, sp, params))
    return sd.astype(np.float32)


def _spicule_sdf(p: np.ndarray, sp: Spicule, params: ShapeParams) -> np.ndarray:
    r = float(np.mean(params.axes))
    a = sp.direction * 0.6 * r
    b = sp.direction * (1.0 + sp.length) * r
    ab = b - a
    pa = p - a[:, None, None, None]
    t = np.clip(np.tensordot(ab, pa, axes=1) / float(ab @ ab), 0.0, 1.0)
    d = np.sqrt(((pa - t[None] * ab[:, None, None, None]) ** 2).sum(0))
    return d - (sp.base_mm * (1.0 - t) + sp.tip_mm * t)


def polyline_sdf(sd: np.ndarray, spacing_zyx: np.ndarray, points_mm: np.ndarray, radii_mm: np.ndarray,
                 origin_mm: np.ndarray | None = None) -> np.ndarray:
    """Lowers `sd` (mm, in place) to the signed distance of a tube around a polyline.

    points_mm: (N, 3) centreline in array-axis millimetres (z, y, x) of the grid whose voxel
    (k, j, i) sits at origin_mm + (k, j, i) * spacing; radii_mm: (N,) radius at each point,
    interpolated along each segment. Each segment is evaluated on its own bounding box only.
    """
    origin = np.zeros(3) if origin_mm is None else np.asarray(origin_mm, float)
    pts = np.asarray(points_mm, float)
    rad = np.atleast_1d(np.asarray(radii_mm, float))
    if len(rad) != len(pts):  # a few radii spread evenly along the curve's length
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        rad = np.interp(arc / max(arc[-1], 1e-9), np.linspace(0, 1, len(rad)), rad) if len(rad) > 1 else np.full(len(pts), rad[0])
    shape = np.array(sd.shape)
    for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:]):
        r = max(ra, rb) + 2.0 * float(spacing_zyx.max())
        lo = np.maximum(np.floor((np.minimum(a, b) - r - origin) / spacing_zyx).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(a, b) + r - origin) / spacing_zyx).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        axes = [origin[d] + np.arange(lo[d], hi[d]) * spacing_zyx[d] for d in range(3)]
        pz, py, px = axes[0][:, None, None] - a[0], axes[1][None, :, None] - a[1], axes[2][None, None, :] - a[2]
        ab = b - a
        den = float(ab @ ab) or 1e-9
        t = np.clip((pz * ab[0] + py * ab[1] + px * ab[2]) / den, 0.0, 1.0)
        d = np.sqrt((pz - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (px - t * ab[2]) ** 2) - (ra + (rb - ra) * t)
        view = sd[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        np.minimum(view, d.astype(sd.dtype), out=view)
    return sd


def smooth_curve(control_mm: np.ndarray, step_mm: float) -> np.ndarray:
    """A Catmull-Rom curve through control points, resampled about every `step_mm`."""
    c = np.asarray(control_mm, float)
    if len(c) < 3:
        n = max(2, int(np.ceil(np.linalg.norm(c[-1] - c[0]) / step_mm)) + 1)
        return np.linspace(c[0], c[-1], n)
    p = np.vstack([2 * c[0] - c[1], c, 2 * c[-1] - c[-2]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        n = max(2, int(np.ceil(np.linalg.norm(p2 - p1) / step_mm)))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(c[-1:])
    return np.vstack(out)
