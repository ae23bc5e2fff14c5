"""`malenia evaluate` end to end on a tiny trained model, the per-type scoring rule, and the model card."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from malenia.data.dataset import CaseReport, Description, LesionReport
from malenia.evaluate.evaluate import evaluate_case
from malenia.infer.results import AspectMatch, DiseaseCall, LesionResult
from train_helpers import make_tiny_dataset, tiny_config

REPO = Path(__file__).resolve().parent.parent


def _lesion(label, location, disease=None):
    from malenia.aspects import ASPECTS

    attributes = {a: AspectMatch(location if a == "location" else None, "x", 0.9) for a in ASPECTS}
    return LesionResult(label, DiseaseCall(disease, disease or "unclassified", 0.5, [], disease is None), attributes)


def test_per_type_scores_and_attributes_on_a_two_type_case():
    gt = np.zeros((10, 10, 10), np.int32)
    gt[0:2, 0:2, 0:2] = 1  # liver tumour, 8 voxels
    gt[5:7, 5:7, 5:7] = 2  # kidney cyst, 8 voxels
    pred = np.zeros_like(gt)
    pred[0:2, 0:2, 0:2] = 3  # exactly lesion 1
    pred[5:7, 5:7, 5:6] = 4  # half of lesion 2
    pred[9, 9, 9] = 5  # false positive, touches no lesion
    report = CaseReport("c", [
        LesionReport(1, "liver_tumor", {"location": [Description("right lobe", "location.liver.right_lobe")]}),
        LesionReport(2, "kidney_cyst", {"location": [Description("left kidney", "location.kidney.left")]}),
    ])
    preds = [_lesion(3, "location.liver.right_lobe", "liver_tumor"), _lesion(4, "location.kidney.right", "kidney_tumor"),
             _lesion(5, "location.kidney.left")]
    res = evaluate_case(pred, preds, gt, report, (1.0, 1.0, 1.0))
    # liver type: reference 8 voxels; its predictions: lesion 3 (8) and the false positive (1) -> 2*8/(9+8)
    assert res["types"]["liver_tumor"]["dsc"] == pytest.approx(16 / 17)
    assert res["types"]["liver_tumor"]["pred"] == 2 and res["types"]["liver_tumor"]["hits"] == 1
    # kidney type: lesion 4 (4 voxels inside) + false positive (1) vs 8 -> 2*4/(5+8)
    assert res["types"]["kidney_cyst"]["dsc"] == pytest.approx(8 / 13)
    assert res["dsc"] == pytest.approx(2 * 12 / (13 + 16))
    by_label = {les["label"]: les for les in res["lesions"]}
    assert by_label[1]["detected"] and by_label[1]["pred_disease"] == "liver_tumor"
    assert by_label[2]["detected"] and by_label[2]["pred_attributes"]["location"] == ["location.kidney.right"]


def test_lesion_records_carry_their_size_on_the_case_spacing():
    gt = np.zeros((12, 12, 12), np.int32)
    gt[0:2, 0:2, 0:2] = 1  # 8 voxels of 2 x 1 x 1 mm = 16 mm³
    gt[4:10, 4:10, 4:10] = 2  # 216 voxels = 432 mm³
    pred = np.where(gt == 2, 7, 0).astype(np.int32)  # finds the large one only
    report = CaseReport("c", [LesionReport(1, "gallstone", {}), LesionReport(2, "kidney_cyst", {})])
    res = evaluate_case(pred, [_lesion(7, None, "kidney_cyst")], gt, report, (2.0, 1.0, 1.0))
    by_label = {les["label"]: les for les in res["lesions"]}
    assert by_label[1]["volume_ml"] == pytest.approx(0.016) and not by_label[1]["detected"]
    assert by_label[2]["volume_ml"] == pytest.approx(0.432) and by_label[2]["detected"]
    assert by_label[2]["diameter_mm"] == pytest.approx((6 * 432 / np.pi) ** (1 / 3), abs=0.05)



def test_outlines_say_which_way_a_detected_lesion_is_outlined_off():
    from malenia.evaluate.metrics import outline_summary

    gt = np.zeros((12, 12, 12), np.int32)
    gt[0:4, 0:4, 0:4] = 1  # 64 voxels: its prediction covers a quarter (the core)
    gt[6:8, 6:8, 6:8] = 2  # 8 voxels: its prediction spills to 27
    gt[10:12, 0:2, 0:2] = 3  # missed
    pred = np.zeros_like(gt)
    pred[0:4, 0:2, 0:2] = 5
    pred[6:9, 6:9, 6:9] = 6
    report = CaseReport("c", [LesionReport(1, "kidney_tumor", {}), LesionReport(2, "liver_cyst", {}),
                              LesionReport(3, "liver_cyst", {})])
    res = evaluate_case(pred, [_lesion(5, None), _lesion(6, None)], gt, report, (1.0, 1.0, 1.0))
    by_label = {les["label"]: les for les in res["lesions"]}
    assert by_label[1]["volume_ratio"] == pytest.approx(16 / 64, abs=1e-3)
    assert by_label[2]["volume_ratio"] == pytest.approx(27 / 8, abs=1e-3)
    assert by_label[3]["volume_ratio"] is None
    table = outline_summary((les["disease"], les["iou"], les["volume_ratio"]) for les in res["lesions"]
                            if les["volume_ratio"] is not None)
    assert list(table) == ["kidney_tumor", "liver_cyst"]  # a type is listed only with detected lesions
    assert table["kidney_tumor"]["under_outlined"] == 1.0 and table["kidney_tumor"]["over_outlined"] == 0.0
    assert table["liver_cyst"]["over_outlined"] == 1.0 and table["liver_cyst"]["detected"] == 1
    assert table["kidney_tumor"]["iou_median"] == pytest.approx(0.25, abs=1e-3)


def test_closest_disease_counts_an_unclassified_lesion_whose_nearest_disease_is_right():
    from collections import defaultdict

    from malenia.aspects import ASPECTS
    from malenia.evaluate.evaluate import GroupStats, _add_to_groups

    gt = np.zeros((10, 10, 10), np.int32)
    gt[0:2, 0:2, 0:2], gt[5:7, 5:7, 5:7] = 1, 2
    pred = np.where(gt == 1, 3, np.where(gt == 2, 4, 0)).astype(np.int32)
    report = CaseReport("c", [LesionReport(1, "liver_tumor", {}), LesionReport(2, "kidney_cyst", {})])
    attributes = {a: AspectMatch(None, "x", 0.9) for a in ASPECTS}
    preds = [LesionResult(3, DiseaseCall("liver_tumor", "unclassified", 0.4, [], True), attributes),  # closest right
             LesionResult(4, DiseaseCall("kidney_tumor", "kidney tumor", 0.6, [], False), attributes)]  # named wrongly
    res = evaluate_case(pred, preds, gt, report, (1.0, 1.0, 1.0))
    by_label = {les["label"]: les for les in res["lesions"]}
    assert by_label[1]["pred_disease"] is None and by_label[1]["pred_closest"] == "liver_tumor"
    groups = defaultdict(GroupStats)
    _add_to_groups(groups, res)
    overall = groups["all_cases"].summary()
    assert overall["disease_accuracy"] == 0.0 and overall["closest_disease_accuracy"] == 0.5
    assert groups["liver_tumor"].summary()["closest_disease_accuracy"] == 1.0
    assert groups["kidney_cyst"].summary()["closest_disease_accuracy"] == 0.0

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    from malenia.train.loop import TrainOptions, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ev")
    make_tiny_dataset(root / "ds", n_cases=3)
    train(TrainOptions(data=root / "ds", out=root / "run", config=tiny_config(), steps=6, progress="none", val_split=None))
    return root


def test_evaluate_cli_writes_tables_and_card(model):
    out = model / "eval"
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": ""}
    cmd = [sys.executable, "-m", "malenia.cli", "evaluate", "--model", str(model / "run" / "model"), "--data",
           str(model / "ds"), "--split", "all", "--out", str(out), "--progress", "none", "--threads", "1"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((out / "evaluation.json").read_text())
    assert result["data"]["cases"] == 3 and len(result["cases"]) == 3
    assert set(result["per_type"]) == {"liver_tumor", "kidney_cyst"}
    assert result["protocol"]["nsd_tolerance_mm"] == 2.0
    md = (out / "evaluation.md").read_text()
    assert "| liver_tumor | seen |" in md and "Enhancement status" in md and md in res.stdout
    lesions = [les for c in result["cases"] for les in c["lesions"]]
    assert sum(b["lesions"] for b in result["by_size"]) == len(lesions)
    assert sum(b["detected"] for b in result["by_size"]) == sum(les["detected"] for les in lesions)
    assert "Lesion detection by size" in md
    # every lesion measured against its surroundings, each counted once in its type's bands and in "all"
    assert all(isinstance(les["contrast_hu"], float) for les in lesions)
    by_contrast = result["by_contrast"]
    assert set(by_contrast) == {"all", *result["per_type"]}
    assert sum(b["lesions"] for b in by_contrast["all"]) == len(lesions)
    assert sum(b["detected"] for t, row in by_contrast.items() if t != "all" for b in row) == \
        sum(les["detected"] for les in lesions)
    assert "Lesion detection by contrast" in md
    by_polarity = result["by_polarity"]  # the same lesions, split by the sign of their contrast
    assert set(by_polarity) == set(by_contrast) and [b["band"] for b in by_polarity["all"]] == ["darker", "similar", "brighter"]
    for t, row in by_polarity.items():
        assert sum(b["lesions"] for b in row) == sum(b["lesions"] for b in by_contrast[t])
        assert sum(b["detected"] for b in row) == sum(b["detected"] for b in by_contrast[t])
    darker = sum(les["contrast_hu"] <= -20 for les in lesions)
    assert by_polarity["all"][0]["lesions"] == darker and "Lesion detection by the sign of that contrast" in md
    # each case's phase from its reference report, and every lesion counted once under it
    cases = {c["case"]: c for c in result["cases"]}
    for case_id, c in cases.items():
        report = json.loads((model / "ds" / "cases" / case_id / "report.json").read_text())
        stated = report.get("enhancement")
        assert c["phase"] == (stated["id"].split(".", 1)[-1] if stated else None)
    by_phase = result["by_phase"]
    assert set(by_phase) == {"all", *result["per_type"]}
    assert sum(b["lesions"] for b in by_phase["all"]) == len(lesions)
    assert sum(b["detected"] for b in by_phase["all"]) == sum(les["detected"] for les in lesions)
    assert "Lesion detection by scan phase" in md
    assert result["by_base"] == [] and "planted in" not in md  # hand-made cases record no base CT: no such table
    assert all(c["base"] is None for c in result["cases"])
    # every missed lesion is lost at one named step, every found one at none; the peak is a probability
    assert all((les["lost_at"] is None) == les["detected"] for les in lesions)
    assert all(0.0 <= les["peak"] <= 1.0 and 0.0 <= les["best_iou"] <= 1.0 for les in lesions)
    misses = result["misses"]["all"]
    assert misses["lesions"] == len(lesions) and misses["missed"] == sum(not les["detected"] for les in lesions)
    assert misses["missed"] == sum(misses[s] for s in ("silent", "outline", "min_volume", "verifier", "matching"))
    assert "Missed lesions by where `segment` lost them" in md
    # every detected lesion's reported name is tallied under its own type, "unclassified" included
    assert sum(sum(n.values()) for n in result["names"].values()) == sum(les["detected"] for les in lesions)
    assert ("Names reported for detected lesions" in md) == any(les["detected"] for les in lesions)
    card = subprocess.run([sys.executable, "-m", "malenia.cli", "evaluate", "--model", str(model / "run" / "model"),
                           "--card", str(out / "evaluation.json")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert card.returncode == 0, card.stderr[-2000:]
    from malenia.model.folder import load_model_folder

    m = load_model_folder(model / "run" / "model")
    text = m.card()
    assert "tiny" in text and "## Targets" in text and "| liver_tumor | seen |" in text and m.sha256 in text


def test_evaluate_refuses_a_missing_dataset(model):
    res = subprocess.run([sys.executable, "-m", "malenia.cli", "evaluate", "--model", str(model / "run" / "model"),
                          "--data", str(model / "nope")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and "not a Malenia dataset" in res.stderr and "Traceback" not in res.stderr


def test_segment_and_evaluate_ship_the_same_label_map_and_lesions(tmp_path, tmp_path_factory):
    """One predictor: `malenia evaluate` scores exactly what `malenia segment` writes for the same case and model
    (an anisotropic, flipped grid finer than the model's, two lesions, a minimum volume that matters)."""
    import SimpleITK as sitk

    from malenia.data.dataset import Case, CaseReport, DatasetIndex, LesionReport, write_case, write_dataset_index
    from segment_helpers import THRESHOLD, malenia, sphere_ct, tiny_trained_model

    model = tiny_trained_model(tmp_path_factory)
    img, big = sphere_ct((50, 88, 96), (1.25, 1.25, 2.0), (25, 28, 60), 9.0)
    arr = sitk.GetArrayFromImage(img)
    zz, yy, xx = np.indices(arr.shape)
    small = (zz - 25) ** 2 + (yy - 62) ** 2 + (xx - 30) ** 2 <= 6.0 ** 2
    arr[small] = 150.0
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(img)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image.SetOrigin((100.0, -50.0, 30.0))
    lab = sitk.GetImageFromArray(big.astype(np.uint8) + 2 * small.astype(np.uint8))
    lab.CopyInformation(image)
    report = CaseReport("c0", [LesionReport(1, "liver_tumor", {}), LesionReport(2, "liver_tumor", {})])
    write_case(tmp_path / "ds", Case("c0", image, lab, report))
    write_dataset_index(tmp_path / "ds", DatasetIndex("one", ["c0"], {"test": ["c0"]}))
    options = ["--model", model, "--threshold", THRESHOLD, "--min-volume", "30", "--threads", "1", "--progress", "none"]

    seg = malenia("segment", tmp_path / "ds" / "cases" / "c0" / "image.nii.gz", "--out", tmp_path / "seg", *options)
    assert seg.returncode == 0, seg.stderr[-2000:]
    ev = malenia("evaluate", "--data", tmp_path / "ds", "--predictions", tmp_path / "pred", "--json", *options)
    assert ev.returncode == 0, ev.stderr[-2000:]

    a = sitk.ReadImage(str(tmp_path / "seg" / "lesions.nii.gz"))
    b = sitk.ReadImage(str(tmp_path / "pred" / "c0" / "lesions.nii.gz"))
    assert a.GetSize() == image.GetSize() and a.GetDirection() == b.GetDirection() and a.GetOrigin() == b.GetOrigin()
    labels = sitk.GetArrayFromImage(a)
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(b))
    assert labels.max() == 2 and labels[25, 28, 60] == 1 and labels[25, 62, 30] == 2  # both found, largest first
    shipped = json.loads((tmp_path / "seg" / "report.json").read_text())
    measured = json.loads((tmp_path / "pred" / "c0" / "report.json").read_text())
    assert shipped["lesions"] == measured["lesions"] and shipped["scan"]["enhancement"] == measured["scan"]["enhancement"]
    result = json.loads(ev.stdout)
    predicted = result["cases"][0]["predicted"]
    assert [(p["label"], p["disease"]) for p in predicted] == [(x["label"], x["disease"]["name"]) for x in shipped["lesions"]]
    assert [p["voxels"] for p in predicted] == [x["measurements"]["voxel_count"] for x in shipped["lesions"]]
    assert result["cases"][0]["lesions_detected"] == 2 and result["threshold"] == float(THRESHOLD)


def test_names_tally_reports_where_each_types_names_go():
    from malenia.evaluate.evaluate import names_given

    les = lambda d, p, det=True: {"disease": d, "pred_disease": p, "detected": det}
    cases = [{"lesions": [les("lung_tumor", "pulmonary_nodule"), les("lung_tumor", None), les("lung_tumor", None, False)]},
             {"lesions": [les("lung_tumor", None), les("liver_cyst", "liver_cyst")]}]
    assert names_given(cases) == {"liver_cyst": {"liver_cyst": 1},
                                  "lung_tumor": {"unclassified": 2, "pulmonary_nodule": 1}}
    assert list(names_given(cases)["lung_tumor"]) == ["unclassified", "pulmonary_nodule"]  # most frequent first


def test_reference_outlines_are_described_as_segment_mask_describes_them(tmp_path, tmp_path_factory):
    """`evaluate --outlines reference` scores exactly what `segment --mask` writes for a case's reference lesions:
    every lesion present, its name and attributes the shipped ones; options that decide what a lesion is refused."""
    import SimpleITK as sitk

    from malenia.data.dataset import Case, DatasetIndex, write_case, write_dataset_index
    from segment_helpers import malenia, sphere_ct, tiny_trained_model

    model = tiny_trained_model(tmp_path_factory)
    image, ball = sphere_ct((40, 60, 48), centre_zyx=(20, 22, 24))
    lab = np.where(ball, 1, 0).astype(np.uint8)
    lab[18:22, 45:50, 10:14] = 2  # plain tissue: a lesion the model does not see, described all the same
    labels = sitk.GetImageFromArray(lab)
    labels.CopyInformation(image)
    report = CaseReport("c0", [LesionReport(1, "liver_tumor", {}), LesionReport(2, "liver_cyst", {})])
    write_case(tmp_path / "ds", Case("c0", image, labels, report))
    write_dataset_index(tmp_path / "ds", DatasetIndex("one", ["c0"], {"test": ["c0"]}))
    options = ["--model", model, "--threads", "1", "--progress", "none"]
    case = tmp_path / "ds" / "cases" / "c0"
    seg = malenia("segment", case / "image.nii.gz", "--mask", case / "lesions.nii.gz", "--out", tmp_path / "seg", *options)
    assert seg.returncode == 0, seg.stderr[-2000:]
    ev = malenia("evaluate", "--data", tmp_path / "ds", "--outlines", "reference", "--predictions", tmp_path / "pred",
                 "--json", *options)
    assert ev.returncode == 0, ev.stderr[-2000:]
    shipped = json.loads((tmp_path / "seg" / "report.json").read_text())
    measured = json.loads((tmp_path / "pred" / "c0" / "report.json").read_text())
    assert shipped["lesions"] == measured["lesions"] and len(shipped["lesions"]) == 2
    result = json.loads(ev.stdout)
    assert result["protocol"]["outlines"] == "reference"
    lesions = result["cases"][0]["lesions"]
    assert all(les["detected"] and les["iou"] == 1.0 for les in lesions)
    assert [les["pred_disease"] for les in lesions] == [x["disease"]["name"] for x in shipped["lesions"]]
    assert sum(sum(n.values()) for n in result["names"].values()) == 2
    refused = malenia("evaluate", "--data", tmp_path / "ds", "--outlines", "reference", "--threshold", "0.3", *options)
    assert refused.returncode == 3 and "--threshold" in refused.stderr and "Traceback" not in refused.stderr


def test_a_mistyped_disease_of_a_labelled_scan_is_warned_about_with_the_closest_key(capsys):
    from malenia.commands.evaluate import _warn_unknown_disease
    from malenia.knowledge.table import KnowledgeTable

    known = KnowledgeTable.load().diseases
    _warn_unknown_disease("lung_tumour", known)
    assert "'lung_tumour' is not in the knowledge table" in capsys.readouterr().err and "lung_tumor" in known
    _warn_unknown_disease("lung_tumor", known)
    _warn_unknown_disease(None, known)
    assert capsys.readouterr().err == ""
    _warn_unknown_disease("hepatic_haemangioma", known)
    assert "open-set test" in capsys.readouterr().err
