"""Where a lesion goes: its centre in the named sub-region and the tissue it may occupy.

The relationship attribute decides the centre's depth below the organ surface and what the
lesion may spill into:

    separate   deep enough to stay inside the organ (depth >= 0.9 r); confined to the organ
    abutting   touching the surface (depth ~ r) where another organ lies within r + 8 mm;
               confined to the organ, so a fat plane remains
    invading   straddling the surface (depth 0.2-0.7 r) facing a neighbour within r + 5 mm; may
               cross the fat plane into that neighbour
    vascular   next to a hepatic vessel (its distance 0.5-1.1 r); vessels stay visible

Features refine it: exophytic (centre near the surface, may grow into the surrounding fat),
vessel invasion (next to a vessel, may fill it), layering (stones in the dependent = posterior
part of the lumen). Stones sit in the renal sinus (deepest part of the kidney) or the gallbladder
lumen; colon wall masses are centred on the wall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from malenia.data.synthesis.anatomy import HEPATIC_VESSELS, VESSELS, Anatomy, bbox_slices, organ_of_region


class PlacementError(RuntimeError):
    """The lesion cannot be placed in this anatomy (region missing, too small, all taken)."""


@dataclass
class Placement:
    center: np.ndarray  # (z, y, x) voxel index
    radius_mm: float
    allowed: np.ndarray  # bool, full grid: voxels the lesion may occupy
    mode: str
    neighbour: str | None = None
    notes: list[str] = field(default_factory=list)


def place_lesion(anat: Anatomy, organs: np.ndarray, lesions: np.ndarray, region_key: str, kind: str,
                 relationship: str, features: set[str], radius_mm: float, rng: np.random.Generator) -> Placement:
    sp = anat.spacing_zyx
    region = anat.region(region_key)
    if not region.any():
        raise PlacementError(f"the base has no {region_key.replace('.', ' ')}")
    organ = organ_of_region(region_key)
    if organ == "kidney":
        host = anat.host_mask(region_key)
    else:
        host = anat.organ_mask(organ)
    if organ == "lung":
        host = region  # lobes are separate organs for placement: fissures are boundaries
    occupied = lesions > 0
    margin = np.ceil((radius_mm * 1.6 + 12.0) / sp).astype(int)
    box = bbox_slices(region, tuple(margin))
    assert box is not None
    reg_b = region[box] & ~ndi.binary_dilation(occupied[box], iterations=1)
    if not reg_b.any():
        raise PlacementError(f"no free space left in the {region_key.replace('.', ' ')}")
    host_b = host[box]
    org_b = organs[box]
    depth = ndi.distance_transform_edt(host_b, sampling=sp).astype(np.float32)
    names = anat.names
    notes: list[str] = []

    # A part of an organ (lobe, head/body/tail, segment): prefer centres deep inside the part too,
    # so that the lesion lies in the part it is reported in.
    part_depth = None
    if organ in ("liver", "pancreas", "colon") and not region_key.endswith("both_lobes"):
        others = host[box] & ~region[box]  # the organ's other parts: distance to the internal borders only
        part_depth = (ndi.distance_transform_edt(~others, sampling=sp) if others.any()
                      else np.full(region[box].shape, np.inf)).astype(np.float32)

    def pick(cand: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        if part_depth is not None and cand.any():
            deep = cand & (part_depth >= min(0.8 * radius_mm, 0.8 * float(part_depth[cand].max())))
            cand = deep if deep.any() else cand
        idx = np.argwhere(cand)
        if weights is not None:
            w = weights[cand].astype(np.float64)
            w = w / w.sum() if w.sum() > 0 else None
        else:
            w = None
        i = int(rng.choice(len(idx), p=w))
        return idx[i] + np.array([s.start for s in box])

    def full(mask_b: np.ndarray) -> np.ndarray:
        out = np.zeros(anat.shape, bool)
        out[box] = mask_b
        return out

    max_depth = float(depth[reg_b].max())
    free_b = ~occupied[box]

    if kind == "stone":
        if organ == "gallbladder":
            lumen_depth = ndi.distance_transform_edt(reg_b, sampling=sp)
            radius_mm = min(radius_mm, max(float(lumen_depth.max()) * 0.9, float(sp.min()) * 0.75))
            cand = reg_b & (lumen_depth >= min(radius_mm * 0.8, float(lumen_depth.max())))
            mode = "lumen"
        else:  # renal sinus / collecting system: the deepest third of the kidney
            cand = reg_b & (depth >= 0.6 * max_depth)
            mode = "sinus"
        if "specific_features.layering" in features and cand.sum() > 1:
            y = _lps_axis_grid(anat, box, 1)  # LPS y grows posteriorly: dependent when supine
            thr = np.quantile(y[cand], 0.75)
            cand = cand & (y >= thr)
            mode += "+dependent"
        allowed = reg_b if organ == "gallbladder" else host_b
        return Placement(pick(cand), radius_mm, full(allowed & free_b), mode, None, notes)

    if kind == "wall":  # colon: centred on the wall, may bulge 3 mm outwards
        cand = reg_b & (depth <= 1.5 * float(sp.max()))
        grown = ndi.binary_dilation(host_b, iterations=max(1, int(round(3.0 / sp.min()))))
        allowed = grown & ((org_b == 0) | host_b)
        neighbour = None
        if relationship == "relationship.invading":
            nb, nb_mask = _nearest_other(org_b, host_b, occupied[box], sp, reg_b, radius_mm + 10.0, names)
            if nb is not None:
                allowed |= nb_mask & ndi.binary_dilation(host_b, iterations=int(np.ceil(radius_mm / sp.min())))
                neighbour = nb
        return Placement(pick(cand if cand.any() else reg_b), radius_mm, full(allowed & free_b), "wall", neighbour, notes)

    if region_key == "gallbladder.wall":  # gallbladder wall mass growing into the lumen
        radius_mm = min(radius_mm, max(float(depth.max()) * 1.2, 4.0))  # at most about the lumen's size
        allowed = host_b.copy()
        neighbour = None
        if relationship == "relationship.invading" and anat.has("liver"):
            allowed |= (org_b == _first_id(anat, "liver"))
            neighbour = "liver"
        return Placement(pick(reg_b), radius_mm, full(allowed & free_b), "wall", neighbour, notes)

    # -- parenchymal masses ----------------------------------------------------------------
    near_vessel = relationship == "relationship.vascular" or "specific_features.vessel_invasion" in features
    vessel_names = HEPATIC_VESSELS if organ == "liver" else VESSELS
    if near_vessel:
        vmask = np.isin(org_b, [k for k, v in names.items() if v in vessel_names])
        if vmask.any():
            dv = ndi.distance_transform_edt(~vmask, sampling=sp)
            cand = reg_b & (depth >= 0.4 * min(radius_mm, max_depth)) & (dv >= 0.5 * radius_mm) & (dv <= 1.1 * radius_mm + 2.0)
            if not cand.any():
                cand = reg_b & (dv <= 1.5 * radius_mm + 4.0)
            if cand.any():
                allowed = host_b & ~vmask
                if "specific_features.vessel_invasion" in features:
                    allowed = host_b | vmask
                nb = names[int(np.bincount(org_b[vmask]).argmax())]
                return Placement(pick(cand), radius_mm, full(allowed & free_b), "vascular", nb, notes)
        notes.append("no vessel in reach: placed as separate")

    if "specific_features.exophytic" in features:
        cand = reg_b & (depth <= 0.45 * radius_mm + float(sp.max()))
        allowed = host_b | (org_b == 0)
        if cand.any():
            return Placement(pick(cand), radius_mm, full(allowed & free_b), "exophytic", None, notes)

    if relationship in ("relationship.abutting", "relationship.invading"):
        invading = relationship == "relationship.invading"
        lo, hi = ((0.2, 0.7) if invading else (0.75, 1.1))
        reach = radius_mm + (5.0 if invading else 8.0)
        nb, nb_mask = _nearest_other(org_b, host_b, occupied[box], sp, reg_b & (depth >= lo * radius_mm) & (depth <= hi * radius_mm + sp.max()), reach, names)
        if nb is not None:
            dn = ndi.distance_transform_edt(~nb_mask, sampling=sp)
            cand = reg_b & (depth >= lo * radius_mm) & (depth <= hi * radius_mm + sp.max()) & (dn <= reach)
            if cand.any():
                allowed = host_b.copy()
                if invading:  # may cross the fat plane and enter the neighbour, not other organs
                    allowed |= nb_mask | (org_b == 0)
                return Placement(pick(cand), radius_mm, full(allowed & free_b), relationship.split(".")[1], nb, notes)
        notes.append(f"no neighbour within reach for {relationship}: placed as separate")

    # separate (or fallback): deep enough to stay inside
    if max_depth < 0.9 * radius_mm:
        new_r = max(max_depth / 0.9, 2.0 * float(sp.min()))
        notes.append(f"radius reduced from {radius_mm:.1f} to {new_r:.1f} mm to fit the organ")
        radius_mm = new_r
    cand = reg_b & (depth >= min(0.9 * radius_mm, 0.95 * max_depth))
    if organ == "lung" and "specific_features.pleural_traction" in features:
        gap = cand & (depth >= radius_mm + 6.0) & (depth <= radius_mm + 30.0)  # room for a strand to the pleura
        cand = gap if gap.any() else cand
    return Placement(pick(cand), radius_mm, full(host_b & free_b), "separate", None, notes)


def _first_id(anat: Anatomy, name: str) -> int:
    ids = anat.label_ids(name)
    return ids[0] if ids else -1


def _nearest_other(org_b: np.ndarray, host_b: np.ndarray, occ_b: np.ndarray, sp: np.ndarray, where: np.ndarray,
                   reach: float, names: dict[int, str]) -> tuple[str | None, np.ndarray]:
    """The labelled organ (not the host) closest to the candidate band, if within `reach` mm."""
    other = (org_b > 0) & ~host_b & ~occ_b
    if not other.any() or not where.any():
        return None, other
    dist, ind = ndi.distance_transform_edt(~other, sampling=sp, return_indices=True)
    close = where & (dist <= reach)
    if not close.any():
        return None, other
    labels = org_b[tuple(i[close] for i in ind)]
    label = int(np.bincount(labels).argmax())
    return names.get(label, f"label {label}"), org_b == label


def _lps_axis_grid(anat: Anatomy, box: tuple[slice, ...], axis: int) -> np.ndarray:
    """LPS coordinate `axis` (0 x, 1 y, 2 z) of every voxel of `box`."""
    zz, yy, xx = np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")
    idx = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], 1)
    return anat.index_to_lps(idx)[:, axis].reshape(zz.shape)
