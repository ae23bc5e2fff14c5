"""MSD and KiTS23 importers on small fake folders that copy the official names and label values."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from malenia.cli import main
from malenia.data.dataset import CaseReport, Description, LesionReport, read_case, read_dataset

VOCAB = json.loads((Path(__file__).resolve().parent.parent / "Resources/knowledge/vocabulary.json").read_text())
TEXT = {e["id"]: e["text"] for entries in VOCAB["aspects"].values() for e in entries}

# KiTS-style affine: array axes (slice, row, column); the column runs toward the patient's left.
KITS_AFFINE = np.array([[0, 0, -0.8, 0], [0, -0.8, 0, 0], [-3.0, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
MSD_AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])  # MSD files: (x, y, z) with an RAS-style affine


def body(shape) -> np.ndarray:
    """Soft tissue (40 HU) in an elliptic body section, air outside."""
    img = np.full(shape, -1000, dtype=np.int16)
    a, b = np.ogrid[: shape[1], : shape[2]]
    inside = ((a - shape[1] / 2 + 0.5) / (shape[1] * 0.45)) ** 2 + ((b - shape[2] / 2 + 0.5) / (shape[2] * 0.45)) ** 2 <= 1
    img[:, inside] = 40
    return img


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def report(case_id: str, lesions: list[tuple[str, dict[str, str]]], enhancement: str | None = None) -> dict:
    """A CaseReport as `malenia import annotations` writes it."""
    out = []
    for k, (disease, attrs) in enumerate(lesions, start=1):
        out.append(LesionReport(k, disease, {a: [Description(TEXT[i], i)] for a, i in attrs.items()}))
    enh = Description(TEXT[enhancement], enhancement) if enhancement else None
    return CaseReport(case_id, out, enh, source="workbook").to_json()


# ---------------------------------------------------------------------------------------------
# KiTS23


@pytest.fixture()
def kits(tmp_path: Path) -> Path:
    root = tmp_path / "kits23"
    shape = (24, 24, 32)  # (slices, rows, columns) as in the KiTS23 files
    img = body(shape)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[6:18, 8:16, 4:11] = 1  # kidney on the patient's right (small column index)
    seg[6:18, 8:16, 21:28] = 1  # kidney on the patient's left
    seg[8:12, 9:13, 22:26] = 2  # tumour, left kidney: 64 voxels
    seg[8:11, 10:13, 5:8] = 3  # cyst, right kidney: 27 voxels
    seg[14:16, 9:11, 5:7] = 2  # small tumour, right kidney: 8 voxels = 15.4 mm^3 (kept)
    seg[12:14, 9:13, 22:26] = 3  # cyst touching the left tumour: its own lesion (32 voxels)
    seg[16, 14, 9] = 2  # one-voxel speck: 1.9 mm^3, dropped
    img[seg == 1] = 150
    img[seg == 2] = 90
    img[seg == 3] = 10
    for case, (im, sg) in {"case_00000": (img, seg), "case_00001": (img, np.where(seg == 3, 1, seg).astype(np.uint8))}.items():
        save(im, KITS_AFFINE, root / "dataset" / case / "imaging.nii.gz")
        save(sg, KITS_AFFINE, root / "dataset" / case / "segmentation.nii.gz")
    save(img, KITS_AFFINE, root / "dataset" / "case_00002" / "imaging.nii.gz")  # a test case: no segmentation
    (root / "dataset" / "kits23.json").write_text("[]")
    return root


def lesion_table(dataset: Path, case_id: str):
    case = read_case(dataset, case_id)
    lesions = sitk.GetArrayFromImage(case.lesions)
    return case, {les.label: (les.disease, int((lesions == les.label).sum())) for les in case.report.lesions}


def test_kits23_instances_diseases_and_sides(kits: Path, tmp_path: Path, capsys):
    out = tmp_path / "ds"
    assert main(["import", "kits23", str(kits), "--out", str(out), "--quiet"]) == 0
    index = read_dataset(out)
    assert index.cases == ["case_00000", "case_00001"]  # case_00002 has no segmentation
    case, table = lesion_table(out, "case_00000")
    # largest first; touching tumour and cyst stay apart; the speck is gone
    assert table == {1: ("kidney_tumor", 64), 2: ("kidney_cyst", 32), 3: ("kidney_cyst", 27), 4: ("kidney_tumor", 8)}
    locations = {les.label: les.attributes["location"][0].id for les in case.report.lesions}
    assert locations == {1: "location.kidney.left", 2: "location.kidney.left", 3: "location.kidney.right", 4: "location.kidney.right"}
    assert all("location" in les.extra["measured"] for les in case.report.lesions)
    # organs: kidneys split by side, lesions inside their kidney
    names = case.report.extra["organ_labels"]
    assert sorted(names.values()) == ["kidney_left", "kidney_right"]
    organs = sitk.GetArrayFromImage(case.organs)
    lesions = sitk.GetArrayFromImage(case.lesions)
    left = int([k for k, v in names.items() if v == "kidney_left"][0])
    assert np.all(organs[lesions == 1] == left)
    assert organs[10, 12, 8] != left and organs[10, 12, 8] > 0
    # exact geometry and HU kept
    source = sitk.ReadImage(str(kits / "dataset/case_00000/imaging.nii.gz"))
    assert case.image.GetDirection() == pytest.approx(source.GetDirection())
    assert case.image.GetSpacing() == pytest.approx(source.GetSpacing())
    assert np.array_equal(sitk.GetArrayFromImage(case.image), sitk.GetArrayFromImage(source))
    # zero-shot split: tumours are unseen, cysts seen
    assert index.split["test"] == ["case_00000", "case_00001"]
    assert index.split["train"] == ["case_00000"]
    assert "2 component(s) under 10 mm^3 dropped" in capsys.readouterr().out  # the speck, in both cases


def test_kits23_report_goes_to_the_matching_lesion(kits: Path, tmp_path: Path):
    reports = tmp_path / "reports"
    reports.mkdir()
    tumour = {"location": "location.kidney.right", "shape": "shape.irregular", "density": "density.hypodense.kidney",
              "surface": "surface.ill_defined", "relationship": "relationship.invading"}
    cyst = {"location": "location.kidney.right", "shape": "shape.round", "density": "density.fluid",
            "density_variation": "density_variation.homogeneous"}
    (reports / "case_00000.json").write_text(json.dumps(report("case_00000", [("kidney_tumor", tumour), ("kidney_cyst", cyst)],
                                                               "enhancement.contrast")))
    (reports / "summary.json").write_text(json.dumps({"cases": 1}))  # written beside them by the annotations import
    out = tmp_path / "ds"
    assert main(["import", "kits23", str(kits / "dataset"), "--out", str(out), "--reports", str(reports), "--quiet"]) == 0
    case, _ = lesion_table(out, "case_00000")
    by_label = {les.label: les for les in case.report.lesions}
    # the report's tumour is in the right kidney: it describes lesion 4 (the right tumour), not the larger left one
    assert by_label[4].attributes["shape"][0].id == "shape.irregular"
    assert by_label[4].attributes["relationship"][0].id == "relationship.invading"
    assert by_label[4].extra["attributes_from"] == "report"
    # the other tumour shares appearance only; its location is measured
    assert by_label[1].attributes["surface"][0].id == "surface.ill_defined"
    assert by_label[1].attributes["shape"] == [] and by_label[1].attributes["relationship"] == []
    assert by_label[1].attributes["location"][0].id == "location.kidney.left"
    # the cyst report goes to the right cyst (label 3), the left cyst gets the shared aspects
    assert by_label[3].attributes["shape"][0].id == "shape.round"
    assert by_label[2].attributes["density"][0].id == "density.fluid" and by_label[2].attributes["shape"] == []
    # scan enhancement from the report, on every lesion
    assert case.report.enhancement.id == "enhancement.contrast"
    assert all(les.attributes["enhancement"][0].id == "enhancement.contrast" for les in case.report.lesions)
    # case_00001 had no report: enhancement measured (a soft-tissue phantom without contrast)
    other = read_case(out, "case_00001")
    assert other.report.extra.get("enhancement_from") != "report"


# ---------------------------------------------------------------------------------------------
# MSD


def msd_task(root: Path, task: str, name: str, labels: dict[str, str], cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    folder = root / task
    meta = {
        "name": name, "description": f"{name} segmentation", "tensorImageSize": "3D", "modality": {"0": "CT"},
        "labels": labels, "numTraining": len(cases), "numTest": 1,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": ["./imagesTs/x_999.nii.gz"],
    }
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(meta, indent=4))
    for c, (img, lab) in cases.items():
        save(img, MSD_AFFINE, folder / "imagesTr" / f"{c}.nii.gz")
        save(lab, MSD_AFFINE, folder / "labelsTr" / f"{c}.nii.gz")
    (folder / "imagesTr" / f"._{next(iter(cases))}.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # archive junk
    return folder


def test_msd_liver_components_26_connected(tmp_path: Path):
    shape = (24, 24, 24)
    img, lab = body(shape), np.zeros(shape, dtype=np.uint8)
    lab[4:20, 4:20, 6:18] = 1
    lab[5:9, 5:9, 7:11] = 2  # tumour A: 64 voxels
    lab[12:14, 12:14, 12:14] = 2  # tumour B: 8 voxels, touching C only at a corner
    lab[14:16, 14:16, 14:16] = 2  # -> B and C are one 26-connected lesion of 16 voxels
    lab[17, 5, 7] = 2  # speck: 1.6 mm^3, dropped
    empty = np.where(lab == 2, 1, lab).astype(np.uint8)
    task = msd_task(tmp_path, "Task03_Liver", "Liver", {"0": "background", "1": "liver", "2": "cancer"},
                    {"liver_0": (img, lab), "liver_10": (img, empty)})
    out = tmp_path / "ds"
    assert main(["import", "msd", str(task), "--out", str(out), "--quiet"]) == 0
    index = read_dataset(out)
    assert index.name == "msd_task03_liver" and index.cases == ["liver_0", "liver_10"]
    case, table = lesion_table(out, "liver_0")
    assert table == {1: ("liver_tumor", 64), 2: ("liver_tumor", 16)}
    assert read_case(out, "liver_10").report.lesions == []
    assert index.split["train"] == ["liver_0", "liver_10"] and "test" not in index.split
    organs = sitk.GetArrayFromImage(case.organs).transpose(2, 1, 0)  # back to the file's (x, y, z)
    assert case.report.extra["organ_labels"] == {"1": "liver"}
    assert organs[lab > 0].min() == 1 and organs[lab == 0].max() == 0  # the liver includes its tumours


def test_msd_pancreas_report_decides_tumour_or_cyst(tmp_path: Path):
    shape = (24, 24, 24)
    img, lab = body(shape), np.zeros(shape, dtype=np.uint8)
    lab[3:21, 10:14, 10:14] = 1  # pancreas along x (array axis 0 = patient x in the MSD affine)
    lab[16:20, 10:14, 10:14] = 2  # lesion at the high-index end: RAS +x, the patient's right
    task = msd_task(tmp_path, "Task07_Pancreas", "Pancreas", {"0": "background", "1": "pancreas", "2": "cancer"},
                    {"pancreas_001": (img, lab), "pancreas_004": (img, lab)})
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "pancreas_001.json").write_text(json.dumps(report("pancreas_001", [("pancreas_cyst", {"shape": "shape.round"})])))
    out = tmp_path / "ds"
    assert main(["import", "msd", str(task), "--out", str(out), "--reports", str(reports), "--quiet"]) == 0
    index = read_dataset(out)
    decided = read_case(out, "pancreas_001").report.lesions
    assert [(les.disease, les.attributes["shape"][0].id) for les in decided] == [("pancreas_cyst", "shape.round")]
    undecided = read_case(out, "pancreas_004").report.lesions
    assert [les.disease for les in undecided] == [None]
    assert index.split["test"] == ["pancreas_001"] and index.split["undecided"] == ["pancreas_004"]
    # the patient's right end of the gland is the pancreatic head
    assert undecided[0].attributes["location"][0].id == "location.pancreas.head"


@pytest.mark.parametrize(
    "task,name,labels,diseases",
    [
        ("Task06_Lung", "Lung", {"0": "background", "1": "cancer"}, {1: "lung_tumor"}),
        ("Task08_HepaticVessel", "HepaticVessel", {"0": "background", "1": "Vessel", "2": "Tumour"}, {2: "hepatic_vessel_tumor"}),
        ("Task10_Colon", "Colon", {"0": "background", "1": "colon cancer primaries"}, {1: "colon_tumor"}),
    ],
)
def test_msd_other_tasks(tmp_path: Path, task, name, labels, diseases):
    shape = (24, 24, 24)
    img, lab = body(shape), np.zeros(shape, dtype=np.uint8)
    if "1" in labels and 1 not in diseases:
        lab[2:22, 11:13, 11:13] = 1  # vessels
    (value, disease), = diseases.items()
    lab[5:9, 5:9, 5:9] = value
    lab[14:17, 14:17, 14:17] = value
    case_id = f"{name.lower()}_001"
    root = msd_task(tmp_path, task, name, labels, {case_id: (img, lab)})
    out = tmp_path / "ds"
    assert main(["import", "msd", str(root), "--out", str(out), "--quiet", "--no-phase"]) == 0
    _, table = lesion_table(out, case_id)
    assert table == {1: (disease, 64), 2: (disease, 27)}


def test_import_refusals(tmp_path: Path, kits: Path, capsys):
    shape = (24, 24, 24)
    img, lab = body(shape), np.zeros(shape, dtype=np.uint8)
    lab[5:9, 5:9, 5:9] = 4  # not in the Task03 scheme
    task = msd_task(tmp_path, "Task03_Liver", "Liver", {"0": "background", "1": "liver", "2": "cancer"}, {"liver_1": (img, lab)})
    out = tmp_path / "ds"
    assert main(["import", "msd", str(task), "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label value(s) [4]" in err[0]
    assert not out.exists()  # nothing half-written
    assert main(["import", "msd", str(task), "--out", str(out), "--quiet", "--skip-bad"]) == 3  # no case left
    assert not out.exists()
    # wrong label names in dataset.json
    meta = json.loads((task / "dataset.json").read_text())
    meta["labels"]["2"] = "tumour"
    (task / "dataset.json").write_text(json.dumps(meta))
    assert main(["import", "msd", str(task), "--out", str(out), "--quiet"]) == 3
    assert "differ from the official" in capsys.readouterr().err
    # existing output without --overwrite
    out.mkdir()
    assert main(["import", "kits23", str(kits), "--out", str(out), "--quiet"]) == 5
    # label map on another grid
    bad = kits / "dataset" / "case_00001" / "segmentation.nii.gz"
    save(np.zeros((24, 24, 30), np.uint8), KITS_AFFINE, bad)
    assert main(["import", "kits23", str(kits), "--out", str(tmp_path / "ds2"), "--quiet"]) == 3
    assert "does not match the image grid" in capsys.readouterr().err
    assert main(["import", "kits23", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ds3")]) == 3


def test_kits23_sides_on_a_real_scan(shared_data: Path, tmp_path: Path):
    """Kidney sides measured by the importer agree with TotalSegmentator's kidney_left / kidney_right."""
    example = shared_data / "ct/totalseg-example"
    image = sitk.ReadImage(str(example / "example_ct_sm.nii.gz"))  # stored RAS
    ts = sitk.GetArrayFromImage(sitk.ReadImage(str(example / "example_seg.nii.gz")))
    right, left = 2, 3  # example_seg_classes.json
    seg = np.where(np.isin(ts, [right, left]), 1, 0).astype(np.uint8)
    for organ, value in ((right, 2), (left, 3)):  # a tumour in the right kidney, a cyst in the left
        idx = np.argwhere(ts == organ)
        z, y, x = idx[len(idx) // 2]
        block = np.zeros_like(seg, dtype=bool)
        block[z - 2 : z + 3, y - 2 : y + 3, x - 2 : x + 3] = True
        seg[block & (ts == organ)] = value
    case = tmp_path / "kits" / "dataset" / "case_00007"
    case.mkdir(parents=True)
    sitk.WriteImage(image, str(case / "imaging.nii.gz"))
    label = sitk.GetImageFromArray(seg)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(case / "segmentation.nii.gz"))
    out = tmp_path / "ds"
    assert main(["import", "kits23", str(tmp_path / "kits"), "--out", str(out), "--quiet"]) == 0
    result = read_case(out, "case_00007")
    sides = {les.disease: les.attributes["location"][0].id for les in result.report.lesions}
    assert sides == {"kidney_tumor": "location.kidney.right", "kidney_cyst": "location.kidney.left"}
    organs = sitk.GetArrayFromImage(result.organs)
    names = {int(k): v for k, v in result.report.extra["organ_labels"].items()}
    assert {names[v] for v in np.unique(organs[ts == right])} == {"kidney_right"}
    assert {names[v] for v in np.unique(organs[ts == left])} == {"kidney_left"}
    # the real scan is non-contrast: measured without masks
    assert result.report.enhancement.id == "enhancement.non_contrast"
    assert result.report.extra["enhancement_from"] == "blood_pool_search"
