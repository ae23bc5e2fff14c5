"""The base scan a lesion is planted in: CT in HU, organ labels, geometry and attribute sub-regions.

Organ labels use TotalSegmentator v2 ("total" task) names, so a real scan segmented by
TotalSegmentator and the procedural phantom are read the same way. Sub-regions are the
places the vocabulary's location descriptions name (`location.<organ>.<part>` -> region key
`<organ>.<part>`). Where a scan carries no label for a part, it is derived from the organ mask
and anatomical landmarks (documented in docs/data.md, "Synthesis"):

- kidney left/right: the TotalSegmentator side labels (kidney cysts labels included).
- liver left/right lobe: split by a vertical plane through the gallbladder fossa and the IVC
  (Cantlie line approximation); fallbacks when the gallbladder or IVC is missing.
- pancreas head/body/tail: thirds along the organ's principal axis, head at the patient's right.
- colon ascending/transverse/descending/sigmoid/rectum: position rules relative to the spine and
  the pelvic brim (L5); the phantom passes its exact segments instead.
- lung lobes: the TotalSegmentator lobe labels.
- gallbladder wall/lumen: a 3 mm shell of the gallbladder mask and its interior.

Arrays are numpy in SimpleITK's z, y, x order; directions in LPS (ITK's patient frame).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

# TotalSegmentator v2 "total" label ids for the names the phantom paints (same ids as
# example_seg_classes.json of the shared example), plus one extension for intrahepatic vessels
# (TotalSegmentator names them "liver_vessels" in its separate liver_vessels task).
TOTALSEG_IDS: dict[str, int] = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "stomach": 6,
    "pancreas": 7, "lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11, "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14, "esophagus": 15, "small_bowel": 18,
    "duodenum": 19, "colon": 20, "urinary_bladder": 21, "kidney_cyst_left": 23, "kidney_cyst_right": 24,
    "sacrum": 25, "vertebrae_S1": 26, "vertebrae_L5": 27, "vertebrae_L4": 28, "vertebrae_L3": 29,
    "vertebrae_L2": 30, "vertebrae_L1": 31, "vertebrae_T12": 32, "vertebrae_T11": 33, "vertebrae_T10": 34,
    "vertebrae_T9": 35, "vertebrae_T8": 36, "heart": 51, "aorta": 52, "inferior_vena_cava": 63,
    "portal_vein_and_splenic_vein": 64, "iliac_artery_left": 65, "iliac_artery_right": 66,
    "iliac_vena_left": 67, "iliac_vena_right": 68, "hip_left": 77, "hip_right": 78, "spinal_cord": 79,
    "autochthon_left": 86, "autochthon_right": 87, "iliopsoas_left": 88, "iliopsoas_right": 89,
    **{f"rib_left_{i}": 91 + i for i in range(1, 13)},
    **{f"rib_right_{i}": 103 + i for i in range(1, 13)},
    "costal_cartilages": 117,
    "liver_vessels": 118,
}

LUNG_LOBES = {
    "lung.left_upper": "lung_upper_lobe_left",
    "lung.left_lower": "lung_lower_lobe_left",
    "lung.right_upper": "lung_upper_lobe_right",
    "lung.right_middle": "lung_middle_lobe_right",
    "lung.right_lower": "lung_lower_lobe_right",
}
VESSELS = ("aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "liver_vessels")
HEPATIC_VESSELS = ("liver_vessels", "portal_vein_and_splenic_vein", "inferior_vena_cava")

# Organ (vocabulary "organ") -> TotalSegmentator names that make up the host organ.
ORGAN_NAMES: dict[str, tuple[str, ...]] = {
    "kidney": ("kidney_left", "kidney_right", "kidney_cyst_left", "kidney_cyst_right"),
    "liver": ("liver", "liver_vessels"),  # a lesion may grow over intrahepatic vessels
    "pancreas": ("pancreas",),
    "colon": ("colon",),
    "lung": tuple(LUNG_LOBES.values()),
    "gallbladder": ("gallbladder",),
    "spleen": ("spleen",),  # no vocabulary location: only training-only transplanted looks go there
    "stomach": ("stomach",),  # the same
}

REGION_KEYS: tuple[str, ...] = (
    "kidney.left", "kidney.right",
    "liver.left_lobe", "liver.right_lobe", "liver.both_lobes",
    "pancreas.head", "pancreas.body", "pancreas.tail",
    "colon.ascending", "colon.transverse", "colon.descending", "colon.sigmoid", "colon.rectum",
    *LUNG_LOBES,
    "gallbladder.lumen", "gallbladder.wall",
)

GALLBLADDER_WALL_MM = 3.0
BOTH_LOBES_BAND_MM = 12.0


def region_of_location(location_id: str) -> str:
    """'location.kidney.left' -> 'kidney.left'."""
    return location_id.split(".", 1)[1]


def organ_of_region(region: str) -> str:
    return region.split(".", 1)[0]


@dataclass
class Anatomy:
    """A base scan. `image` and `organs` are the untouched base (lesions are drawn on copies)."""

    image: np.ndarray  # float32 HU, (z, y, x)
    organs: np.ndarray  # int16 labels, (z, y, x)
    names: dict[int, str]  # label -> TotalSegmentator name
    spacing: tuple[float, float, float]  # (x, y, z) mm, SimpleITK order
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    phase: str = "non_contrast"  # "non_contrast" | "contrast"
    source: str = ""
    subregions: dict[str, np.ndarray] = field(default_factory=dict)  # exact parts (phantom)
    info: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- geometry --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> np.ndarray:
        return np.array(self.spacing[::-1], dtype=np.float64)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.array(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_lps(self, idx_zyx: np.ndarray) -> np.ndarray:
        """(N, 3) z, y, x indices -> (N, 3) LPS millimetres."""
        ijk = np.asarray(idx_zyx, dtype=np.float64)[..., ::-1] * np.array(self.spacing)
        return np.asarray(self.origin) + ijk @ self.direction_matrix.T

    def lps_to_index(self, p_lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS millimetres -> (N, 3) fractional z, y, x indices."""
        ijk = ((np.asarray(p_lps, dtype=np.float64) - np.asarray(self.origin)) @ self.direction_matrix) / np.array(self.spacing)
        return ijk[..., ::-1]

    def lps_to_local(self, v_lps: np.ndarray) -> np.ndarray:
        """An LPS direction or offset (mm) -> the same offset along the array axes (z, y, x) in mm."""
        return (self.direction_matrix.T @ np.asarray(v_lps, dtype=np.float64))[::-1]

    def coords_lps(self, mask: np.ndarray) -> np.ndarray:
        return self.index_to_lps(np.argwhere(mask))

    # -- labels ----------------------------------------------------------------------------
    def label_ids(self, *names: str) -> list[int]:
        wanted = set(names)
        return sorted(k for k, v in self.names.items() if v in wanted)

    def has(self, name: str) -> bool:
        ids = self.label_ids(name)
        return bool(ids) and bool(np.isin(self.organs, ids).any())

    def mask(self, *names: str) -> np.ndarray:
        key = "mask:" + ",".join(sorted(names))
        if key not in self._cache:
            ids = self.label_ids(*names)
            self._cache[key] = np.isin(self.organs, ids) if ids else np.zeros(self.shape, bool)
        return self._cache[key]

    def organ_mask(self, organ: str) -> np.ndarray:
        return self.mask(*ORGAN_NAMES[organ])

    def host_mask(self, region: str) -> np.ndarray:
        """Tissue a lesion of `region` is compared with (vocabulary density descriptions)."""
        if region.startswith("kidney."):
            side = region.split(".")[1]
            return self.mask(f"kidney_{side}", f"kidney_cyst_{side}")
        if region.startswith("gallbladder."):
            return self.region("gallbladder.lumen")  # density relative to the bile
        if region.startswith("lung."):
            return self.organ_mask("lung")
        if region.startswith("liver."):
            return self.mask("liver")  # parenchyma without its vessels
        return self.organ_mask(organ_of_region(region))

    def region(self, key: str) -> np.ndarray:
        """Boolean mask of a sub-region (empty when the scan lacks it)."""
        if key in self.subregions:
            return self.subregions[key]
        cache_key = "region:" + key
        if cache_key not in self._cache:
            self._cache[cache_key] = _build_region(self, key)
        return self._cache[cache_key]

    def region_volume_ml(self, key: str) -> float:
        return float(self.region(key).sum() * np.prod(self.spacing) / 1000.0)

    def copy(self) -> "Anatomy":
        new = copy.copy(self)
        new.image = self.image.copy()
        new.organs = self.organs.copy()
        new.subregions = {k: v.copy() for k, v in self.subregions.items()}
        new.info = dict(self.info)
        new._cache = {}
        return new

    def invalidate(self) -> None:
        self._cache.clear()


# -- sub-regions ---------------------------------------------------------------------------
def _build_region(anat: Anatomy, key: str) -> np.ndarray:
    empty = np.zeros(anat.shape, bool)
    organ = organ_of_region(key)
    if organ == "kidney":
        side = key.split(".")[1]
        return anat.mask(f"kidney_{side}", f"kidney_cyst_{side}") if side in ("left", "right") else empty
    if key in LUNG_LOBES:
        return anat.mask(LUNG_LOBES[key])
    if organ == "liver":
        return _liver_lobes(anat).get(key, empty)
    if organ == "pancreas":
        return _pancreas_parts(anat).get(key, empty)
    if organ == "colon":
        return _colon_segments(anat).get(key, empty)
    if organ in ("gallbladder", "stomach"):
        return _lumen_parts(anat, organ).get(key, empty)
    if key == "spleen.parenchyma":
        return anat.organ_mask("spleen")
    return empty


def liver_plane(anat: Anatomy) -> tuple[np.ndarray, np.ndarray, str]:
    """(point, unit normal towards the left lobe, method) of the Cantlie-line plane in LPS."""
    if "liver_plane" in anat._cache:
        return anat._cache["liver_plane"]
    liver = anat.mask("liver")
    pts = anat.coords_lps(liver)
    ez = np.array([0.0, 0.0, 1.0])
    result: tuple[np.ndarray, np.ndarray, str]
    if len(pts) == 0:
        result = (np.zeros(3), np.array([1.0, 0.0, 0.0]), "none")
    else:
        zmin, zmax = pts[:, 2].min(), pts[:, 2].max()
        ivc = anat.coords_lps(anat.mask("inferior_vena_cava"))
        ivc = ivc[(ivc[:, 2] >= zmin) & (ivc[:, 2] <= zmax)] if len(ivc) else ivc
        gb = anat.coords_lps(anat.mask("gallbladder"))
        if len(ivc) and len(gb):
            point, d, method = ivc.mean(0), gb.mean(0) - ivc.mean(0), "gallbladder-ivc"
        elif len(ivc):  # the gallbladder fossa lies anterior and to the right of the IVC
            point, d, method = ivc.mean(0), np.array([-0.35, -1.0, 0.0]), "ivc"
        else:  # no landmarks: the left lobe is roughly the patient-left third of the liver
            point, d, method = np.array([np.quantile(pts[:, 0], 0.68), 0, 0]), np.array([0.0, -1.0, 0.0]), "fraction"
        d = d.copy()
        d[2] = 0.0
        if np.linalg.norm(d) < 1e-6:
            d = np.array([0.0, -1.0, 0.0])
        normal = np.cross(d, ez)
        normal /= np.linalg.norm(normal)
        if normal[0] < 0:  # point towards patient left (+x in LPS)
            normal = -normal
        result = (point, normal, method)
    anat._cache["liver_plane"] = result
    return result


def _signed_plane_distance(anat: Anatomy, mask: np.ndarray, point: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask)
    return idx, (anat.index_to_lps(idx) - point) @ normal


def _liver_lobes(anat: Anatomy) -> dict[str, np.ndarray]:
    key = "parts:liver"
    if key not in anat._cache:
        liver = anat.mask("liver")
        point, normal, _ = liver_plane(anat)
        idx, s = _signed_plane_distance(anat, liver, point, normal)
        parts = {k: np.zeros(anat.shape, bool) for k in ("liver.left_lobe", "liver.right_lobe", "liver.both_lobes")}
        for k, sel in (("liver.left_lobe", s > 0), ("liver.right_lobe", s <= 0), ("liver.both_lobes", np.abs(s) < BOTH_LOBES_BAND_MM)):
            parts[k][tuple(idx[sel].T)] = True
        anat._cache[key] = parts
    return anat._cache[key]


def pancreas_axis(anat: Anatomy) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(centroid, unit axis head->tail, t_min, t_max) of the pancreas in LPS mm."""
    if "pancreas_axis" not in anat._cache:
        pts = anat.coords_lps(anat.mask("pancreas"))
        if len(pts) < 3:
            anat._cache["pancreas_axis"] = (np.zeros(3), np.array([1.0, 0, 0]), 0.0, 0.0)
        else:
            c = pts.mean(0)
            _, _, vt = np.linalg.svd(pts - c, full_matrices=False)
            axis = vt[0] / np.linalg.norm(vt[0])
            if axis[0] < 0:  # head lies at the patient's right (-x), tail at the left
                axis = -axis
            t = (pts - c) @ axis
            anat._cache["pancreas_axis"] = (c, axis, float(np.quantile(t, 0.01)), float(np.quantile(t, 0.99)))
    return anat._cache["pancreas_axis"]


def _pancreas_parts(anat: Anatomy) -> dict[str, np.ndarray]:
    key = "parts:pancreas"
    if key not in anat._cache:
        pan = anat.mask("pancreas")
        c, axis, t0, t1 = pancreas_axis(anat)
        idx = np.argwhere(pan)
        f = ((anat.index_to_lps(idx) - c) @ axis - t0) / max(t1 - t0, 1e-6)
        parts = {}
        for k, sel in (("pancreas.head", f < 1 / 3), ("pancreas.body", (f >= 1 / 3) & (f < 2 / 3)), ("pancreas.tail", f >= 2 / 3)):
            m = np.zeros(anat.shape, bool)
            m[tuple(idx[sel].T)] = True
            parts[k] = m
        anat._cache[key] = parts
    return anat._cache[key]


def _colon_segments(anat: Anatomy) -> dict[str, np.ndarray]:
    key = "parts:colon"
    if key in anat._cache:
        return anat._cache[key]
    colon = anat.mask("colon")
    idx = np.argwhere(colon)
    p = anat.index_to_lps(idx)
    parts = {k: np.zeros(anat.shape, bool) for k in ("colon.ascending", "colon.transverse", "colon.descending", "colon.sigmoid", "colon.rectum")}
    if len(p) == 0:
        anat._cache[key] = parts
        return parts
    verts = [n for n in anat.names.values() if n.startswith("vertebrae_") or n == "sacrum"]
    vpts = anat.coords_lps(anat.mask(*verts)) if verts else np.zeros((0, 3))
    x_mid = float(np.median(vpts[:, 0])) if len(vpts) else float(np.median(p[:, 0]))
    y_spine = float(np.quantile(vpts[:, 1], 0.1)) if len(vpts) else float(np.median(p[:, 1]))
    # Pelvic brim: the L5 level. Only when the scan reaches it (else no sigmoid or rectum).
    low = anat.coords_lps(anat.mask("vertebrae_L5", "vertebrae_S1", "sacrum"))
    if len(low):
        z_pelvis = float(anat.coords_lps(anat.mask("vertebrae_L5")).mean(0)[2]) if anat.has("vertebrae_L5") else float(low[:, 2].max())
    elif not len(vpts) and np.ptp(p[:, 2]) > 200:
        z_pelvis = float(p[:, 2].min() + 0.25 * np.ptp(p[:, 2]))
    else:
        z_pelvis = -np.inf
    pelvic = p[:, 2] < z_pelvis
    rectum = np.zeros(len(p), bool)
    if pelvic.any():
        zp = p[pelvic, 2]
        z_rect = zp.min() + 0.45 * np.ptp(zp)
        rectum = pelvic & (p[:, 2] < z_rect) & (np.abs(p[:, 0] - x_mid) < 40) & (p[:, 1] > y_spine - 60)
    sigmoid = pelvic & ~rectum
    upper = ~pelvic
    transverse = upper & ((np.abs(p[:, 0] - x_mid) < 55) | (p[:, 1] < y_spine - 90))
    ascending = upper & ~transverse & (p[:, 0] < x_mid)
    descending = upper & ~transverse & (p[:, 0] >= x_mid)
    for k, sel in (("colon.ascending", ascending), ("colon.transverse", transverse), ("colon.descending", descending),
                   ("colon.sigmoid", sigmoid), ("colon.rectum", rectum)):
        parts[k][tuple(idx[sel].T)] = True
    anat._cache[key] = parts
    return parts


def bbox_slices(mask: np.ndarray, margin: int | tuple[int, int, int] = 0) -> tuple[slice, ...] | None:
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None
    m = np.broadcast_to(np.asarray(margin), (3,))
    lo = np.maximum(idx.min(0) - m, 0)
    hi = np.minimum(idx.max(0) + m + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def inner_depth_mm(mask: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """Distance (mm) from each mask voxel to the nearest outside voxel, on the mask's bounding box."""
    out = np.zeros(mask.shape, np.float32)
    box = bbox_slices(mask, 1)
    if box is None:
        return out
    out[box] = ndi.distance_transform_edt(mask[box], sampling=spacing_zyx).astype(np.float32)
    return out


def _lumen_parts(anat: Anatomy, organ: str) -> dict[str, np.ndarray]:
    """A hollow organ's (gallbladder, stomach) lumen and its wall, a GALLBLADDER_WALL_MM shell."""
    key = f"parts:{organ}"
    if key not in anat._cache:
        gb = anat.mask(organ)
        depth = inner_depth_mm(gb, anat.spacing_zyx)
        wall_mm = max(GALLBLADDER_WALL_MM, float(anat.spacing_zyx.min()))
        lumen = gb & (depth > wall_mm)
        if lumen.sum() < 0.1 * gb.sum():  # too thin to have a lumen at this resolution
            lumen = gb & (depth >= np.quantile(depth[gb], 0.5)) if gb.any() else lumen
        anat._cache[key] = {f"{organ}.lumen": lumen, f"{organ}.wall": gb & ~lumen}
    return anat._cache[key]
