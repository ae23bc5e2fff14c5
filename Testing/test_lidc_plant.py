"""Real LIDC nodules planted in real lungs: blending, placement, the patient split, `malenia synth --nodules`."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from malenia.cli import main
from malenia.data.dataset import read_case, read_dataset
from malenia.data.importers.lidc import find_pairs, nodule_case
from malenia.data.synthesis.nodules import RAMP_MM, nodule_patch
from malenia.data.synthesis.plant import Canvas, Nodule, prepare_base, try_plant

# whole nodules (not cut by their crop, not touching the chest wall): two train, one val, two test patients
PICKS = ["LIDC-IDRI-0036_R_2", "LIDC-IDRI-0039_R_5", "LIDC-IDRI-0046_R_6", "LIDC-IDRI-0048_R_3", "LIDC-IDRI-0056_R_1"]


@pytest.fixture(scope="module")
def lidc_dir(tmp_path_factory, shared_data: Path) -> Path:
    src = shared_data / "lidc-nodules"
    root = tmp_path_factory.mktemp("lidc")
    for sub in ("image", "mask"):
        (root / sub).mkdir()
        for cid in PICKS:
            os.symlink(src / sub / f"{cid}.nii.gz", root / sub / f"{cid}.nii.gz")
    rows = [r for r in csv.DictReader((src / "nodules.csv").open()) if f"{r['patient_id']}_R_{r['nodule_id']}" in PICKS]
    with (root / "nodules.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def nodules(lidc_dir: Path) -> list[Nodule]:
    out = []
    for pair in find_pairs(lidc_dir).pairs:
        case = nodule_case(pair)
        lesion = case.report.lesions[0]
        out.append(Nodule(case.case_id, case.image, case.lesions, {a: [d.id for d in v] for a, v in lesion.attributes.items()},
                          lesion.extra))
    return out


@pytest.fixture(scope="module")
def totalseg(shared_data: Path):
    return prepare_base(str(shared_data / "ct" / "totalseg-example"), spacing_xyz=(1.5, 1.5, 1.5))


def test_nodule_patch_keeps_volume_and_blends_only_near_the_mask(nodules):
    n = nodules[0]
    crop_ml = (sitk.GetArrayViewFromImage(n.mask) > 0).sum() * np.prod(n.image.GetSpacing()) / 1000
    patch = nodule_patch(n.image, n.mask, (1.5, 1.5, 1.5), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    patch_ml = patch.mask.sum() * 1.5**3 / 1000
    assert abs(patch_ml - crop_ml) / crop_ml < 0.35
    assert np.all(patch.weight[patch.mask] == 1.0)
    dist = ndi.distance_transform_edt(~patch.mask, sampling=(1.5, 1.5, 1.5))
    assert patch.weight[dist > RAMP_MM + 1.5].max() == 0.0  # nothing of the crop far from the nodule
    ring = (dist > 0) & (dist <= RAMP_MM)
    assert 0 < patch.weight[ring].mean() < 1  # a ramp, not a step
    assert patch.hu[patch.mask].mean() > patch.hu[dist > RAMP_MM].mean() + 200  # a nodule denser than its lung


def test_planted_nodules_lie_in_one_lobe_away_from_each_other_without_a_seam(nodules, totalseg):
    base = totalseg.base
    canvas = Canvas(base.hu.copy(), np.zeros(base.hu.shape, np.uint16), [])
    rng = np.random.default_rng(0)
    placed = []
    for n in nodules[:3]:
        where = try_plant(canvas, totalseg, n, rng)
        if where is not None:
            canvas.reports.append(where)
            placed.append(where)
    assert len(placed) >= 2
    changed = canvas.hu != base.hu
    for k, where in enumerate(placed, start=1):
        mask = canvas.lesions == k
        assert mask.any() and where["location_id"].startswith("location.lung.")
        parts = np.unique(base.lung[mask])
        assert len(parts) == 1 and base.parts[int(parts[0])].location_id == where["location_id"]
    # changes stay within the nodules and their blending ramp
    near = ndi.distance_transform_edt(canvas.lesions == 0, sampling=base.spacing_zyx) <= RAMP_MM + 1.5
    assert not (changed & ~near).any()
    # no seam: at the outer edge of the changed region, the step to the untouched neighbour is small
    edge = changed & ~ndi.binary_erosion(changed)
    assert np.abs(canvas.hu[edge] - base.hu[edge]).mean() < 60
    assert np.abs(canvas.hu[canvas.lesions > 0] - base.hu[canvas.lesions > 0]).mean() > 200  # the nodules do show


# 1.5 mm: finer than lung1's 5 mm slices, the grid's last slice lies past the scan's last slice centre; filled
# with air, it joined both lungs to the air around the body and no lung was found.
@pytest.mark.parametrize("spacing", [(1.5, 1.5, 5.0), (1.5, 1.5, 1.5)])
def test_threshold_lungs_of_lung1_keep_its_tumour_away(shared_data: Path, nodules, spacing):
    lung1 = prepare_base(str(shared_data / "ct" / "pyradiomics-lung1"), spacing_xyz=spacing)
    base = lung1.base
    vol = {p.name: (base.lung == k).sum() * np.prod(base.spacing_zyx) / 1e6 for k, p in base.parts.items()}
    assert set(vol) == {"lung_left", "lung_right"} and all(0.5 < v < 4.0 for v in vol.values()), vol
    assert base.lesions.max() == 1 and len(lung1.occupied) == 1
    assert np.isin(base.lung[base.lesions > 0], list(base.parts)).mean() > 0.5  # the tumour lies in a lung
    canvas = Canvas(base.hu.copy(), base.lesions.astype(np.uint16), list(lung1.occupied), [None])
    where = try_plant(canvas, lung1, nodules[3], np.random.default_rng(1))
    assert where is not None and where["location_id"] is None and where["side"] in ("left", "right")
    tumour, nodule = np.argwhere(base.lesions == 1).mean(0), np.argwhere(canvas.lesions == 2).mean(0)
    assert np.linalg.norm((tumour - nodule) * base.spacing_zyx) > 10.0


def test_synth_nodules_keeps_patient_splits_apart(lidc_dir: Path, shared_data: Path, tmp_path: Path, capsys):
    out = tmp_path / "planted"
    base = str(shared_data / "ct" / "totalseg-example")
    assert main(["synth", "--nodules", str(lidc_dir), "--base", base, "--spacing", "1.5", "--lesions-per-case", "2",
                 "--out", str(out), "--quiet"]) == 0
    index = read_dataset(out)
    assert set(index.split) == {"train", "val", "test"}
    planted = 0
    for split, cases in index.split.items():
        for cid in cases:
            case = read_case(out, cid)
            for lesion in case.report.lesions:
                lidc = lesion.extra["lidc"]
                assert lidc["split"] == split and lidc["patient_id"] in index.extra["patients"][split]
                assert lesion.disease == "lung_tumor" and lesion.attributes["location"][0].id.startswith("location.lung.")
                assert lesion.attributes["enhancement"][0].id == "enhancement.non_contrast"
                planted += 1
            assert sitk.GetArrayViewFromImage(case.lesions).max() == len(case.report.lesions)
    assert planted == len(PICKS) - len(index.extra["not_placed"]) >= 4
    assert not set(index.extra["patients"]["train"]) & set(index.extra["patients"]["test"])
    # refusals: one line, exit 3
    assert main(["synth", "--nodules", str(lidc_dir), "--diseases", "lung_tumor", "--base", base, "--out", str(tmp_path / "x")]) == 3
    assert main(["synth", "--base", base, "--out", str(tmp_path / "y")]) == 3
    assert "--diseases and --cases are required" in capsys.readouterr().err
    assert main(["synth", "--nodules", str(lidc_dir), "--host-floor", "--base", base, "--out", str(tmp_path / "z")]) == 3
    assert "--host-floor does not apply to --nodules" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "xyz")


def test_phantom_lung_bases_take_nodules_in_their_lobes(lidc_dir: Path, nodules, tmp_path: Path, monkeypatch):
    """`--base phantom` with --nodules: freshly drawn bodies whose lobe labels name the nodule's location."""
    import malenia.data.synthesis.plant as plant
    from malenia.data.synthesis.lung_base import phantom_lung_base

    a, b = (phantom_lung_base(np.random.default_rng(s)) for s in (0, 1))
    assert a.hu.shape == (128, 128, 128) and np.allclose(a.spacing_zyx, 3.0)
    assert {p.location_id for p in a.parts.values()} == {f"location.lung.{r}" for r in
                                                          ("left_upper", "left_lower", "right_upper", "right_middle", "right_lower")}
    assert not np.array_equal(a.lung > 0, b.lung > 0)  # another body, not one lung reused
    assert 100 < (a.lung > 0).sum() * 27 / 1000 < 3000  # ml of lung: the bases of both lungs
    prepared = prepare_base(a)
    canvas = Canvas(a.hu.copy(), np.zeros(a.hu.shape, np.uint16), [])
    where = try_plant(canvas, prepared, nodules[0], np.random.default_rng(2))
    assert where is not None and where["location_id"].startswith("location.lung.") and where["base"] == "phantom"
    assert a.parts[int(np.unique(a.lung[canvas.lesions == 1])[0])].location_id == where["location_id"]

    monkeypatch.setattr(plant, "PHANTOM_BASES", 1)  # one body keeps the test short
    out = tmp_path / "ph"
    assert main(["synth", "--nodules", str(lidc_dir), "--base", "phantom", "--nodule-split", "train", "--out", str(out),
                 "--quiet"]) == 0
    index = read_dataset(out)
    assert set(index.split) == {"train"} and index.extra["bases"] == ["phantom_00"]
    case = read_case(out, index.cases[0])
    assert case.report.extra["base"] == "phantom_00" and case.report.lesions[0].extra["lidc"]["split"] == "train"
