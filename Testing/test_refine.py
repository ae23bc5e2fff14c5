"""Image-based mask refinement (malenia.infer.refine; `malenia segment --refine`)."""

import numpy as np

from malenia.infer.refine import RefineParams, refine_labels
from segment_helpers import dice, sphere_ct, tiny_trained_model

SPACING = (2.0, 1.0, 1.0)


def _ball(shape, centre, radius_mm, spacing=SPACING):
    grid = np.indices(shape).astype(float)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing))
    return d2 <= radius_mm**2


def _scan(seed=0):
    """A 60 HU organ with a round -5 HU cyst (radius 9 mm), a heterogeneous 45 HU tumour beside it
    (radius 8 mm, mottled: SD 20 HU) and a second, bright lesion touching the cyst's box."""
    rng = np.random.default_rng(seed)
    shape = (24, 64, 96)
    hu = rng.normal(60, 6, shape).astype(np.float32)
    cyst = _ball(shape, (12, 32, 24), 9.0)
    tumour = _ball(shape, (12, 32, 70), 8.0)
    hu[cyst] = rng.normal(-5, 6, int(cyst.sum()))
    hu[tumour] = rng.normal(45, 20, int(tumour.sum()))
    return hu, cyst, tumour


def test_a_cyst_outlined_off_centre_is_redrawn_on_its_border():
    hu, cyst, _ = _scan()
    labels = np.zeros(hu.shape, np.uint16)
    labels[_ball(hu.shape, (12, 34, 27), 6.5)] = 3  # too small and 3-4 mm off: what a coarse model grid gives
    before = dice(labels == 3, cyst)
    out, changed = refine_labels(hu, labels, SPACING, [3])
    assert changed == [3]
    assert before < 0.75 and dice(out == 3, cyst) > 0.9
    assert labels.max() == 3 and (labels == 3).sum() < (out == 3).sum()  # the input is left as it was


def test_a_lesion_no_clearer_than_its_own_mottling_keeps_the_networks_mask():
    hu, _, tumour = _scan()
    labels = np.zeros(hu.shape, np.uint16)
    labels[_ball(hu.shape, (12, 32, 72), 6.0)] = 1  # contrast 15 HU against an SD of 20: no border in the image
    out, changed = refine_labels(hu, labels, SPACING, [1])
    assert changed == [] and np.array_equal(out, labels)


def test_refinement_never_takes_another_lesions_voxels_nor_moves_far():
    hu, cyst, _ = _scan()
    labels = np.zeros(hu.shape, np.uint16)
    labels[_ball(hu.shape, (12, 32, 24), 7.0)] = 1
    labels[(cyst & (np.indices(hu.shape)[2] >= 28))] = 2  # another lesion claims the cyst's right part
    out, changed = refine_labels(hu, labels, SPACING, [1])
    assert changed == [1]
    assert np.array_equal(out == 2, labels == 2)
    grown = (out == 1) & (labels != 1)
    zz, yy, xx = np.nonzero(grown)
    assert ((yy - 32) ** 2 + (xx - 24) ** 2 + ((zz - 12) * 2.0) ** 2).max() <= (7.0 + RefineParams().grow_mm + 1.0) ** 2


def test_a_redrawn_mask_far_from_the_predicted_volume_is_not_trusted():
    hu, cyst, _ = _scan()
    labels = np.zeros(hu.shape, np.uint16)
    labels[_ball(hu.shape, (12, 32, 24), 9.0)] = 1
    out, changed = refine_labels(hu, labels, SPACING, [1], RefineParams(max_volume_ratio=1.0001))
    assert changed == [] or dice(out == 1, labels == 1) > 0.99


def test_segment_with_refine_reports_what_it_redrew_and_keeps_the_lesions(tmp_path_factory):
    from malenia.infer.pipeline import Segmenter, SegmentOptions, load_model

    image, ball = sphere_ct()
    model = load_model(tiny_trained_model(tmp_path_factory))
    plain = Segmenter(model, SegmentOptions(device="cpu", threshold=0.05, min_volume_mm3=0.0)).segment(image)
    refined = Segmenter(model, SegmentOptions(device="cpu", threshold=0.05, min_volume_mm3=0.0, refine=True)).segment(image)
    assert plain.extra["refine"] is None and plain.extra["options"]["refine"] is False
    assert refined.extra["refine"]["lesions"] == len(refined.lesions) == len(plain.lesions)
    assert 0 <= refined.extra["refine"]["redrawn"] <= len(refined.lesions)
