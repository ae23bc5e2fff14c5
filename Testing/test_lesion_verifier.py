"""The lesion verifier: its fit, its file, the cut chosen on validation cases, the features of predicted
lesions, and `malenia fit-verifier` -> `malenia segment` -> a fine-tune, end to end."""

import json
import shutil

import numpy as np
import pytest

from malenia.errors import InputError, ModelError
from malenia.infer.lesion_features import FEATURES as IMAGE_FEATURES
from malenia.infer.lesion_features import lesion_rows
from malenia.evaluate.verifier_fit import CaseLesions, choose_cut
from malenia.model.lesion_verifier import FEATURE_SETS, FEATURES, FILE, LesionVerifier, fit
from segment_helpers import (assert_fine_tune_inherits, constructed_map, malenia, segment_report, sphere_ct,
                             tiny_trained_model)
from train_helpers import make_tiny_dataset


def _rows(n=80, seed=0):
    """Lesions that are real when their probability peaks high and their host is not bone."""
    rng = np.random.default_rng(seed)
    rows, real = [], []
    for _ in range(n):
        r = {f: float(rng.normal()) for f in FEATURES}
        r["peak_probability"] = float(rng.uniform(0.4, 1.0))
        r["ring_bone"] = float(rng.uniform(0, 1))
        rows.append(r)
        real.append(r["peak_probability"] - 0.5 * r["ring_bone"] > 0.45)
    return rows, real


def test_the_verifier_learns_which_lesions_are_real_and_survives_its_file():
    rows, real = _rows()
    verifier = fit(rows, real, fitted_on={"dataset": "constructed"})
    test_rows, test_real = _rows(seed=1)
    p = verifier.probability(test_rows)
    assert np.mean((p >= 0.5) == np.array(test_real)) >= 0.85
    assert verifier.weights[FEATURES.index("peak_probability")] > 0 > verifier.weights[FEATURES.index("ring_bone")]
    assert verifier.meta["fitted_on"] == {"dataset": "constructed", "lesions": 80, "real": int(sum(real))}
    verifier.cut = 0.3
    back = LesionVerifier.from_json(json.loads(json.dumps(verifier.to_json())))
    assert back.cut == 0.3 and back.probability(test_rows) == pytest.approx(p)
    with pytest.raises(ModelError, match="damaged"):
        LesionVerifier.from_json({**verifier.to_json(), "weights": [1.0]})
    with pytest.raises(ModelError, match="unknown verifier features"):
        LesionVerifier.from_json({**verifier.to_json(), "features": ["colour"] + verifier.features[1:]})
    with pytest.raises(ModelError, match="not a"):
        LesionVerifier.from_json({"format": "other/1"})
    with pytest.raises(InputError, match="too few"):
        fit(rows[:10], real[:10])
    with pytest.raises(InputError, match="real and false"):
        fit(rows, [True] * len(rows))


def test_the_cut_is_chosen_by_the_mean_case_dsc_and_keeps_every_lesion_when_nothing_is_gained():
    # case 1: a real lesion (p 0.9) and a large false one (p 0.1); case 2: a real lesion scored 0.35
    cases = [CaseLesions(np.array([0.9, 0.1]), np.array([100, 300]), np.array([80, 0]), 100),
             CaseLesions(np.array([0.35]), np.array([50]), np.array([40]), 60)]
    with pytest.raises(ValueError, match="detection"):
        choose_cut(cases)  # the default objective counts lesions found, which these cases do not say
    cut, table, _ = choose_cut(cases, objective="dsc")
    assert 0.1 < cut <= 0.35  # removes the false lesion, keeps the weakly scored real one
    by_cut = {r["cut"]: r for r in table}
    assert by_cut[cut]["mean_dsc"] > by_cut[0.0]["mean_dsc"]
    assert by_cut[cut]["lesions_per_case"] == 1.0
    only_real = [CaseLesions(np.array([0.2, 0.9]), np.array([100, 50]), np.array([90, 45]), 150)]
    # nothing to gain: every lesion kept; ties go to the highest cut that keeps them (the lowest without the margin)
    assert choose_cut(only_real, objective="dsc")[0] == 0.2
    assert choose_cut(only_real, objective="dsc", margin=False)[0] == 0.0


def test_cuts_within_one_lesion_of_the_best_score_go_to_the_highest():
    """Twenty cases with one real lesion scored 0.9, one case where a small real lesion scored 0.45 sits beside a
    large one, five cases with a false lesion scored 0.3: the cut 0.4 keeps all 22 real lesions and 0.5 loses the
    small one, less than a lesion's worth of score (1/(P+R) = 1/44), which the validation cases cannot tell from
    chance: the margin takes the highest cut, 0.7, where the exact best is 0.4. With four such small lesions at
    stake the difference is more than a lesion's worth, and 0.4 stays."""
    def case(p, inside, truth):
        hit = np.array(inside) > 0
        return CaseLesions(np.array(p), np.array([1000, 10][:len(p)]), np.array(inside), truth, hit, int(hit.sum()))
    cases = ([case([0.9], [900], 1000) for _ in range(20)] + [case([0.9, 0.45], [900, 8], 1010)]
             + [case([0.3], [0], 0) for _ in range(5)])
    exact, table, _ = choose_cut(cases, margin=False)
    rows = {r["cut"]: r for r in table}
    assert exact == 0.4 and rows[0.4]["recall"] == 1.0 and rows[0.4]["precision"] == 1.0
    assert 0 < rows[0.4]["score"] - rows[0.5]["score"] < 1 / 44
    assert choose_cut(cases)[0] == 0.7 and choose_cut(cases)[2] == pytest.approx(1 / 44)  # P = R = 22 at the best cut
    cases += [case([0.9, 0.45], [900, 8], 1010) for _ in range(3)]
    assert choose_cut(cases)[0] == 0.4


def test_the_detection_objective_keeps_a_small_real_lesion_the_dsc_objective_cuts():
    """Case DSC barely notices a 5-voxel lesion beside a 500-voxel one: DSC alone takes the cut that removes it
    with a 10-voxel false lesion scored above it; half DSC + half detection F1 keeps both."""
    case = CaseLesions(np.array([0.9, 0.12, 0.2]), np.array([500, 5, 10]), np.array([480, 5, 0]), 500,
                       np.array([True, True, False]), 2)
    by_dsc, _, _ = choose_cut([case], objective="dsc", margin=False)
    by_both, table, _ = choose_cut([case], margin=False)
    rows = {r["cut"]: r for r in table}
    assert by_dsc == 0.25 and by_both == 0.0
    assert rows[0.0]["recall"] == 1.0 and rows[0.0]["precision"] == pytest.approx(2 / 3)
    assert rows[0.25]["recall"] == 0.5 and rows[0.25]["f1"] == pytest.approx(2 / 3)
    assert rows[0.0]["score"] == pytest.approx((2 * 485 / 1015 + 0.8) / 2)


def test_lesion_rows_measure_each_kept_lesion_and_read_its_probability():
    from malenia.infer.postprocess import kept, lesion_map

    prob = np.zeros((24, 24, 24), np.float32)
    prob[4:9, 4:9, 4:9] = 0.6
    prob[6, 6, 6] = 0.95
    prob[14:20, 14:20, 14:20] = 0.8
    pm = constructed_map(prob)
    lm = lesion_map(pm, 0.5)
    order = kept(lm, 0.0)
    rows = lesion_rows(pm, lm, order)
    assert sorted(rows) == sorted(order) and len(order) == 2
    peaks = sorted(round(r["peak_probability"], 2) for r in rows.values())
    assert peaks == [0.8, 0.95]
    for r in rows.values():
        assert set(r) == set(IMAGE_FEATURES) | {"peak_probability", "mean_probability"}
        assert 0.5 < r["mean_probability"] <= r["peak_probability"]
    big = max(rows.values(), key=lambda r: r["log_volume"])
    assert big["log_volume"] == pytest.approx(np.log(6**3 * 8.0), abs=0.3)  # 6³ voxels of 8 mm³ (grown by the map)
    assert lesion_rows(pm, lm, []) == {}


def test_fit_verifier_then_segment_drops_what_it_calls_false_and_a_fine_tune_inherits_it(tmp_path_factory, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_trained_model(tmp_path_factory), model)
    data = make_tiny_dataset(tmp_path / "ds", n_cases=16, shape=(36, 40, 40), max_lesions=3)
    more = make_tiny_dataset(tmp_path / "more", n_cases=3, shape=(36, 40, 40), max_lesions=3, seed=5)
    res = malenia("fit-verifier", "--model", model, "--data", data, "--data", more, "--val-data", data, "--val-split", "all",
                  "--threshold", "0.05", "--min-volume", "0", "--threads", "1", "--progress", "none")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "chosen cut" in res.stdout
    manifest = json.loads((model / "manifest.json").read_text())
    saved = json.loads((model / FILE).read_text())
    assert FILE in manifest["files"] and manifest["lesion_verifier"]["cut"] == saved["cut"]
    assert saved["fitted_on"]["threshold"] == 0.05 and saved["validation"]["cases"] == 16
    assert saved["fitted_on"]["dataset"] == f"{data} + {more}"  # two --data pooled
    assert "of 19 cases" in res.stdout
    assert manifest["lesion_verifier"]["features"] == "all" == saved["left_out"]["set"]
    assert saved["features"] == list(FEATURES)
    table = {r["cut"]: r["score"] for r in saved["validation"]["table"]}
    margin = saved["validation"]["margin"]  # one lesion's worth of score: the highest cut within it of the best
    assert 0 < margin < 0.5 and saved["cut"] == max(c for c, v in table.items() if v >= max(table.values()) - margin - 1e-4)
    assert "count as tied" in res.stdout

    # a verifier that calls everything false (no feature moves its -60 log-odds; cut just under 1): segment keeps
    # nothing and says what it removed
    from malenia.model.folder import update_model_folder

    strict = {**saved, "cut": 0.999999, "bias": -60.0, "weights": [0.0] * len(saved["weights"])}
    update_model_folder(model, {FILE: json.dumps(strict)})
    image, _ = sphere_ct()
    report = segment_report(image, model, tmp_path / "strict")
    verdict = report["extra"]["verifier"]
    assert verdict["cut"] == pytest.approx(0.999999)
    assert report["lesions"] == [] and verdict["removed"], "every lesion was called false"
    assert all(r["probability"] < 0.999999 and r["voxels"] > 0 for r in verdict["removed"])
    report = segment_report(image, model, tmp_path / "all", "--no-verifier")
    assert report["extra"]["verifier"] is None and len(report["lesions"]) == len(verdict["removed"])
    # a user's own cut replaces the model's: at 0 the verifier still scores every lesion but removes none
    report = segment_report(image, model, tmp_path / "cut0", "--verifier-cut", "0")
    assert report["extra"]["verifier"]["cut"] == 0.0 and report["extra"]["verifier"]["removed"] == []
    assert len(report["lesions"]) == len(verdict["removed"])
    for bad, why in ((["--verifier-cut", "1"], "verifier cut must be in [0, 1)"),
                     (["--verifier-cut", "0.2", "--no-verifier"], "not allowed with argument")):
        res = malenia("segment", tmp_path / "cut0" / "ct.nii.gz", "--out", tmp_path / "bad", "--model", model, *bad)
        assert res.returncode != 0 and why in res.stderr and not (tmp_path / "bad").exists()

    assert_fine_tune_inherits(model, data, tmp_path, FILE, "lesion_verifier")


def test_segment_without_a_verifier_keeps_every_lesion_and_reports_none(tmp_path_factory):
    from malenia.infer.pipeline import Segmenter, SegmentOptions, load_model

    image, _ = sphere_ct()
    model = load_model(tiny_trained_model(tmp_path_factory))
    result = Segmenter(model, SegmentOptions(device="cpu", threshold=0.05, min_volume_mm3=0.0)).segment(image)
    assert result.extra["verifier"] is None
    assert all("verifier_probability" not in d for d in result.extra["lesions"])
    with pytest.raises(InputError, match="has no lesion verifier"):  # a cut for a verifier the model lacks
        Segmenter(model, SegmentOptions(device="cpu", verifier_cut=0.2))


def _open_set_cases(seed=0):
    """Real lesions of four diseases and false ones, as collected cases. Size tells every real lesion from the
    false ones; density tells three diseases from them perfectly (denser than the false lesions), but the
    fourth is less dense than they are, as a cyst would be: a verifier that leans on density rejects a type it
    never saw."""
    from malenia.evaluate.verifier_fit import CaseComponents

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(48):
        rows, inside, diseases = [], [], []
        for kind in (["A", "B", "C", "D"][i % 4], None, None, None):
            r = {f: float(rng.normal()) for f in FEATURES}
            r["log_volume"] = float(rng.normal(1.2 if kind else -1.2, 1.0))
            r["hu_mean"] = float(rng.normal({None: 0.0, "D": -2.0}.get(kind, 2.0), 0.4))
            rows.append(r)
            inside.append(50 if kind else 0)
            diseases.append(kind)
        cases.append(CaseComponents(rows, np.full(4, 100), np.array(inside), 50, diseases, {diseases[0]: 50},
                                    np.array(inside) > 0, {diseases[0]: 1}))
    return cases


def test_fit_verifier_measures_what_each_feature_set_does_to_a_disease_left_out():
    from malenia.cli import build_parser
    from malenia.evaluate.verifier_fit import Labelled, fit_and_choose, left_out_table

    args = ["fit-verifier", "--model", "m", "--data", "d", "--val-data", "v"]
    assert build_parser().parse_args(args).features == "all"
    assert build_parser().parse_args([*args, "--val-data", "w"]).val_data == ["v", "w"]  # pooled (as calibrate --data)
    assert build_parser().parse_args([*args, "--data", "e"]).data == ["d", "e"]
    assert build_parser().parse_args([*args, "--features", "network_size"]).features == "network_size"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--features", "colour"])
    cases, val = _open_set_cases(), _open_set_cases(seed=1)
    data = Labelled.of(cases)
    assert sorted(set(data.disease[data.real])) == ["A", "B", "C", "D"] and (data.disease[~data.real] == None).all()  # noqa: E711
    assert set(data.half) == {0, 1} and abs(int((data.half == 0).sum()) - len(data.half) // 2) < len(data.half) // 4
    without = val[3].without("D")  # case 3 holds a lesion of D: gone from the reference and the predictions
    assert without.truth_voxels == 0 and len(without.rows) == 3 and not without.inside.any()
    assert val[3].without("A").truth_voxels == 50 and len(val[3].without("A").rows) == 4

    table = left_out_table(data, val)
    rows = {r["features"]: r for r in table}
    assert set(rows) == set(FEATURE_SETS) and set(rows["all"]["kept"]) == {"A", "B", "C", "D"}
    # reading density, the fit removes the disease that is less dense than the false lesions when it is the unseen
    # one; reading size it keeps it, and both still remove false lesions
    assert rows["all"]["kept"]["D"] < 0.5 < rows["network_size"]["kept"]["D"]
    assert rows["all"]["false_kept"] < 0.5 and rows["network_size"]["false_kept"] < 0.5
    assert rows["all"]["left_out_kept"] == pytest.approx(np.mean(list(rows["all"]["kept"].values())), abs=1e-3)

    verifier = fit_and_choose(cases, val, {"dataset": "constructed"}, {"dataset": "constructed"})
    assert verifier.features == list(FEATURES) and verifier.meta["left_out"]["set"] == "all"
    assert verifier.meta["left_out"]["table"] == table
    chosen = fit_and_choose(cases, val, {"dataset": "constructed"}, {"dataset": "constructed"}, features="network_size")
    assert chosen.features == list(FEATURE_SETS["network_size"])

    one_disease = [c for c in cases if "A" in c.diseases or not any(c.diseases)]
    for c in one_disease:
        c.diseases = [d if d == "A" else None for d in c.diseases]
        c.inside = np.array([50 if d == "A" else 0 for d in c.diseases])
    assert left_out_table(Labelled.of(one_disease), val) == []


def test_each_kept_lesion_is_named_by_the_reference_lesion_holding_most_of_its_overlap():
    from malenia.evaluate.verifier_fit import _diseases_found

    # the reference voxels: which predicted lesion (0: none) and which reference lesion each lies in
    predicted = np.array([1, 1, 1, 1, 0, 2, 2, 0])
    labels = np.array([2, 2, 2, 1, 1, 1, 1, 3])
    names = {1: "liver_cyst", 2: "liver_tumor", 3: "gallstone"}
    assert _diseases_found(predicted, labels, [2, 1, 5], names) == ["liver_cyst", "liver_tumor", None]
    assert _diseases_found(np.zeros(0, int), np.zeros(0, int), [1], names) == [None]


def test_each_kept_lesion_detects_what_evaluate_matches_on_the_label_maps():
    """The verifier's per-lesion detection flags, counted from the reference voxels alone, are evaluate's
    one-to-one matching (malenia.evaluate.metrics.match_instances) of the kept lesions."""
    from malenia.evaluate.metrics import match_instances
    from malenia.evaluate.verifier_fit import _hits

    rng = np.random.default_rng(3)
    shape = (24, 24, 24)
    pred, ref = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    corners = rng.integers(0, 18, (8, 3))
    for k, (z, y, x) in enumerate(corners, start=1):  # boxes that may overlap one another
        pred[z:z + rng.integers(3, 6), y:y + rng.integers(3, 6), x:x + rng.integers(3, 6)] = k
    for g, k in ((3, 1), (7, 2), (9, 5), (12, 6)):  # references shifted from lesions 1, 2, 5 (not kept) and 6
        z, y, x = corners[k - 1] + rng.integers(0, 2, 3)
        ref[z:z + 4, y:y + 4, x:x + 4] = g
    ref[0:3, 21:24, 21:24] = 15  # a reference no lesion finds
    voxels = np.bincount(pred.ravel(), minlength=9)
    order = [k for k in range(1, 9) if voxels[k] and k != 5]  # lesion 5 not kept
    truth = ref > 0
    hit = _hits(pred[truth], ref[truth], voxels, order)
    kept_map = np.where(np.isin(pred, order), pred, 0)
    expected = {p for _, p, _ in match_instances(kept_map, ref).pairs}
    assert len(expected) >= 2 and [k in expected for k in order] == hit.tolist()
