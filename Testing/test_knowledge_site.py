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
    assert [p["path"] for p in table.origin["profiles"]] == [str(run_dir / "hepatic_haemangioma.json")]


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
    assert lesion["disease"]["name"] != "planted_mass" and before["knowledge"]["profiles"] == []
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
    profile = named["knowledge"]["profiles"][0]
    assert profile["key"] == "planted_mass" and not profile["overrides"]
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
    assert saved.knowledge["profiles"] == []


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
