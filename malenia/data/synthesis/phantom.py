"""Procedural abdominal phantom: a second anatomy source so that training never depends on one scan.

The body is laid out in LPS millimetres around the first lumbar vertebra (z = 0 at L1 before a
random shift) and rasterised on the requested grid (identity direction, the field of view
centred below L1 so that 128 x 3 mm reaches from the lung bases' upper lobes to the rectum).
Every organ is a signed-distance primitive (ellipsoids, tubes along smooth centrelines,
half-spaces) painted in anatomical order with a one-voxel partial-volume ramp; its label uses the
TotalSegmentator v2 name and number (anatomy.TOTALSEG_IDS). Randomised per seed: body size and
fat, vertebral level heights, diaphragm domes, organ sizes, positions and orientations, bowel
paths and contents, small-bowel loops, lung vessels, noise level and contrast phase.

Contents: body ellipse with subcutaneous fat, abdominal wall muscle and visceral fat; spine
(vertebral bodies with cortex, discs, canal, cord, posterior elements) labelled by level,
sacrum, iliac wings, ribs 7-12 with costal cartilage; paraspinal and psoas muscles; lungs
(five lobes split by oblique and horizontal fissures, vessels) above two diaphragm domes; heart;
liver with hepatic veins and portal branches (liver_vessels), IVC, aorta, iliac vessels, portal
and splenic vein; spleen; stomach (air-fluid level); duodenum; pancreas (head, body, tail);
kidneys (cortex, medulla, sinus fat, pelvis, ureter); gallbladder (wall, bile); colon (ascending
to rectum, wall, gas and stool; exact segment sub-regions); small-bowel loops; bladder; table.

HU are typical adult values (non-contrast, portal-venous or arterial), with Gaussian-filtered
texture per tissue and correlated scanner noise (12-20 HU).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy import ndimage as ndi

from malenia.data.synthesis.anatomy import TOTALSEG_IDS, Anatomy
from malenia.data.synthesis.shapes import polyline_sdf, smooth_curve
from malenia.data.synthesis.texture import NOISE_SIGMA_VOX, filtered_noise, pv_ramp

T = TOTALSEG_IDS

# Tissue HU: (non-contrast, portal-venous, arterial).
HU: dict[str, tuple[float, float, float]] = {
    "fat": (-100.0, -100.0, -100.0), "muscle": (50.0, 62.0, 58.0), "liver": (58.0, 110.0, 75.0),
    "spleen": (48.0, 120.0, 105.0), "pancreas": (42.0, 100.0, 120.0), "kidney_cortex": (33.0, 165.0, 185.0),
    "kidney_medulla": (30.0, 150.0, 85.0), "blood": (40.0, 150.0, 260.0), "portal": (40.0, 170.0, 110.0),
    "hepatic_vein": (40.0, 150.0, 55.0), "ivc": (38.0, 120.0, 70.0), "bowel_wall": (35.0, 80.0, 70.0),
    "bile": (8.0, 8.0, 8.0), "urine": (8.0, 8.0, 8.0), "gb_wall": (35.0, 75.0, 65.0), "fluid": (15.0, 15.0, 15.0),
    "lung": (-860.0, -850.0, -850.0), "cortical": (650.0, 650.0, 650.0), "cancellous": (190.0, 190.0, 190.0),
    "disc": (85.0, 85.0, 85.0), "csf": (12.0, 12.0, 12.0), "cord": (35.0, 38.0, 36.0), "cartilage": (120.0, 120.0, 120.0),
    "heart": (42.0, 150.0, 230.0), "sinus_fat": (-70.0, -70.0, -70.0), "air": (-1000.0, -1000.0, -1000.0),
    "table": (120.0, 120.0, 120.0), "stool": (-60.0, -60.0, -60.0),
}
PHASES = {"non_contrast": 0, "portal_venous": 1, "arterial": 2}

# Texture std (HU) of Gaussian-filtered noise per label name (label 0 = fat and outside).
TEXTURE: dict[str, float] = {
    "liver": 5.0, "spleen": 5.0, "pancreas": 10.0, "kidney_left": 6.0, "kidney_right": 6.0, "lung": 22.0,
    "heart": 4.0, "aorta": 2.0, "inferior_vena_cava": 2.0, "stomach": 3.0, "small_bowel": 4.0, "duodenum": 4.0,
    "gallbladder": 2.0, "urinary_bladder": 2.0, "autochthon": 7.0, "iliopsoas": 7.0, "vertebrae": 45.0,
    "sacrum": 45.0, "hip": 45.0, "rib": 30.0,
}


class _Painter:
    """Paints signed-distance primitives (LPS mm) onto the phantom's HU and label grids."""

    def __init__(self, shape_zyx: tuple[int, int, int], spacing_xyz: np.ndarray, origin_lps: np.ndarray):
        self.hu = np.full(shape_zyx, -1000.0, np.float32)
        self.lab = np.zeros(shape_zyx, np.int16)
        self.sp_xyz = np.asarray(spacing_xyz, float)
        self.sp = self.sp_xyz[::-1]
        self.origin = np.asarray(origin_lps, float)
        self.vox = float(self.sp.mean())
        self.axes = [self.origin[d] + np.arange(n) * self.sp_xyz[d] for d, n in zip(range(3), shape_zyx[::-1])]

    def box(self, lo: np.ndarray, hi: np.ndarray):
        sl = []
        for d in (2, 1, 0):  # z, y, x
            a = self.axes[d]
            i0 = int(np.searchsorted(a, lo[d] - 2 * self.sp_xyz[d]))
            i1 = int(np.searchsorted(a, hi[d] + 2 * self.sp_xyz[d]))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        z = self.axes[2][sl[0]][:, None, None]
        y = self.axes[1][sl[1]][None, :, None]
        x = self.axes[0][sl[2]][None, None, :]
        return tuple(sl), x, y, z

    def paint(self, lo, hi, sd_fn: Callable, value, label: int | None = None, within: Callable | None = None):
        b = self.box(np.asarray(lo, float), np.asarray(hi, float))
        if b is None:
            return None
        sl, x, y, z = b
        shape = tuple(s.stop - s.start for s in sl)
        sd = np.broadcast_to(sd_fn(x, y, z, sl), shape)
        w = pv_ramp(sd, self.vox)
        if within is not None:
            w = w * within(x, y, z, sl)
        v = value(x, y, z, sl) if callable(value) else value
        h = self.hu[sl]
        h *= 1.0 - w
        h += w * v
        if label is not None:
            self.lab[sl][w >= 0.5] = label
        return sl, w

    def tube_sd(self, pts_lps: np.ndarray, radii: np.ndarray) -> Callable:
        def fn(x, y, z, sl):
            shape = tuple(s.stop - s.start for s in sl)
            sd = np.full(shape, 1e6, np.float32)
            origin_zyx = np.array([z.flat[0], y.flat[0], x.flat[0]])
            return polyline_sdf(sd, self.sp, np.asarray(pts_lps)[:, ::-1], radii, origin_zyx)
        return fn

    def tube(self, pts_lps, radii, value, label=None, within=None, step=None):
        # segments about half a radius long: each is evaluated on its own box
        step = step or max(3.0, 0.5 * float(np.min(radii)))
        pts = smooth_curve(np.asarray(pts_lps, float), step)
        r = np.interp(np.linspace(0, 1, len(pts)), np.linspace(0, 1, len(radii)), np.asarray(radii, float))
        pad = float(r.max())
        return self.paint(pts.min(0) - pad, pts.max(0) + pad, self.tube_sd(pts, r), value, label, within), pts, r


def _ellipsoid_sd(c, semi, rot=None) -> Callable:
    c = np.asarray(c, float)
    a = np.asarray(semi, float)
    R = np.eye(3) if rot is None else np.asarray(rot, float)

    def fn(x, y, z, sl):
        d = (x - c[0], y - c[1], z - c[2])
        q = [R[0, i] * d[0] + R[1, i] * d[1] + R[2, i] * d[2] for i in range(3)]
        k0 = np.sqrt(sum((qi / ai) ** 2 for qi, ai in zip(q, a)))
        k1 = np.sqrt(sum((qi / ai ** 2) ** 2 for qi, ai in zip(q, a))) + 1e-9
        return (k0 * (k0 - 1.0) / k1).astype(np.float32)
    return fn


def _ellipse2d_sd(cx, cy, a, b) -> Callable:
    def fn(x, y, z, sl):
        dx, dy = x - cx, y - cy
        k0 = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
        k1 = np.sqrt((dx / a ** 2) ** 2 + (dy / b ** 2) ** 2) + 1e-9
        return (k0 * (k0 - 1.0) / k1).astype(np.float32)
    return fn


def _rot(axis: str, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


class _Build:
    """What the structure painters share: the grid, the painter, the generator, and the landmarks each
    step leaves for the later ones (attributes set by the steps; the order of PAINTERS matters)."""

    def __init__(self, rng: np.random.Generator, size, spacing, phase: str):
        self.rng = rng
        self.phase = phase
        self.sub = "non_contrast" if phase == "non_contrast" else ("arterial" if rng.random() < 0.3 else "portal_venous")
        self.pi = PHASES[self.sub]
        self.size = tuple(int(s) for s in size)
        self.sp_xyz = np.asarray(spacing, float)
        self.shape_zyx = (self.size[2], self.size[1], self.size[0])
        centre = np.array([0.0, 5.0, -35.0])  # LPS, relative to L1
        self.origin = centre - (np.asarray(self.size) - 1) / 2.0 * self.sp_xyz
        self.P = _Painter(self.shape_zyx, self.sp_xyz, self.origin)
        self.U = rng.uniform
        self.J = lambda s=6.0: rng.uniform(-s, s, 3)  # positional jitter (mm)

    def hu(self, tissue: str, jitter: float = 4.0) -> float:
        return float(HU[tissue][self.pi] + self.rng.uniform(-jitter, jitter))

    @property
    def L5(self) -> float:
        return self.zL["L5"]


def _paint_body(build: _Build) -> None:
    """Table, body ellipse, subcutaneous fat, wall muscle and the visceral fat of the cavity."""
    P, U, hu = build.P, build.U, build.hu
    a0, b0 = U(150, 178), U(108, 130)
    y_v = U(22, 30)  # vertebral body centre (posterior)
    fat_t = min(U(8, 32), b0 - y_v - 80)
    wall_t = U(9, 14)
    zlo, zhi = P.axes[2][0] - 10, P.axes[2][-1] + 10
    big = np.array([-300, -300, zlo]), np.array([300, 300, zhi])
    y_table = b0 + 12.0
    P.paint(np.array([-220, y_table, zlo]), np.array([220, y_table + 7, zhi]),
            lambda x, y, z, sl: np.maximum(np.abs(y - y_table - 3.5) - 3.5, np.abs(x) - 215).astype(np.float32), hu("table"))
    P.paint(*big, _ellipse2d_sd(0, 0, a0, b0), hu("fat", 6))
    am, bm = a0 - fat_t, b0 - fat_t
    P.paint(*big, _ellipse2d_sd(0, 0, am, bm), hu("muscle"))
    ac, bc, cyc = am - wall_t, bm - wall_t - 8, -6.0
    cavity = _ellipse2d_sd(0, cyc, ac, bc)
    P.paint(*big, cavity, hu("fat", 6) + 5)
    build.a0, build.b0, build.y_v, build.zlo, build.zhi = a0, b0, y_v, zlo, zhi
    build.am, build.bm, build.ac, build.bc, build.cyc = am, bm, ac, bc, cyc
    build.cavity = cavity


def _paint_levels(build: _Build) -> None:
    """Vertebral level heights, diaphragm domes and the pancreas level (no painting)."""
    U = build.U
    h = U(29, 34)  # vertebral level height (body + disc)
    zL = {f"L{i}": -(i - 1) * h for i in range(1, 6)}
    zL.update({f"T{i}": (12 - i + 1) * h for i in range(8, 13)})
    z_r = U(82, 102)  # right dome top
    z_l = z_r - U(5, 15)
    z_panc = U(0, 12)

    def z_d(x, y):
        dr = z_r - 60 * (((x + 55) / 105) ** 2 + ((y + 5) / 95) ** 2)
        dl = z_l - 60 * (((x - 55) / 105) ** 2 + ((y + 5) / 95) ** 2)
        return np.maximum(np.maximum(dr, dl), z_l - 12 - 0 * x)
    build.h, build.zL, build.z_r, build.z_l, build.z_panc = h, zL, z_r, z_l, z_panc
    build.z_d = z_d


def _paint_thorax(build: _Build) -> None:
    """Lungs (five lobes, fissures, vessels) above the domes, and the heart."""
    P, U, J, hu, rng, sub = build.P, build.U, build.J, build.hu, build.rng, build.sub
    z_l, z_r, z_d, ac, bc, zhi = build.z_l, build.z_r, build.z_d, build.ac, build.bc, build.zhi
    y_v, cavity = build.y_v, build.cavity
    zmin_lung = z_l - 75
    x2 = P.axes[0][None, :]
    y2 = P.axes[1][:, None]
    zd2 = z_d(x2, y2).astype(np.float32)
    cav2 = cavity(x2, y2, None, None).astype(np.float32)
    medi2 = np.maximum(np.abs(x2 - 8) - 24, -(y2 - (y_v - 25))).astype(np.float32)  # posterior mediastinum strip
    medi2 = np.minimum(medi2, np.maximum(np.abs(x2 - 8) - 16, np.abs(y2 - y_v + 20) - 60))
    lung_sd = lambda x, y, z, sl: np.maximum(np.maximum(cav2[sl[1], sl[2]] + 6, zd2[sl[1], sl[2]] + 5 - z), -medi2[sl[1], sl[2]])  # noqa: E731
    if P.axes[2][-1] > zmin_lung:
        lo, hi = np.array([-300, -300, zmin_lung]), np.array([300, 300, zhi])
        res = P.paint(lo, hi, lung_sd, hu("lung", 15))
        if res is not None:
            sl, w = res
            z = P.axes[2][sl[0]][:, None, None]
            y = P.axes[1][sl[1]][None, :, None]
            x = P.axes[0][sl[2]][None, None, :]
            inside = w >= 0.5
            f_l = z_l - 15 + (y + 80) * 0.8  # oblique fissures: higher posteriorly
            f_r = z_r - 15 + (y + 80) * 0.8
            z_h = z_r + 18  # horizontal fissure
            left = x > 8
            lab = np.where(left, np.where(z > f_l, T["lung_upper_lobe_left"], T["lung_lower_lobe_left"]),
                           np.where(z <= f_r, T["lung_lower_lobe_right"],
                                    np.where(z <= z_h, T["lung_middle_lobe_right"], T["lung_upper_lobe_right"])))
            lab = np.broadcast_to(lab, inside.shape)
            P.lab[sl][inside] = lab[inside]
            lung_mask = P.lab == 0  # placeholder, replaced below
            lung_ids = [T[k] for k in T if k.startswith("lung_")]
            lung_mask = np.isin(P.lab, lung_ids)
            # pulmonary vessels: branching tubes from each hilum into the lung
            for side in (-1, 1):
                hilum = np.array([side * 45.0, 0.0, z_r + 45])
                for _ in range(int(rng.integers(6, 11))):
                    end = np.array([side * U(40, ac - 10), U(-bc + 20, bc - 10),  # a lung base barely in view: ends at its top
                                    U(zmin_lung + 20, max(zhi, zmin_lung + 20))])
                    mid = (hilum + end) / 2 + J(10)
                    P.tube([hilum, mid, end], [U(2.5, 4.0), 1.5, 0.8], hu("blood" if sub != "arterial" else "ivc") - 0,
                           within=lambda x, y, z, sl: lung_mask[sl])
        heart_c = np.array([22, -40, z_l + 48]) + J(6)
        P.paint(heart_c - 80, heart_c + 80,
                lambda x, y, z, sl: np.maximum(_ellipsoid_sd(heart_c, (U(60, 70), 52, 58), _rot("z", -30))(x, y, z, sl),
                                               zd2[sl[1], sl[2]] + 4 - z), hu("heart"), T["heart"])
    build.zd2, build.cav2 = zd2, cav2


def _paint_spine(build: _Build) -> None:
    """Vertebrae T8-L5: body, cortex, disc, arch, processes, canal and cord."""
    P, hu, zL, h, zlo, zhi = build.P, build.hu, build.zL, build.h, build.zlo, build.zhi
    y_v = build.y_v
    levels = [("vertebrae_T8", zL["T8"]), ("vertebrae_T9", zL["T9"]), ("vertebrae_T10", zL["T10"]),
              ("vertebrae_T11", zL["T11"]), ("vertebrae_T12", zL["T12"])] + [(f"vertebrae_L{i}", zL[f"L{i}"]) for i in range(1, 6)]
    body_h = h - 8.0
    for name, zc in levels:
        if zc + h < zlo or zc - h > zhi:
            continue
        lid = T[name]
        lumbar = "L" in name.split("_")[1]
        rb = 20.0 if lumbar else 16.0
        c = np.array([0.0, y_v, zc])
        cyl = lambda x, y, z, sl, c=c, rb=rb: np.maximum(np.sqrt((x / (rb * 1.15)) ** 2 + ((y - c[1]) / rb) ** 2) * rb - rb, np.abs(z - c[2]) - body_h / 2).astype(np.float32)  # noqa: E731
        P.paint(c - [40, 40, h], c + [40, 40, h], cyl, hu("cortical", 40), lid)
        P.paint(c - [40, 40, h], c + [40, 40, h], lambda x, y, z, sl, f=cyl: f(x, y, z, sl) + 2.0, hu("cancellous", 25), lid)
        P.paint(c - [40, 40, h], c + [40, 40, h],
                lambda x, y, z, sl, c=c, rb=rb: np.maximum(np.sqrt((x / (rb * 1.1)) ** 2 + ((y - c[1]) / rb) ** 2) * rb - rb + 1,
                                                            np.abs(z - c[2] + h / 2) - 4.0).astype(np.float32), hu("disc"))
        # posterior arch around the canal, spinous and transverse processes
        cc = np.array([0.0, y_v + rb + 12, zc])
        arch = lambda x, y, z, sl, cc=cc: np.maximum(np.maximum(np.abs(np.sqrt(x ** 2 + (y - cc[1]) ** 2) - 13.0) - 3.5, cc[1] - 4 - y), np.abs(z - cc[2]) - body_h / 2).astype(np.float32)  # noqa: E731
        P.paint(cc - [25, 25, h], cc + [25, 25, h], arch, hu("cortical", 60) - 200, lid)
        P.tube([cc + [0, 14, 0], cc + [0, 40, -8]], [4.0, 3.0], hu("cortical", 60) - 250, lid)
        if lumbar:
            for s in (-1, 1):
                P.tube([cc + [s * 10, -6, 0], cc + [s * 38, -4, 0]], [2.5, 2.0], hu("cortical", 60) - 250, lid)
        P.paint(cc - 12, cc + 12, lambda x, y, z, sl, cc=cc: (np.sqrt(x ** 2 + (y - cc[1]) ** 2) - 9.0).astype(np.float32) + 0 * z, hu("csf"))
        P.paint(cc - 8, cc + 8, lambda x, y, z, sl, cc=cc: (np.sqrt(x ** 2 + (y - cc[1] + 1) ** 2) - 5.0).astype(np.float32) + 0 * z, hu("cord"), T["spinal_cord"])


def _paint_pelvis(build: _Build) -> None:
    """Sacrum and iliac wings."""
    P, U, hu, zL, h, y_v = build.P, build.U, build.hu, build.zL, build.h, build.y_v
    # sacrum: tilted backwards below L5
    z_s = zL["L5"] - h / 2 - 4
    sac_pts = np.array([[0, y_v + 2, z_s], [0, y_v + 18, z_s - 45], [0, y_v + 42, z_s - 90], [0, y_v + 60, z_s - 120]])
    P.tube(sac_pts, [24, 22, 15, 8], hu("cancellous", 25) + 60, T["sacrum"])
    # iliac wings: curved bony plates from the sacroiliac joint to the anterior superior spine,
    # receding posteriorly towards the acetabulum
    crest = zL["L4"] - 8
    bottom = zL["L5"] - 115
    for s_, name in ((-1, "hip_right"), (1, "hip_left")):
        curve = np.array([[s_ * 32, y_v + 42, 0], [s_ * 72, y_v + 28, 0], [s_ * 105, y_v - 5, 0], [s_ * U(112, 125), y_v - 45, 0]])
        pts2 = smooth_curve(curve, 3.0)

        def wing(x, y, z, sl, pts2=pts2):
            shape2 = (1, sl[1].stop - sl[1].start, sl[2].stop - sl[2].start)
            d2 = polyline_sdf(np.full(shape2, 1e6, np.float32), P.sp, pts2[:, ::-1], np.array([U(3.5, 5.0)]),
                              np.array([0.0, y.flat[0], x.flat[0]]))
            y_cut = (y_v - 50) + (crest - z) / (crest - bottom) * 60.0  # the wing recedes posteriorly going down
            return np.maximum(np.maximum(d2, np.maximum(z - crest, bottom - z)), y_cut - y).astype(np.float32)
        lo = np.array([min(0, s_ * 130), y_v - 60, bottom]) - 5
        hi = np.array([max(0, s_ * 130), y_v + 50, crest]) + 5
        P.paint(lo, hi, wing, hu("cortical", 40) - 330, T[name])


def _paint_back_muscles(build: _Build) -> None:
    """Paraspinal (autochthon) and psoas muscles."""
    P, U, hu, zL, y_v, zlo = build.P, build.U, build.hu, build.zL, build.y_v, build.zlo
    zhi, am, bm = build.zhi, build.am, build.bm
    # paraspinal and psoas muscles
    for s, side in ((1, "left"), (-1, "right")):
        P.paint(np.array([s * 30 - 30, y_v + 15, zlo]), np.array([s * 30 + 30, y_v + 85, zhi]),
                _ellipse2d_sd(s * 30, y_v + 50, U(20, 25), U(17, 21)), hu("muscle"), T[f"autochthon_{side}"],
                within=lambda x, y, z, sl: (_ellipse2d_sd(0, 0, am, bm)(x, y, z, sl) <= 0).astype(np.float32))
        top = zL["T12"] - 10
        ps = np.array([[s * 26, y_v - 8, top], [s * 32, y_v - 12, zL["L2"]], [s * 42, y_v - 12, zL["L4"]],
                       [s * 55, y_v - 20, zL["L5"] - 40], [s * 70, y_v - 30, zL["L5"] - 110]])
        P.tube(ps, [4, 12, U(18, 24), U(20, 26), 22], hu("muscle"), T[f"iliopsoas_{side}"])


def _paint_ribs(build: _Build) -> None:
    """Ribs 7-12 and costal cartilage."""
    P, U, hu, zL, h, y_v = build.P, build.U, build.hu, build.zL, build.h, build.y_v
    am, bm, cyc = build.am, build.bm, build.cyc
    # ribs 7-12 and costal cartilage
    ring_a, ring_b = am - 6, bm - 6
    for s, side in ((1, "left"), (-1, "right")):
        for k in range(7, 13):
            z0 = zL.get(f"T{k}", zL["T12"] + (12 - k) * h)
            phi_end = {12: 95, 11: 125, 10: 150, 9: 160, 8: 165, 7: 170}[k] + U(-8, 8)
            phis = np.deg2rad(np.linspace(18, phi_end, 12))
            drop = U(95, 125) if k <= 10 else U(55, 75)  # ribs run steeply down towards the front
            frac = (phis - phis[0]) / (phis[-1] - phis[0])
            pts = np.stack([s * ring_a * np.sin(phis), cyc + ring_b * np.cos(phis), z0 - drop * frac ** 1.2], 1)
            pts[0] = [s * 24, y_v + 10, z0]
            P.tube(pts, [4.0], hu("cortical", 40) - 250, T[f"rib_{side}_{k}"])
            if k <= 10:
                phic = np.deg2rad(np.linspace(phi_end, 178, 5))
                cpts = np.stack([s * ring_a * np.sin(phic), cyc + ring_b * np.cos(phic), pts[-1, 2] + 30 * (phic - phic[0])], 1)
                P.tube(cpts, [4.0], hu("cartilage", 10), T["costal_cartilages"])


def _paint_cavity_masks(build: _Build) -> None:
    """Masks that keep abdominal organs below the diaphragm and inside the cavity (no painting)."""
    zd2, cav2 = build.zd2, build.cav2
    below = lambda off: (lambda x, y, z, sl: (zd2[sl[1], sl[2]] - off >= z).astype(np.float32))  # noqa: E731
    in_cav = lambda x, y, z, sl: (cav2[sl[1], sl[2]] <= 0).astype(np.float32)  # noqa: E731
    below_in = lambda off: (lambda x, y, z, sl: below(off)(x, y, z, sl) * in_cav(x, y, z, sl))  # noqa: E731
    build.in_cav, build.below_in = in_cav, below_in


def _paint_small_bowel(build: _Build) -> None:
    """Small-bowel loops (painted first: other organs cover them)."""
    P, U, hu, rng, zL, in_cav = build.P, build.U, build.hu, build.rng, build.zL, build.in_cav
    for _ in range(int(rng.integers(4, 7))):
        start = np.array([U(-55, 55), U(-85, -5), U(zL["L5"] - 40, zL["L2"])])
        pts = [start]
        d = rng.standard_normal(3)
        for _ in range(7):
            d = d + rng.standard_normal(3) * 0.8
            d /= np.linalg.norm(d)
            nxt = pts[-1] + d * U(18, 28)
            nxt = np.clip(nxt, [-70, -95, zL["L5"] - 60], [70, 10, zL["L1"] - 10])
            pts.append(nxt)
        r = U(10, 14)
        P.tube(pts, [r], hu("bowel_wall"), T["small_bowel"], within=in_cav)
        P.tube(pts, [r - 2.5], lambda x, y, z, sl: np.float32(hu("fluid", 8)) + 0 * x, None, within=in_cav)


def _paint_liver(build: _Build) -> None:
    """Liver (two smoothly joined ellipsoids under the right dome), hepatic veins and portal branches."""
    P, U, J, hu, z_r, z_l = build.P, build.U, build.J, build.hu, build.z_r, build.z_l
    zd2, cav2 = build.zd2, build.cav2
    lc1 = np.array([-62, 2, z_r - 48]) + J(6)
    lc2 = np.array([8, -48, z_l - 32]) + J(6)
    s1 = np.array([U(75, 88), U(80, 92), U(68, 80)])
    s2 = np.array([U(60, 75), U(36, 44), U(34, 42)])
    e1 = _ellipsoid_sd(lc1, s1, _rot("z", U(-10, 10)))
    e2 = _ellipsoid_sd(lc2, s2, _rot("z", U(-15, 5)))
    z_bot = z_r - U(140, 160)

    def liver_sd(x, y, z, sl):
        a, b = e1(x, y, z, sl), e2(x, y, z, sl)
        k = 18.0
        hh = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
        u = b * (1 - hh) + a * hh - k * hh * (1 - hh)  # smooth union
        floor = z_bot + 0.45 * (x + 80) - z
        return np.maximum(np.maximum(u, floor), np.maximum(z - zd2[sl[1], sl[2]] + 4, cav2[sl[1], sl[2]] + 2))
    res = P.paint(np.array([-190, -140, z_bot - 10]), np.array([120, 120, z_r + 5]), liver_sd, hu("liver"), T["liver"])
    liver_mask_fn = lambda x, y, z, sl: (P.lab[sl] == T["liver"]).astype(np.float32)  # noqa: E731
    # hepatic veins and portal branches inside the liver
    ivc_top = np.array([-18, 14, z_r - 12])
    for end, r0 in (([-110, 20, z_r - 55], 6.0), ([-55, -45, z_r - 75], 5.5), ([25, -55, z_r - 40], 5.0)):
        end = np.array(end, float) + J(8)
        P.tube([ivc_top, (ivc_top + end) / 2 + J(6), end], [r0, r0 * 0.6, 2.0], hu("hepatic_vein"), T["liver_vessels"], within=liver_mask_fn)
    porta = np.array([-40, -8, z_r - 78]) + J(5)
    for end in ([-95, 10, z_r - 70], [-80, -25, z_r - 105], [15, -45, z_r - 62]):
        end = np.array(end, float) + J(8)
        P.tube([porta, (porta + end) / 2 + J(5), end], [5.5, 3.5, 2.0], hu("portal"), T["liver_vessels"], within=liver_mask_fn)
    build.porta = porta


def _paint_gallbladder_spleen(build: _Build) -> None:
    """Gallbladder (wall, then bile) and spleen."""
    P, U, J, hu, z_r, z_l = build.P, build.U, build.J, build.hu, build.z_r, build.z_l
    in_cav, below_in = build.in_cav, build.below_in
    gbc = np.array([-46, -52, z_r - 100]) + J(5)
    gsemi = np.array([U(14, 19), U(14, 19), U(30, 42)])
    grot = _rot("x", U(25, 45)) @ _rot("y", U(-15, 15))
    P.paint(gbc - 50, gbc + 50, _ellipsoid_sd(gbc, gsemi, grot), hu("gb_wall"), T["gallbladder"], within=in_cav)
    P.paint(gbc - 50, gbc + 50, _ellipsoid_sd(gbc, gsemi - 2.5, grot), hu("bile", 6), None, within=in_cav)

    # spleen
    spc = np.array([88, 42, z_l - 38]) + J(6)
    sps = np.array([U(22, 28), U(45, 58), U(42, 55)])
    e_sp = _ellipsoid_sd(spc, sps, _rot("z", U(25, 40)))
    hil = _ellipsoid_sd(spc + [-32, -18, 0], [22, 30, 40])
    P.paint(spc - 75, spc + 75, lambda x, y, z, sl: np.maximum(e_sp(x, y, z, sl), -hil(x, y, z, sl)), hu("spleen"), T["spleen"], within=below_in(4))


def _paint_stomach_duodenum(build: _Build) -> None:
    """Stomach with an air-fluid level; duodenal C-loop around the pancreatic head."""
    P, U, J, hu, z_l, z_panc = build.P, build.U, build.J, build.hu, build.z_l, build.z_panc
    below_in = build.below_in
    st_pts = np.array([[55, 15, z_l - 22], [48, -38, z_l - 58], [12, -62, z_l - 85], [-18, -48, z_l - 92]]) + J(5)
    st_r = [U(30, 40), U(28, 34), U(20, 26), 11]
    (_, _, _) = P.tube(st_pts, st_r, hu("bowel_wall"), T["stomach"], within=below_in(6))
    y_air = U(-60, -20)
    P.tube(st_pts, [r - 4 for r in st_r], lambda x, y, z, sl: np.where(y < y_air, -1000.0, hu("fluid", 8)).astype(np.float32) + 0 * z,
           None, within=below_in(6))

    # duodenum (C-loop) around the pancreatic head
    du = np.array([[-18, -48, z_l - 92], [-45, -30, z_panc - 12], [-55, -5, z_panc - 35], [-48, 0, z_panc - 58],
                   [0, 2, z_panc - 66], [28, -6, z_panc - 45]]) + J(3)
    P.tube(du, [11], hu("bowel_wall"), T["duodenum"])
    P.tube(du, [8.5], hu("fluid", 8), None)


def _paint_kidneys(build: _Build) -> None:
    """Kidneys: cortex, medulla, sinus fat, pelvis, ureter."""
    P, U, hu, zL, y_v = build.P, build.U, build.hu, build.zL, build.y_v
    kid = {}
    for s, side, zc in ((1, "left", zL["L1"] - 5 + U(-8, 8)), (-1, "right", zL["L1"] - 22 + U(-8, 8))):
        c = np.array([s * U(66, 76), y_v + U(0, 8), zc])
        semi = np.array([U(24, 30), U(22, 27), U(48, 60)])
        R = _rot("z", -s * U(20, 40)) @ _rot("y", s * U(8, 18))
        ek = _ellipsoid_sd(c, semi, R)
        medial = np.array([-s, -0.5, 0.0])
        medial /= np.linalg.norm(medial)
        hilum = c + medial * semi[0] * 1.05
        notch = _ellipsoid_sd(hilum, [12, 12, 20])
        lid = T[f"kidney_{side}"]
        P.paint(c - 70, c + 70, lambda x, y, z, sl, ek=ek, notch=notch: np.maximum(ek(x, y, z, sl), -notch(x, y, z, sl)), hu("kidney_cortex", 5), lid)
        P.paint(c - 70, c + 70, lambda x, y, z, sl, c=c, semi=semi, R=R, notch=notch: np.maximum(_ellipsoid_sd(c, semi - 7, R)(x, y, z, sl), -notch(x, y, z, sl)),
                hu("kidney_medulla", 5), lid)
        sinus_c = c + medial * semi[0] * 0.45
        P.paint(c - 70, c + 70, _ellipsoid_sd(sinus_c, [12, 12, semi[2] * 0.6], R), hu("sinus_fat", 8), lid)
        P.paint(c - 70, c + 70, _ellipsoid_sd(sinus_c + medial * 4, [6, 6, 10], R), hu("urine", 4), lid)
        ureter = [sinus_c + medial * 10, hilum + [0, 0, -25], np.array([s * 42, y_v - 5, zL["L4"]]), np.array([s * 45, y_v - 25, zL["L5"] - 80])]
        P.tube(ureter, [2.5], hu("urine", 4), None)
        kid[side] = c
    build.kid = kid


def _paint_pancreas(build: _Build) -> None:
    """Pancreas: head in the duodenal C-loop, tail at the splenic hilum."""
    P, U, J, hu, z_panc = build.P, build.U, build.J, build.hu, build.z_panc
    pan = np.array([[-42, -6, z_panc - 28], [-38, -12, z_panc - 8], [-12, -22, z_panc], [25, -16, z_panc + 8],
                    [62, 8, z_panc + 18], [80 + U(-5, 5), 26, z_panc + 24]]) + J(3)
    _, pan_pts, _ = P.tube(pan, [U(14, 18), 14, 10, U(10, 13), 9, 7], hu("pancreas"), T["pancreas"])
    build.pan_pts = pan_pts


def _paint_vessels(build: _Build) -> None:
    """Aorta, iliac vessels, IVC, left renal vein, portal and splenic veins, SMA, esophagus."""
    P, hu, zhi, y_v, z_r, z_l = build.P, build.hu, build.zhi, build.y_v, build.z_r, build.z_l
    zL, z_panc, kid, porta, pan_pts = build.zL, build.z_panc, build.kid, build.porta, build.pan_pts
    top = zhi
    aorta_pts = np.array([[22, y_v - 10, top], [18, y_v - 20, z_r], [12, y_v - 33, zL["L1"]], [8, y_v - 34, zL["L4"] - 8]])
    P.tube(aorta_pts, [13, 12, 11, 10], hu("blood", 8), T["aorta"])
    bif = aorta_pts[-1]
    for s, side in ((1, "left"), (-1, "right")):
        P.tube([bif, bif + [s * 25, 0, -40], bif + [s * 55, -5, -110]], [6.5, 6, 5.5], hu("blood", 8), T[f"iliac_artery_{side}"])
    ivc_pts = np.array([[-22, y_v - 30, zL["L4"] - 15], [-24, y_v - 32, zL["L1"]], [-24, y_v - 36, z_r - 40], [-16, y_v - 40, z_r - 5],
                        [-5, -20, z_r + 20]])
    P.tube(ivc_pts, [11, 12, 12, 13, 13], hu("ivc", 6), T["inferior_vena_cava"])
    for s, side in ((1, "left"), (-1, "right")):
        P.tube([ivc_pts[0], ivc_pts[0] + [s * 25 + 10, 5, -40], ivc_pts[0] + [s * 55 + 15, 0, -110]], [8, 7, 6.5], hu("ivc", 6), T[f"iliac_vena_{side}"])
    # left renal vein passing in front of the aorta (unlabelled: no TotalSegmentator class)
    P.tube([kid["left"] + [-20, -8, 0], [12, y_v - 42, zL["L1"]], [-20, y_v - 30, zL["L1"] - 5]], [4.5], hu("ivc", 6), None)
    confl = np.array([-10, -6, z_panc + 2])
    P.tube([confl, confl + [-15, 2, 30], porta], [7.5, 7, 6.5], hu("portal"), T["portal_vein_and_splenic_vein"])
    P.tube([pan_pts[-1] + [0, 10, -2], [40, 8, z_panc + 10], [5, -2, z_panc + 4], confl], [4.5], hu("portal"), T["portal_vein_and_splenic_vein"])
    P.tube([confl, confl + [-2, -10, -35], confl + [0, -12, -70]], [6, 5, 4], hu("portal"), T["portal_vein_and_splenic_vein"])
    P.tube([[12, y_v - 30, z_panc + 6], [10, -12, z_panc - 20], [8, -18, z_panc - 70]], [4, 3, 2.5], hu("blood", 8), None)  # SMA
    # esophagus down to the gastric cardia
    P.tube([[8, y_v - 12, top], [12, y_v - 18, z_l + 10], [35, 12, z_l - 15]], [8], hu("bowel_wall"), T["esophagus"])


def _paint_colon(build: _Build) -> None:
    """Colon from caecum to rectum (exact segment masks), stool texture and anterior gas pockets."""
    P, U, J, hu, rng, zL = build.P, build.U, build.J, build.hu, build.rng, build.zL
    shape_zyx, sp_xyz = build.shape_zyx, build.sp_xyz
    L5, L3, L2, L1 = zL["L5"], zL["L3"], zL["L2"], zL["L1"]
    segs = {
        "colon.ascending": np.array([[-72, -18, L5 - 25], [-84, 0, L5], [-88, 5, L3], [-84, 0, L1 - 30], [-72, -30, L1 - 52]]),
        "colon.transverse": np.array([[-72, -30, L1 - 52], [-40, -72, L2 - 20], [0, -82, L3 + U(-15, 10)], [42, -70, L2 - 8], [80, -12, L1 + 12]]),
        "colon.descending": np.array([[80, -12, L1 + 12], [92, 15, L1 - 15], [94, 20, L3], [86, 10, L5]]),
        "colon.sigmoid": np.array([[86, 10, L5], [65, -12, L5 - 35], [30, -40, L5 - 52], [0, -28, L5 - 45], [-18, 5, L5 - 60], [0, 38, L5 - 72]]),
        "colon.rectum": np.array([[0, 38, L5 - 72], [0, 52, L5 - 100], [0, 50, L5 - 140]]),
    }
    radii = {"colon.ascending": U(24, 30), "colon.transverse": U(20, 26), "colon.descending": U(17, 22),
             "colon.sigmoid": U(15, 20), "colon.rectum": U(20, 26)}
    # stool: mottled texture; gas: pockets in the non-dependent (anterior) half of the lumen
    texture = filtered_noise(shape_zyx, max(2.5 / sp_xyz.min(), 0.6), rng)
    colon_parts: dict[str, np.ndarray] = {}
    for key, pts in segs.items():
        pts = pts + np.vstack([J(3) * 0, *[J(7) for _ in range(len(pts) - 2)], J(3) * 0]) if len(pts) > 2 else pts
        r = radii[key]
        gas_frac = {"colon.ascending": 0.3, "colon.transverse": 0.6, "colon.descending": 0.7, "colon.sigmoid": 0.6, "colon.rectum": 0.5}[key]
        res, curve, _ = P.tube(pts, [r], hu("bowel_wall"), T["colon"])
        if res is not None:
            sl, w = res
            m = np.zeros(shape_zyx, bool)
            m[sl] = w >= 0.5
            colon_parts[key] = m
        n_pockets = max(1, int(len(curve) * gas_frac * 0.5))
        pockets = [(curve[int(rng.integers(len(curve)))] + [0, -r * U(0.2, 0.6), 0], r * U(0.5, 1.0)) for _ in range(n_pockets)]

        def content(x, y, z, sl, pockets=pockets):
            gas = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), bool)
            for c, rr in pockets:
                gas |= (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < rr * rr
            return np.where(gas, -1000.0, HU["stool"][0] + 70 * texture[sl]).astype(np.float32)
        P.tube(pts, [r - 3.0], content, None)
    build.texture, build.colon_parts, build.segs = texture, colon_parts, segs


def _paint_bladder(build: _Build) -> None:
    """Urinary bladder: wall, then urine."""
    P, U, J, hu, L5 = build.P, build.U, build.J, build.hu, build.L5
    bc_ = np.array([0, -30, L5 - 125]) + J(5)
    P.paint(bc_ - 60, bc_ + 60, _ellipsoid_sd(bc_, [U(40, 50), U(30, 38), U(30, 38)]), hu("gb_wall"), T["urinary_bladder"])
    P.paint(bc_ - 60, bc_ + 60, _ellipsoid_sd(bc_, [U(40, 50) - 3, 29, 29]), hu("urine", 4), None)


# The phantom's structures in painting order (later ones cover earlier ones where they overlap).
PAINTERS: tuple[tuple[str, Callable[[_Build], None]], ...] = (
    ("body", _paint_body),
    ("levels", _paint_levels),
    ("thorax", _paint_thorax),
    ("spine", _paint_spine),
    ("pelvis", _paint_pelvis),
    ("back_muscles", _paint_back_muscles),
    ("ribs", _paint_ribs),
    ("cavity_masks", _paint_cavity_masks),
    ("small_bowel", _paint_small_bowel),
    ("liver", _paint_liver),
    ("gallbladder_spleen", _paint_gallbladder_spleen),
    ("stomach_duodenum", _paint_stomach_duodenum),
    ("kidneys", _paint_kidneys),
    ("pancreas", _paint_pancreas),
    ("vessels", _paint_vessels),
    ("colon", _paint_colon),
    ("bladder", _paint_bladder),
)


def _finish(build: _Build) -> Anatomy:
    """Tissue texture and correlated scanner noise; the Anatomy with its exact colon segments."""
    b = build
    P, U, rng, texture, shape_zyx, colon_parts, segs = b.P, b.U, b.rng, b.texture, b.shape_zyx, b.colon_parts, b.segs
    sub, a0, b0, h, sp_xyz, origin, phase = b.sub, b.a0, b.b0, b.h, b.sp_xyz, b.origin, b.phase
    tex_lut = np.zeros(int(P.lab.max()) + 1, np.float32)
    tex_lut[0] = 6.0
    for name, lid in T.items():
        if lid < len(tex_lut):
            key = next((k for k in TEXTURE if name.startswith(k)), None)
            tex_lut[lid] = TEXTURE.get(key, 4.0) if key else 4.0
    img = P.hu
    img += texture * tex_lut[P.lab]
    noise_std = float(U(11, 20))
    img += filtered_noise(shape_zyx, NOISE_SIGMA_VOX, rng) * noise_std
    img = np.clip(img, -1024.0, 3071.0).astype(np.float32)

    names = {v: k for k, v in T.items()}
    colon_lab = P.lab == T["colon"]
    subregions = {k: v & colon_lab for k, v in colon_parts.items()}
    for k in segs:
        subregions.setdefault(k, np.zeros(shape_zyx, bool))
    info: dict[str, Any] = {"generator": "phantom", "contrast_phase": sub, "noise_std": noise_std,
                            "body_mm": [round(a0 * 2, 1), round(b0 * 2, 1)], "level_height_mm": round(h, 1)}
    return Anatomy(img, P.lab, names, tuple(float(s) for s in sp_xyz), tuple(float(o) for o in origin),
                   (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), phase, "phantom", subregions, info)


def make_phantom(rng: np.random.Generator, size: tuple[int, int, int] = (128, 128, 128),
                 spacing: tuple[float, float, float] = (3.0, 3.0, 3.0), phase: str = "non_contrast") -> Anatomy:
    """A random abdominal phantom. size/spacing in SimpleITK (x, y, z) order; phase
    'non_contrast' or 'contrast' (portal-venous, or arterial in 30 % of contrast scans)."""
    if phase not in ("non_contrast", "contrast"):
        raise ValueError(f"phase must be non_contrast or contrast, got {phase!r}")
    build = _Build(rng, size, spacing, phase)
    for _, paint in PAINTERS:
        paint(build)
    return _finish(build)
