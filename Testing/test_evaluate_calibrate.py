"""Post-processing calibration: the sweep on constructed maps, the choice rule, inference.json in the model
folder and the defaults that segment / evaluate take from it, and `malenia calibrate` end to end."""

import json
import shutil

import numpy as np
import pytest

from malenia.errors import ModelError
from malenia.evaluate.calibrate import choose, scores, sweep_case
from malenia.evaluate.metrics import one_lesion_margin
from malenia.model.folder import INFERENCE, InferenceDefaults, load_model_folder, update_model_folder
from segment_helpers import constructed_map as _map, malenia, tiny_trained_model
from train_helpers import make_tiny_dataset


def _maps():
    truth = np.zeros((12, 12, 12), bool)
    truth[2:5, 2:5, 2:5] = True  # 27 voxels
    prob = np.zeros(truth.shape, np.float32)
    prob[truth] = 0.95  # the lesion
    prob[9, 9, 9:11] = 0.65  # a 2-voxel speck
    prob[7:10, 0:3, 0:3] = 0.35  # a faint 27-voxel false positive
    return _map(prob), truth


def test_sweep_scores_every_threshold_and_volume_as_computed_by_hand():
    # voxels of 8 mm³: the speck is 16 mm³, the cube and the faint block 216 mm³
    sweep = sweep_case(*_maps(), thresholds=(0.3, 0.6, 0.9), min_volumes_mm3=(0.0, 20.0, 300.0))
    dsc, count = sweep.dsc, sweep.count
    expected = np.array([
        [2 * 27 / (56 + 27), 2 * 27 / (54 + 27), 0.0],  # 0.3: all three; speck removed; everything removed
        [2 * 27 / (29 + 27), 1.0, 0.0],  # 0.6: lesion + speck; the lesion alone; nothing
        [1.0, 1.0, 0.0],
    ])
    np.testing.assert_allclose(dsc, expected)
    np.testing.assert_array_equal(count, [[3, 2, 0], [2, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(sweep.hits, [[1, 1, 0], [1, 1, 0], [1, 1, 0]])  # the cube, until 300 mm³
    assert sweep.lesions == 1


def test_a_case_without_lesions_scores_one_only_when_nothing_is_predicted():
    pm, truth = _maps()
    sweep = sweep_case(pm, np.zeros_like(truth), thresholds=(0.3, 0.99), min_volumes_mm3=(0.0,))
    np.testing.assert_array_equal(sweep.dsc[:, 0], [0.0, 1.0])
    assert sweep.lesions == 0 and not sweep.hits.any()


def test_the_sweep_is_the_shipped_step_on_a_finer_input_grid():
    """On a 1 mm input grid under a 2 mm model grid, every swept pair scores what segment's step labels."""
    import SimpleITK as sitk

    from malenia.data.preprocess import Preprocessor
    from malenia.infer.postprocess import ProbabilityMap, kept, lesion_map, relabel

    image = sitk.GetImageFromArray(np.zeros((24, 24, 24), np.float32))  # 1 mm
    prepared = Preprocessor((2.0,) * 3, normalization="window").prepare(image)
    prob = np.zeros(prepared.array.shape, np.float32)
    prob[2:6, 2:6, 2:6] = np.linspace(0.5, 1.0, 64).reshape(4, 4, 4)
    prob[8:10, 8:10, 8:10] = 0.7
    pm = ProbabilityMap(prob, prepared, image)
    truth = np.zeros((24, 24, 24), bool)
    truth[4:12, 4:12, 4:12] = True
    thresholds, volumes = (0.4, 0.8), (0.0, 30.0, 200.0)
    sweep = sweep_case(pm, truth, thresholds, volumes)
    dsc, count = sweep.dsc, sweep.count
    for i, t in enumerate(thresholds):
        lm = lesion_map(pm, t)
        # the per-id counts (background included) are those of the labels it returns
        np.testing.assert_array_equal(lm.voxels, np.bincount(lm.labels.ravel(), minlength=lm.n + 1)[: lm.n + 1])
        for j, v in enumerate(volumes):
            labels = relabel(lm, kept(lm, v))
            sizes = np.bincount(labels.ravel())[1:]
            assert count[i, j] == labels.max() and list(sizes) == sorted(sizes, reverse=True)
            assert all(s >= v for s in sizes)  # 1 mm³ voxels: the volume is the count
            both = int(labels.astype(bool).sum()) + int(truth.sum())
            assert dsc[i, j] == pytest.approx(2 * np.logical_and(labels > 0, truth).sum() / both)
    assert count[0, 0] == 2 and count[0, 2] == 1  # the 2 mm cube (8 model voxels ~ 64 mm³) goes at 200 mm³


def _small_and_large():
    """A large lesion, a small one (3 voxels of 8 mm³ = 24 mm³) the model finds, a bright 4-voxel false positive and a
    faint 3-voxel one."""
    truth = np.zeros((16, 16, 16), np.int32)
    truth[2:8, 2:8, 2:8] = 1  # 216 voxels
    truth[12, 12, 10:13] = 2
    prob = np.zeros(truth.shape, np.float32)
    prob[truth > 0] = 0.95
    prob[12, 2, 2:6] = 0.95
    prob[2, 12, 12:15] = 0.7
    return _map(prob), truth


def test_sweep_counts_each_reference_lesion_found_once_by_the_detection_rule():
    sweep = sweep_case(*_small_and_large(), thresholds=(0.5, 0.8), min_volumes_mm3=(0.0, 20.0, 100.0))
    assert sweep.lesions == 2
    np.testing.assert_array_equal(sweep.count, [[4, 4, 1], [3, 3, 1]])
    np.testing.assert_array_equal(sweep.hits, [[2, 2, 1], [2, 2, 1]])


def test_the_detection_objective_keeps_a_small_lesion_the_dsc_objective_deletes():
    """DSC alone hardly notices a 3-voxel lesion beside a 216-voxel one: it removes it with the minimum volume to
    be rid of a 4-voxel false positive; half DSC + half detection F1 keeps both (and drops the faint false
    positive by the threshold)."""
    thresholds, volumes = (0.5, 0.8), (0.0, 20.0, 100.0)
    sweeps = [sweep_case(*_small_and_large(), thresholds, volumes)]
    by_dsc = choose(scores(sweeps, "dsc")["score"], thresholds, volumes)
    grid = scores(sweeps, "dsc_f1")
    by_both = choose(grid["score"], thresholds, volumes)
    assert by_dsc == (1, 2) and by_both == (1, 1)
    assert grid["recall"][by_both] == 1.0 and grid["precision"][by_both] == pytest.approx(2 / 3)
    assert grid["recall"][by_dsc] == 0.5 and grid["f1"][by_dsc] == pytest.approx(2 / 3)


def test_a_gate_removes_lesions_before_they_are_scored_as_segment_would():
    """With the model's verifier as the gate, the bright false positive it rejects is gone at every threshold and
    volume; the gate sees the lesions of the smallest minimum volume once per threshold."""
    pm, truth = _small_and_large()
    seen = []

    def gate(pm_, lm, order):
        seen.append(list(order))
        false = {k for k in order if not (lm.labels == k)[truth > 0].any()}
        return [k for k in order if k not in false]

    thresholds, volumes = (0.5, 0.8), (0.0, 20.0, 100.0)
    sweep = sweep_case(pm, truth, thresholds, volumes, gate)
    np.testing.assert_array_equal(sweep.count, [[2, 2, 1], [2, 2, 1]])  # both false positives rejected
    np.testing.assert_array_equal(sweep.hits, [[2, 2, 1], [2, 2, 1]])
    assert len(seen) == 2 and [len(o) for o in seen] == [4, 3]
    ungated = sweep_case(pm, truth, thresholds, volumes)
    assert (sweep.dsc >= ungated.dsc).all() and (sweep.dsc > ungated.dsc).any()


def test_choice_takes_the_best_dsc_and_breaks_ties_towards_fewer_false_positives():
    thresholds, volumes = (0.3, 0.6, 0.9), (0.0, 20.0, 300.0)
    scores = np.array([[0.5, 0.7, 0.1], [0.6, 0.7, 0.1], [0.2, 0.3, 0.1]])
    assert choose(scores, thresholds, volumes) == (1, 1)  # 0.7 twice: the higher threshold
    scores[1, 2] = 0.7
    assert choose(scores, thresholds, volumes) == (1, 2)  # then the larger minimum volume
    scores[0, 0] = 0.71
    assert choose(scores, thresholds, volumes) == (0, 0)  # a better DSC wins whatever its threshold


def test_within_one_lesion_of_the_best_the_setting_with_fewer_false_positives_wins():
    """2.10.0's calibration table at threshold 0.3: 25 mm³ scored 0.5449 and 50 mm³ 0.5447 (one lesion of 87 for three
    more predictions of 51); one lesion is worth 1/(51 + 87) = 0.0072 of the score, so 50 mm³ wins, 100 mm³
    (0.5351, 0.0098 below) does not."""
    thresholds, volumes = (0.2, 0.3, 0.4), (0.0, 25.0, 50.0, 100.0)
    scores = np.array([[0.5305, 0.5305, 0.5264, 0.5264],
                       [0.5449, 0.5449, 0.5447, 0.5351],
                       [0.5132, 0.5132, 0.5170, 0.5072]])
    assert choose(scores, thresholds, volumes) == (1, 1)
    margin = one_lesion_margin("dsc_f1", 51, 87)
    assert margin == pytest.approx(1 / 138)
    assert choose(scores, thresholds, volumes, margin) == (1, 2)
    scores[2, 3] = 0.5400  # a higher threshold within the margin: fewer false positives still
    assert choose(scores, thresholds, volumes, margin) == (2, 3)
    assert one_lesion_margin("dsc", 51, 87) == 0.0 and one_lesion_margin("dsc_f1", 0, 0) == 0.0
    with pytest.raises(ValueError):
        one_lesion_margin("f1", 1, 1)


def test_inference_defaults_refuse_bad_values():
    assert InferenceDefaults.from_dict({"threshold": 0.7, "min_volume_mm3": 100}).threshold == 0.7
    for bad in ({"threshold": 1.5, "min_volume_mm3": 0}, {"threshold": 0.5, "min_volume_mm3": -1},
                {"threshold": "x", "min_volume_mm3": 0}, {"min_volume_mm3": 0}, [0.5]):
        with pytest.raises(ModelError):
            InferenceDefaults.from_dict(bad)


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory):
    src = tiny_trained_model(tmp_path_factory)
    dst = tmp_path_factory.mktemp("calibrate") / "model"
    shutil.copytree(src, dst)
    return dst


def test_calibrated_values_become_the_defaults_of_segment_and_evaluate(model_copy, tmp_path):
    from malenia.infer.pipeline import Segmenter, SegmentOptions

    folder = tmp_path / "m"
    shutil.copytree(model_copy, folder)
    plain = load_model_folder(folder)
    assert plain.inference_defaults() == InferenceDefaults()  # uncalibrated: the project defaults
    update_model_folder(folder, {INFERENCE: json.dumps({"threshold": 0.7, "min_volume_mm3": 250.0})})
    model = load_model_folder(folder)
    assert (model.inference_defaults().threshold, model.inference_defaults().min_volume_mm3) == (0.7, 250.0)
    seg = Segmenter(model, SegmentOptions(device="cpu"))
    assert (seg.options.threshold, seg.options.min_volume_mm3) == (0.7, 250.0)
    explicit = Segmenter(model, SegmentOptions(device="cpu", threshold=0.3, min_volume_mm3=0.0))
    assert (explicit.options.threshold, explicit.options.min_volume_mm3) == (0.3, 0.0)
    from malenia.infer.postprocess import min_voxels

    assert min_voxels(250.0, 2.5 ** 3) == 16 and min_voxels(250.0, 2.5) == 100  # 15.6 -> 16; exact: no 101
    assert min_voxels(0.0, 8.0) == 1  # a lesion has at least one voxel
    update_model_folder(folder, {INFERENCE: json.dumps({"threshold": 2.0, "min_volume_mm3": 250.0})})
    with pytest.raises(ModelError, match="threshold"):
        load_model_folder(folder).inference_defaults()


def test_calibrate_cli_writes_the_best_pair_into_the_model_folder(model_copy, tmp_path):
    data = make_tiny_dataset(tmp_path / "ds", n_cases=3)
    before = {p.name: p.read_bytes() for p in model_copy.iterdir()}
    dry = malenia("calibrate", "--model", model_copy, "--data", data, "--split", "all", "--threads", "1",
                  "--progress", "none", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "| threshold | min volume" in dry.stdout
    assert {p.name: p.read_bytes() for p in model_copy.iterdir()} == before  # nothing written

    more = make_tiny_dataset(tmp_path / "more", n_cases=2, seed=5)  # same case ids, other cases: pooled
    res = malenia("calibrate", "--model", model_copy, "--data", data, "--data", more, "--split", "all", "--threads", "1",
                  "--progress", "none")
    assert res.returncode == 0, res.stderr[-2000:]
    model = load_model_folder(model_copy)  # manifest re-hashed: still verifies
    stored = json.loads((model_copy / INFERENCE).read_text())
    table = stored["calibration"]["table"]
    best = max(row["score"] for row in table)
    cal = stored["calibration"]
    assert cal["best"]["score"] == best and cal["cases"] == 5
    top = [r for r in table if (r["threshold"], r["min_volume_mm3"]) == (cal["best"]["threshold"],
                                                                         cal["best"]["min_volume_mm3"])][0]
    assert top["score"] == best
    assert cal["margin"] == pytest.approx(1 / (top["lesions_per_case"] * 5 + cal["reference_lesions"]), rel=1e-3)
    within = [(r["threshold"], r["min_volume_mm3"]) for r in table if r["score"] >= best - cal["margin"] - 1e-4]
    assert (stored["threshold"], stored["min_volume_mm3"]) == max(within)  # the fewest false positives within it
    assert stored["calibration"]["dataset"] == "ds + more"
    assert stored["calibration"]["datasets"] == [{"dataset": "ds", "cases": 3}, {"dataset": "more", "cases": 2}]
    assert stored["calibration"]["objective_id"] == "dsc_f1"
    chosen = [r for r in table if (r["threshold"], r["min_volume_mm3"]) == (stored["threshold"], stored["min_volume_mm3"])]
    assert chosen and chosen[0]["score"] == cal["score"] >= best - cal["margin"] - 1e-4
    assert chosen[0]["score"] == pytest.approx((chosen[0]["mean_dsc"] + chosen[0]["f1"]) / 2, abs=1e-3)
    assert chosen[0]["mean_dsc"] > 0.3 and chosen[0]["recall"] > 0  # the test model finds the bright spheres
    assert model.inference_defaults().threshold == stored["threshold"]
    assert model.manifest["inference"] == {"threshold": stored["threshold"], "min_volume_mm3": stored["min_volume_mm3"]}

    def evaluate(*extra):
        run = malenia("evaluate", "--model", model_copy, "--data", data, "--split", "all", "--max-cases", "1",
                      "--threads", "1", "--progress", "none", "--json", *extra)
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout)

    calibrated = evaluate()
    assert (calibrated["threshold"], calibrated["min_volume_mm3"]) == (stored["threshold"], stored["min_volume_mm3"])
    assert calibrated["calibration"]["split"] == "all" and "table" not in calibrated["calibration"]
    overridden = evaluate("--threshold", "0.35", "--min-volume", "0")
    assert (overridden["threshold"], overridden["min_volume_mm3"], overridden["calibration"]) == (0.35, 0.0, None)


def test_pooled_cases_keep_each_dataset_s_split_in_order_and_refuse_a_case_named_twice(tmp_path):
    import os

    from malenia.errors import InputError
    from malenia.evaluate.calibrate import pooled_cases

    a = make_tiny_dataset(tmp_path / "a", n_cases=2)
    b = make_tiny_dataset(tmp_path / "b", n_cases=3, seed=1)
    assert pooled_cases([a, b], None) == [(a, "case00"), (a, "case01"), (b, "case00"), (b, "case01"), (b, "case02")]
    linked = tmp_path / "linked"  # a dataset whose case folders link to another's (as lidc_val_ts to lidc_val)
    (linked / "cases").mkdir(parents=True)
    os.symlink(a / "cases" / "case01", linked / "cases" / "case01")
    (linked / "dataset.json").write_text(json.dumps({"format": "malenia-dataset/1", "name": "linked",
                                                     "cases": ["case01"], "split": {"val": ["case01"]}}))
    assert pooled_cases([linked, b], None)[0] == (linked, "case01")
    with pytest.raises(InputError, match="also in another"):
        pooled_cases([a, linked], None)
    with pytest.raises(InputError, match="no split 'test'"):
        pooled_cases([linked], "test")
    (linked / "dataset.json").write_text(json.dumps({"format": "malenia-dataset/1", "name": "linked",
                                                     "cases": ["case01"], "split": {"val": ["case01"], "test": []}}))
    with pytest.raises(InputError, match="split 'test' has no cases"):
        pooled_cases([b, linked], "test")


def test_calibrate_cli_refuses_a_folder_that_is_not_a_dataset(model_copy, tmp_path):
    res = malenia("calibrate", "--model", model_copy, "--data", tmp_path, "--progress", "none")
    assert res.returncode != 0 and "not a Malenia dataset" in res.stderr


def test_a_fine_tune_inherits_its_parents_calibration_and_records_its_lineage(model_copy, tmp_path, tmp_path_factory):
    from malenia.train.loop import TrainOptions, train
    from train_helpers import tiny_config

    parent = tmp_path / "parent"
    shutil.copytree(model_copy, parent)
    rule = {"min_typicality": 0.61, "contradiction_fit": 0.2, "fitted_on": "9 detected validation lesions"}
    update_model_folder(parent, {INFERENCE: json.dumps({"threshold": 0.65, "min_volume_mm3": 100.0, "calibration": {
        "objective": "mean case DSC", "split": "val", "cases": 4, "table": []}, "disease": rule})})
    data = make_tiny_dataset(tmp_path / "ds", n_cases=2)
    res = train(TrainOptions(data=data, out=tmp_path / "run", config=tiny_config(), steps=2, progress="none",
                             val_split=None, init=parent, checkpoint_every=10**6))
    child = load_model_folder(res.model_dir).inference_defaults()
    assert (child.threshold, child.min_volume_mm3) == (0.65, 100.0)
    assert child.calibration["inherited_from"].startswith(load_model_folder(parent).name)
    assert child.calibration["cases"] == 4 and "table" not in child.calibration
    # the unclassified rule fitted on the parent's scores stays in force, as the verifier and appearance cut do
    from malenia.infer.site_table import table_in_force_at
    from malenia.knowledge.site import origin_json

    assert child.disease == {**rule, "inherited_from": child.calibration["inherited_from"]}
    unclassified = origin_json(table_in_force_at(res.model_dir))["unclassified"]
    assert unclassified["source"] == "model" and unclassified["min_typicality"] == 0.61
    assert unclassified["contradiction_fit"] == 0.2
    assert unclassified["inherited_from"] == child.calibration["inherited_from"]
    parent_manifest = load_model_folder(parent).manifest
    lineage = load_model_folder(res.model_dir).manifest["lineage"]  # the stage it continues, for the model card
    assert lineage == [{"name": parent_manifest["name"], "version": parent_manifest["version"],
                        "steps": parent_manifest["training"]["steps"], "batch_size": parent_manifest["training"]["batch_size"],
                        "seconds": parent_manifest["training"]["seconds_total"]}]
    # an uncalibrated parent passes on nothing: the child uses the project defaults
    res2 = train(TrainOptions(data=data, out=tmp_path / "run2", config=tiny_config(), steps=2, progress="none",
                              val_split=None, init=tiny_trained_model(tmp_path_factory), checkpoint_every=10**6))
    assert load_model_folder(res2.model_dir).inference_defaults() == InferenceDefaults()


def test_model_card_lists_earlier_stages_and_totals():
    from malenia.evaluate.model_card import render_model_card

    manifest = {"name": "m", "version": "3", "training": {"steps": 1000, "seconds_total": 1200.0, "note": "hard negatives"},
                "lineage": [{"name": "m", "version": "1", "steps": 1500, "seconds": 1800.0},
                            {"name": "m", "version": "2", "steps": 500, "seconds": 600.0, "note": "off-centre"}]}
    card = render_model_card(manifest, {"name": "compact"}, [])
    assert "  - m 1: 1500 steps, 30.0 min" in card and "  - m 2: 500 steps, 10.0 min (off-centre)" in card
    assert "All 3 stages: 3000 steps in 60.0 min of training." in card
    assert "validation patch Dice – (this stage: hard negatives)." in card
    assert "- Training: 1000 optimiser steps, global batch" in card  # no step target: none made up
    manifest["training_data"] = "malenia synth, seed 1"
    assert "**Trained on synthetic lesions only**" in render_model_card(manifest, {}, [])
    manifest["training_data"] += "; LIDC nodules planted by malenia synth --nodules"
    assert "**Trained on synthetic lesions and real LIDC nodules planted into other CTs**" in render_model_card(manifest, {}, [])
    manifest["training"].update(of_steps=1200, minutes=45.0)
    assert "- Training: 1000 of 1200 optimiser steps (schedule laid over 45 minutes)," in render_model_card(manifest, {}, [])
    manifest["lineage"][0]["seconds"] = None  # unknown duration: no made-up total
    assert "All 3 stages" not in render_model_card(manifest, {"name": "compact"}, [])
    assert "- Attributes:" not in card  # no measured attributes: the tokens alone, nothing claimed
    measured = {"weight": 0.75, "aspects": {"shape": {}, "location": {}},
                "fitted_on": {"dataset": "/data/seen_train", "split": "train", "lesions": 288},
                "leave_one_disease_out": {"location": 0.0, "shape": 0.924}}
    line = [x for x in render_model_card(manifest, {}, [], measured=measured).splitlines() if x.startswith("- Attributes:")]
    assert line == ["- Attributes: the tokens' matches blended with classifiers on lesion measurements for location, "
                    "shape (weight 0.75; `malenia fit-attributes` on 288 lesions of seen_train (train), measured on "
                    "their reference masks; leave-one-disease-out accuracy shape 0.92)."]
    measured["aspect_weights"] = {"location": 1.0}  # an aspect's own measured share is named beside the file's
    assert "location, shape (weight 0.75, location 1.0; `malenia fit-attributes`" in render_model_card(manifest, {}, [], measured=measured)
    measured["fitted_on"]["masks"] = "predicted"
    assert "measured on the model's own masks of them;" in render_model_card(manifest, {}, [], measured=measured)
    measured["leave_one_disease_out_balanced"] = {"location": 0.0, "shape": 0.61}
    assert "leave-one-disease-out accuracy shape 0.92 (balanced 0.61))." in render_model_card(manifest, {}, [], measured=measured)
    measured["aspects"]["density"] = {"kind": "organ_level"}  # its descriptions name the organ: the level transfers
    measured["leave_one_disease_out"]["density"] = 0.594
    assert "shape 0.92 (balanced 0.61), density level 0.59)." in render_model_card(manifest, {}, [], measured=measured)
    measured["aspects"]["relationship"] = {"kind": "one_sided", "classes": ["relationship.vascular"], "feature": "ring_vessel",
                                           "organ": "liver", "quantile": 0.9, "cut": 0.0205, "lesions": 61}
    assert ("density level 0.59; relationship: relationship.vascular only where ring_vessel exceeds 0.021, the 0.9 quantile "
            "of 61 training liver lesions without it)." in render_model_card(manifest, {}, [], measured=measured))
    assert "ruled out" not in card  # no appearance check: nothing claimed
    look = {"features": ["hu_mean", "contrast"], "cut": 0.0, "alpha": 0.1,
            "fitted_on": {"dataset": "/data/seen_train", "split": "train"}, "diseases": {"kidney_cyst": {"lesions": 46}}}
    line = lambda: next(x for x in render_model_card(manifest, {}, [], appearance=look).splitlines()  # noqa: E731
                        if x.startswith("- Disease naming:"))
    assert "seen_train (train, reference masks) for kidney cyst (46); not calibrated: nothing is ruled out)." in line()
    look |= {"cut": 0.2243, "calibrated_on": {"dataset": "seen_verify", "split": "all", "lesions": 79}}
    assert line().endswith("cut 0.2243: the 0.1-quantile of 79 detected lesions of seen_verify (all) under their own disease).")


def test_model_card_does_not_call_a_gap_between_two_poor_results_met():
    from malenia.evaluate.model_card import _targets

    def card(unseen_dsc, seen_dsc):
        attrs = {"enhancement": {"precision": 1.0}, "location": {"precision": 0.2}}
        results = [{"groups": {"unseen": {"dsc": unseen_dsc, "attributes": attrs}}},
                   {"groups": {"seen": {"dsc": seen_dsc, "attributes": attrs}}}]
        return next(line for line in _targets(results) if "within 0.10" in line)

    assert card(0.112, 0.107).endswith("n/a (seen and unseen DSC both below the 0.60 target) |")
    assert card(0.65, 0.70).endswith("| yes |")
    assert card(0.45, 0.70).endswith("| no |")


def test_model_card_says_what_the_verifier_reads_what_it_does_to_a_left_out_disease_and_what_it_removes():
    from malenia.evaluate.model_card import render_model_card

    verifier = {"features": ["peak_probability", "mean_probability"], "cut": 0.4,
                "fitted_on": {"dataset": "/data/seen_verify", "lesions": 416, "real": 99},
                "validation": {"dataset": "/data/seen_train", "split": "val", "cases": 16, "mean_dsc_without": 0.39,
                               "mean_dsc": 0.41},
                "left_out": {"set": "network", "table": [
                    {"features": "all", "left_out_kept": 0.62, "false_kept": 0.06, "kept": {"a": 0.3, "b": 0.94}},
                    {"features": "network", "left_out_kept": 0.81, "false_kept": 0.13, "kept": {"a": 0.7, "b": 0.92}}]}}
    line = [x for x in render_model_card({"name": "m"}, {}, [], verifier=verifier).splitlines()
            if x.startswith("- False positives:")]
    assert len(line) == 1
    assert "logistic regression on peak probability, mean probability; with one of 2 training diseases left out of " \
           "its fit and cut in turn it keeps 0.81 of that disease's lesions (as few as 0.70) and 0.13 of the false " \
           "ones;" in line[0]
    assert "kept when it scores at least 0.4 (chosen on 16 cases of seen_train (val): mean DSC 0.39 without, 0.41 with)." \
           in line[0]
    detection = {**verifier["validation"], "recall": 0.53, "precision": 0.9, "objective": "half DSC, half F1"}
    line = render_model_card({"name": "m"}, {}, [], verifier={**verifier, "validation": detection})
    assert "mean DSC 0.39 without, 0.41 with, lesion detection recall 0.53 and precision 0.9; objective: half DSC, " \
           "half F1)." in line
    verifier.update(cut=0.0, validation={**verifier["validation"], "mean_dsc": 0.39})
    card = render_model_card({"name": "m"}, {}, [], verifier=verifier)
    assert "kept whatever it scores (cut 0: no cut helped on 16 cases" in card and "at least 0" not in card
    del verifier["left_out"]  # a verifier fitted before the trials existed: nothing claimed about them
    assert "left out" not in render_model_card({"name": "m"}, {}, [], verifier=verifier)
    from malenia.model.lesion_verifier import FEATURES

    verifier["features"] = list(FEATURES)
    assert "logistic regression on its probability and image measurements;" in render_model_card({"name": "m"}, {}, [],
                                                                                                  verifier=verifier)
    verifier["fitted_on"]["dataset"] = "/data/seen_verify + /data/lidc_vf_train"  # a pooled fit names every dataset
    assert "lesions the model predicted in seen_verify + lidc_vf_train," in render_model_card({"name": "m"}, {}, [],
                                                                                            verifier=verifier)


def test_model_card_says_how_the_post_processing_was_chosen_and_what_it_gave_on_validation():
    from malenia.evaluate.model_card import _post_processing

    cal = {"cases": 16, "dataset": "seen_train", "split": "val", "objective": "half DSC, half F1",
           "verifier_cut": 0.3, "mean_dsc": 0.4655, "recall": 0.559, "precision": 0.95}
    text = _post_processing({"threshold": 0.2, "min_volume_mm3": 524.0, "calibration": cal})
    assert text == ("foreground threshold 0.2, lesions under 524 mm³ (a ball 10.0 mm across) removed; both chosen by `malenia calibrate` on 16 "
                    "cases of seen_train (val) by half DSC, half F1, with the lesion verifier in place (cut 0.3): mean "
                    "DSC 0.4655, lesion detection recall 0.559 and precision 0.95 there")
    old = {k: cal[k] for k in ("cases", "dataset", "split")}  # a calibration from before the objective was recorded
    assert _post_processing({"threshold": 0.4, "calibration": old}).endswith("on 16 cases of seen_train (val)")
    margin = {**cal, "margin": 0.0072, "best": {"threshold": 0.2, "min_volume_mm3": 25.0, "score": 0.5449}}
    text = _post_processing({"threshold": 0.2, "min_volume_mm3": 524.0, "calibration": margin})
    assert text.endswith("there (the best score there, 0.5449 at 0.2 / 25 mm³, is within one lesion's worth, 0.0072, "
                         "of this setting's, which keeps fewer false positives)")
    same = {**margin, "best": {"threshold": 0.2, "min_volume_mm3": 524.0, "score": 0.5449}}
    assert _post_processing({"threshold": 0.2, "min_volume_mm3": 524.0, "calibration": same}).endswith("0.95 there")


def test_model_card_names_the_site_profiles_an_evaluation_named_diseases_with():
    from malenia.evaluate.model_card import _site_profiles

    assert _site_profiles({"knowledge": {"profiles": []}}) == "" and _site_profiles({}) == ""
    line = _site_profiles({"knowledge": {"profiles": [
        {"key": "pulmonary_nodule", "version": "1", "sha256": "b157e800ea2164a9d8", "overrides": False},
        {"key": "liver_cyst", "version": "3", "sha256": "0123456789abcdef", "overrides": True}]}})
    assert "site profiles `pulmonary_nodule` version 1 (sha256 b157e800ea21…)" in line
    assert "`liver_cyst` version 3 (sha256 0123456789ab…, overriding the model's)" in line
