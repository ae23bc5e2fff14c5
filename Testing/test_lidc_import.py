"""LIDC nodule import: ratings -> vocabulary, the patient split, and `malenia import lidc` on real crops.

The crops are read from ../shared/data/lidc-nodules; a small LIDC folder is assembled in tmp_path
(links to real crops, plus broken pairs made here) so that every refusal path runs.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.cli import main
from malenia.data.dataset import read_case, read_dataset
from malenia.data.importers.lidc import find_pairs, patient_split
from malenia.data.importers.lidc_ratings import map_ratings
from malenia.errors import InputError

VOCAB = json.loads((Path(__file__).resolve().parent.parent / "Resources/knowledge/vocabulary.json").read_text())
LUNG_OK = {e["id"]: e.get("organ") or e.get("organs") for entries in VOCAB["aspects"].values() for e in entries}
PICKS = ["LIDC-IDRI-0036_R_2", "LIDC-IDRI-0046_R_6", "LIDC-IDRI-0048_R_3"]  # a train, a val and a test patient


def ratings(**codes) -> dict[str, str]:
    base = dict(Sphericity=5, Lobulation=1, Spiculation=1, Margin=5, Texture=5, Calcification=6, InternalStructure=1)
    base.update(codes)
    return {f"{k}_value": str(v) for k, v in base.items()}


@pytest.mark.parametrize("codes, expected", [
    ({}, {"shape": ["shape.round"], "surface": ["surface.well_defined"], "density": ["density.lung.soft_tissue"],
          "density_variation": [], "specific_features": ["specific_features.none"]}),
    ({"Sphericity": 3, "Margin": 2}, {"shape": ["shape.oval"], "surface": ["surface.ill_defined"]}),
    ({"Lobulation": 4, "Spiculation": 4}, {"shape": ["shape.lobulated"], "surface": ["surface.spiculated"],
                                           "specific_features": ["specific_features.lobulation"]}),
    ({"Lobulation": 3, "Sphericity": 2}, {"shape": ["shape.irregular"]}),
    ({"Texture": 1}, {"density": ["density.lung.ground_glass"]}),
    ({"Texture": 3}, {"density": ["density.lung.mixed"], "density_variation": ["density_variation.heterogeneous"]}),
    ({"Calcification": 3}, {"density": ["density.lung.dense"], "specific_features": ["specific_features.calcification"]}),
    ({"Calcification": 1}, {"density": ["density.lung.soft_tissue"], "density_variation": ["density_variation.heterogeneous"]}),
    ({"InternalStructure": 4}, {"specific_features": ["specific_features.cavitation"]}),
    ({"InternalStructure": 3}, {"specific_features": ["specific_features.none"]}),
])
def test_rating_rules(codes, expected):
    ids, notes = map_ratings(ratings(**codes))
    for aspect, want in expected.items():
        assert ids[aspect] == want, aspect
    assert bool(notes) == (codes.get("InternalStructure") == 3)  # fat is dropped with a note


def test_every_rating_combination_gives_lung_vocabulary_ids():
    names = ["Sphericity", "Lobulation", "Spiculation", "Margin", "Texture", "Calcification", "InternalStructure"]
    seen = set()
    for i, combo in enumerate(itertools.product(*[range(1, 6)] * 5)):  # calcification and structure cycle along
        codes = (*combo, i % 6 + 1, i % 4 + 1)
        ids, _ = map_ratings({f"{n}_value": str(v) for n, v in zip(names, codes)})
        for aspect, values in ids.items():
            for vid in values:
                organs = LUNG_OK[vid]  # KeyError: not a vocabulary id
                assert organs in (None, "lung") or "lung" in organs, vid
                assert vid.split(".")[0] == aspect
                seen.add(vid)
    assert {"shape.round", "shape.oval", "shape.lobulated", "shape.irregular", "density.lung.mixed"} <= seen
    with pytest.raises(InputError, match="outside the LIDC range"):
        map_ratings(ratings(Margin=7))


def test_patient_split_is_a_fixed_hash_and_splits_patients(shared_data):
    for pid in ("LIDC-IDRI-0001", "LIDC-IDRI-0456"):
        u = int(hashlib.sha256(f"malenia-lidc-split/1:{pid}".encode()).hexdigest()[:8], 16) / 2**32
        assert patient_split(pid) == ("train" if u < 0.7 else "val" if u < 0.8 else "test")
    rows = list(csv.DictReader((shared_data / "lidc-nodules" / "nodules.csv").open()))
    patients = sorted({r["patient_id"] for r in rows})
    counts = {s: sum(patient_split(p) == s for p in patients) for s in ("train", "val", "test")}
    assert abs(counts["train"] / len(patients) - 0.7) < 0.08 and abs(counts["test"] / len(patients) - 0.2) < 0.08
    assert counts["val"] > 0


def test_all_usable_pairs_found_and_unpaired_rows_reported(shared_data):
    scan = find_pairs(shared_data / "lidc-nodules")
    assert len(scan.pairs) == 794
    assert sorted(scan.problems) == [f"LIDC-IDRI-1002_R_{i}: row in nodules.csv without image and mask files" for i in (1, 2)]


@pytest.fixture()
def lidc_dir(tmp_path: Path, shared_data: Path) -> Path:
    """Three real nodules, plus: a mask on another grid, an empty mask, a file without a row."""
    src = shared_data / "lidc-nodules"
    root = tmp_path / "lidc"
    for sub in ("image", "mask"):
        (root / sub).mkdir(parents=True)
        for cid in PICKS:
            os.symlink(src / sub / f"{cid}.nii.gz", root / sub / f"{cid}.nii.gz")
    rows = {r["patient_id"] + "_R_" + r["nodule_id"]: r for r in csv.DictReader((src / "nodules.csv").open())}
    img = sitk.ReadImage(str(src / "image" / f"{PICKS[0]}.nii.gz"))
    for name, mask in (("LIDC-IDRI-9001_R_1", sitk.Image([5, 5, 5], sitk.sitkUInt8)),  # another grid
                       ("LIDC-IDRI-9002_R_1", sitk.Image(img.GetSize(), sitk.sitkUInt8))):  # empty
        sitk.WriteImage(img, str(root / "image" / f"{name}.nii.gz"))
        mask.CopyInformation(img) if mask.GetSize() == img.GetSize() else None
        sitk.WriteImage(mask, str(root / "mask" / f"{name}.nii.gz"))
        rows[name] = dict(rows[PICKS[0]], patient_id=name.split("_R_")[0], nodule_id="1")
    sitk.WriteImage(img, str(root / "image" / "LIDC-IDRI-9003_R_1.nii.gz"))  # no mask, no row
    with (root / "nodules.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[PICKS[0]]))
        w.writeheader()
        w.writerows(rows[k] for k in [*PICKS, "LIDC-IDRI-9001_R_1", "LIDC-IDRI-9002_R_1"])
    return root


def test_import_cli_writes_cases_and_reports_bad_pairs(lidc_dir: Path, tmp_path: Path, shared_data: Path, capsys):
    out = tmp_path / "ds"
    assert main(["import", "lidc", str(lidc_dir), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "9001_R_1: mask grid differs" in err and "9002_R_1: empty mask" in err and "9003_R_1.nii.gz: image without mask" in err
    index = read_dataset(out)
    assert sorted(index.cases) == sorted(PICKS)
    assert {s: v for s, v in index.split.items()} == {"train": [PICKS[0]], "val": [PICKS[1]], "test": [PICKS[2]]}
    case = read_case(out, PICKS[2])
    lesion = case.report.lesions[0]
    assert lesion.disease == "lung_tumor" and lesion.extra["patient_id"] == "LIDC-IDRI-0048"
    assert lesion.extra["malignancy"] in range(1, 6) and lesion.extra["truncated"] == []
    assert [d.id for d in lesion.attributes["shape"]] and not lesion.attributes["location"]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "lidc-nodules/mask" / f"{PICKS[2]}.nii.gz"))) > 0
    assert np.array_equal(sitk.GetArrayFromImage(case.lesions) > 0, mask)
    assert main(["import", "lidc", str(lidc_dir), "--out", str(out), "--quiet"]) != 0  # exists, no --overwrite


def test_import_keeps_one_split_and_the_nodules_that_plant(tmp_path: Path, shared_data: Path, capsys):
    """`--split` and `--plantable` select what `malenia synth --nodules` would plant from a split: a compact
    dataset (say the training nodules for a GPU machine's payload), the selection recorded; none left is an error."""
    from malenia.data.importers.lidc import unplantable

    picks = {"LIDC-IDRI-0007_R_1": "train", "LIDC-IDRI-0006_R_4": "train (cut by its crop)",
             "LIDC-IDRI-0043_R_2": "train (attached)", "LIDC-IDRI-0001_R_1": "val"}
    src, root = shared_data / "lidc-nodules", tmp_path / "lidc"
    for sub in ("image", "mask"):
        (root / sub).mkdir(parents=True)
        for cid in picks:
            os.symlink(src / sub / f"{cid}.nii.gz", root / sub / f"{cid}.nii.gz")
    rows = [r for r in csv.DictReader((src / "nodules.csv").open()) if r["patient_id"] + "_R_" + r["nodule_id"] in picks]
    with (root / "nodules.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    everything = tmp_path / "all"
    assert main(["import", "lidc", str(root), "--out", str(everything), "--quiet"]) == 0
    reasons = {cid: unplantable(read_case(everything, cid).report.lesions[0].extra) for cid in picks}
    assert [cid for cid, why in reasons.items() if why is None] == ["LIDC-IDRI-0007_R_1", "LIDC-IDRI-0001_R_1"]
    assert "cut by its crop" in reasons["LIDC-IDRI-0006_R_4"] and "attached" in reasons["LIDC-IDRI-0043_R_2"]

    train = tmp_path / "train"
    assert main(["import", "lidc", str(root), "--out", str(train), "--split", "train", "--plantable", "--quiet"]) == 0
    index = read_dataset(train)
    assert index.cases == ["LIDC-IDRI-0007_R_1"] and index.split == {"train": ["LIDC-IDRI-0007_R_1"]}
    assert index.extra["selection"] == {"split": "train", "plantable": True}
    assert read_dataset(everything).extra.get("selection") is None
    assert main(["import", "lidc", str(root), "--out", str(tmp_path / "val"), "--split", "val", "--quiet"]) == 0
    assert read_dataset(tmp_path / "val").cases == ["LIDC-IDRI-0001_R_1"]
    capsys.readouterr()
    assert main(["import", "lidc", str(root), "--out", str(tmp_path / "none"), "--split", "test", "--quiet"]) == 3
    assert "no usable nodule of the test split" in capsys.readouterr().err and not (tmp_path / "none").exists()
