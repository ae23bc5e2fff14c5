"""The model folder: written whole, every file sha256-checked on load, clear ModelError otherwise."""

import json
import shutil

import pytest
import torch

from malenia.errors import ModelError
from train_helpers import tiny_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.model.folder import save_model_folder
    from malenia.model.network import MaleniaNet

    torch.manual_seed(0)
    cfg = tiny_config()
    bank = AttributeBank.build_or_load(Vocabulary.load(), load_text_encoder())
    path = tmp_path_factory.mktemp("m") / "model"
    save_model_folder(path, config=cfg, network=MaleniaNet(cfg), bank=bank, knowledge_table=KnowledgeTable.load(),
                      name="tiny", version="1", training_data="nothing (test)")
    return path


def test_round_trip(folder):
    from malenia.model.folder import load_model_folder

    m = load_model_folder(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "malenia-model/1" and manifest["config"] == "tiny"
    assert set(manifest["files"]) == {"config.json", "weights.safetensors", "attribute_bank.safetensors", "knowledge_table.json"}
    assert m.name == "tiny" and m.version == "1" and m.config == tiny_config()
    assert len(m.sha256) == 64 and m.network is not None and not m.network.training
    assert m.knowledge_table().diseases  # the stored table loads
    with pytest.raises(ModelError, match="exists"):
        from malenia.model.folder import save_model_folder

        save_model_folder(folder, config=m.config, network=m.network, bank=m.bank, knowledge_table=m.knowledge_table_path,
                          name="x", version="2", training_data="")


@pytest.mark.parametrize("damage", ["flip_weights", "missing_bank", "bad_manifest", "unlisted_required"])
def test_damaged_folders_are_refused(folder, tmp_path, damage):
    from malenia.model.folder import load_model_folder

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    if damage == "flip_weights":
        data = bytearray((bad / "weights.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (bad / "weights.safetensors").write_bytes(bytes(data))
        msg = "sha256 mismatch for weights.safetensors"
    elif damage == "missing_bank":
        (bad / "attribute_bank.safetensors").unlink()
        msg = "missing file attribute_bank.safetensors"
    elif damage == "bad_manifest":
        (bad / "manifest.json").write_text("{not json")
        msg = "not valid JSON"
    else:
        m = json.loads((bad / "manifest.json").read_text())
        del m["files"]["knowledge_table.json"]
        (bad / "manifest.json").write_text(json.dumps(m))
        msg = "does not list required file knowledge_table.json"
    with pytest.raises(ModelError, match=msg):
        load_model_folder(bad)


def test_weights_that_do_not_fit_the_config_are_refused(folder, tmp_path):
    from malenia.model.folder import load_model_folder, update_model_folder

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["embed_dim"] = 32  # a consistent but different architecture
    update_model_folder(bad, {"config.json": json.dumps(cfg)})  # re-hashed: only the shapes disagree
    with pytest.raises(ModelError, match="do not fit"):
        load_model_folder(bad)


def test_model_card_update_rehashes_manifest(folder, tmp_path):
    from malenia.model.folder import load_model_folder, update_model_folder

    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    update_model_folder(copy, {"MODEL_CARD.md": "# card\n"})
    m = load_model_folder(copy)
    assert m.card() == "# card\n" and "MODEL_CARD.md" in m.manifest["files"]
    assert not list(tmp_path.glob(".m.*"))  # no staging left behind
