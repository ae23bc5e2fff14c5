"""Specific features (vocabulary aspect 8) drawn into or around a lesion.

Internal features change the lesion's own intensity field before it is composited (they are
part of the lesion label); external ones change the scan around it (not lesion label):

    internal  necrosis, calcification, cystic_change, septation, fat, capsule, cavitation,
              bronchial_change (air bronchogram), marked_enhancement (contrast scans only)
    external  duct_dilatation, hydronephrosis, pleural_traction, wall_thickening, vessel_invasion
              (tumour thrombus: lesion label), parenchymal_atrophy, fat_stranding, lymph_nodes,
              perilesional_vessels, vessel_convergence, obstruction
    elsewhere lobulation (shape), exophytic and layering (placement), luminal_narrowing (colon
              wall thickness)

Every function records what it drew in `ctx.record` so that the report says how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage as ndi

from malenia.data.synthesis.anatomy import HEPATIC_VESSELS, VESSELS, Anatomy, inner_depth_mm, pancreas_axis
from malenia.data.synthesis.shapes import polyline_sdf, smooth_curve
from malenia.data.synthesis.texture import NOISE_SIGMA_VOX, blurred_edge, filtered_noise, pv_ramp

FLUID_HU = (0.0, 15.0)
FAT_HU = (-110.0, -60.0)


@dataclass
class Canvas:
    """The scan being drawn on: lesions are composited into `image`, labelled in `lesions`."""

    image: np.ndarray  # float32 HU
    organs: np.ndarray  # int16
    lesions: np.ndarray  # uint16 instance labels


@dataclass
class LesionContext:
    anat: Anatomy
    canvas: Canvas
    box: tuple[slice, ...]
    center: np.ndarray  # voxel index (z, y, x)
    offsets: np.ndarray  # (3, Z, Y, X) mm from the centre, crop grid
    sd: np.ndarray  # lesion signed distance (mm), crop grid
    label: np.ndarray  # bool crop: lesion voxels
    hu: np.ndarray  # lesion intensity field (crop)
    radius: float
    mean: float
    host_mean: float
    noise_std: float
    phase: str
    organ: str
    region: str
    label_value: int
    rng: np.random.Generator
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def sp(self) -> np.ndarray:
        return self.anat.spacing_zyx

    @property
    def depth(self) -> np.ndarray:
        return -self.sd

    def noise(self, sigma_vox: float = NOISE_SIGMA_VOX) -> np.ndarray:
        return filtered_noise(self.hu.shape, sigma_vox, self.rng)


def _blend(hu: np.ndarray, w: np.ndarray, value: np.ndarray | float) -> None:
    hu *= 1.0 - w
    hu += w * value


def _random_inside(ctx: LesionContext, min_depth: float, n: int) -> np.ndarray:
    idx = np.argwhere(ctx.label & (ctx.depth > min_depth))
    if len(idx) == 0:
        idx = np.argwhere(ctx.label)
    pick = idx[ctx.rng.choice(len(idx), size=n, replace=len(idx) < n)]
    c = np.array([s.start for s in ctx.box]) - ctx.center
    return (pick + c) * ctx.sp  # offsets (mm) from the centre


def _ball_sd(ctx: LesionContext, c_mm: np.ndarray, r_mm: float) -> np.ndarray:
    d = ctx.offsets - c_mm[:, None, None, None]
    return np.sqrt((d * d).sum(0)) - r_mm


# -- internal ------------------------------------------------------------------------------
def necrosis(ctx: LesionContext) -> None:
    frac = ctx.rng.uniform(0.35, 0.6)
    wob = filtered_noise(ctx.hu.shape, max(0.2 * ctx.radius / ctx.sp.min(), 1.0), ctx.rng) * 0.12 * ctx.radius
    w = blurred_edge((1.0 - frac) * ctx.radius - ctx.depth + wob, 1.2, float(ctx.sp.min())) * ctx.label
    value = ctx.rng.uniform(8.0, 25.0)
    _blend(ctx.hu, w, value + ctx.noise() * ctx.noise_std)
    ctx.record["necrosis"] = {"core_fraction": round(frac, 3), "hu": round(value, 1)}


def calcification(ctx: LesionContext) -> None:
    n = int(ctx.rng.integers(1, 5))
    spots = _random_inside(ctx, 1.5, n)
    vals = []
    for c in spots:
        r = ctx.rng.uniform(1.2, max(1.5, min(3.0, 0.2 * ctx.radius)))
        v = ctx.rng.uniform(250.0, 800.0)
        _blend(ctx.hu, pv_ramp(_ball_sd(ctx, c, r), float(ctx.sp.min())) * ctx.label, v)
        vals.append(round(v, 1))
    ctx.record["calcification"] = {"spots": n, "hu": vals}


def calcified_rim(ctx: LesionContext) -> None:
    """Stones: a laminated, denser rim."""
    t = ctx.rng.uniform(0.8, 1.8)
    v = ctx.mean + ctx.rng.uniform(150.0, 400.0)
    _blend(ctx.hu, ((ctx.depth >= 0) & (ctx.depth <= t)) * 1.0 * ctx.label, v)
    ctx.record["calcification"] = {"rim_mm": round(t, 2), "hu": round(v, 1)}


def cystic_change(ctx: LesionContext, value_range: tuple[float, float] = FLUID_HU, name: str = "cystic_change") -> None:
    n = int(ctx.rng.integers(1, 4))
    pockets = _random_inside(ctx, 0.25 * ctx.radius, n)
    v = ctx.rng.uniform(*value_range)
    for c in pockets:
        r = ctx.rng.uniform(0.15, 0.35) * ctx.radius
        w = blurred_edge(_ball_sd(ctx, c, max(r, ctx.sp.min())), 0.6, float(ctx.sp.min())) * ctx.label
        _blend(ctx.hu, w, v + ctx.noise() * ctx.noise_std)
    ctx.record[name] = {"pockets": n, "hu": round(v, 1)}


def fat(ctx: LesionContext) -> None:
    cystic_change(ctx, FAT_HU, "fat")


def septation(ctx: LesionContext) -> None:
    n = int(ctx.rng.integers(1, 4))
    boost = ctx.rng.uniform(25.0, 50.0) + (30.0 if ctx.phase == "contrast" else 0.0)
    for _ in range(n):
        v = ctx.rng.standard_normal(3)
        v /= np.linalg.norm(v)
        d = ctx.rng.uniform(-0.5, 0.5) * ctx.radius
        dist = np.abs(np.tensordot(v, ctx.offsets, axes=1) - d)
        w = pv_ramp(dist - 0.6, float(ctx.sp.min())) * (ctx.depth > 1.0)
        _blend(ctx.hu, w, ctx.mean + boost)
    ctx.record["septation"] = {"septa": n, "boost_hu": round(boost, 1)}


def capsule(ctx: LesionContext) -> None:
    t = ctx.rng.uniform(1.5, 2.5)
    boost = ctx.rng.uniform(15.0, 35.0)
    w = np.clip(1.0 - np.abs(ctx.depth - t / 2) / (t / 2 + 0.5 * ctx.sp.min()), 0, 1) * ctx.label
    ctx.hu += w * boost
    ctx.record["capsule"] = {"thickness_mm": round(t, 2), "boost_hu": round(boost, 1)}


def cavitation(ctx: LesionContext) -> None:
    r = ctx.rng.uniform(0.25, 0.45) * ctx.radius
    v = ctx.rng.standard_normal(3)
    c = v / np.linalg.norm(v) * ctx.rng.uniform(0.0, 0.25) * ctx.radius
    wall = max(2.0, float(ctx.sp.min()))
    w = pv_ramp(_ball_sd(ctx, c, max(r, ctx.sp.min())), float(ctx.sp.min())) * (ctx.depth > wall)
    _blend(ctx.hu, w, -900.0 + ctx.noise() * ctx.noise_std)
    ctx.record["cavitation"] = {"radius_mm": round(r, 2)}


def bronchial_change(ctx: LesionContext) -> None:
    v = ctx.rng.standard_normal(3)
    v /= np.linalg.norm(v)
    bend = ctx.rng.standard_normal(3) * 0.2 * ctx.radius
    pts = np.stack([-0.9 * ctx.radius * v, bend, 0.9 * ctx.radius * v])
    sd = np.full(ctx.hu.shape, 1e6, np.float32)
    origin = np.array([s.start for s in ctx.box]) * ctx.sp - ctx.center * ctx.sp
    r = ctx.rng.uniform(1.0, 1.6)
    polyline_sdf(sd, ctx.sp, smooth_curve(pts, 2.0), np.array([r]), origin)
    _blend(ctx.hu, pv_ramp(sd, float(ctx.sp.min())) * (ctx.depth > 0.5), -850.0)
    ctx.record["bronchial_change"] = {"air_bronchogram_radius_mm": round(r, 2)}


def marked_enhancement(ctx: LesionContext) -> None:
    patches = (filtered_noise(ctx.hu.shape, max(0.25 * ctx.radius / ctx.sp.min(), 1.0), ctx.rng) > 0.4) | (ctx.depth < 0.15 * ctx.radius)
    boost = ctx.rng.uniform(50.0, 90.0)
    w = ndi.gaussian_filter((patches & ctx.label).astype(np.float32), 0.7) * ctx.label
    ctx.hu += w * boost
    ctx.record["marked_enhancement"] = {"boost_hu": round(boost, 1), "fraction": round(float(w[ctx.label].mean()), 3)}


# -- external ------------------------------------------------------------------------------
def _box(ctx: LesionContext, half_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    half = np.ceil(half_mm / ctx.sp).astype(int)
    lo = np.maximum(ctx.center - half, 0)
    hi = np.minimum(ctx.center + half + 1, ctx.canvas.image.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return box, lo


def _offsets(shape: tuple[int, ...], lo: np.ndarray, center: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """(3, Z, Y, X) mm offsets of the voxels of a box starting at `lo` from the voxel `center`."""
    return (np.indices(shape, dtype=np.float32) + (lo - center)[:, None, None, None]) * sp[:, None, None, None].astype(np.float32)


def _dist(shape: tuple[int, ...], lo: np.ndarray, center: np.ndarray, sp: np.ndarray) -> np.ndarray:
    off = _offsets(shape, lo, center, sp)
    return np.sqrt((off * off).sum(0))


def _tube(ctx: LesionContext, box: tuple[slice, ...], lo: np.ndarray, pts_idx: np.ndarray, radius_mm: float | np.ndarray) -> np.ndarray:
    """Partial-volume occupancy of a tube through points given as voxel indices relative to `box`."""
    sd = np.full(tuple(s.stop - s.start for s in box), 1e6, np.float32)
    polyline_sdf(sd, ctx.sp, smooth_curve(np.asarray(pts_idx, float) * ctx.sp, 1.0), np.atleast_1d(radius_mm))
    return pv_ramp(sd, float(ctx.sp.min()))


def _paint(ctx: LesionContext, box: tuple[slice, ...], w: np.ndarray, value: float, where: np.ndarray | None = None) -> int:
    img = ctx.canvas.image[box]
    free = ctx.canvas.lesions[box] == 0
    w = w * free if where is None else w * free * where
    noise = filtered_noise(img.shape, NOISE_SIGMA_VOX, ctx.rng) * ctx.noise_std
    img *= 1.0 - w
    img += w * (value + noise)
    return int((w >= 0.5).sum())


def duct_dilatation(ctx: LesionContext) -> None:
    anat = ctx.anat
    r = ctx.rng.uniform(2.0, 3.5)
    value = ctx.rng.uniform(*FLUID_HU)
    if ctx.organ == "pancreas" and anat.has("pancreas"):
        c, axis, t0, t1 = pancreas_axis(anat)
        p_c = anat.index_to_lps(ctx.center[None])[0]
        t_c = float((p_c - c) @ axis)
        pan = anat.mask("pancreas")
        idx = np.argwhere(pan)
        pts = anat.index_to_lps(idx)
        t = (pts - c) @ axis
        bins = np.linspace(t_c, t1, max(3, int((t1 - t_c) / 8.0) + 1))
        line = [ctx.center.astype(float)]
        for a, b in zip(bins[:-1], bins[1:]):  # upstream of the lesion: towards the tail
            sel = (t >= a) & (t < b)
            if sel.any():
                line.append(idx[sel].mean(0))
        if len(line) < 2:
            line.append(ctx.center + anat.lps_to_local(axis * 20.0) / ctx.sp)
        line = np.array(line)
        half = float(np.abs((line - ctx.center) * ctx.sp).max()) + 15.0
        box, lo = _box(ctx, half)
        w = _tube(ctx, box, lo, line - lo, r)
        where = ndi.binary_dilation(pan[box])
        n = _paint(ctx, box, w, value, where)
        ctx.record["duct_dilatation"] = {"duct": "pancreatic", "radius_mm": round(r, 2), "hu": round(value, 1), "voxels": n}
        return
    # biliary: a few ducts running from the lesion away from the liver hilum
    hilum = anat.coords_lps(anat.mask("portal_vein_and_splenic_vein", "gallbladder"))
    p_c = anat.index_to_lps(ctx.center[None])[0]
    away = p_c - (hilum.mean(0) if len(hilum) else p_c - np.array([1.0, 0, 0]))
    away = anat.lps_to_local(away / (np.linalg.norm(away) + 1e-6))
    liver = anat.mask("liver")
    n_ducts = int(ctx.rng.integers(2, 4))
    length = ctx.rng.uniform(30.0, 60.0)
    box, lo = _box(ctx, ctx.radius + length + 5.0)
    w = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for _ in range(n_ducts):
        d = away + ctx.rng.standard_normal(3) * 0.5
        d /= np.linalg.norm(d)
        pts = np.stack([np.zeros(3), d * (ctx.radius + length * 0.5) + ctx.rng.standard_normal(3) * 5, d * (ctx.radius + length)])
        w = np.maximum(w, _tube(ctx, box, lo, ctx.center + pts / ctx.sp - lo, np.array([r, r * 0.5])))
    n = _paint(ctx, box, w, value, liver[box])
    ctx.record["duct_dilatation"] = {"duct": "biliary", "ducts": n_ducts, "radius_mm": round(r, 2), "hu": round(value, 1), "voxels": n}


def hydronephrosis(ctx: LesionContext) -> None:
    anat = ctx.anat
    side = ctx.region.split(".")[1]
    kid = anat.mask(f"kidney_{side}", f"kidney_cyst_{side}")
    idx = np.argwhere(kid)
    pts = idx * ctx.sp
    c = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - c, full_matrices=False)
    long_axis = vt[0]
    mid = anat.lps_to_local(np.array([-1.0 if side == "left" else 1.0, 0.0, 0.0]))  # towards the midline
    depth = inner_depth_mm(kid, ctx.sp)
    half_len = float(np.quantile(np.abs((pts - c) @ long_axis), 0.95))
    pelvis = c + mid * 0.25 * float(depth.max())
    r_p = ctx.rng.uniform(0.45, 0.75) * float(depth.max())
    calyces = [pelvis + long_axis * s * half_len * ctx.rng.uniform(0.45, 0.7) + ctx.rng.standard_normal(3) * 3 for s in (-1, 1, -1, 1)[: int(ctx.rng.integers(2, 5))]]
    box = tuple(slice(int(a), int(b)) for a, b in zip(np.maximum(idx.min(0) - 2, 0), np.minimum(idx.max(0) + 3, kid.shape)))
    lo = np.array([s.start for s in box])
    sd = np.full(tuple(s.stop - s.start for s in box), 1e6, np.float32)
    for cal in calyces:
        polyline_sdf(sd, ctx.sp, np.stack([pelvis, cal]), np.array([r_p * 0.9, ctx.rng.uniform(3.0, 5.5)]), lo * ctx.sp)
    w = pv_ramp(sd, float(ctx.sp.min()))
    value = ctx.rng.uniform(0.0, 12.0)
    n = _paint(ctx, box, w, value, kid[box])
    ctx.record["hydronephrosis"] = {"pelvis_radius_mm": round(r_p, 1), "calyces": len(calyces), "hu": round(value, 1), "voxels": n}


def pleural_traction(ctx: LesionContext) -> None:
    anat = ctx.anat
    lung = anat.organ_mask("lung")
    box, lo = _box(ctx, ctx.radius + 60.0)
    lb = lung[box]
    dist, ind = ndi.distance_transform_edt(lb, sampling=ctx.sp, return_indices=True)
    c = ctx.center - lo
    target = np.array([i[tuple(c)] for i in ind], float)  # nearest non-lung voxel: the pleura
    r = ctx.rng.uniform(1.2, 2.0)  # thicker than anatomy so that it survives 3 mm voxels
    w = _tube(ctx, box, lo, np.stack([c.astype(float), target]), r)
    tag = pv_ramp(_dist(lb.shape, np.zeros(3, int), target, ctx.sp) - ctx.rng.uniform(3.0, 5.0), float(ctx.sp.min()))
    w = np.maximum(w, tag * lb)
    value = ctx.rng.uniform(-60.0, 20.0)
    n = _paint(ctx, box, w, value)
    ctx.record["pleural_traction"] = {"length_mm": round(float(dist[tuple(c)]), 1), "radius_mm": round(r, 2), "hu": round(value, 1), "voxels": n}


def wall_thickening(ctx: LesionContext) -> None:
    if ctx.organ == "colon" and ctx.record.get("wall", {}).get("thickness_mm"):
        ctx.record["wall_thickening"] = {"intrinsic": True, "thickness_mm": ctx.record["wall"]["thickness_mm"]}
        return
    gb = ctx.anat.organ_mask(ctx.organ)
    depth = inner_depth_mm(gb, ctx.sp)
    t = ctx.rng.uniform(3.5, 7.0)
    shell = gb & (depth <= t)
    box = tuple(slice(int(a), int(b)) for a, b in zip(np.maximum(np.argwhere(gb).min(0) - 1, 0), np.argwhere(gb).max(0) + 2))
    w = ndi.gaussian_filter(shell[box].astype(np.float32), 0.5) * gb[box]
    value = 35.0 + (45.0 if ctx.phase == "contrast" else 0.0) + ctx.rng.uniform(-5, 10)
    n = _paint(ctx, box, w, value)
    ctx.record["wall_thickening"] = {"thickness_mm": round(t, 2), "hu": round(value, 1), "voxels": n}


def vessel_invasion(ctx: LesionContext) -> None:
    anat = ctx.anat
    names = HEPATIC_VESSELS if ctx.organ == "liver" else VESSELS
    ids = anat.label_ids(*names)
    box, lo = _box(ctx, 1.8 * ctx.radius + 5.0)
    vmask = np.isin(ctx.canvas.organs[box], ids) & (ctx.canvas.lesions[box] == 0)
    near = vmask & (_dist(vmask.shape, lo, ctx.center, ctx.sp) <= 1.6 * ctx.radius)
    if not near.any():
        ctx.record["vessel_invasion"] = {"voxels": 0, "note": "no vessel within reach"}
        return
    img = ctx.canvas.image[box]
    img[near] = ctx.mean + filtered_noise(img.shape, NOISE_SIGMA_VOX, ctx.rng)[near] * ctx.noise_std
    ctx.canvas.lesions[box][near] = ctx.label_value  # tumour thrombus belongs to the lesion
    vessel = anat.names.get(int(np.bincount(ctx.canvas.organs[box][near]).argmax()), "vessel")
    ctx.record["vessel_invasion"] = {"vessel": vessel, "voxels": int(near.sum())}


def parenchymal_atrophy(ctx: LesionContext) -> None:
    anat = ctx.anat
    host = anat.organ_mask(ctx.organ) if ctx.organ != "kidney" else anat.host_mask(ctx.region)
    box, lo = _box(ctx, ctx.radius + 60.0)
    hb = host[box] & (ctx.canvas.lesions[box] == 0)
    depth = ndi.distance_transform_edt(hb, sampling=ctx.sp)
    t = ctx.rng.uniform(2.0, 4.0) + 0.5 * float(ctx.sp.min())
    off = _offsets(hb.shape, lo, ctx.center, ctx.sp)
    dist = np.sqrt((off * off).sum(0))
    band = hb & (depth <= t) & (dist > ctx.radius + 3.0)
    if ctx.organ == "pancreas":
        c, axis, _, _ = pancreas_axis(anat)
        axis_local = anat.lps_to_local(axis)
        band &= np.tensordot(axis_local.astype(np.float32), off, axes=1) > 0  # upstream = towards the tail
    img = ctx.canvas.image[box]
    value = ctx.rng.uniform(-100.0, -70.0)
    img[band] = value + filtered_noise(img.shape, NOISE_SIGMA_VOX, ctx.rng)[band] * ctx.noise_std
    ctx.canvas.organs[box][band] = 0
    ctx.record["parenchymal_atrophy"] = {"thinning_mm": round(t, 2), "voxels": int(band.sum())}


def fat_stranding(ctx: LesionContext) -> None:
    box, lo = _box(ctx, ctx.radius + 25.0)
    img = ctx.canvas.image[box]
    dist = _dist(img.shape, lo, ctx.center, ctx.sp)
    fatty = (img < -30) & (img > -200) & (ctx.canvas.organs[box] == 0) & (ctx.canvas.lesions[box] == 0)
    streaks = np.clip(filtered_noise(img.shape, 0.8, ctx.rng), 0, None)
    fall = np.clip(1.0 - (dist - ctx.radius) / 25.0, 0, 1)
    boost = ctx.rng.uniform(40.0, 80.0)
    add = boost * streaks * fall * fatty
    img += add
    ctx.record["fat_stranding"] = {"boost_hu": round(boost, 1), "voxels": int((add > 10).sum())}


def lymph_nodes(ctx: LesionContext) -> None:
    box, lo = _box(ctx, ctx.radius + 50.0)
    img = ctx.canvas.image[box]
    fatty = (img < -40) & (img > -200) & (ctx.canvas.organs[box] == 0) & (ctx.canvas.lesions[box] == 0)
    dist = _dist(img.shape, lo, ctx.center, ctx.sp)
    cand = np.argwhere(fatty & (dist > ctx.radius + 8) & (ndi.distance_transform_edt(fatty, sampling=ctx.sp) > 4.0))
    if len(cand) == 0:
        ctx.record["lymph_nodes"] = {"nodes": 0, "note": "no fat around the lesion"}
        return
    n = int(ctx.rng.integers(1, 4))
    value = 40.0 + (25.0 if ctx.phase == "contrast" else 0.0)
    sd = np.full(img.shape, 1e6, np.float32)
    for c in cand[ctx.rng.choice(len(cand), size=min(n, len(cand)), replace=False)]:
        r = ctx.rng.uniform(3.5, 7.0)
        polyline_sdf(sd, ctx.sp, np.stack([c * ctx.sp, c * ctx.sp + ctx.rng.standard_normal(3) * r * 0.6]), np.array([r]))
    painted = _paint(ctx, box, pv_ramp(sd, float(ctx.sp.min())), value)
    ctx.record["lymph_nodes"] = {"nodes": min(n, len(cand)), "hu": value, "voxels": painted}


def _radial_tubes(ctx: LesionContext, n: int, start: float, length: tuple[float, float], radius: tuple[float, float],
                  value: float, where: np.ndarray | None, tangential: bool) -> int:
    box, lo = _box(ctx, ctx.radius + length[1] + 5.0)
    w = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for _ in range(n):
        d = ctx.rng.standard_normal(3)
        d /= np.linalg.norm(d)
        L = ctx.rng.uniform(*length)
        if tangential:  # hugging the surface
            t = np.cross(d, ctx.rng.standard_normal(3))
            t /= np.linalg.norm(t)
            pts = [d * (ctx.radius + start) + t * s * L / 2 + d * abs(s) * 2.0 for s in (-1.0, -0.3, 0.3, 1.0)]
        else:
            pts = [d * (ctx.radius + start), d * (ctx.radius + start + L / 2) + ctx.rng.standard_normal(3) * 2, d * (ctx.radius + start + L)]
        w = np.maximum(w, _tube(ctx, box, lo, ctx.center + np.array(pts) / ctx.sp - lo, np.array([radius[1], radius[0]])))
    return _paint(ctx, box, w, value, where[box] if where is not None else None)


def perilesional_vessels(ctx: LesionContext) -> None:
    n = int(ctx.rng.integers(2, 5))
    value = 150.0 if ctx.phase == "contrast" else 40.0
    painted = _radial_tubes(ctx, n, 2.0, (15.0, 30.0), (1.0, 1.6), value, None, tangential=True)
    ctx.record["perilesional_vessels"] = {"vessels": n, "hu": value, "voxels": painted}


def vessel_convergence(ctx: LesionContext) -> None:
    n = int(ctx.rng.integers(3, 7))
    value = 40.0 + (60.0 if ctx.phase == "contrast" else 0.0)
    painted = _radial_tubes(ctx, n, -1.0, (15.0, 35.0), (0.8, 1.8), value, ctx.anat.organ_mask("lung"), tangential=False)
    ctx.record["vessel_convergence"] = {"vessels": n, "hu": value, "voxels": painted}


def obstruction(ctx: LesionContext) -> None:
    colon = ctx.anat.organ_mask("colon")
    box, lo = _box(ctx, ctx.radius + 90.0)
    cb = colon[box] & (ctx.canvas.lesions[box] == 0)
    depth = ndi.distance_transform_edt(cb, sampling=ctx.sp)
    dist = _dist(cb.shape, lo, ctx.center, ctx.sp)
    lumen = cb & (depth > 3.0) & (dist > ctx.radius) & (dist < ctx.radius + 90.0)
    if not lumen.any():
        ctx.record["obstruction"] = {"voxels": 0, "note": "no lumen in reach"}
        return
    ant = ctx.anat.lps_to_local(np.array([0.0, -1.0, 0.0]))  # anterior = non-dependent: gas rises there
    h = np.tensordot(ant.astype(np.float32), _offsets(cb.shape, lo, ctx.center, ctx.sp), axes=1)
    level = np.quantile(h[lumen], 0.8)
    img = ctx.canvas.image[box]
    value = ctx.rng.uniform(10.0, 25.0)
    fluid = lumen & (h < level)
    img[fluid] = value + filtered_noise(img.shape, NOISE_SIGMA_VOX, ctx.rng)[fluid] * ctx.noise_std
    img[lumen & ~fluid] = -950.0
    ctx.record["obstruction"] = {"fluid_hu": round(value, 1), "voxels": int(lumen.sum())}


INTERNAL: dict[str, Callable[[LesionContext], None]] = {
    "specific_features.necrosis": necrosis,
    "specific_features.calcification": calcification,
    "specific_features.cystic_change": cystic_change,
    "specific_features.septation": septation,
    "specific_features.fat": fat,
    "specific_features.capsule": capsule,
    "specific_features.cavitation": cavitation,
    "specific_features.bronchial_change": bronchial_change,
    "specific_features.marked_enhancement": marked_enhancement,
}
EXTERNAL: dict[str, Callable[[LesionContext], None]] = {
    "specific_features.duct_dilatation": duct_dilatation,
    "specific_features.hydronephrosis": hydronephrosis,
    "specific_features.pleural_traction": pleural_traction,
    "specific_features.wall_thickening": wall_thickening,
    "specific_features.vessel_invasion": vessel_invasion,
    "specific_features.parenchymal_atrophy": parenchymal_atrophy,
    "specific_features.fat_stranding": fat_stranding,
    "specific_features.lymph_nodes": lymph_nodes,
    "specific_features.perilesional_vessels": perilesional_vessels,
    "specific_features.vessel_convergence": vessel_convergence,
    "specific_features.obstruction": obstruction,
}
# Rendered by shape or placement instead.
STRUCTURAL = {"specific_features.lobulation", "specific_features.exophytic", "specific_features.layering",
              "specific_features.luminal_narrowing", "specific_features.none"}
