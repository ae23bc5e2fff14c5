"""Metrics equal hand-computed values on constructed masks."""

import numpy as np
import pytest

from malenia.data.dataset import Description
from malenia.evaluate.metrics import (
    AttributeCounts,
    DetectionCounts,
    dice_score,
    contrast_band,
    match_instances,
    recall_by_contrast,
    recall_by_polarity,
    recall_by_size,
    size_band,
    sphere_diameter_mm,
    surface_dice,
)


def test_dice_hand_computed():
    gt = np.zeros((8, 8, 8), bool)
    gt[2:4, 2:4, 2:5] = True  # 12 voxels
    pred = np.zeros_like(gt)
    pred[2:4, 2:4, 2:4] = True  # 8 voxels, all inside gt
    assert dice_score(pred, gt) == pytest.approx(2 * 8 / (8 + 12))
    pred2 = np.zeros_like(gt)
    pred2[6:8, 6:8, 6:8] = True
    assert dice_score(pred2, gt) == 0.0
    assert dice_score(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # nothing to find, nothing found
    assert dice_score(np.zeros_like(gt), gt) == 0.0


def test_nsd_single_voxels_with_anisotropic_spacing():
    gt = np.zeros((12, 12, 12), bool)
    gt[5, 5, 5] = True
    spacing = (2.5, 1.0, 1.0)  # (z, y, x) mm
    along_z = np.zeros_like(gt)
    along_z[7, 5, 5] = True  # 2 voxels along z = 5 mm
    assert surface_dice(along_z, gt, spacing, tolerance_mm=4.9) == 0.0
    assert surface_dice(along_z, gt, spacing, tolerance_mm=5.0) == pytest.approx(1.0)
    along_x = np.zeros_like(gt)
    along_x[5, 5, 7] = True  # 2 voxels along x = 2 mm
    assert surface_dice(along_x, gt, spacing, tolerance_mm=2.0) == pytest.approx(1.0)
    assert surface_dice(along_x, gt, spacing, tolerance_mm=1.9) == 0.0
    # One predicted voxel on the lesion, one 10 mm away: surface points within 2 mm = 1 (pred) + 1 (gt) of 3.
    mixed = np.zeros_like(gt)
    mixed[5, 5, 5] = True
    mixed[9, 5, 5] = True
    assert surface_dice(mixed, gt, spacing, tolerance_mm=2.0) == pytest.approx(2 / 3)
    assert surface_dice(np.zeros_like(gt), gt, spacing) == 0.0
    assert surface_dice(np.zeros_like(gt), np.zeros_like(gt), spacing) == 1.0


def test_detection_by_iou_matching():
    gt = np.zeros((20, 20, 20), np.int32)
    gt[0:4, 0:4, 0:4] = 1  # 64 voxels
    gt[10:14, 10:14, 10:14] = 2  # 64 voxels
    gt[16:18, 0:2, 0:2] = 3  # 8 voxels, missed
    pred = np.zeros_like(gt)
    pred[0:4, 0:4, 0:2] = 5  # 32 voxels inside lesion 1: IoU 0.5
    pred[13:17, 13:17, 13:17] = 7  # 1 voxel overlap with lesion 2: IoU 1/127 < 0.1
    pred[0:2, 18:20, 18:20] = 9  # false positive
    m = match_instances(pred, gt, iou_threshold=0.1)
    assert m.gt_labels == [1, 2, 3] and m.pred_labels == [5, 7, 9]
    assert m.gt_voxels == {1: 64, 2: 64, 3: 8}
    assert match_instances(np.zeros_like(gt), gt).gt_voxels == {1: 64, 2: 64, 3: 8}  # also with nothing predicted
    assert m.pred_voxels == {5: 32, 7: 64, 9: 8}
    assert match_instances(pred, np.zeros_like(gt)).pred_voxels == {5: 32, 7: 64, 9: 8}  # also with no lesion
    assert [(g, p) for g, p, _ in m.pairs] == [(1, 5)]
    assert m.pairs[0][2] == pytest.approx(0.5)
    assert m.pred_for(1) == 5 and m.pred_for(2) is None
    counts = DetectionCounts()
    counts.add(m)
    assert counts.recall == pytest.approx(1 / 3) and counts.precision == pytest.approx(1 / 3)
    # A looser threshold accepts the sliver overlap of lesion 2.
    assert match_instances(pred, gt, iou_threshold=0.005).hits == 2


def test_detection_hungarian_is_one_to_one():
    gt = np.zeros((10, 10, 10), np.int32)
    gt[0:4, 0:4, 0:4] = 1
    gt[0:4, 0:4, 4:8] = 2
    pred = np.zeros_like(gt)
    pred[0:4, 0:4, 0:8] = 1  # one prediction covering both lesions: can match only one
    m = match_instances(pred, gt)
    assert m.hits == 1


def test_attribute_precision_recall_hand_computed():
    counts = AttributeCounts()
    gt = ["location.a", "location.a", "location.b", "location.b"]
    pr = ["location.a", "location.b", "location.b", "location.b"]
    for g, p in zip(gt, pr):
        counts.add(
            predicted={"location": [p], "specific_features": ["specific_features.x"]},
            reported={"location": [Description("t", g)],
                      "specific_features": [Description("x", "specific_features.x"), Description("y", "specific_features.y")]},
        )
    s = counts.summary()
    # class a: tp 1 of 1 predicted, of 2 reported; class b: tp 2 of 3 predicted, of 2 reported.
    assert s["location"]["precision"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert s["location"]["recall"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert s["location"]["accuracy"] == pytest.approx(3 / 4)
    assert s["location"]["lesions"] == 4
    # specific features: x always predicted and reported (precision 1); y reported, never predicted.
    assert s["specific_features"]["precision"] == pytest.approx(1.0)
    assert s["specific_features"]["recall"] == pytest.approx((1.0 + 0.0) / 2)
    # aspects the reports leave empty are not scored
    assert s["shape"] == {"lesions": 0, "precision": None, "recall": None, "accuracy": None}


def test_free_text_descriptions_compare_by_text():
    counts = AttributeCounts()
    counts.add(predicted={"surface": ["text:lobulated margin"]},
               reported={"surface": [Description("Lobulated margin ", None)]})
    assert counts.summary()["surface"]["accuracy"] == 1.0


def test_size_bands_by_equivalent_sphere_diameter():
    assert sphere_diameter_mm(4 / 3 * np.pi * 5.0**3) == pytest.approx(10.0)
    assert [size_band(d) for d in (0.0, 9.99, 10.0, 19.9, 20.0, 80.0)] == \
        ["<10 mm", "<10 mm", "10-20 mm", "10-20 mm", ">=20 mm", ">=20 mm"]
    bands = recall_by_size([(6.0, False), (8.0, True), (9.0, False), (25.0, True)])
    assert [b["band"] for b in bands] == ["<10 mm", "10-20 mm", ">=20 mm"]
    assert [(b["lesions"], b["detected"]) for b in bands] == [(3, 1), (0, 0), (1, 1)]
    assert bands[0]["recall"] == pytest.approx(1 / 3) and bands[1]["recall"] is None and bands[2]["recall"] == 1.0


def test_contrast_bands_by_absolute_contrast():
    assert [contrast_band(c) for c in (0.0, -19.9, 19.9, 20.0, -59.0, 60.0, -300.0)] == \
        ["<20 HU", "<20 HU", "<20 HU", "20-60 HU", "20-60 HU", ">=60 HU", ">=60 HU"]
    bands = recall_by_contrast([(5.0, False), (-40.0, True), (45.0, False), (-120.0, True)])
    assert [(b["band"], b["lesions"], b["detected"]) for b in bands] == \
        [("<20 HU", 1, 0), ("20-60 HU", 2, 1), (">=60 HU", 1, 1)]
    assert bands[0]["recall"] == 0.0 and bands[1]["recall"] == 0.5


def test_polarity_bands_split_darker_from_brighter_lesions():
    """The same |contrast| band holds lesions darker and brighter than their host; the signed bands tell them apart."""
    pairs = [(-20.0, True), (-75.0, True), (19.9, False), (-19.9, True), (20.0, False), (45.0, False), (300.0, True)]
    bands = recall_by_polarity(pairs)
    assert [(b["band"], b["lesions"], b["detected"]) for b in bands] == \
        [("darker", 2, 2), ("similar", 2, 1), ("brighter", 3, 1)]
    assert [b["lesions"] for b in recall_by_polarity(pairs, edge=50.0)] == [1, 5, 1]


def test_detection_by_phase_counts_each_lesion_under_its_scans_phase():
    from types import SimpleNamespace

    from malenia.evaluate.evaluate import _phase_lines, detection_by_phase, scan_phase

    assert scan_phase(SimpleNamespace(enhancement=Description("contrast-enhanced CT scan", "enhancement.contrast"))) \
        == "contrast"
    assert scan_phase(SimpleNamespace(enhancement=Description("portal venous phase"))) == "portal venous phase"
    assert scan_phase(SimpleNamespace(enhancement=None)) is None
    stone, cyst = "kidney_stone", "liver_cyst"
    cases = [{"phase": "non_contrast", "lesions": [{"disease": stone, "detected": True}, {"disease": stone, "detected": False}]},
             {"phase": "contrast", "lesions": [{"disease": stone, "detected": False}, {"disease": cyst, "detected": True}]},
             {"phase": None, "lesions": [{"disease": cyst, "detected": False}]}]
    table = detection_by_phase(cases)
    assert set(table) == {"all", stone, cyst}
    rows = {t: [(b["phase"], b["lesions"], b["detected"]) for b in r] for t, r in table.items()}
    assert rows["all"] == [("contrast", 2, 1), ("non_contrast", 2, 1), ("unknown", 1, 0)]
    assert rows[stone] == [("contrast", 1, 0), ("non_contrast", 2, 1), ("unknown", 0, 0)]
    assert rows[cyst] == [("contrast", 1, 1), ("non_contrast", 0, 0), ("unknown", 1, 0)]
    assert table[stone][1]["recall"] == 0.5 and table[stone][2]["recall"] is None
    md = "\n".join(_phase_lines({"by_phase": table}))
    assert "| kidney_stone | 0 / 1 | 1 / 2 | 0 / 0 |" in md and "| **all** | 1 / 2 | 1 / 2 | 0 / 1 |" in md


def test_detection_by_base_counts_found_lesions_and_false_positives_per_base_ct():
    from types import SimpleNamespace

    from malenia.evaluate.evaluate import _base_lines, detection_by_base, scan_base

    assert scan_base(SimpleNamespace(extra={"synthesis": {"base": "phantom"}})) == "phantom"
    assert scan_base(SimpleNamespace(extra={"synthesis": {"base": "shared/data/ct/totalseg-example"}})) == "totalseg-example"
    assert scan_base(SimpleNamespace(extra={"base": "../shared/data/ct/pyradiomics-lung1"})) == "pyradiomics-lung1"
    assert scan_base(SimpleNamespace(extra={})) is None

    def case(base, reported, predicted, detected):
        return {"base": base, "lesions_reported": reported, "lesions_predicted": predicted, "lesions_detected": detected}

    cases = [case("phantom", 2, 3, 1), case("phantom", 1, 0, 0), case("totalseg-example", 2, 2, 2), case(None, 1, 2, 1)]
    rows = {r["base"]: r for r in detection_by_base(cases)}
    assert list(rows) == ["phantom", "totalseg-example", "unknown"]
    assert (rows["phantom"]["cases"], rows["phantom"]["detected"], rows["phantom"]["lesions"]) == (2, 1, 3)
    assert rows["phantom"]["false_positives"] == 2 and rows["phantom"]["false_positives_per_case"] == 1.0
    assert rows["totalseg-example"]["false_positives"] == 0 and rows["totalseg-example"]["recall"] == 1.0
    assert rows["unknown"]["predicted"] == 2
    md = "\n".join(_base_lines({"by_base": detection_by_base(cases)}))
    assert "| phantom | 2 | 1 / 3 | 2 | 1.00 |" in md
    assert detection_by_base([case(None, 1, 1, 1)]) == [] and _base_lines({}) == []  # no base anywhere: no table


def test_lesion_contrast_is_core_mean_minus_shell_median():
    from malenia.infer.lesion_features import lesion_contrasts

    zz, yy, xx = np.mgrid[:40, :40, :60]
    hu = np.full((40, 40, 60), 40.0, np.float32)
    labels = np.zeros(hu.shape, np.int32)
    ball = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 15) ** 2 <= 36  # radius 6 voxels of 1 x 1 x 2 mm
    labels[ball], hu[ball] = 1, -10.0  # a fluid-like lesion 50 HU under its host
    faint = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 45) ** 2 <= 25
    labels[faint], hu[faint] = 3, 52.0  # 12 HU over the host
    hu[:, :, 28:32] = 400.0  # a bony plate between them, outside both shells (>= 8 mm away)
    out = lesion_contrasts(hu, labels, (1.0, 1.0, 2.0))
    assert set(out) == {1, 3}
    assert out[1] == pytest.approx(-50.0) and out[3] == pytest.approx(12.0)
    assert lesion_contrasts(hu, labels, (1.0, 1.0, 2.0), ids=[3, 7]) == {3: pytest.approx(12.0)}  # 7: not in the map
    assert contrast_band(out[1]) == "20-60 HU" and contrast_band(out[3]) == "<20 HU"
