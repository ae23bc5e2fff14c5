"""The appearance check: a trained disease's look, the diseases it rules out, and its path through disease
inference, the open-set fit, report.json, re-ranking and `malenia fit-appearance` -> `segment`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.errors import InputError, ModelError
from malenia.knowledge.appearance import FILE, Appearance, fit_appearance
from segment_helpers import THRESHOLD, assert_fine_tune_inherits, malenia, sphere_ct, tiny_trained_model
from train_helpers import make_tiny_dataset

FLUID = {"hu_mean": 10.0, "log_hu_std": 2.6, "contrast": -80.0}
SOLID = {"hu_mean": 95.0, "log_hu_std": 3.6, "contrast": -10.0}


def _lesions(centre, n, rng):
    spread = {"hu_mean": 8.0, "log_hu_std": 0.2, "contrast": 10.0}
    return [{k: v + rng.normal(0, spread[k]) for k, v in centre.items()} for _ in range(n)]


def _two_diseases(seed=0):
    rng = np.random.default_rng(seed)
    rows = [("kidney_cyst", m) for m in _lesions(FLUID, 40, rng)] + [("liver_tumor", m) for m in _lesions(SOLID, 40, rng)]
    return fit_appearance(rows), rng


def test_a_disease_is_ruled_out_for_a_lesion_unlike_its_training_lesions():
    app, rng = _two_diseases()
    assert set(app.looks) == {"kidney_cyst", "liver_tumor"} and app.cut == 0.0  # nothing ruled out uncalibrated
    assert app.ruled_out(app.scores(SOLID)) == set()
    own = [app.scores(m)["kidney_cyst"] for m in _lesions(FLUID, 800, rng)]
    assert 0.3 < np.median(own) < 0.7  # a tail probability: about uniform over the disease's own lesions
    app.calibrate(own[:400], {"dataset": "validation"})
    assert app.cut == pytest.approx(np.quantile(own[:400], 0.1))
    assert 0.05 < np.mean(np.array(own[400:]) < app.cut) < 0.16  # about alpha of new own lesions lose their disease
    assert app.ruled_out(app.scores(SOLID)) == {"kidney_cyst"}  # solid tissue is no cyst
    assert app.ruled_out(app.scores(FLUID)) == {"liver_tumor"}
    assert app.verdict({"hu_mean": 10.0}) is None  # a lesion without the measurements is not judged
    with pytest.raises(InputError, match="too few"):
        app.calibrate(own[:5], {})


def test_a_disease_with_few_training_lesions_gets_no_model_and_the_file_survives_a_round_trip():
    app, rng = _two_diseases()
    few = fit_appearance([("kidney_cyst", m) for m in _lesions(FLUID, 30, rng)]
                         + [("gallstone", m) for m in _lesions(SOLID, 4, rng)])
    assert set(few.looks) == {"kidney_cyst"}
    app.calibrate([app.scores(m)["kidney_cyst"] for m in _lesions(FLUID, 50, rng)], {"dataset": "v"})
    back = Appearance.from_json(json.loads(json.dumps(app.to_json())))
    for m in (FLUID, SOLID):
        assert back.scores(m) == pytest.approx(app.scores(m), abs=1e-6)
    assert back.cut == pytest.approx(app.cut, abs=1e-6) and back.meta["calibrated_on"]["lesions"] == 50
    broken = app.to_json()
    broken["diseases"]["kidney_cyst"]["precision"] = [[1.0]]
    with pytest.raises(ModelError, match="precision"):
        Appearance.from_json(broken)
    with pytest.raises(ModelError, match="not a"):
        Appearance.from_json({"format": "something else"})


def _typical_matches(table, disease):
    from malenia.knowledge.inference import one_hot_matches

    return one_hot_matches({a: [max(p, key=p.get)] for a, p in table.profile(disease).items()})


def test_disease_inference_names_the_best_disease_the_appearance_does_not_rule_out():
    from malenia.knowledge.inference import infer_disease
    from malenia.knowledge.table import KnowledgeTable

    table = KnowledgeTable.load()
    matches = _typical_matches(table, "kidney_cyst")
    assert infer_disease(matches, table).name == "kidney_cyst"
    post = infer_disease(matches, table, ruled_out={"kidney_cyst"})
    assert post.name != "kidney_cyst" or post.unclassified
    ranked = [post.name] + [n for n, _ in post.alternatives] if not post.unclassified else [n for n, _ in post.alternatives]
    assert ranked[-1] == "kidney_cyst" and dict(post.alternatives)["kidney_cyst"] == 0.0
    assert infer_disease(matches, table, ruled_out=set(table.diseases)).name == "kidney_cyst"  # all out: ignored


def test_open_set_decisions_exclude_what_the_appearance_rules_out():
    from malenia.knowledge.inference import infer_disease
    from malenia.knowledge.openset import ScoredLesion, decisions
    from malenia.knowledge.table import KnowledgeTable

    table = KnowledgeTable.load()
    matches = _typical_matches(table, "kidney_cyst")
    lesion = ScoredLesion("kidney_tumor", matches, {"kidney_cyst": 0.01, "liver_tumor": 0.5})
    diseases, plain = decisions([lesion], table)
    assert diseases[plain["all"][0].best] == diseases[plain["held_out"][0].best] == "kidney_cyst"
    _, gated = decisions([lesion], table, appearance_cut=0.05)
    post = infer_disease(matches, table, ruled_out={"kidney_cyst"})
    for key in ("all", "held_out"):  # the truth (kidney tumour) is not the best either way here
        d = gated[key][0]
        assert diseases[d.best] != "kidney_cyst"
    assert diseases[gated["all"][0].best] == (post.alternatives[0][0] if post.unclassified else post.name)
    assert gated["all"][0].typicality == pytest.approx(post.typicality, rel=1e-6)


@pytest.fixture(scope="module")
def appearance_model(tmp_path_factory):
    """The tiny test model with an appearance check fitted by the CLI on a tiny dataset."""
    root = tmp_path_factory.mktemp("appearance")
    model, data = root / "model", make_tiny_dataset(root / "ds", n_cases=14, shape=(36, 40, 40), max_lesions=3)
    shutil.copytree(tiny_trained_model(tmp_path_factory), model)
    res = malenia("fit-appearance", "--model", model, "--data", data, "--split", "all", "--progress", "none")
    assert res.returncode == 0, res.stderr[-2000:]
    return model, data, res.stdout


def test_fit_appearance_then_segment_reports_and_rerank_keeps_the_ruled_out_diseases(appearance_model, tmp_path):
    from malenia.commands._openset import store_rule
    from malenia.infer.pipeline import SegmentOptions, segment_path
    from malenia.infer.rerank import rerank
    from malenia.infer.results import SegmentationResult, validate_report
    from malenia.infer.site_table import table_for_model
    from malenia.model.folder import load_model_folder

    model, data, stdout = appearance_model
    fitted = json.loads((model / FILE).read_text())
    assert fitted["cut"] == 0 and fitted["diseases"] and "appearance models for" in stdout
    assert json.loads((model / "manifest.json").read_text())["appearance"]["lesions"] >= 10
    loaded = load_model_folder(model, build_network=False)
    app = loaded.appearance()
    img, _ = sphere_ct()
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(img, str(ct))
    # `knowledge openset --fit` calibrates the cut on detected lesions' scores under their own disease
    from malenia.commands._openset import calibrate_appearance
    from malenia.knowledge.openset import ScoredLesion

    rng = np.random.default_rng(1)
    own = [ScoredLesion(d, {}, {d: float(rng.uniform())}) for d in list(app.looks) * 20]
    done = calibrate_appearance(app, own, {"dataset": "val", "split": "all"})
    assert done["lesions"] == len(own) and done["own_ruled_out"] == pytest.approx(app.alpha, abs=0.03)
    # every trained disease unlike the lesion: each with a score below the cut is ruled out
    app.cut = 1.0 - 1e-9
    store_rule(loaded, {"contradiction_fit": 0.0, "min_typicality": 0.0, "fitted_on": "test"}, app)
    assert Appearance.from_json(json.loads((model / FILE).read_text())).meta["calibrated_on"]["dataset"] == "val"
    segment_path(ct, tmp_path / "out", options=SegmentOptions(device="cpu", threshold=float(THRESHOLD)),
                 model=load_model_folder(model), overwrite=True)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    validate_report(report)
    lesion = report["lesions"][0]
    look = lesion["appearance"]
    assert set(look["scores"]) == set(fitted["diseases"]) and set(look["ruled_out"]) == set(fitted["diseases"])
    assert lesion["disease"]["name"] not in look["ruled_out"]
    html = (tmp_path / "out" / report["files"]["report_html"]).read_text(encoding="utf-8")
    assert "Ruled out by its CT values" in html  # the reader is told why a known disease was not named
    # re-ranked against the table, the ruled-out diseases stay out (an image fact, not the table's)
    saved = SegmentationResult.from_json(report)
    rerank(saved, table_for_model(load_model_folder(model, build_network=False)))
    assert saved.lesions[0].disease.name not in look["ruled_out"]
    assert saved.lesions[0].appearance == look
    bad = malenia("fit-appearance", "--model", model, "--data", data, "--alpha", "0.7", "--progress", "none")
    assert bad.returncode != 0 and "--alpha" in bad.stderr


def test_a_fine_tune_inherits_the_appearance_check(appearance_model, tmp_path):
    model, data, _ = appearance_model
    assert_fine_tune_inherits(model, data, tmp_path, FILE, "appearance")
