"""`malenia demo`: a deterministic sample CT, the segment pipeline, a per-lesion summary and the planted lesions' scores."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.cli import main
from malenia.errors import EXIT_OUTPUT
from malenia.paths import builtin_model_dir
from segment_helpers import THRESHOLD, tiny_trained_model

PLANTED = {1: "liver_tumor", 2: "kidney_tumor", 3: "pancreas_cyst"}



def test_demo_writes_the_sample_the_outputs_and_scores_the_planted_lesions(tmp_path_factory, tmp_path, capsys):
    model = tiny_trained_model(tmp_path_factory)
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--model", str(model), "--threshold", THRESHOLD])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["input", "lesions.nii.gz", "lesions.seg.nrrd", "report.html", "report.json"]
    assert sorted(p.name for p in (out / "input").iterdir()) == ["sample_ct.nii.gz", "sample_truth.json", "sample_truth.nii.gz"]
    report = json.loads((out / "report.json").read_text())
    assert report["scan"]["source"] == str(out / "input" / "sample_ct.nii.gz")
    truth = json.loads((out / "input" / "sample_truth.json").read_text())
    assert {x["label"]: x["disease"] for x in truth["lesions"]} == PLANTED
    ct = sitk.ReadImage(str(out / "input" / "sample_ct.nii.gz"))
    labels = sitk.ReadImage(str(out / "lesions.nii.gz"))
    assert labels.GetSize() == ct.GetSize() == (128, 128, 128)
    # the summary: one line per found lesion, then every planted lesion with its Dice and disease verdict
    assert f"{len(report['lesions'])} lesion(s)" in printed and "planted lesions (truth known):" in printed
    for label, disease in PLANTED.items():
        assert f"  {label}  {disease}" in printed
    assert "found (DSC >= 0.5):" in printed and "open report.html" in printed
    # a second run refuses to overwrite, and leaves everything in place
    code = main(["demo", "--out", str(out), "--model", str(model)])
    assert code == EXIT_OUTPUT and "use --overwrite" in capsys.readouterr().err


def test_demo_sample_is_deterministic_and_scored_against_its_truth(tmp_path_factory, tmp_path):
    from malenia.data.synthesis import make_demo_case
    from malenia.infer.demo import run_demo
    from malenia.infer.pipeline import SegmentOptions, load_model

    model = load_model(tiny_trained_model(tmp_path_factory))
    demo = run_demo(tmp_path / "d", options=SegmentOptions(device="cpu", threshold=float(THRESHOLD)), model=model)
    again = make_demo_case(0)
    saved = sitk.GetArrayFromImage(sitk.ReadImage(str(demo.input_path)))
    assert np.array_equal(saved, sitk.GetArrayFromImage(again.image))
    truth = sitk.GetArrayFromImage(again.lesions)
    pred = sitk.GetArrayFromImage(demo.run.result.labels)
    assert [p.label for p in demo.planted] == [1, 2, 3] and [p.disease for p in demo.planted] == list(PLANTED.values())
    for p in demo.planted:
        assert p.voxels == int((truth == p.label).sum())
        if p.predicted_label is None:
            assert not pred[truth == p.label].any() and p.dsc == 0.0
        else:  # the Dice of the predicted lesion that overlaps it most
            t, q = truth == p.label, pred == p.predicted_label
            assert p.dsc == pytest.approx(2 * (t & q).sum() / (t.sum() + q.sum()))
            assert p.predicted_disease == demo.run.result.lesion(p.predicted_label).disease.name


@pytest.mark.model_quality
def test_builtin_model_finds_the_planted_lesions_and_names_most_diseases(tmp_path):
    from malenia.infer.demo import planted_summary, run_demo

    assert (builtin_model_dir() / "manifest.json").is_file(), f"no built-in model in {builtin_model_dir()}"
    demo = run_demo(tmp_path / "demo")
    summary = planted_summary(demo.planted)
    assert all(p.dsc >= 0.5 for p in demo.planted), summary
    assert sum(p.named_right for p in demo.planted) >= 2, summary
