"""Training patch sampler: lesion-centred oversampling, augmentation, determinism, lesion lists."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from malenia.data.dataset import Case, CaseReport, DatasetIndex, Description, LesionReport, write_case, write_dataset_index
from malenia.data.preprocess import Preprocessor
from malenia.errors import InputError
from malenia.knowledge.vocabulary import Vocabulary
from malenia.data.sampler import AugmentConfig, LesionPatchDataset, augment_config, collate_patches, instance_masks

torch.set_num_threads(1)
PATCH = (24, 24, 24)
PRE = Preprocessor((2.0, 2.0, 2.0), clip=(-200, 300), normalization="window")
NO_AUG = None
LESIONS = {  # case -> (centre z, y, x in voxels, radius, disease, location id)
    "c0": [((20, 20, 38), 5, "kidney_cyst", "location.kidney.left"),
           ((12, 30, 12), 3, "kidney_tumor", "location.kidney.right"),
           ((30, 14, 20), 4, "lung_tumor", "location.lung.right_middle")],
    "c1": [((14, 34, 30), 4, "liver_tumor", "location.liver.left_lobe")],
    "c2": [],
}


def desc(vid: str) -> Description:
    return Description(f"text of {vid}", vid)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    size = (40, 48, 56)
    zz, yy, xx = np.mgrid[: size[0], : size[1], : size[2]]
    for case_id, lesions in LESIONS.items():
        hu = np.full(size, -1000, np.int16)
        hu[:, 4:-4, 4:-4] = 40
        labels = np.zeros(size, np.uint8)
        reports = []
        for k, ((cz, cy, cx), r, disease, location) in enumerate(lesions, start=1):
            ball = (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            labels[ball] = k
            hu[ball] = 100 + 20 * k
            reports.append(LesionReport(k, disease, {"location": [desc(location)], "shape": [desc("shape.round")],
                                                      "specific_features": [desc("specific_features.none"), Description("free text")]}))
        image = sitk.GetImageFromArray(hu)
        image.SetSpacing((2.0, 2.0, 2.0))
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # stored RAS: the sampler works in LPS
        lesion_image = sitk.GetImageFromArray(labels)
        lesion_image.CopyInformation(image)
        write_case(out, Case(case_id, image, lesion_image, CaseReport(case_id, reports, desc("enhancement.contrast"))))
    write_dataset_index(out, DatasetIndex("toy", list(LESIONS), {"train": list(LESIONS), "small": ["c1"]}))
    return out


def make(dataset: Path, **kwargs) -> LesionPatchDataset:
    options = dict(split="train", patch_size=PATCH, preprocessor=PRE, samples_per_epoch=60, augment=NO_AUG, seed=3)
    options.update(kwargs)
    return LesionPatchDataset(dataset, **options)


def test_items_and_lesion_lists(dataset: Path):
    data = make(dataset)
    assert len(data) == 60 and len(data.cases) == 3
    for i in range(len(data)):
        item = data[i]
        assert item["image"].shape == (1, *PATCH) and item["image"].dtype == torch.float32
        assert item["instances"].shape == PATCH and item["instances"].dtype == torch.int64
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        present = sorted(set(item["instances"].unique().tolist()) - {0})
        assert [les["label"] for les in item["lesions"]] == present
        truth = {k: v for k, v in enumerate(LESIONS[item["case_id"]], start=1)}
        for les in item["lesions"]:
            assert les["disease"] == truth[les["label"]][2]
            assert les["attributes"]["location"] == [truth[les["label"]][3]]
            assert les["attributes"]["specific_features"] == ["specific_features.none", None]  # free text: id None
            assert les["texts"]["specific_features"][1] == "free text"
            assert les["voxels"] == int((item["instances"] == les["label"]).sum())
        if item["lesion_centred"]:
            assert item["target_label"] in present
        assert item["enhancement"] == "enhancement.contrast"
    batch = collate_patches([data[i] for i in range(4)])
    assert batch["image"].shape == (4, 1, *PATCH) and batch["instances"].shape == (4, *PATCH)
    assert len(batch["lesions"]) == 4 and batch["lesion_centred"].dtype == torch.bool
    masks = instance_masks(batch["instances"][0], batch["lesions"][0])
    assert masks.shape == (len(batch["lesions"][0]), *PATCH)
    assert all(int(m.sum()) == les["voxels"] for m, les in zip(masks, batch["lesions"][0]))


def test_lesion_centred_fraction_and_placement(dataset: Path):
    data = make(dataset, samples_per_epoch=300)
    items = [data[i] for i in range(300)]
    centred = [it for it in items if it["lesion_centred"]]
    assert 0.58 < len(centred) / 300 < 0.75  # 2/3 by default
    assert all(it["lesions"] for it in centred)
    # lesion-balanced: the small kidney tumour (label 2 of c0) is drawn about as often as the others
    targets = [(it["case_id"], it["target_label"]) for it in centred]
    assert targets.count(("c0", 2)) > 0.1 * len(centred)
    assert {it["case_id"] for it in items if not it["lesion_centred"]} == {"c0", "c1", "c2"}
    none = make(dataset, lesion_fraction=0.0, samples_per_epoch=20)
    assert not any(none[i]["lesion_centred"] for i in range(20))
    # with the patch inside the volume, nothing is padded: no air column beyond the body wall
    prepared_shape = np.array(data.cases[0].image.shape)
    assert all(0 <= c - p // 2 and c - p // 2 + p <= s for it in items for c, p, s in zip(it["centre"], PATCH, prepared_shape))


def test_same_seed_same_patches_and_epochs_differ(dataset: Path):
    aug = AugmentConfig(affine_prob=0.5, intensity_prob=0.5)
    a, b = make(dataset, augment=aug), make(dataset, augment=aug)
    for i in (0, 7, 33):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["instances"], y["instances"])
        assert x["lesions"] == y["lesions"]
    c = make(dataset, augment=aug, seed=4)
    assert any(not torch.equal(a[i]["image"], c[i]["image"]) for i in range(5))
    first = a[5]["image"].clone()
    a.set_epoch(1)
    assert not torch.equal(first, a[5]["image"])
    # DataLoader workers see the same items as the main process
    loader = torch.utils.data.DataLoader(b, batch_size=4, num_workers=2, collate_fn=collate_patches)
    batch = next(iter(loader))
    assert torch.equal(batch["image"][3], b[3]["image"])


def test_disease_filter_erases_other_lesions(dataset: Path):
    data = make(dataset, diseases={"kidney_cyst", "liver_tumor"}, samples_per_epoch=80)
    seen = set()
    for i in range(80):
        item = data[i]
        for les in item["lesions"]:
            seen.add(les["disease"])
        if item["case_id"] == "c0":
            assert not (set(item["instances"].unique().tolist()) & {2, 3})
    assert seen == {"kidney_cyst", "liver_tumor"}
    # the erased lesions' voxels are background in the cache
    assert not np.isin(data.cases[0].instances, [2, 3]).any()
    assert np.isin(data.cases[0].instances, [1]).any()


def test_left_right_flip_swaps_side_names(dataset: Path):
    plain = make(dataset, augment=AugmentConfig(affine_prob=0.0, intensity_prob=0.0), samples_per_epoch=80)
    flipped = make(dataset, augment=AugmentConfig(affine_prob=0.0, intensity_prob=0.0, flip_axes=(2,), flip_prob=1.0),
                   samples_per_epoch=80)
    checked = 0
    for i in range(80):
        p, f = plain[i], flipped[i]
        labels = {les["label"] for les in p["lesions"]}
        middle_lobe = p["case_id"] == "c0" and 3 in labels
        if middle_lobe:  # no mirror name for the right middle lobe: not flipped
            assert torch.equal(p["image"], f["image"])
            continue
        assert torch.equal(torch.flip(p["image"], dims=[3]), f["image"])
        for a, b in zip(p["lesions"], f["lesions"]):
            before, after = a["attributes"]["location"][0], b["attributes"]["location"][0]
            assert after == before.replace("left", "#").replace("right", "left").replace("#", "right")
            assert b["texts"]["location"] == [Vocabulary.load().text(after)]  # the swapped id's own wording
            checked += 1
    assert checked > 10


def test_affine_augmentation_keeps_lesions(dataset: Path):
    plain = make(dataset, samples_per_epoch=40)
    aug = make(dataset, augment=AugmentConfig(affine_prob=1.0, intensity_prob=0.0, rotate_deg=(15, 5, 5)), samples_per_epoch=40)
    compared = 0
    for i in range(40):
        p, a = plain[i], aug[i]
        assert a["image"].shape == (1, *PATCH)
        assert set(a["instances"].unique().tolist()) <= {0, 1, 2, 3}  # nearest neighbour: no new label values
        if p["lesion_centred"]:
            assert a["target_label"] in [les["label"] for les in a["lesions"]]
            before = {les["label"]: les["voxels"] for les in p["lesions"]}
            after = {les["label"]: les["voxels"] for les in a["lesions"]}
            target = p["target_label"]
            assert 0.4 * before[target] < after[target] < 2.0 * before[target]  # scale 0.85-1.15 per axis
            compared += 1
        assert not torch.equal(p["image"], a["image"])
    assert compared > 10


def _target_balls(dataset: Path, aug: dict, n: int = 40):
    """(voxels before, voxels after, extent per axis after) of each lesion-centred patch's target ball of
    250 voxels or more that the augmented patch holds whole, without and with the augmentation `aug` (no
    rotation, no intensity change)."""
    plain = make(dataset, samples_per_epoch=n)
    augmented = make(dataset, samples_per_epoch=n, augment=augment_config(
        {"affine_prob": 1.0, "intensity_prob": 0.0, "rotate_deg": [0, 0, 0], **aug}))
    out = []
    for i in range(n):
        p, a = plain[i], augmented[i]
        t = p["target_label"]
        before = int((p["instances"] == t).sum()) if p["lesion_centred"] else 0
        idx = np.argwhere(a["instances"].numpy() == t)
        inside = len(idx) and idx.min() > 0 and (idx.max(0) < np.array(PATCH) - 1).all()  # not cut by the patch
        if before >= 250 and inside:
            out.append((before, len(idx), np.ptp(idx, axis=0)))
    return out


def test_isotropic_scaling_shrinks_a_ball_alike_on_every_axis(dataset: Path):
    """scale > 1 reads a larger region: at 1.5 a ball keeps 1/1.5 of its diameter (1/3.4 of its voxels). With
    factors drawn from 0.7-1.5, one per patch keeps it a ball (extents within the 2 voxels nearest-neighbour
    sampling costs), three per patch (the default) stretch it."""
    fixed = _target_balls(dataset, {"scale": [1.5, 1.5], "scale_isotropic": True})
    assert len(fixed) >= 3 and all(1.5 ** 3 * 0.7 < b / a < 1.5 ** 3 * 1.4 for b, a, _ in fixed)
    iso = _target_balls(dataset, {"scale": [0.7, 1.5], "scale_isotropic": True})
    per_axis = _target_balls(dataset, {"scale": [0.7, 1.5]})
    assert len(iso) >= 3 and max(int(np.ptp(e)) for _, _, e in iso) <= 2
    assert max(int(np.ptp(e)) for _, _, e in per_axis) >= 4


@pytest.mark.parametrize("changes, message", [
    ({"scael": [1, 2]}, "unknown augmentation field(s) ['scael']"),
    ({"scale": [1.2]}, "scale needs 2 numbers"),
    ({"scale": [1.5, 0.7]}, "0 < low <= high"),
    ({"affine_prob": 2}, "affine_prob must be between 0 and 1"),
    ({"flip_axes": [3]}, "flip_axes must be among 0, 1, 2"),
])
def test_bad_augmentation_changes_are_refused_by_name(changes, message):
    with pytest.raises(InputError, match=re.escape(message)):
        augment_config(changes)


def test_volume_smaller_than_patch_is_padded(dataset: Path):
    data = make(dataset, split="small", patch_size=(32, 64, 64), samples_per_epoch=6)
    for i in range(6):
        item = data[i]
        assert item["image"].shape == (1, 32, 64, 64)
        assert float(item["image"][0, :, 0, 0].max()) == pytest.approx(PRE.background_value)  # air padding
        assert [les["label"] for les in item["lesions"]] == [1]  # the whole case fits: its lesion is always in


def test_lesions_are_seen_off_centre(dataset: Path):
    """A lesion's position within its patches varies (no centre bias), and can be pinned for debugging."""

    def lesion_offsets(data):
        out = []
        for i in range(120):
            it = data[i]
            if not it["lesion_centred"]:
                continue
            index = [les["label"] for les in it["lesions"]].index(it["target_label"])
            mask = instance_masks(it["instances"], it["lesions"])[index].numpy()
            centroid = np.argwhere(mask).mean(axis=0)
            out.append(np.abs(centroid - (np.array(PATCH) - 1) / 2).max())
        return np.array(out)

    spread = lesion_offsets(make(dataset, samples_per_epoch=120, augment=None))
    pinned = lesion_offsets(make(dataset, samples_per_epoch=120, augment=None, lesion_offset=0.0))
    assert np.median(spread) > np.median(pinned) + 2


# --- hard negatives (malenia mine) ------------------------------------------------------------------------

def _negatives(centres: dict[str, list], shape=(40, 48, 56), spacing=(2.0, 2.0, 2.0), missed=None):
    from malenia.data.hard_negatives import CaseNegatives, HardNegatives

    missed = missed or {}
    return HardNegatives(spacing, {cid: CaseNegatives(shape, np.array(c, np.int64).reshape(-1, 3), [9] * len(c), [0.9] * len(c),
                                                      missed.get(cid, [])) for cid, c in centres.items()})


def test_background_patches_sit_on_mined_false_positives(dataset: Path):
    mined = _negatives({"c1": [(20, 10, 45)], "c2": [(5, 40, 8), (35, 24, 28)]})
    data = make(dataset, lesion_fraction=0.0, hard_negatives=mined, hard_negative_fraction=1.0, samples_per_epoch=40)
    half = np.array(PATCH) // 2
    offsets = set()
    for i in range(len(data)):
        item = data[i]
        assert item["case_id"] in ("c1", "c2") and not item["lesion_centred"]
        start = np.array(item["centre"]) - half
        inside = [c for c in mined.cases[item["case_id"]].centres if np.all((c >= start) & (c < start + np.array(PATCH)))]
        assert inside, f"patch {i} of {item['case_id']} holds none of its mined false positives"
        offsets.add(tuple(inside[0] - start))
    assert len(offsets) > 10  # placed off-centre, like lesions, not always in the same spot


def test_a_zero_share_of_hard_negatives_samples_as_without_them(dataset: Path):
    mined = _negatives({"c1": [(20, 10, 45)]})
    plain, with_zero = make(dataset), make(dataset, hard_negatives=mined, hard_negative_fraction=0.0)
    with_half = make(dataset, hard_negatives=mined, hard_negative_fraction=0.5)
    keys = lambda d: [(d[i]["case_id"], d[i]["centre"]) for i in range(len(d))]  # noqa: E731
    assert keys(plain) == keys(with_zero) != keys(with_half)


@pytest.mark.parametrize("shape,spacing,message", [((40, 48, 50), (2.0, 2.0, 2.0), "grid"), ((40, 48, 56), (2.5, 2.5, 2.5), "mm grid")])
def test_hard_negatives_of_another_grid_are_refused(dataset: Path, shape, spacing, message):
    from malenia.errors import InputError

    with pytest.raises(InputError, match=message):
        make(dataset, hard_negatives=_negatives({"c1": [(20, 10, 45)]}, shape, spacing))


def test_lesion_patches_are_drawn_among_the_missed_lesions_by_their_share(dataset: Path):
    mined = _negatives({"c0": [], "c1": []}, missed={"c0": [2]})  # c0's small kidney tumour was missed
    targets = lambda d: [(d[i]["case_id"], d[i]["target_label"]) for i in range(len(d)) if d[i]["lesion_centred"]]  # noqa: E731
    only = targets(make(dataset, lesion_fraction=1.0, hard_negatives=mined, missed_fraction=1.0, samples_per_epoch=30))
    assert only and set(only) == {("c0", 2)}
    half = targets(make(dataset, lesion_fraction=1.0, hard_negatives=mined, missed_fraction=0.5, samples_per_epoch=200))
    share = sum(t == ("c0", 2) for t in half) / len(half)
    assert 0.5 < share < 0.75  # half drawn among the missed, and 1 in 6 of the rest (2 cases, c0: 1 of 3 lesions)
    plain = targets(make(dataset, lesion_fraction=1.0, samples_per_epoch=200))
    assert sum(t == ("c0", 2) for t in plain) / len(plain) < 0.3
    # a share without any missed lesion on file samples exactly as before
    assert targets(make(dataset, lesion_fraction=1.0, hard_negatives=_negatives({"c1": []}), missed_fraction=0.5,
                         samples_per_epoch=40)) == targets(make(dataset, lesion_fraction=1.0, samples_per_epoch=40))


def test_missed_lesions_of_diseases_left_out_of_training_are_not_drawn(dataset: Path):
    mined = _negatives({"c0": []}, missed={"c0": [2]})
    data = make(dataset, lesion_fraction=1.0, hard_negatives=mined, missed_fraction=1.0, samples_per_epoch=20,
                diseases={"kidney_cyst", "lung_tumor", "liver_tumor"})  # the kidney tumour is erased
    assert {data[i]["target_label"] for i in range(len(data))} <= {1, 3}  # c0's cyst and lung tumour, c1's liver tumour
    with pytest.raises(ValueError, match="missed_fraction"):
        make(dataset, missed_fraction=1.2)
