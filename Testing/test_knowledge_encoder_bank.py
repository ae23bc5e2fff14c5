"""Text encoder (offline, unit vectors, paraphrase-aware) and the cached attribute bank."""

import json
import os
import socket

import numpy as np
import pytest
import torch

from malenia.cli import main
from malenia.errors import ModelError
from malenia.knowledge.bank import AttributeBank, encode_report_paragraph, encode_report_paragraphs, report_paragraph
from malenia.knowledge.encoder import DEFAULT_ENCODER, load_text_encoder
from malenia.knowledge.vocabulary import Vocabulary

# Paraphrases written independently of the vocabulary's wording.
PARAPHRASES = {
    "location.kidney.left": "the lesion sits in the left kidney",
    "location.pancreas.tail": "a mass in the tail of the pancreas",
    "location.lung.right_upper": "nodule in the upper lobe of the right lung",
    "shape.round": "a rounded, roughly circular lesion",
    "shape.irregular": "the lesion has an irregular outline",
    "density.hypodense.liver": "attenuation lower than the surrounding liver",
    "density.lung.ground_glass": "a ground glass opacity",
    "density_variation.heterogeneous": "internal attenuation is inhomogeneous",
    "density_variation.homogeneous": "uniform internal attenuation",
    "surface.well_defined": "sharply marginated with clear borders",
    "surface.spiculated": "spiculated, rough margins",
    "enhancement.contrast": "CT performed after intravenous contrast",
    "enhancement.non_contrast": "unenhanced CT examination",
    "relationship.invading": "indistinct boundary with the adjacent organ",
    "specific_features.calcification": "calcified foci inside the lesion",
    "specific_features.pleural_traction": "retraction of the pleura",
    "specific_features.duct_dilatation": "the pancreatic duct is dilated",
    "specific_features.wall_thickening": "the bowel wall is thickened",
    "specific_features.cavitation": "a cavity within the nodule",
}


@pytest.fixture(scope="module")
def encoder():
    torch.set_num_threads(1)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    real_connect = socket.socket.connect

    def no_network(self, *args, **kwargs):
        raise AssertionError(f"text encoder tried to reach the network: {args}")

    socket.socket.connect = no_network  # loading must not touch the network at all
    try:
        return load_text_encoder()
    finally:
        socket.socket.connect = real_connect


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.load()


def test_encoder_is_offline_and_returns_unit_rows(encoder):
    assert encoder.encoder_id.startswith(DEFAULT_ENCODER + "@") and encoder.dim == 384
    emb = encoder.encode(["round lesion", "irregular margin", "round lesion"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-5)
    assert not np.allclose(emb[0], emb[1])
    assert encoder.encode([]).shape == (0, 384)


def test_paraphrases_score_above_other_aspects(encoder, vocab):
    ids = vocab.ids()
    bank = encoder.encode([vocab.text(i) for i in ids])
    aspects = np.array([vocab.aspect_of(i) for i in ids])
    queries = encoder.encode(list(PARAPHRASES.values()))
    for (target, text), q in zip(PARAPHRASES.items(), queries):
        sims = bank @ q
        own = sims[ids.index(target)]
        other_aspects = sims[aspects != vocab.aspect_of(target)].max()
        assert own > other_aspects, (target, text, float(own), float(other_aspects))


def test_unknown_encoder_is_a_clear_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_text_encoder(tmp_path / "no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_text_encoder(tmp_path / "empty")


def test_bank_is_cached_by_encoder_and_vocabulary(encoder, vocab, tmp_path):
    cache = tmp_path / "cache"
    first = AttributeBank.build_or_load(vocab, encoder, cache)
    assert first.origin == "built" and first.ids == vocab.ids() and first.embeddings.shape == (len(vocab), encoder.dim)
    path = AttributeBank.cache_path(encoder.encoder_id, vocab.hash, cache)
    mtime = path.stat().st_mtime_ns
    again = AttributeBank.build_or_load(vocab, encoder, cache)
    assert again.origin == "cache" and path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.embeddings, first.embeddings)

    # reworded vocabulary -> new hash -> rebuilt, with the new text's embedding
    obj = json.loads(Vocabulary.default_path().read_text())
    obj["aspects"]["shape"][0]["text"] = "spherical lesion"
    changed_path = tmp_path / "vocabulary.json"
    changed_path.write_text(json.dumps(obj))
    changed = Vocabulary.load(changed_path)
    rebuilt = AttributeBank.build_or_load(changed, encoder, cache)
    assert rebuilt.origin == "built" and rebuilt.vocab_hash == changed.hash != vocab.hash
    r = rebuilt.row("shape.round")
    np.testing.assert_allclose(rebuilt.embeddings[r], encoder.encode(["spherical lesion"])[0], atol=1e-5)
    assert not np.allclose(rebuilt.embeddings[r], first.embeddings[first.row("shape.round")])
    assert len(list(cache.glob("*.safetensors"))) == 2

    # a damaged cache file is rebuilt, not trusted
    path.write_bytes(b"garbage")
    assert AttributeBank.build_or_load(vocab, encoder, cache).origin == "built"


def test_bank_loads_without_encoder_and_extends(encoder, vocab, tmp_path):
    bank = AttributeBank.build(vocab, encoder)
    out = bank.save(tmp_path / "bank.safetensors")
    raw = out.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])  # plain safetensors JSON header
    assert header["__metadata__"]["format"] == "malenia-attribute-bank/1" and header["embeddings"]["dtype"] == "F32"
    loaded = AttributeBank.load(out)  # no encoder involved
    assert loaded.ids == bank.ids and loaded.texts == bank.texts and loaded.aspects == bank.aspects
    assert (loaded.encoder_id, loaded.vocab_hash) == (encoder.encoder_id, vocab.hash)
    np.testing.assert_array_equal(loaded.embeddings, bank.embeddings)
    shape_rows = loaded.rows_for_aspect("shape")
    assert [loaded.ids[r] for r in shape_rows] == vocab.ids("shape")
    assert (loaded.aspect_indices()[shape_rows] == 1).all()
    assert loaded.row("surface.spiculated") == vocab.ids().index("surface.spiculated")

    new = loaded.extend(["rim of calcification around a cyst", "rim of calcification around a cyst"],
                        "specific_features", encoder)
    assert new[0] == new[1] and new[0].startswith("free.specific_features.")
    assert len(loaded) == len(bank) + 1 and loaded.aspects[-1] == "specific_features"
    assert loaded.row(new[0]) == len(bank) and loaded.row(new[0]) in loaded.rows_for_aspect("specific_features")
    loaded.save(tmp_path / "extended.safetensors")
    assert AttributeBank.load(tmp_path / "extended.safetensors").ids[-1] == new[0]
    (tmp_path / "bad.safetensors").write_text("not a bank")
    with pytest.raises(ModelError):
        AttributeBank.load(tmp_path / "bad.safetensors")


def test_report_paragraph_embedding(encoder):
    lesion = {"location": ["located in the left kidney"], "shape": ["round or round-like lesion shape"],
              "specific_features": ["calcification or high-density foci within the lesion", "central necrosis"]}
    text = report_paragraph(lesion)
    assert text.startswith("Located in the left kidney. Round") and text.endswith("necrosis.")
    one = encode_report_paragraph(lesion, encoder)
    assert one.shape == (encoder.dim,) and abs(np.linalg.norm(one) - 1) < 1e-5
    both = encode_report_paragraphs([lesion, {"location": ["located in the rectum"]}], encoder)
    np.testing.assert_allclose(both[0], one, atol=1e-5)
    assert both[0] @ both[1] < 0.99


def test_bank_command_reports_timings(tmp_path, capsys):
    assert main(["knowledge", "bank", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "b.safetensors"),
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "encoder load" in out and "vocabulary embedding" in out
    assert AttributeBank.load(tmp_path / "b.safetensors").dim == 384
