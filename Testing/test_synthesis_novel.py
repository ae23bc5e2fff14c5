"""Validation-only novel lesion types: drawn as their look in their organ, kept out of training, and named
right by an evaluation only when called "unclassified"."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.aspects import NOVEL_TYPES, SEEN_DISEASES, UNSEEN_DISEASES, organ_of
from malenia.cli import main
from malenia.data.dataset import read_case, read_dataset
from malenia.data.synthesis.generate import load_split, synthesize_dataset
from malenia.data.synthesis.novel import NOVEL
from malenia.data.synthesis.profiles import PROFILES
from malenia.errors import InputError
from malenia.knowledge.table import KnowledgeTable
from train_helpers import tiny_config

SMALL = dict(size=(64, 64, 64), spacing=(4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def novel_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("novel") / "nv"
    synthesize_dataset(out, ["phantom"], list(NOVEL_TYPES), 6, seed=11, lesions_per_case=(2, 2), **SMALL)
    return out


def test_novel_types_are_no_protocol_disease_and_have_no_profile():
    table = KnowledgeTable.load()
    assert not set(NOVEL_TYPES) & (set(SEEN_DISEASES) | set(UNSEEN_DISEASES) | set(table.diseases))
    zero_shot = load_split("zero_shot")["diseases"]
    assert set(NOVEL_TYPES) <= set(zero_shot["val"]) and not set(NOVEL_TYPES) & set(zero_shot["train"] + zero_shot["test"])
    for key, novel in NOVEL.items():
        assert novel.look in SEEN_DISEASES
        assert PROFILES[novel.look].organ != novel.organ
        # a density met in an organ where no training disease shows it, and where no unseen type does either
        others = [d for d in SEEN_DISEASES + UNSEEN_DISEASES if PROFILES[d].organ == novel.organ]
        assert others and all(table.profile(d)["density"].get(novel.density, 0.0) == 0.0 for d in others)
        assert table.profile(novel.look)["density"].get(novel.density, 0.0) > 0 or PROFILES[key].cystic


def test_novel_lesions_are_drawn_as_their_look_in_their_organ(novel_dataset):
    index = read_dataset(novel_dataset)
    assert set(index.split) == {"val"} and len(index.split["val"]) == 6  # validation only, by the protocol
    table, seen = KnowledgeTable.load(), set()
    for cid in index.cases:
        case = read_case(novel_dataset, cid)
        image, labels = (sitk.GetArrayFromImage(x) for x in (case.image, case.lesions))
        for les in case.report.lesions:
            novel = NOVEL[les.disease]
            seen.add(les.disease)
            ids = {a: [d.id for d in les.attributes[a]] for a in les.attributes}
            assert organ_of(ids["location"][0]) == novel.organ
            assert ids["density"] == [novel.density] and ids["relationship"] == ["relationship.separate"]
            assert ids["specific_features"] == ["specific_features.none"]
            look = table.profile(novel.look)
            assert all(look[a].get(ids[a][0], 0) > 0 for a in ("shape", "density_variation", "surface"))
            core, drawn = image[labels == les.label], les.extra["synthesis"]["density"]
            assert core.size >= 1
            if novel.density == "density.calcific":  # far above any parenchyma, as a gallstone's calcific body
                assert 350 <= drawn["target_hu"] <= 1000 and np.median(core) > 250
            else:  # water in an air-filled lung (small cysts on this coarse grid are mostly partial volume)
                assert 0 <= drawn["target_hu"] <= 15 and np.max(core) > drawn["host"]["mean"] + 300
    assert seen == set(NOVEL_TYPES)


def test_training_refuses_a_novel_type(novel_dataset, tmp_path):
    from malenia.train.data import build_training_bank

    ids = read_dataset(novel_dataset).cases
    with pytest.raises(InputError, match="validation-only novel type"):
        build_training_bank(tiny_config(), [novel_dataset], splits={novel_dataset: ids})


def test_cli_draws_the_novel_group_and_names_the_types_when_one_is_unknown(tmp_path, capsys):
    out = tmp_path / "nv"
    assert main(["synth", "--base", "phantom", "--diseases", "novel", "--cases", "1", "--size", "64",
                 "--spacing", "4", "--out", str(out), "--quiet", "--seed", "2"]) == 0
    assert read_dataset(out).extra["diseases"] == list(NOVEL_TYPES)
    assert main(["synth", "--base", "phantom", "--diseases", "lung_cysts", "--cases", "1", "--out",
                 str(tmp_path / "x"), "--quiet"]) == 3
    assert "lung_cyst, spleen_calcification, stomach_mass (or all, seen, unseen, novel, transplant)" in capsys.readouterr().err
