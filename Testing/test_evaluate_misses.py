"""Where `malenia evaluate` says a missed lesion was lost: each step of the post-processing, on label maps built
so that every reference lesion is lost at a different one."""

from types import SimpleNamespace

import numpy as np
import pytest

from malenia.evaluate.misses import STAGES, markdown, summarise, where_lost
from malenia.infer.pipeline import StageTrace
from malenia.infer.postprocess import LesionMap


def _trace(components: np.ndarray, probability: np.ndarray, sized, verified, region=None, shape=None):
    n = int(components.max())
    voxels = np.bincount(components.ravel(), minlength=n + 1).astype(np.int64)
    lm = LesionMap(0.5, components, components, n, voxels, 1.0)
    pm = SimpleNamespace(fine_probability=lambda: probability, region=region, shape=shape or components.shape)
    return StageTrace(pm, lm, sized=list(sized), verified=list(verified))


@pytest.fixture
def scene():
    gt = np.zeros((8, 40, 40), np.int32)
    comp = np.zeros_like(gt)
    prob = np.zeros(gt.shape, np.float32)
    boxes = {1: (0, 5), 2: (6, 11), 3: (12, 17), 4: (18, 23), 5: (24, 29), 6: (30, 35)}
    for g, (a, b) in boxes.items():
        gt[2:6, a:b, 2:8] = g
    comp[2:6, 0:5, 2:8] = 1  # lesion 1: found
    prob[2:6, 6:11, 2:8] = 0.2  # lesion 2: the network's probability stays under the threshold
    comp[2:3, 12:13, 2:3] = 3  # lesion 3: one voxel of it marked
    comp[2:6, 18:23, 2:8] = 4  # lesion 4: marked whole, then removed as too small
    comp[2:6, 24:29, 2:8] = 5  # lesion 5: marked whole, removed by the verifier
    comp[2:6, 30:35, 2:8] = 6  # lesion 6: reported, but paired with another lesion
    prob[comp > 0] = 0.9
    return gt, comp, prob


def test_every_step_that_can_lose_a_lesion_is_named(scene):
    gt, comp, prob = scene
    trace = _trace(comp, prob, sized=[1, 3, 5, 6], verified=[1, 3, 6])
    lost = where_lost(gt, trace, detected={1}, iou_threshold=0.1)
    assert [lost[g]["lost_at"] for g in range(1, 7)] == [None, "silent", "outline", "min_volume", "verifier", "matching"]
    assert lost[2]["peak"] == pytest.approx(0.2) and lost[2]["best_iou"] == 0.0
    assert lost[3]["best_iou"] == pytest.approx(1 / 120, abs=1e-4)  # 1 voxel of 120, the component is that voxel
    assert lost[1]["best_iou"] == 1.0 and lost[4]["peak"] == pytest.approx(0.9)
    # the evaluation passes the lesions' voxel counts it already has: the same answer without counting again
    counts = {g: int((gt == g).sum()) for g in range(1, 7)}
    assert where_lost(gt, trace, detected={1}, iou_threshold=0.1, gt_voxels=counts) == lost


def test_the_stage_follows_the_post_processing_not_the_lesion(scene):
    """The same marked lesion, kept by every step, counts as `matching`; no component at all, as `silent`."""
    gt, comp, prob = scene
    every = _trace(comp, prob, sized=range(1, 7), verified=range(1, 7))
    assert where_lost(gt, every, detected=set(), iou_threshold=0.1)[4]["lost_at"] == "matching"
    empty = _trace(np.zeros_like(comp), np.zeros_like(prob), sized=[], verified=[])
    assert {v["lost_at"] for v in where_lost(gt, empty, detected=set(), iou_threshold=0.1).values()} == {"silent"}
    # a stricter detection IoU turns the one-voxel overlap and the others alike into outlines only below it
    strict = where_lost(gt, every, detected=set(), iou_threshold=0.5)
    assert strict[3]["lost_at"] == "outline" and strict[5]["lost_at"] == "matching"


def test_probability_of_a_roi_crop_lies_in_place_on_the_whole_grid():
    comp = np.zeros((4, 6, 8), np.int32)
    crop = np.full((2, 3, 4), 0.7, np.float32)
    trace = _trace(comp, crop, [], [], region=((4, 8), (3, 6), (1, 3)), shape=comp.shape)
    full = trace.probability()
    assert full.shape == comp.shape and full[1:3, 3:6, 4:8].min() == pytest.approx(0.7)
    assert full.sum() == pytest.approx(0.7 * crop.size)


def test_summary_counts_and_table(scene):
    gt, comp, prob = scene
    lost = where_lost(gt, _trace(comp, prob, [1, 3, 5, 6], [1, 3, 6]), {1}, 0.1)
    records = [{"disease": "liver_tumor" if g < 4 else "kidney_cyst", **lost[g]} for g in lost]
    s = summarise(records)
    assert s["all"]["lesions"] == 6 and s["all"]["missed"] == 5
    assert all(s["all"][stage] == 1 for stage in STAGES)
    assert s["per_type"]["liver_tumor"] == {"lesions": 3, "missed": 2, "silent": 1, "outline": 1, "min_volume": 0,
                                            "verifier": 0, "matching": 0}
    table = "\n".join(markdown(s))
    assert "| **all** | 6 | 5 | 1 | 1 | 1 | 1 | 1 |" in table and "| kidney_cyst | 3 | 3 |" in table
    assert summarise([{"disease": "x", "detected": False}]) is None and markdown(None) == []
