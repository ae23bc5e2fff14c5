"""Lesion measurements against hand-computed values on constructed shapes and an independent check on a real lesion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.infer.measurements import (
    axial_axis,
    feret_2d,
    longest_perpendicular_chord,
    measure_lesions,
)


def _image(arr_zyx: np.ndarray, spacing, origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in direction])
    return img


def test_box_volume_centroid_axes_and_hu():
    # A 20 x 6 x 4 voxel box at x 10..29, y 5..10, z 3..6 on a 0.5 x 0.8 x 2.5 mm grid.
    sx, sy, sz = 0.5, 0.8, 2.5
    lab = np.zeros((12, 20, 40), np.uint8)
    lab[3:7, 5:11, 10:30] = 1
    ct = np.broadcast_to(np.arange(40, dtype=np.int16)[None, None, :] * 10 - 100, lab.shape).copy()  # HU = 10 x - 100
    origin = (-20.0, 30.0, -100.0)
    labels, image = _image(lab, (sx, sy, sz), origin), _image(ct, (sx, sy, sz), origin)
    m = measure_lesions(labels, image)[1]

    assert m.voxel_count == 20 * 6 * 4
    assert m.volume_ml == pytest.approx(20 * 6 * 4 * sx * sy * sz / 1000)
    # Centroid index (19.5, 7.5, 4.5); identity direction: LPS = origin + index * spacing; RAS flips x and y.
    lps = (origin[0] + 19.5 * sx, origin[1] + 7.5 * sy, origin[2] + 4.5 * sz)
    assert m.centroid_ras_mm == pytest.approx((-lps[0], -lps[1], lps[2]))
    # Long axis: the diagonal of the 10 mm x 4.8 mm rectangle; short axis: the longest chord
    # perpendicular to the diagonal runs between the two long sides: H * D / W.
    W, H = 20 * sx, 6 * sy
    D = math.hypot(W, H)
    assert m.long_axis_mm == pytest.approx(D, abs=1e-9)
    assert m.short_axis_mm == pytest.approx(H * D / W, abs=1e-9)
    assert m.axial_axis == 2 and 3 <= m.recist_slice <= 6
    # End points lie on the RECIST slice and are the reported distances apart.
    a, b = np.array(m.long_axis_ras_mm)
    assert np.linalg.norm(a - b) == pytest.approx(m.long_axis_mm)
    assert a[2] == pytest.approx(origin[2] + m.recist_slice * sz)
    c, d = np.array(m.short_axis_ras_mm)
    assert np.linalg.norm(c - d) == pytest.approx(m.short_axis_mm)
    assert abs(np.dot((a - b) / np.linalg.norm(a - b), (c - d) / np.linalg.norm(c - d))) < 1e-9
    # HU = 10 x - 100 over x = 10..29: mean 10 * 19.5 - 100; std = 10 * std(10..29).
    assert m.hu_mean == pytest.approx(95.0)
    assert m.hu_std == pytest.approx(10 * np.std(np.arange(10, 30)))


def test_ellipse_axes_and_ellipsoid_volume():
    # Ellipsoid with semi-axes 20 (x), 10 (y), 6 (z) mm on a 0.4 x 0.4 x 1 mm grid.
    a, b, c = 20.0, 10.0, 6.0
    sp = (0.4, 0.4, 1.0)
    z, y, x = np.mgrid[-10:11, -30:31, -55:56]
    lab = (((x * sp[0] / a) ** 2 + (y * sp[1] / b) ** 2 + (z * sp[2] / c) ** 2) <= 1).astype(np.uint8)
    m = measure_lesions(_image(lab, sp))[1]
    # Pixel squares reach half a pixel beyond the centres: within one pixel of the true diameter.
    assert m.long_axis_mm == pytest.approx(2 * a, abs=sp[0] * 1.5)
    assert m.short_axis_mm == pytest.approx(2 * b, abs=sp[0] * 1.5)
    assert m.recist_slice == 10 and m.max_area_slice == 10  # the equator (z index 10)
    assert m.volume_ml == pytest.approx(4 / 3 * math.pi * a * b * c / 1000, rel=0.03)
    assert m.hu_mean is None and m.hu_std is None
    # The long axis runs along x.
    p, q = np.array(m.long_axis_ras_mm)
    d = (p - q) / np.linalg.norm(p - q)
    assert abs(d[0]) > 0.999


def test_flipped_direction_centroid_is_ras():
    # Direction diag(-1, -1, 1): index x grows towards patient right, so RAS x grows with it.
    lab = np.zeros((5, 10, 10), np.uint8)
    lab[2, 4, 6] = 1
    origin = (100.0, 50.0, -10.0)
    img = _image(lab, (2.0, 3.0, 4.0), origin, (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    m = measure_lesions(img)[1]
    lps = (100.0 - 6 * 2.0, 50.0 - 4 * 3.0, -10.0 + 2 * 4.0)
    assert m.centroid_ras_mm == pytest.approx((-lps[0], -lps[1], lps[2]))
    # A single voxel measures its 2 x 3 mm pixel square: the diagonal D and, perpendicular to it,
    # the chord between the two long sides, 2 * D / 3.
    assert m.long_axis_mm == pytest.approx(math.hypot(2.0, 3.0))
    assert m.short_axis_mm == pytest.approx(2.0 * math.hypot(2.0, 3.0) / 3.0)
    assert m.voxel_count == 1 and m.volume_ml == pytest.approx(24 / 1000)


def test_axial_axis_follows_direction():
    img = _image(np.zeros((4, 5, 6), np.uint8), (1, 1, 1))
    assert axial_axis(img) == 2
    # Sagittal stack: index axis 0 points superior.
    img.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))
    assert axial_axis(img) == 0


def test_concave_chord_is_inside_the_lesion():
    # An L shape: the perpendicular chord must not bridge the notch.
    m = np.zeros((40, 40), bool)
    m[0:30, 0:5] = True
    m[25:30, 0:30] = True
    length, a, b = feret_2d(m, (1.0, 1.0))
    assert length == pytest.approx(math.hypot(30, 30))
    short, p, q = longest_perpendicular_chord(m, (1.0, 1.0), a, b)
    # Brute force: sample every line perpendicular to a-b densely and keep the longest inside run.
    assert short == pytest.approx(_brute_chord(m, (1.0, 1.0), a, b), abs=0.05)
    assert short < length


def _brute_chord(mask, spacing, a, b, step=0.01):
    sp = np.asarray(spacing)
    u = (b - a) / np.linalg.norm(b - a)
    v = np.array([-u[1], u[0]])
    corners = np.array([[i, j] for i in (-0.5, mask.shape[0] - 0.5) for j in (-0.5, mask.shape[1] - 0.5)]) * sp
    s_range = corners @ u
    t_range = corners @ v
    ts = np.arange(t_range.min(), t_range.max(), step)
    best = 0.0
    for s in np.arange(s_range.min(), s_range.max(), step * 5):
        pts = s * u + ts[:, None] * v
        idx = np.floor(pts / sp + 0.5).astype(int)
        ok = (idx >= 0).all(1) & (idx[:, 0] < mask.shape[0]) & (idx[:, 1] < mask.shape[1])
        inside = np.zeros(len(ts), bool)
        inside[ok] = mask[idx[ok, 0], idx[ok, 1]]
        edges = np.diff(np.concatenate(([0], inside.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if len(starts):
            best = max(best, float((ends - starts).max()) * step)
    return best


def test_real_lung_lesion_against_independent_checks(shared_data):
    folder = shared_data / "ct" / "pyradiomics-lung1"
    labels = sitk.ReadImage(str(folder / "lung1_label.nrrd"))
    image = sitk.ReadImage(str(folder / "lung1_image.nrrd"))
    m = measure_lesions(labels, image)[1]

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    cx, cy, cz = stats.GetCentroid(1)
    assert m.centroid_ras_mm == pytest.approx((-cx, -cy, cz))
    assert m.volume_ml == pytest.approx(stats.GetPhysicalSize(1) / 1000)
    assert m.voxel_count == stats.GetNumberOfPixels(1)
    arr, hu = sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(image)
    assert m.hu_mean == pytest.approx(float(hu[arr == 1].mean()))

    # Long axis: brute force over all pixel corners of every slice.
    sp = labels.GetSpacing()[:2]
    best, best_k = 0.0, None
    for k in np.flatnonzero((arr == 1).any(axis=(1, 2))):
        sl = (arr[k] == 1).T  # [x, y]
        pts = np.argwhere(sl).astype(float)
        corners = np.concatenate([pts + o for o in ([-.5, -.5], [-.5, .5], [.5, -.5], [.5, .5])]) * sp
        d = np.sqrt(((corners[:, None] - corners[None]) ** 2).sum(-1)).max()
        if d > best + 1e-9:
            best, best_k = d, k
    assert m.long_axis_mm == pytest.approx(best)
    assert m.recist_slice == best_k
    # Short axis: dense sampling of perpendicular lines on that slice.
    sl = (arr[best_k] == 1).T
    (i0, j0), (i1, j1) = np.argwhere(sl).min(0), np.argwhere(sl).max(0)
    sl = sl[i0:i1 + 1, j0:j1 + 1]
    _, a, b = feret_2d(sl, sp)
    assert m.short_axis_mm == pytest.approx(_brute_chord(sl, sp, a, b, step=0.02), abs=0.1)
    assert 0 < m.short_axis_mm <= m.long_axis_mm
    areas = (arr == 1).sum(axis=(1, 2))
    assert m.max_area_slice == int(np.argmax(areas))
