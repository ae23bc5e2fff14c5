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


FLUID_HU = (-30.0, 40.0)  # bile, urine, gastric fluid: neither gas nor fat nor enhancing wall


@dataclass
class _Site:
    """The region's neighbourhood (a box around it) that every placement mode searches."""

    anat: Anatomy
    box: tuple[slice, ...]
    region_key: str
    organ: str
    host: np.ndarray  # full-size host mask
    occupied: np.ndarray  # full-size: lesions already drawn
    reg_b: np.ndarray  # the free part of the region, in the box
    host_b: np.ndarray
    org_b: np.ndarray
    depth: np.ndarray  # mm inside the host
    part_depth: np.ndarray | None  # mm from the organ's other parts (liver lobes, pancreas thirds, colon segments)
    radius_mm: float
    rng: np.random.Generator
    notes: list[str] = field(default_factory=list)

    @property
    def sp(self) -> np.ndarray:
        return self.anat.spacing_zyx

    @property
    def max_depth(self) -> float:
        return float(self.depth[self.reg_b].max())

    @property
    def free_b(self) -> np.ndarray:
        return ~self.occupied[self.box]

    def pick(self, cand: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """A random candidate voxel (full-grid index), deep in its part where the organ has parts."""
        if self.part_depth is not None and cand.any():
            deep = cand & (self.part_depth >= min(0.8 * self.radius_mm, 0.8 * float(self.part_depth[cand].max())))
            cand = deep if deep.any() else cand
        idx = np.argwhere(cand)
        if weights is not None:
            w = weights[cand].astype(np.float64)
            w = w / w.sum() if w.sum() > 0 else None
        else:
            w = None
        i = int(self.rng.choice(len(idx), p=w))
        return idx[i] + np.array([s.start for s in self.box])

    def full(self, mask_b: np.ndarray) -> np.ndarray:
        out = np.zeros(self.anat.shape, bool)
        out[self.box] = mask_b
        return out

    def placement(self, centre: np.ndarray, allowed_b: np.ndarray, mode: str, neighbour: str | None) -> Placement:
        return Placement(centre, self.radius_mm, self.full(allowed_b & self.free_b), mode, neighbour, self.notes)


def _site(anat: Anatomy, organs: np.ndarray, lesions: np.ndarray, region_key: str, radius_mm: float,
          rng: np.random.Generator) -> _Site:
    sp = anat.spacing_zyx
    region = anat.region(region_key)
    if not region.any():
        raise PlacementError(f"the base has no {region_key.replace('.', ' ')}")
    organ = organ_of_region(region_key)
    host = anat.host_mask(region_key) if organ == "kidney" else anat.organ_mask(organ)
    if organ == "lung":
        host = region  # lobes are separate organs for placement: fissures are boundaries
    occupied = lesions > 0
    margin = np.ceil((radius_mm * 1.6 + 12.0) / sp).astype(int)
    box = bbox_slices(region, tuple(margin))
    assert box is not None
    reg_b = region[box] & ~ndi.binary_dilation(occupied[box], iterations=1)
    if not reg_b.any():
        raise PlacementError(f"no free space left in the {region_key.replace('.', ' ')}")
    depth = ndi.distance_transform_edt(host[box], sampling=sp).astype(np.float32)
    # A part of an organ (lobe, head/body/tail, segment): prefer centres deep inside the part too,
    # so that the lesion lies in the part it is reported in.
    part_depth = None
    if organ in ("liver", "pancreas", "colon") and not region_key.endswith("both_lobes"):
        others = host[box] & ~region[box]  # the organ's other parts: distance to the internal borders only
        part_depth = (ndi.distance_transform_edt(~others, sampling=sp) if others.any()
                      else np.full(region[box].shape, np.inf)).astype(np.float32)
    return _Site(anat, box, region_key, organ, host, occupied, reg_b, host[box], organs[box], depth, part_depth, radius_mm, rng)


def _place_stone(s: _Site, features: set[str]) -> Placement:
    """Gallstones in the lumen, kidney stones in the deepest third (the sinus); optionally dependent."""
    sp, reg_b = s.sp, s.reg_b
    if s.organ == "gallbladder":
        lumen_depth = ndi.distance_transform_edt(reg_b, sampling=sp)
        s.radius_mm = min(s.radius_mm, max(float(lumen_depth.max()) * 0.9, float(sp.min()) * 0.75))
        cand = reg_b & (lumen_depth >= min(s.radius_mm * 0.8, float(lumen_depth.max())))
        mode = "lumen"
    else:  # renal sinus / collecting system: the deepest third of the kidney
        cand = reg_b & (s.depth >= 0.6 * s.max_depth)
        mode = "sinus"
    if "specific_features.layering" in features and cand.sum() > 1:
        y = _lps_axis_grid(s.anat, s.box, 1)  # LPS y grows posteriorly: dependent when supine
        thr = np.quantile(y[cand], 0.75)
        cand = cand & (y >= thr)
        mode += "+dependent"
    return s.placement(s.pick(cand), reg_b if s.organ == "gallbladder" else s.host_b, mode, None)


def _place_colon_wall(s: _Site, relationship: str) -> Placement:
    """Colon: centred on the wall, may bulge 3 mm outwards (and into an invaded neighbour)."""
    sp, host_b = s.sp, s.host_b
    cand = s.reg_b & (s.depth <= 1.5 * float(sp.max()))
    grown = ndi.binary_dilation(host_b, iterations=max(1, int(round(3.0 / sp.min()))))
    allowed = grown & ((s.org_b == 0) | host_b)
    neighbour = None
    if relationship == "relationship.invading":
        nb, nb_mask = _nearest_other(s.org_b, host_b, s.occupied[s.box], sp, s.reg_b, s.radius_mm + 10.0, s.anat.names)
        if nb is not None:
            allowed |= nb_mask & ndi.binary_dilation(host_b, iterations=int(np.ceil(s.radius_mm / sp.min())))
            neighbour = nb
    return s.placement(s.pick(cand if cand.any() else s.reg_b), allowed, "wall", neighbour)


def _place_lumen_wall(s: _Site, relationship: str) -> Placement:
    """A wall mass of a fluid-filled hollow organ growing into the lumen (at most about the lumen's size)."""
    s.radius_mm = min(s.radius_mm, max(float(s.depth.max()) * 1.2, 4.0))
    allowed = s.host_b.copy()
    neighbour = None
    if relationship == "relationship.invading" and s.organ == "gallbladder" and s.anat.has("liver"):
        allowed |= (s.org_b == _first_id(s.anat, "liver"))
        neighbour = "liver"
    return s.placement(s.pick(_wall_by_fluid(s) if s.organ == "stomach" else s.reg_b), allowed, "wall", neighbour)


def _wall_by_fluid(s: _Site) -> np.ndarray:
    """The wall where it borders fluid in the lumen (a stomach holds gas and food too; a mass in gas is
    another look), else the whole wall. Not for the gallbladder, whose lumen is bile throughout (and whose
    datasets must regenerate as they were written)."""
    lumen = s.anat.region(f"{s.organ}.lumen")[s.box]
    fluid = lumen & (s.anat.image[s.box] > FLUID_HU[0]) & (s.anat.image[s.box] < FLUID_HU[1])
    near = s.reg_b & ndi.binary_dilation(fluid, iterations=2)
    return near if near.any() else s.reg_b


def _place_vascular(s: _Site, relationship: str, features: set[str]) -> Placement | None:
    """Close to a vessel (0.5-1.1 radii away); None (noted) when no vessel is in reach."""
    sp, r = s.sp, s.radius_mm
    vessel_names = HEPATIC_VESSELS if s.organ == "liver" else VESSELS
    vmask = np.isin(s.org_b, [k for k, v in s.anat.names.items() if v in vessel_names])
    if vmask.any():
        dv = ndi.distance_transform_edt(~vmask, sampling=sp)
        cand = s.reg_b & (s.depth >= 0.4 * min(r, s.max_depth)) & (dv >= 0.5 * r) & (dv <= 1.1 * r + 2.0)
        if not cand.any():
            cand = s.reg_b & (dv <= 1.5 * r + 4.0)
        if cand.any():
            allowed = s.host_b & ~vmask
            if "specific_features.vessel_invasion" in features:
                allowed = s.host_b | vmask
            nb = s.anat.names[int(np.bincount(s.org_b[vmask]).argmax())]
            return s.placement(s.pick(cand), allowed, "vascular", nb)
    s.notes.append("no vessel in reach: placed as separate")
    return None


def _place_near_neighbour(s: _Site, relationship: str) -> Placement | None:
    """Abutting (0.75-1.1 radii deep) or invading (0.2-0.7) toward the nearest other organ; None when none is near."""
    sp, r = s.sp, s.radius_mm
    invading = relationship == "relationship.invading"
    lo, hi = ((0.2, 0.7) if invading else (0.75, 1.1))
    reach = r + (5.0 if invading else 8.0)
    band = s.reg_b & (s.depth >= lo * r) & (s.depth <= hi * r + sp.max())
    nb, nb_mask = _nearest_other(s.org_b, s.host_b, s.occupied[s.box], sp, band, reach, s.anat.names)
    if nb is not None:
        dn = ndi.distance_transform_edt(~nb_mask, sampling=sp)
        cand = band & (dn <= reach)
        if cand.any():
            allowed = s.host_b.copy()
            if invading:  # may cross the fat plane and enter the neighbour, not other organs
                allowed |= nb_mask | (s.org_b == 0)
            return s.placement(s.pick(cand), allowed, relationship.split(".")[1], nb)
    s.notes.append(f"no neighbour within reach for {relationship}: placed as separate")
    return None


def _place_separate(s: _Site, features: set[str]) -> Placement:
    """Deep enough to stay inside the organ (the radius shrinks to fit); room for a pleural strand in lung."""
    max_depth, sp = s.max_depth, s.sp
    if max_depth < 0.9 * s.radius_mm:
        new_r = max(max_depth / 0.9, 2.0 * float(sp.min()))
        s.notes.append(f"radius reduced from {s.radius_mm:.1f} to {new_r:.1f} mm to fit the organ")
        s.radius_mm = new_r
    r = s.radius_mm
    cand = s.reg_b & (s.depth >= min(0.9 * r, 0.95 * max_depth))
    if s.organ == "lung" and "specific_features.pleural_traction" in features:
        gap = cand & (s.depth >= r + 6.0) & (s.depth <= r + 30.0)  # room for a strand to the pleura
        cand = gap if gap.any() else cand
    return s.placement(s.pick(cand), s.host_b, "separate", None)


def place_lesion(anat: Anatomy, organs: np.ndarray, lesions: np.ndarray, region_key: str, kind: str,
                 relationship: str, features: set[str], radius_mm: float, rng: np.random.Generator) -> Placement:
    """Where a lesion goes: the first mode that applies (stone, colon wall, gallbladder wall, vascular,
    exophytic, abutting/invading a neighbour), else separate, deep inside the organ."""
    s = _site(anat, organs, lesions, region_key, radius_mm, rng)
    if kind == "stone":
        return _place_stone(s, features)
    if kind == "wall":
        return _place_colon_wall(s, relationship)
    if region_key in ("gallbladder.wall", "stomach.wall"):
        return _place_lumen_wall(s, relationship)
    if relationship == "relationship.vascular" or "specific_features.vessel_invasion" in features:
        found = _place_vascular(s, relationship, features)
        if found is not None:
            return found
    if "specific_features.exophytic" in features:
        cand = s.reg_b & (s.depth <= 0.45 * s.radius_mm + float(s.sp.max()))
        if cand.any():
            return s.placement(s.pick(cand), s.host_b | (s.org_b == 0), "exophytic", None)
    if relationship in ("relationship.abutting", "relationship.invading"):
        found = _place_near_neighbour(s, relationship)
        if found is not None:
            return found
    return _place_separate(s, features)


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
