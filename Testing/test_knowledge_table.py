"""Vocabulary and knowledge table: data integrity, organ consistency, sampling, user profiles."""

import json
from collections import Counter

import numpy as np
import pytest

from malenia.aspects import ALL_DISEASES, ASPECTS, SEEN_DISEASES
from malenia.errors import InputError
from malenia.knowledge.table import NONE_FINDING, KnowledgeTable
from malenia.knowledge.vocabulary import Vocabulary

WORKBOOK_DISEASES = {"kidney_tumor", "kidney_cyst", "liver_tumor", "pancreas_tumor", "pancreas_cyst", "colon_tumor", "lung_tumor"}


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.load()


@pytest.fixture(scope="module")
def table(vocab):
    return KnowledgeTable.load(vocab=vocab)


def test_vocabulary_covers_aspects_with_stable_prefixed_ids(vocab):
    for aspect in ASPECTS:
        ids = vocab.ids(aspect)
        assert ids, aspect
        assert all(i.startswith(aspect + ".") and vocab.aspect_of(i) == aspect and vocab.text(i) for i in ids)
    assert len(set(vocab.ids())) == len(vocab)
    # organ-aware density (renal parenchyma vs bowel wall), pancreatic parts, lung lobes
    assert "renal parenchyma" in vocab.text("density.hypodense.kidney")
    assert "bowel wall" in vocab.text("density.hypodense.colon")
    assert {"location.pancreas.head", "location.pancreas.body", "location.pancreas.tail"} <= set(vocab.ids("location"))
    assert len(vocab.ids_for_organ("location", "lung")) == 5
    with pytest.raises(InputError):
        vocab.text("shape.triangular")


def test_vocabulary_hash_follows_texts(vocab, tmp_path):
    obj = json.loads(Vocabulary.default_path().read_text())
    assert Vocabulary.from_json(obj).hash == vocab.hash
    obj["aspects"]["shape"][0]["text"] = "roughly spherical"
    assert Vocabulary.from_json(obj).hash != vocab.hash
    obj["aspects"]["shape"][0]["id"] = "density.round"  # id under the wrong aspect
    with pytest.raises(InputError):
        Vocabulary.from_json(obj)


def test_table_has_all_twelve_diseases_with_normalised_profiles(table, vocab):
    assert set(ALL_DISEASES) <= set(table.diseases)
    for d in ALL_DISEASES:
        prof = table.disease(d)
        assert prof.seen == (d in SEEN_DISEASES)
        assert prof.source == ("workbook" if d in WORKBOOK_DISEASES else "expert")
        assert set(prof.profile) == set(ASPECTS)
        for aspect, dist in prof.profile.items():
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-9), (d, aspect)
            for desc_id, p in dist.items():
                assert desc_id in vocab and vocab.aspect_of(desc_id) == aspect and 0 < p <= 1
        # every location lies in the disease's organ; organ-specific densities too
        assert all(vocab.organ_of(i) == prof.organ for i in prof.profile["location"])
        assert all(vocab.organ_of(i) in (None, prof.organ) for i in prof.profile["density"])
        assert all(prof.rationale.get(a) for a in ASPECTS), d


def test_table_round_trips_through_json(table, vocab, tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table.to_json()))
    again = KnowledgeTable.load(path, vocab)
    assert again.to_json() == table.to_json()
    assert again.inference["temperature"] > 0 and again.diseases == table.diseases


def test_table_file_is_what_the_workbook_builds(shared_data, table, vocab):
    """knowledge_table.json must match `malenia knowledge table` on the shared workbook."""
    from malenia.knowledge.estimate import build_table
    from malenia.knowledge.workbook import read_workbook

    records = read_workbook(shared_data / "annotations" / "malenia_attribute_annotations_en.xlsx", vocab).records
    rebuilt = build_table(records, vocab)
    for d in WORKBOOK_DISEASES:
        for aspect in ASPECTS:
            got, want = table.profile(d)[aspect], rebuilt.profile(d)[aspect]
            assert got.keys() == want.keys()
            assert all(abs(got[i] - want[i]) < 1e-5 for i in got), (d, aspect)
    # organ-specific expectations of the brief
    assert set(table.profile("kidney_stone")["location"]) <= set(vocab.ids_for_organ("location", "kidney"))
    assert set(table.profile("gallstone")["location"]) == {"location.gallbladder.lumen"}
    assert set(table.profile("gallbladder_tumor")["location"]) == {"location.gallbladder.wall"}
    hvt = table.profile("hepatic_vessel_tumor")["relationship"]
    assert max(hvt, key=hvt.get) == "relationship.vascular"


def test_sample_attributes_follows_the_profile(table, vocab):
    rng = np.random.default_rng(0)
    for d in ALL_DISEASES:
        organ = table.organ(d)
        for _ in range(20):
            s = table.sample_attributes(d, rng)
            assert set(s) == set(ASPECTS)
            for aspect, ids in s.items():
                assert ids and len(set(ids)) == len(ids)
                assert all(i in table.profile(d)[aspect] for i in ids)
                if aspect != "specific_features":
                    assert len(ids) == 1
            assert vocab.organ_of(s["location"][0]) == organ
            assert s["specific_features"] == [NONE_FINDING] or NONE_FINDING not in s["specific_features"]
    # frequencies follow the table: kidney cysts are mostly homogeneous, colon tumors mostly thick-walled
    n = 400
    draws = [table.sample_attributes("kidney_cyst", rng) for _ in range(n)]
    homog = sum(x["density_variation"] == ["density_variation.homogeneous"] for x in draws) / n
    assert abs(homog - table.profile("kidney_cyst")["density_variation"]["density_variation.homogeneous"]) < 0.06
    colon = Counter(f for _ in range(n) for f in table.sample_attributes("colon_tumor", rng)["specific_features"])
    assert colon["specific_features.wall_thickening"] > n * 0.3
    several = sum(len(table.sample_attributes("lung_tumor", rng)["specific_features"]) > 1 for _ in range(n))
    assert several > n * 0.2  # lung tumors usually show several findings (pleural traction, convergence, ...)


def test_user_profile_adds_a_disease_without_retraining(tmp_path, vocab):
    base = json.loads(KnowledgeTable.default_path().read_text())
    table_path = tmp_path / "knowledge_table.json"
    table_path.write_text(json.dumps(base))
    user = tmp_path / "diseases"
    user.mkdir()
    cyst = dict(base["diseases"]["liver_cyst"], name="hepatic hydatid cyst", source="user")
    cyst["profile"] = dict(cyst["profile"], specific_features={"specific_features.septation": 0.6,
                                                              "specific_features.calcification": 0.4})
    (user / "hydatid_cyst.json").write_text(json.dumps(cyst))
    table = KnowledgeTable.load(table_path, vocab, user_dir=user)
    assert "hydatid_cyst" in table.diseases and table.name("hydatid_cyst") == "hepatic hydatid cyst"
    assert table.sample_attributes("hydatid_cyst", np.random.default_rng(1))["location"][0].startswith("location.liver.")

    bad = dict(cyst, profile=dict(cyst["profile"], shape={"shape.round": 0.5, "shape.oval": 0.2}))
    (user / "hydatid_cyst.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="sum to 0.7"):
        KnowledgeTable.load(table_path, vocab, user_dir=user)
    wrong_organ = dict(cyst, profile=dict(cyst["profile"], location={"location.kidney.left": 1.0}))
    (user / "hydatid_cyst.json").write_text(json.dumps(wrong_organ))
    with pytest.raises(InputError, match="kidney, not the liver"):
        KnowledgeTable.load(table_path, vocab, user_dir=user)
    unknown = dict(cyst, profile=dict(cyst["profile"], shape={"shape.hexagonal": 1.0}))
    (user / "hydatid_cyst.json").write_text(json.dumps(unknown))
    with pytest.raises(InputError, match="unknown description id"):
        KnowledgeTable.load(table_path, vocab, user_dir=user)
