"""Site disease profiles: `malenia knowledge add|edit|remove|list`, the table in force in `segment`,
the report's knowledge origin, re-ranking a saved result, and the open-set "unclassified" rule."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.cli import main as cli
from segment_helpers import THRESHOLD, malenia, sphere_ct, tiny_trained_model

HAEMANGIOMA = ["location.liver.right_lobe=3", "location.liver.left_lobe=1", "shape.round=3", "shape.oval",
               "density.hypodense.liver", "density_variation.homogeneous=3", "density_variation.heterogeneous",
               "surface.well_defined=9", "surface.ill_defined", "relationship.separate", "enhancement.contrast",
               "specific_features.marked_enhancement=2", "specific_features.none"]
TYPICAL = ["location.liver.right_lobe", "shape.round", "density.hypodense.liver", "density_variation.homogeneous",
           "surface.well_defined", "relationship.separate", "enhancement.contrast", "specific_features.marked_enhancement"]


def _profiles_in(knowledge: dict, folder) -> list[str]:
    """Keys of the profiles a report's knowledge block took from `folder` (the installation's own are
    in force beside a test's folder)."""
    return [p["key"] for p in knowledge["profiles"] if str(p["path"]).startswith(str(folder))]


def _classify(capsys, site, ids) -> dict:
    assert cli(["knowledge", "classify", *ids, "--knowledge", str(site)]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_adds_validates_edits_and_removes_a_profile_named_by_classification(tmp_path, capsys):
    site = tmp_path / "site"
    add = ["knowledge", "add", "hepatic_haemangioma", "--name", "Hepatic haemangioma", "--organ", "liver",
           "--knowledge", str(site), "-d"]
    # unknown descriptions are refused with the closest valid ones, and nothing is written
    assert cli(add[:-1] + ["-d", "shape.rond"]) == 3
    assert "closest: shape.round" in capsys.readouterr().err
    assert cli(add[:-1] + ["-d", "peripheral nodular enhancement"]) == 3
    assert "specific_features.marked_enhancement" in capsys.readouterr().err
    assert cli(add[:-1] + ["-d", "density.hypodense.kidney"]) == 3
    assert "kidney, not the liver" in capsys.readouterr().err
    assert not list(site.glob("*.json"))

    assert _classify(capsys, site, TYPICAL)["name"] == "unclassified"  # the 12-disease table has no such lesion
    assert cli(add + HAEMANGIOMA) == 0
    path = site / "hepatic_haemangioma.json"
    profile = json.loads(path.read_text())
    assert profile["version"] == 1 and profile["organ"] == "liver"
    assert profile["profile"]["surface"] == pytest.approx({"surface.well_defined": 0.9, "surface.ill_defined": 0.1})
    # an aspect given no description: every liver description equally
    assert len(profile["profile"]["shape"]) == 2 and profile["profile"]["location"]["location.liver.right_lobe"] == 0.75
    capsys.readouterr()
    assert _classify(capsys, site, TYPICAL)["name"] == "hepatic_haemangioma"
    assert cli(add + HAEMANGIOMA) == 3  # exists: edit, not add
    capsys.readouterr()

    assert cli(["knowledge", "edit", "hepatic_haemangioma", "-d", "shape.oval=4", "shape.round", "--knowledge", str(site)]) == 0
    edited = json.loads(path.read_text())
    assert edited["version"] == 2 and edited["profile"]["shape"] == {"shape.oval": 0.8, "shape.round": 0.2}
    assert edited["profile"]["surface"] == profile["profile"]["surface"]  # other aspects kept
    capsys.readouterr()
    assert cli(["knowledge", "list", "--json", "--knowledge", str(site)]) == 0
    listed = json.loads(capsys.readouterr().out)
    entry = next(p for p in listed["knowledge"]["profiles"] if p["key"] == "hepatic_haemangioma")
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and entry["version"] == "2"
    assert not entry["overrides"] and {"key": "hepatic_haemangioma", "name": "Hepatic haemangioma", "organ": "liver",
                                       "source": "site", "overrides": False} in listed["diseases"]

    # the model's own diseases can be overridden, not removed
    assert cli(["knowledge", "remove", "liver_cyst", "--knowledge", str(site)]) == 3
    assert cli(["knowledge", "remove", "hepatic_haemangioma", "--knowledge", str(site)]) == 0
    assert not path.exists()
    capsys.readouterr()
    assert _classify(capsys, site, TYPICAL)["name"] == "unclassified"


def test_environment_folder_applies_and_a_later_folder_overrides(tmp_path, monkeypatch):
    from malenia.infer.site_table import table_in_force_at
    from malenia.knowledge.site import KNOWLEDGE_ENV

    env_dir, run_dir = tmp_path / "env", tmp_path / "run"
    monkeypatch.setenv(KNOWLEDGE_ENV, str(env_dir))
    assert cli(["knowledge", "add", "hepatic_haemangioma", "--name", "Env name", "--organ", "liver", "-d", *HAEMANGIOMA]) == 0
    assert (env_dir / "hepatic_haemangioma.json").is_file()  # $MALENIA_KNOWLEDGE is where it writes by default
    assert cli(["knowledge", "edit", "hepatic_haemangioma", "--name", "Run name", "--knowledge", str(run_dir)]) == 0
    table = table_in_force_at()
    assert table.name("hepatic_haemangioma") == "Env name"
    table = table_in_force_at(None, [run_dir])
    assert table.name("hepatic_haemangioma") == "Run name"
    # the later folder's file replaces the earlier one (installation profiles, if any, are listed beside it)
    assert [p["path"] for p in table.origin["profiles"] if p["key"] == "hepatic_haemangioma"] == [
        str(run_dir / "hepatic_haemangioma.json")]


def _rated_nodules(root):
    """A reports-only dataset: three lung nodules (one in the val split), a liver lesion, descriptions of
    another organ and free text."""
    from malenia.atomic import write_json
    from malenia.data.dataset import CaseReport, DatasetIndex, Description, LesionReport, case_dir, write_dataset_index

    def lesion(label, disease, **attrs):
        return LesionReport(label, disease, {a.replace("__", "."): [Description(t, i) for i, t in v] for a, v in attrs.items()})

    nodule = dict(shape=[("shape.round", "round")], surface=[("surface.ill_defined", "ill defined")],
                  density=[("density.lung.ground_glass", "ground glass")],
                  specific_features=[("specific_features.none", "none")])
    cases = {
        "c1": [lesion(1, "lung_tumor", **nodule), lesion(2, "liver_tumor", shape=[("shape.irregular", "irregular")])],
        "c2": [lesion(1, "lung_tumor", **{**nodule, "density": [("density.hypodense.kidney", "x"), (None, "soft, like a grape")]})],
        "c3": [lesion(1, "lung_tumor", **{**nodule, "shape": [("shape.oval", "oval")],
                                          "specific_features": [("specific_features.calcification", "c"),
                                                                ("specific_features.lobulation", "l")]})],
    }
    for case_id, lesions in cases.items():
        folder = case_dir(root, case_id)
        folder.mkdir(parents=True)
        write_json(folder / "report.json", CaseReport(case_id, lesions).to_json())
    write_dataset_index(root, DatasetIndex("rated", list(cases), {"train": ["c1", "c2"], "val": ["c3"]}))
    return root


def test_profile_estimated_from_a_dataset_counts_its_lesions_and_names_them(tmp_path, capsys):
    data, site = _rated_nodules(tmp_path / "rated"), tmp_path / "site"
    add = ["knowledge", "add", "rated_nodule", "--name", "Rated nodule", "--organ", "lung",
           "--knowledge", str(site), "--from-data", str(data)]
    # no lesion of the key's disease: refused, naming what the dataset holds, nothing written
    assert cli(add) == 3
    assert "lung_tumor (3), liver_tumor (1)" in capsys.readouterr().err and not list(site.glob("*.json"))
    assert cli(add[:-2] + ["--from-data", str(tmp_path)]) == 3  # not a dataset
    assert cli(add + ["--from-disease", "lung_tumor", "-d", "relationship.separate"]) == 0
    out = capsys.readouterr().out
    assert "estimated from 3 lesions" in out and "'other organ': 1" in out and "'free text': 1" in out
    saved = json.loads((site / "rated_nodule.json").read_text())
    prof = saved["profile"]
    # smoothed counts over every lung description: shape 2 round + 1 oval over 4 shapes (alpha 1)
    assert prof["shape"] == pytest.approx({"shape.round": 3 / 7, "shape.oval": 2 / 7, "shape.lobulated": 1 / 7,
                                           "shape.irregular": 1 / 7})
    assert len(prof["location"]) == 5 and set(prof["location"].values()) == {0.2}  # not described: uniform
    assert prof["relationship"] == {"relationship.separate": 1.0}  # -d replaces the aspect it names
    assert saved["rationale"]["relationship"] == "given with -d" and "3 of 3" in saved["rationale"]["shape"]
    assert "not described" in saved["rationale"]["location"] and "2 of 3" in saved["rationale"]["density"]
    assert saved["estimated_from"]["described"]["density"] == 2 and saved["estimated_from"]["lesions"] == 3  # c2's dropped
    assert saved["finding_count"]["2"] > saved["finding_count"]["1"]  # c3's two findings are the only ones
    nodule = ["shape.round", "surface.ill_defined", "specific_features.none", "density.lung.ground_glass"]
    assert _classify(capsys, site, nodule)["name"] == "rated_nodule"
    # edit re-estimates from another split: only c3 (oval)
    assert cli(["knowledge", "edit", "rated_nodule", "--from-data", str(data), "--split", "val",
                "--from-disease", "lung_tumor", "--knowledge", str(site)]) == 0
    edited = json.loads((site / "rated_nodule.json").read_text())
    assert edited["version"] == 2 and edited["profile"]["shape"]["shape.oval"] == pytest.approx(2 / 5)
    assert edited["estimated_from"]["split"] == "val" and edited["estimated_from"]["lesions"] == 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from malenia.infer.pipeline import load_model

    torch.set_num_threads(1)
    return load_model(tiny_trained_model(tmp_path_factory))


def _segment(model, ct, out, site):
    from malenia.infer.pipeline import SegmentOptions, segment_path

    run = segment_path(ct, out, options=SegmentOptions(device="cpu", threshold=float(THRESHOLD)), model=model,
                       knowledge=[site], overwrite=True)
    return run, json.loads((out / "report.json").read_text())


def test_profile_added_by_cli_names_the_segmented_lesion_and_removal_reverts_it(tiny, tmp_path):
    """End to end: segment -> a site profile written from the lesion's appearance through the CLI ->
    segment again: named by it, recorded in report.json -> removed: unclassified or the nearest
    disease, and re-ranking the saved report gives the same call as segmenting again."""
    from malenia.infer.rerank import rerank
    from malenia.infer.results import SegmentationResult, validate_report
    from malenia.infer.site_table import table_for_model

    img, _ = sphere_ct()
    ct, site = tmp_path / "ct.nii.gz", tmp_path / "site"
    sitk.WriteImage(img, str(ct))
    _, before = _segment(tiny, ct, tmp_path / "before", site)
    assert len(before["lesions"]) == 1  # the test model finds planted spheres
    lesion = before["lesions"][0]
    assert lesion["disease"]["name"] != "planted_mass" and _profiles_in(before["knowledge"], site) == []
    # The lesion type is new to the table: a radiologist describes it from what the model sees
    # (each aspect's descriptions scoring at least 0.05, weighted by their scores).
    described = [f"{i}={s:.3f}" for a, m in lesion["scores"].items() if a != "enhancement"
                 for i, s in m.items() if s >= 0.05]
    r = malenia("knowledge", "add", "planted_mass", "--name", "Planted mass", "--organ", "liver", "--model", tiny.path,
                "--knowledge", site, "-d", *described)
    assert r.returncode == 0, r.stderr

    run, named = _segment(tiny, ct, tmp_path / "named", site)
    validate_report(named)
    call = named["lesions"][0]["disease"]
    assert call["name"] == "planted_mass" and call["display_name"] == "Planted mass" and not call["unclassified"]
    assert _profiles_in(named["knowledge"], site) == ["planted_mass"]
    profile = next(p for p in named["knowledge"]["profiles"] if p["key"] == "planted_mass")
    assert not profile["overrides"]
    assert profile["sha256"] == hashlib.sha256((site / "planted_mass.json").read_bytes()).hexdigest()
    assert named["knowledge"]["table"]["sha256"] == hashlib.sha256(tiny.knowledge_table_path.read_bytes()).hexdigest()
    nearest = call["alternatives"][0]["name"]

    assert cli(["knowledge", "remove", "planted_mass", "--model", str(tiny.path), "--knowledge", str(site)]) == 0
    _, after = _segment(tiny, ct, tmp_path / "after", site)
    again = after["lesions"][0]["disease"]
    assert again["name"] == nearest != "planted_mass"  # the closest disease; flagged when the rule says so
    assert again["unclassified"] == (again["organ"] is None)
    # the saved report re-ranked without re-segmenting: the same call
    saved = SegmentationResult.from_json(named)
    changes = rerank(saved, table_for_model(tiny, [site]))
    assert [c.changed for c in changes] == [True]
    redone = saved.lesions[0].disease
    assert (redone.name, redone.unclassified, redone.organ) == (again["name"], again["unclassified"], again["organ"])
    assert redone.probability == pytest.approx(again["probability"], abs=1e-4)
    assert _profiles_in(saved.knowledge, site) == []


def test_openset_rule_fitted_on_model_scores_is_stored_and_used(tiny, tmp_path):
    from malenia.commands._openset import store_rule
    from malenia.knowledge.inference import infer_disease
    from malenia.knowledge.openset import ScoredLesion, decisions, fit_rule, rates
    from malenia.infer.site_table import table_for_model
    from malenia.model.folder import load_model_folder

    table = table_for_model(tiny)
    rng = np.random.default_rng(0)
    lesions = []
    for d in ("liver_tumor", "liver_cyst", "kidney_cyst", "lung_tumor"):
        for _ in range(8):  # soft scores around a sampled description set, as a model gives
            attrs = table.sample_attributes(d, rng)
            lesions.append(ScoredLesion(d, {a: {i: (0.7 if i in attrs[a] else 0.3 / len(table.vocab.ids(a)))
                                                for i in table.vocab.ids(a)} for a in attrs}))
    diseases, dec = decisions(lesions, table)
    # the vectorised decisions are infer_disease's
    for les, d in zip(lesions[::7], dec["all"][::7]):
        post = infer_disease(les.matches, table)
        assert (post.alternatives[0][0] if post.unclassified else post.name) == diseases[d.best]
        assert post.typicality == pytest.approx(d.typicality, rel=1e-6)
    rule = fit_rule(lesions, table)
    objective = lambda m: m["unseen_unclassified"] + m["known_correct"]  # noqa: E731
    assert objective(rule["fitted"]) >= objective(rule["table_rule"]) - 1e-9
    held = rates(diseases, dec, rule["contradiction_fit"], rule["min_typicality"])["per_disease"]
    assert set(held) == {"liver_tumor", "liver_cyst", "kidney_cyst", "lung_tumor"}

    copy = tmp_path / "model"
    shutil.copytree(tiny.path, copy)
    store_rule(load_model_folder(copy, build_network=False), rule)
    model = load_model_folder(copy, build_network=False)  # still verifies: the manifest was re-hashed
    in_force = table_for_model(model)
    assert in_force.inference["min_typicality"] == rule["min_typicality"]
    assert in_force.origin["unclassified"]["source"] == "model"
    assert model.inference_defaults().threshold == tiny.inference_defaults().threshold


def test_a_refit_reports_the_tables_own_rule_beside_the_parents(tiny, tmp_path):
    """A model whose rule was fitted (or inherited) is refitted: the stored "table_rule" is the knowledge
    table's own rule, not the rule in force before, which is reported apart as "rule_before"; both are
    candidates, so the fit is never worse than either on the lesions it is fitted on."""
    from malenia.commands._openset import store_rule
    from malenia.knowledge.openset import ScoredLesion, fit_rule
    from malenia.infer.site_table import table_for_model
    from malenia.model.folder import load_model_folder

    table = table_for_model(tiny)
    own = {k: float(table.inference[k]) for k in ("contradiction_fit", "min_typicality")}
    rng = np.random.default_rng(1)
    lesions = []
    for d in ("liver_tumor", "kidney_cyst", "lung_tumor"):
        for _ in range(6):
            attrs = table.sample_attributes(d, rng)
            lesions.append(ScoredLesion(d, {a: {i: (0.6 if i in attrs[a] else 0.4 / len(table.vocab.ids(a)))
                                                for i in table.vocab.ids(a)} for a in attrs}))
    parent = {"contradiction_fit": 0.3, "min_typicality": round(own["min_typicality"] + 0.05, 4)}
    copy = tmp_path / "model"
    shutil.copytree(tiny.path, copy)
    store_rule(load_model_folder(copy, build_network=False), parent)
    in_force = table_for_model(load_model_folder(copy, build_network=False))
    assert in_force.origin["unclassified"]["source"] == "model"

    rule = fit_rule(lesions, in_force)
    assert {k: rule["table_rule"][k] for k in own} == own
    assert {k: rule["rule_before"][k] for k in parent} == parent
    objective = lambda m: m["unseen_unclassified"] + m["known_correct"]  # noqa: E731
    assert objective(rule["fitted"]) >= max(objective(rule["table_rule"]), objective(rule["rule_before"])) - 1e-9
    assert "rule_before" not in fit_rule(lesions, table)  # the table's own rule in force: nothing before it


def _soft(table, attrs) -> dict:
    return {a: {i: (0.7 if i in attrs[a] else 0.3 / len(table.vocab.ids(a))) for i in table.vocab.ids(a)} for a in attrs}


def test_an_aspect_read_at_random_loses_its_weight_in_the_fit_and_keeps_it_through_a_refit(tiny, tmp_path):
    """`fit_rule(weight_grid=...)` fits an aspect's weight in disease inference with the rule: lesions whose
    specific features are read as another disease's lose less with that aspect down-weighted, the weight is
    stored with the rule, applied by the table in force (and reported beside the table's own), and a refit
    without the grid keeps it."""
    from malenia.commands._openset import WEIGHT_GRID, store_rule
    from malenia.infer.site_table import table_for_model
    from malenia.knowledge.inference import infer_disease, inference_params
    from malenia.knowledge.openset import ScoredLesion, fit_rule
    from malenia.model.folder import load_model_folder

    table = table_for_model(tiny)
    rng = np.random.default_rng(2)
    diseases = ("liver_tumor", "liver_cyst", "kidney_cyst", "lung_tumor")
    lesions = []
    for d in diseases:
        for _ in range(8):
            attrs = table.sample_attributes(d, rng)
            other = diseases[(diseases.index(d) + 1 + int(rng.integers(3))) % 4]
            attrs["specific_features"] = table.sample_attributes(other, rng)["specific_features"]  # read at random
            lesions.append(ScoredLesion(d, _soft(table, attrs)))
    plain = fit_rule(lesions, table)
    fitted = fit_rule(lesions, table, weight_grid={"specific_features": WEIGHT_GRID})
    objective = lambda m: m["unseen_unclassified"] + m["known_correct"]  # noqa: E731
    assert fitted["aspect_weights"]["specific_features"] < 1.0
    assert objective(fitted["fitted"]) > objective(plain["fitted"])
    assert fitted["table_rule"]["aspect_weights"] == {"specific_features": 1.0}

    copy = tmp_path / "model"
    shutil.copytree(tiny.path, copy)
    store_rule(load_model_folder(copy, build_network=False), fitted)
    in_force = table_for_model(load_model_folder(copy, build_network=False))
    w = fitted["aspect_weights"]["specific_features"]
    assert inference_params(in_force)["aspect_weights"]["specific_features"] == w
    assert in_force.origin["unclassified"]["aspect_weights"] == {"specific_features": w}
    assert in_force.origin["unclassified"]["table_rule"]["aspect_weights"] == {"specific_features": 1.0}
    names = lambda t: [infer_disease(les.matches, t).name for les in lesions]  # noqa: E731
    assert names(in_force) != names(table)  # the stored weight names the lesions, not only the thresholds

    refit = fit_rule(lesions, in_force)  # no grid: the weight in force stays, the table's own is reported apart
    assert refit["aspect_weights"] == {"specific_features": w}
    assert refit["table_rule"]["aspect_weights"] == {"specific_features": 1.0}
    assert "rule_before" in refit
    assert cli(["knowledge", "openset", "--data", str(tmp_path), "--fit-weight", "specific_features"]) == 2  # needs --fit


def test_shipped_pulmonary_nodule_profile_is_the_training_patients_ratings_estimated(shared_data):
    """Resources/knowledge/diseases/pulmonary_nodule.json is what its documented command gives on the shared LIDC
    nodules (docs/knowledge.md): the ratings of the training patients' nodules only, density variation given equally."""
    from malenia.data.importers.lidc import find_pairs, patient_split
    from malenia.data.importers.lidc_ratings import map_ratings
    from malenia.knowledge.estimate import estimate_site_profile
    from malenia.knowledge.site import builtin_profile_dir
    from malenia.knowledge.vocabulary import Vocabulary

    shipped = json.loads((builtin_profile_dir() / "pulmonary_nodule.json").read_text())
    train = [p for p in find_pairs(shared_data / "lidc-nodules").pairs if patient_split(p.patient_id) == "train"]
    est = estimate_site_profile([map_ratings(p.row)[0] for p in train], "lung", Vocabulary.load())
    assert est.lesions == shipped["estimated_from"]["lesions"] == 540 and est.dropped == {}
    assert est.described == shipped["estimated_from"]["described"]
    expected = {**est.profile, "density_variation": {"density_variation.homogeneous": 0.5,
                                                     "density_variation.heterogeneous": 0.5}}
    for aspect, dist in expected.items():
        assert shipped["profile"][aspect] == pytest.approx(dist, abs=1e-12), aspect
    assert {int(k): v for k, v in shipped["finding_count"].items()} == pytest.approx(est.finding_count)
