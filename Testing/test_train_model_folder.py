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


@pytest.mark.parametrize("damage", ["zero_patch", "nan_weights", "parent_path", "absolute_path"])
def test_unusable_or_escaping_model_folders_exit_4_with_one_line(folder, tmp_path, capsys, damage):
    """Issue 16 item 5: patch_size [0,0,0] was a MONAI traceback (exit 1), all-NaN weights "0 lesions"
    (exit 0), and a manifest naming ../.. made the command line read files outside the folder."""
    import SimpleITK as sitk
    from safetensors.torch import load_file, save_file

    from malenia.cli import main
    from malenia.errors import EXIT_BAD_MODEL
    from malenia.model.folder import rewrite_manifest
    from segment_helpers import sphere_ct

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    if damage == "zero_patch":
        cfg = json.loads((bad / "config.json").read_text())
        cfg["patch_size"] = [0, 0, 0]
        (bad / "config.json").write_text(json.dumps(cfg))
        msg = "patch_size must be 3 positive values"
    elif damage == "nan_weights":
        weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                   for k, v in load_file(str(bad / "weights.safetensors")).items()}
        save_file(weights, str(bad / "weights.safetensors"), metadata={"format": "malenia-model/1"})
        msg = "NaN or infinite"
    else:
        outside = tmp_path / "outside.json"
        outside.write_text("{}")
        rel = "../outside.json" if damage == "parent_path" else str(outside)
        manifest["files"][rel] = "0" * 64
        msg = "unsafe path"
    if damage != "parent_path" and damage != "absolute_path":
        rewrite_manifest(bad, manifest)
    else:
        (bad / "manifest.json").write_text(json.dumps(manifest))
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sphere_ct()[0], str(ct))
    code = main(["segment", str(ct), "--out", str(tmp_path / "out"), "--model", str(bad), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_MODEL and msg in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["done"])
def test_interrupt_reports_truthfully_whether_outputs_were_written(folder, tmp_path, capsys, monkeypatch, stage):
    """Issue 16 item 6: Ctrl-C once the outputs were in place said "nothing was written" (exit 130)."""
    import SimpleITK as sitk

    from malenia.cli import main
    from malenia.errors import EXIT_INTERRUPTED
    from malenia.infer.progress import SegmentProgress
    from segment_helpers import sphere_ct

    original = SegmentProgress.__call__

    def interrupted_at(self, name, *args, **kw):
        if name == stage:  # "outputs": just before the files are written; "done": just after
            raise KeyboardInterrupt
        return original(self, name, *args, **kw)

    monkeypatch.setattr(SegmentProgress, "__call__", interrupted_at)
    ct, out = tmp_path / "ct.nii.gz", tmp_path / "out"
    sitk.WriteImage(sphere_ct()[0], str(ct))
    code = main(["segment", str(ct), "--out", str(out), "--model", str(folder), "--progress", "none",
                 "--threads", "1", "--threshold", "0.99"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_INTERRUPTED and len(err.splitlines()) == 1 and "Traceback" not in err, err
    if stage == "outputs":
        assert "nothing was written" in err and not out.exists()
    else:
        assert "interrupted after the new outputs were written" in err and "nothing was written" not in err
        assert (out / "report.json").is_file() and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_fine_tune_is_named_after_its_parent_unless_told_otherwise():
    from malenia.train.loop import TrainOptions, model_identity

    opts = TrainOptions(data="d", out="o", config=None)
    assert model_identity(opts, None) == {"name": "malenia", "version": "0"}  # from scratch
    parent = {"name": "malenia-compact", "version": "2.11.3"}
    assert model_identity(opts, parent) == {"name": "malenia-compact", "version": "2.11.3+ft"}
    # a fine-tune of a fine-tune stays valid semver: one build-metadata part more, not a second "+"
    assert model_identity(opts, {**parent, "version": "2.11.3+ft"})["version"] == "2.11.3+ft.ft"
    named = TrainOptions(data="d", out="o", config=None, model_name="site", model_version="1.0")
    assert model_identity(named, parent) == {"name": "site", "version": "1.0"}
