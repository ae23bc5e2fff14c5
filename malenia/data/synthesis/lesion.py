"""Render one lesion into a scan from its attribute ids (one per aspect; several findings).

Every aspect changes the image measurably:

    location           centre in the named sub-region (placement.py)
    shape              perturbed / lobulated / elastically deformed ellipsoid (shapes.py)
    size               per-disease diameter distribution (profiles.py), clamped to fit the organ
    density            relative to the host tissue's measured HU (hypo/iso/hyper), or absolute:
                       water-like fluid, calcific, lung ground-glass / soft tissue / dense / mixed;
                       with the host floor (`malenia synth --host-floor`) a pancreas's reference is at
                       least its parenchyma's, fluid stays at water and a solid lesion above fat
                       (host_reference, density_value)
    density variation  homogeneous (noise + faint texture) or heterogeneous (coarse mottled texture)
    surface            well-defined: partial-volume edge only; ill-defined: boundary blurred by a
                       3-6 mm Gaussian and roughened; spiculated: tapering spicules
    enhancement        the scan's phase (set for the whole scan: enhancement.py / the phantom)
    relationship       separate / abutting / invading / vascular (placement.py)
    specific features  features.py

After Hu et al. (CVPR 2023) the texture is Gaussian-filtered noise around a target HU, the shape
an elastically deformed ellipsoid, expansile masses push the surrounding tissue outwards (mass
effect) and a capsule is a brighter rim. Scanner noise is re-synthesised at the scan's measured
noise level so the lesion has the same grain as its surroundings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from malenia.data.synthesis.anatomy import ORGAN_NAMES, Anatomy, organ_of_region, region_of_location
from malenia.data.synthesis.features import EXTERNAL, INTERNAL, STRUCTURAL, Canvas, LesionContext, calcified_rim
from malenia.data.synthesis.placement import PlacementError, place_lesion
from malenia.data.synthesis.profiles import PROFILES, RenderProfile
from malenia.data.synthesis.shapes import sample_shape, sample_spicules, shape_sdf
from malenia.data.synthesis.texture import NOISE_SIGMA_VOX, HostStats, blurred_edge, filtered_noise, host_stats, pv_ramp

NONE = "specific_features.none"
COLON_WALL_HU = 35.0  # bowel wall, non-contrast; + CONTRAST_WALL_GAIN when enhanced
CONTRAST_WALL_GAIN = 45.0
# The host floor (anat.info["host_floor"]). At a base's coarse spacing the label of a lobulated, fatty pancreas
# is averaged with the fat between its lobules: the TotalSegmentator example's pancreas reads 5 HU unenhanced
# (51 HU enhanced), where pancreatic parenchyma is 30-50 HU. A lesion drawn against that reading comes out at
# fat density (pancreatic tumours at -36 HU, pancreatic cysts at -40 HU, below water); so do lesions drawn far
# below a faint host (a kidney at 13-19 HU, the bile). With the floor, a pancreas's reference is at least its
# parenchyma's lower range plus the scan's contrast gain for it, and in every organ fluid stays at 0 HU or above
# and a solid lesion at SOLID_MIN_HU or above (not a stone: a cholesterol gallstone may be fat-like). Other
# organs keep their measured reference: in that scan the liver (46 HU), spleen (35 HU) and kidneys (median
# 12-16 HU, their cores alike) all read about 10 HU low, a scanner offset their lesions should share, while the
# pancreas label's median is -7 HU, fat.
PARENCHYMA_FLOOR_HU = {"pancreas": 30.0}
SOLID_MIN_HU = 10.0  # unenhanced soft tissue; lower is fat or fluid, which have their own descriptions


def scan_noise_std(anat: Anatomy) -> float:
    """The scan's noise level (HU): measured in homogeneous soft tissue (liver, spleen, muscle)."""
    if "noise_std" in anat.info:
        return float(anat.info["noise_std"])
    if "noise_std" not in anat._cache:
        vals = [host_stats(anat.image, anat.mask(n)).noise_std for n in ("liver", "spleen", "autochthon_left", "autochthon_right")
                if anat.has(n)]
        anat._cache["noise_std"] = float(np.median(vals)) if vals else 12.0
    return anat._cache["noise_std"]


def _first(attrs: dict[str, list[str]], aspect: str, default: str) -> str:
    v = attrs.get(aspect) or [default]
    return v[0]


def density_value(density_id: str, host_mean: float, prof: RenderProfile, phase: str, rng: np.random.Generator,
                  floor: bool = False) -> dict[str, Any]:
    """The lesion's target HU for its density description against `host_mean`; `floor`: the host floor's
    bounds on fluid and solid lesions (PARENCHYMA_FLOOR_HU; the reference itself is host_reference's)."""
    contrast = phase == "contrast"
    info: dict[str, Any] = {"id": density_id}
    if density_id == "density.fluid":
        v = rng.uniform(0.0, 15.0)
    elif density_id == "density.calcific":
        v = rng.uniform(350.0, 1000.0)
    elif density_id == "density.lung.ground_glass":
        v = rng.uniform(-720.0, -480.0)
    elif density_id in ("density.lung.soft_tissue", "density.lung.mixed"):
        v = rng.uniform(15.0, 50.0) + (rng.uniform(15.0, 35.0) if contrast else 0.0)
        if density_id == "density.lung.mixed":
            info["ground_glass_hu"] = round(float(rng.uniform(-700.0, -450.0)), 1)
            info["solid_fraction"] = round(float(rng.uniform(0.35, 0.65)), 3)
    elif density_id == "density.soft_tissue":  # a transplanted look's (malenia.data.synthesis.novel): no host reference
        v = rng.uniform(20.0, 50.0) + (rng.uniform(15.0, 35.0) if contrast else 0.0)
    elif density_id == "density.lung.dense":
        v = rng.uniform(120.0, 300.0)
    else:
        cls = density_id.split(".")[1]
        if prof.kind == "stone":
            v = {"hypodense": host_mean - rng.uniform(25.0, 60.0), "isodense": host_mean + rng.uniform(-5.0, 5.0),
                 "hyperdense": host_mean + rng.uniform(60.0, 200.0)}[cls]
        else:
            d = rng.uniform(30.0, 80.0) if contrast else rng.uniform(20.0, 50.0)
            if cls == "hypodense":
                v = host_mean - d
                if prof.cystic:  # fluid stays water-like whatever the parenchyma's enhancement
                    v = min(v, rng.uniform(2.0, 20.0))
                    v = max(v, 0.0) if floor else v
            elif cls == "isodense":
                v = host_mean + rng.uniform(-6.0, 6.0)
            else:
                v = host_mean + (rng.uniform(25.0, 70.0) if contrast else rng.uniform(20.0, 50.0))
            if floor and not prof.cystic:
                v = max(v, SOLID_MIN_HU)
        info["class"] = cls
    info["target_hu"] = round(float(v), 2)
    return info


def _mass_effect(canvas: Canvas, box: tuple[slice, ...], center: np.ndarray, sp: np.ndarray, radius: float, amp: float) -> None:
    """Pushes the tissue around the lesion outwards (displacement amp*r at the surface, ~1/r^2 beyond)."""
    shape = tuple(s.stop - s.start for s in box)
    lo = np.array([s.start for s in box])
    off = (np.indices(shape, dtype=np.float32) + (lo - center)[:, None, None, None]) * sp[:, None, None, None].astype(np.float32)
    r = np.sqrt((off * off).sum(0)) + 1e-3
    half = float(min((center - lo).min() * sp.min(), (lo + np.array(shape) - 1 - center).min() * sp.min()))
    u = np.where(r >= radius, amp * radius * (radius / r) ** 2, amp * r)
    u *= np.clip((half - r) / max(0.35 * half, 1e-3), 0.0, 1.0)
    src = off - u * off / r
    coords = src / sp[:, None, None, None] + (center - lo)[:, None, None, None]
    img = canvas.image[box]
    img[...] = ndi.map_coordinates(img, coords, order=1, mode="nearest")
    for arr in (canvas.organs, canvas.lesions):
        a = arr[box]
        a[...] = ndi.map_coordinates(a, coords, order=0, mode="nearest")


def _applicable_findings(attrs: dict[str, list[str]], organ: str, phase: str, vocab: Any) -> tuple[list[str], list[str]]:
    """The requested findings this organ and scan can show, and the dropped ones."""
    findings = [f for f in attrs.get("specific_features", []) if f != NONE]
    dropped: list[str] = []
    for f in list(findings):
        applies = vocab.entry(f).applies_to(organ) if vocab is not None and f in vocab else True
        if not applies or (f == "specific_features.marked_enhancement" and phase != "contrast") \
                or (f not in INTERNAL and f not in EXTERNAL and f not in STRUCTURAL):
            findings.remove(f)
            dropped.append(f)
    return findings, dropped


def _host(anat: Anatomy, organ: str, region_key: str) -> HostStats:
    """The tissue the lesion's density is relative to (colon: a nominal bowel wall)."""
    if organ == "colon":
        host = HostStats(COLON_WALL_HU + (CONTRAST_WALL_GAIN if anat.phase == "contrast" else 0.0), 0, 12.0, 12.0, 0)
        return HostStats(host.mean, host.mean, host.std, host.noise_std, 0)
    return host_stats(anat.image, anat.host_mask(region_key), soft_tissue=organ != "lung")


def host_reference(anat: Anatomy, organ: str, host: HostStats) -> float:
    """The HU a relative density is drawn against with the host floor: the host's measured mean, raised to the
    organ's parenchyma floor (plus the contrast gain the scan drew for it) where it has one."""
    floor = PARENCHYMA_FLOOR_HU.get(organ)
    if floor is None:
        return host.mean
    gains = anat.info.get("contrast_gain_hu") or {}
    gain = max([float(gains[n]) for n in ORGAN_NAMES[organ] if n in gains], default=0.0)
    return max(host.mean, floor + gain)


def _shape_params(shape_id: str, surface_id: str, feature_set: set[str], radius: float, rng: np.random.Generator,
                  vox: float):
    """Shape parameters (lobules for a lobulated contour, spicules) and the margin blur (mm)."""
    params = sample_shape(shape_id, radius, rng)
    if "specific_features.lobulation" in feature_set and not params.lobes:
        u = rng.standard_normal((int(rng.integers(3, 6)), 3))
        params.lobes = [(v / np.linalg.norm(v), float(rng.uniform(0.2, 0.35)), float(rng.uniform(5.0, 10.0))) for v in u]
    if surface_id == "surface.spiculated":
        sample_spicules(params, rng, vox)
    margin_mm = {"surface.well_defined": 0.0, "surface.ill_defined": float(rng.uniform(3.0, 6.0)),
                 "surface.spiculated": float(rng.uniform(0.3, 0.8))}.get(surface_id, 0.0)
    return params, margin_mm


def _crop_grid(center: np.ndarray, reach_mm: float, sp: np.ndarray, shape):
    """The box around the centre that holds the lesion: (box, its low corner, its shape, mm offsets from the centre)."""
    half = np.ceil(reach_mm / sp).astype(int) + 1
    lo = np.maximum(center - half, 0)
    hi = np.minimum(center + half + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    crop_shape = tuple(int(b - a) for a, b in zip(lo, hi))
    sp32 = sp[:, None, None, None].astype(np.float32)
    offsets = (np.indices(crop_shape, dtype=np.float32) + (lo - center)[:, None, None, None]) * sp32
    return box, lo, crop_shape, offsets


def _colon_wall(anat: Anatomy, box, sp: np.ndarray, sd: np.ndarray, wall_t: float, feature_set: set[str],
                rng: np.random.Generator, record: dict[str, Any]) -> np.ndarray:
    """A colon tumour as a shell of the wall, thick enough to narrow the lumen."""
    colon = anat.organ_mask("colon")[box]
    d_in = ndi.distance_transform_edt(colon, sampling=sp)
    d_out = ndi.distance_transform_edt(~colon, sampling=sp)
    sdc = (d_out - d_in).astype(np.float32)  # signed distance to the colon surface (+ outside)
    if "specific_features.luminal_narrowing" in feature_set:
        wall_t = max(wall_t, float(d_in.max()) * float(rng.uniform(0.8, 1.0)))
    bulge = 3.0
    record["wall"] = {"thickness_mm": round(wall_t, 2), "outer_bulge_mm": bulge,
                      "lumen_narrowing": round(float(min(1.0, wall_t / max(float(d_in.max()), 1e-3))), 3)}
    return np.maximum(sd, np.maximum(-sdc - wall_t, sdc - bulge))


def _weight_and_label(sd: np.ndarray, surface_id: str, margin_mm: float, radius: float, sp: np.ndarray, vox: float,
                      allowed: np.ndarray, centre_in_crop: tuple, rng: np.random.Generator):
    """Blend weight (the surface's edge profile), label (one connected piece) and the signed distance
    (roughened when ill-defined: the findings drawn later follow the rough boundary)."""
    crop_shape = sd.shape
    if surface_id == "surface.ill_defined":
        rough = (filtered_noise(crop_shape, max(0.3 * radius / float(sp.min()), 1.0), rng)
                 * float(rng.uniform(0.06, 0.12)) * radius)
        sd = sd + rough
        w = blurred_edge(sd, margin_mm, vox)
    elif margin_mm > 0:
        w = blurred_edge(sd, margin_mm, vox)
    else:
        w = pv_ramp(sd, vox)
    w *= np.clip(ndi.gaussian_filter(allowed.astype(np.float32), 0.5), 0.0, 1.0)
    label = (w >= 0.5) & allowed
    lab, n = ndi.label(label)
    if n > 1:
        c = centre_in_crop
        keep = lab[c] if lab[c] > 0 else int(np.bincount(lab.ravel())[1:].argmax()) + 1
        label = lab == keep
    return w, label, sd


def _texture(prof, density_id: str, variation_id: str, mean: float, host: HostStats,
             rng: np.random.Generator) -> tuple[bool, float, float]:
    """(heterogeneous?, texture SD in HU, texture scale in mm) of the lesion's interior."""
    host_texture = float(np.sqrt(max(host.std ** 2 - host.noise_std ** 2, 0.0)))
    hetero = variation_id == "density_variation.heterogeneous"
    fluidlike = prof.cystic or density_id == "density.fluid"
    if hetero:
        # mottling scaled by the lesion-host contrast, but never more than soft tissue shows
        # (a lung nodule is ~900 HU above its host)
        tex_std = min(max(10.0, 0.35 * abs(mean - host.mean), host_texture), 25.0) * float(rng.uniform(1.0, 1.6))
        tex_sigma_mm = float(rng.uniform(1.5, 3.5))
    else:
        tex_std = 0.0 if fluidlike or prof.kind == "stone" else 0.3 * host_texture
        tex_sigma_mm = 2.0
    return hetero, tex_std, tex_sigma_mm


def _intensity(crop_shape, mean: float, noise_std: float, tex_std: float, tex_sigma_mm: float, density_id: str,
               dens: dict[str, Any], sd: np.ndarray, radius: float, sp: np.ndarray, vox: float,
               rng: np.random.Generator) -> np.ndarray:
    """The lesion's HU field: target density, the scan's noise grain, texture, a ground-glass rim when mixed."""
    hu = np.full(crop_shape, mean, np.float32)
    hu += filtered_noise(crop_shape, NOISE_SIGMA_VOX, rng) * noise_std
    if tex_std > 0:
        hu += filtered_noise(crop_shape, np.maximum(tex_sigma_mm / sp, 0.5), rng) * tex_std
    if density_id == "density.lung.mixed":  # ground-glass periphery around a solid part
        frac = dens["solid_fraction"]
        wg = blurred_edge((1.0 - frac) * radius + sd, 1.0, vox)  # 1 in the outer shell
        hu = hu * (1 - wg) + wg * (dens["ground_glass_hu"] + filtered_noise(crop_shape, NOISE_SIGMA_VOX, rng) * noise_std * 1.5)
    return hu


def _apply_findings(ctx: LesionContext, findings: list[str], prof, hetero: bool, dens: dict[str, Any],
                    w: np.ndarray) -> dict[str, Any]:
    """Internal findings, the density guard, compositing into the canvas, then external and structural findings."""
    if prof.kind == "stone" and hetero:
        calcified_rim(ctx)
    for f in findings:
        if f in INTERNAL:
            INTERNAL[f](ctx)
    guard = _density_guard(ctx, dens)
    img = ctx.canvas.image[ctx.box]
    img *= 1.0 - w
    img += w * ctx.hu
    ctx.canvas.lesions[ctx.box][ctx.label] = ctx.label_value
    for f in findings:
        if f in EXTERNAL:
            EXTERNAL[f](ctx)
    for f in findings:
        if f in STRUCTURAL:
            ctx.record.setdefault(f.split(".")[1], {"rendered_by": "shape" if f.endswith("lobulation") else
                                                    ("wall thickness" if f.endswith("narrowing") else "placement")})
    return guard


def render_lesion(anat: Anatomy, canvas: Canvas, label_value: int, disease: str, attributes: dict[str, list[str]],
                  rng: np.random.Generator, vocab: Any = None, region: str | None = None,
                  radius_mm: float | None = None) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Draws one lesion into `canvas` and labels it `label_value`.

    Returns the attribute ids actually rendered (findings that do not apply to the organ or the
    scan are dropped and listed) and the render parameters for the lesion report's `extra`.
    Raises PlacementError when the anatomy cannot hold the lesion.
    """
    prof = PROFILES[disease]
    attrs = {a: list(v) for a, v in attributes.items()}
    region_key = region or region_of_location(attrs["location"][0])
    organ = organ_of_region(region_key)
    sp, vox = anat.spacing_zyx, float(np.mean(anat.spacing_zyx))
    ids = {"shape": _first(attrs, "shape", "shape.round"), "density": _first(attrs, "density", "density.isodense." + organ),
           "variation": _first(attrs, "density_variation", "density_variation.homogeneous"),
           "surface": _first(attrs, "surface", "surface.well_defined"),
           "relationship": _first(attrs, "relationship", "relationship.separate")}
    findings, dropped = _applicable_findings(attrs, organ, anat.phase, vocab)
    feature_set = set(findings)

    radius = float(radius_mm) if radius_mm else prof.sample_radius(rng, anat.info.get("diameters_mm", {}).get(disease))
    placement = place_lesion(anat, canvas.organs, canvas.lesions, region_key, prof.kind, ids["relationship"], feature_set,
                             radius, rng)
    radius, center = placement.radius_mm, placement.center
    host = _host(anat, organ, region_key)
    noise_std = scan_noise_std(anat)
    floor = bool(anat.info.get("host_floor"))
    reference = host_reference(anat, organ, host) if floor else host.mean
    dens = density_value(ids["density"], reference, prof, anat.phase, rng, floor=floor)
    params, margin_mm = _shape_params(ids["shape"], ids["surface"], feature_set, radius, rng, vox)
    wall_t = float(rng.uniform(6.0, 14.0)) if prof.kind == "wall" else 0.0
    reach_mm = params.reach() + 3.0 * margin_mm + 2.0 * float(sp.max()) + wall_t
    box, lo, crop_shape, offsets = _crop_grid(center, reach_mm, sp, anat.shape)

    sd = shape_sdf(offsets, params, rng, sp)
    record: dict[str, Any] = {}
    if prof.kind == "wall":
        sd = _colon_wall(anat, box, sp, sd, wall_t, feature_set, rng, record)
    w, label, sd = _weight_and_label(sd, ids["surface"], margin_mm, radius, sp, vox, placement.allowed[box],
                                     tuple(center - lo), rng)
    if label.sum() < 4:
        raise PlacementError(f"a {disease} of radius {radius:.1f} mm does not fit at this resolution")
    mass_effect = None
    if prof.expansile and placement.mode in ("separate", "abutting", "vascular", "exophytic"):
        amp = float(rng.uniform(0.04, 0.14))
        _mass_effect(canvas, box, center, sp, radius, amp)
        mass_effect = {"amplitude": round(amp, 3)}

    hetero, tex_std, tex_sigma_mm = _texture(prof, ids["density"], ids["variation"], dens["target_hu"], host, rng)
    hu = _intensity(crop_shape, dens["target_hu"], noise_std, tex_std, tex_sigma_mm, ids["density"], dens, sd, radius, sp,
                    vox, rng)
    ctx = LesionContext(anat, canvas, box, center, offsets, sd, label, hu, radius, dens["target_hu"], host.mean, noise_std,
                        anat.phase, organ, region_key, label_value, rng, record)
    guard = _apply_findings(ctx, findings, prof, hetero, dens, w)

    used = dict(attrs)
    used["specific_features"] = findings or [NONE]
    voxels = int((canvas.lesions == label_value).sum())
    extra = {
        "region": region_key,
        "kind": prof.kind,
        "placement": {"mode": placement.mode, "center_index_zyx": [int(v) for v in center],
                      "center_lps_mm": [round(float(v), 2) for v in anat.index_to_lps(center[None])[0]],
                      "neighbour": placement.neighbour, "notes": placement.notes},
        "radius_mm": round(radius, 2),
        "shape": params.to_json(),
        "surface": {"id": ids["surface"], "margin_blur_mm": round(margin_mm, 2)},
        "density": {**dens, "host": host.to_json(), "scan_noise_std": round(noise_std, 2), **guard}
                   | ({"host_floor": True, "reference_hu": round(reference, 2)} if floor else {}),
        "texture": {"heterogeneous": hetero, "texture_std_hu": round(tex_std, 2), "texture_sigma_mm": round(tex_sigma_mm, 2)},
        "mass_effect": mass_effect,
        "features": record,
        "voxels": voxels,
        "volume_ml": round(voxels * float(np.prod(sp)) / 1000.0, 3),
    }
    if dropped:
        extra["dropped_features"] = dropped
    return used, extra


def _density_guard(ctx: LesionContext, dens: dict[str, Any]) -> dict[str, Any]:
    """Keeps 'most of the lesion' in its density class after features changed the field.

    The workbook codes density as that of most of the lesion relative to the host, so the median
    must stay below / near / above the host's mean; the whole field is shifted if it does not.
    """
    cls = dens.get("class")
    if cls is None or not ctx.label.any():
        return {}
    vals = ctx.hu[ctx.label]
    med, mean = float(np.median(vals)), float(vals.mean())
    h = ctx.host_mean
    shift = 0.0
    if cls == "hypodense":
        shift = min(0.0, (h - 10.0) - med, (h - 5.0) - mean)
    elif cls == "hyperdense":
        shift = max(0.0, (h + 10.0) - med, (h + 5.0) - mean)
    elif abs(med - h) > 10.0:
        shift = (h - med) - np.sign(h - med) * 5.0
    if shift:
        ctx.hu += shift
    return {"guard_shift_hu": round(float(shift), 2)} if shift else {}
