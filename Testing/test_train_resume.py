"""Launching a run folder again: a finished run keeps its model, a resumed run must keep its options, the metrics
hold each step once, a removed checkpoint is not a silent restart; and the trainer's inputs are checked first."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from malenia.errors import InputError
from train_helpers import make_tiny_dataset, tiny_config, train_tiny

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    make_tiny_dataset(root / "ds")
    make_tiny_dataset(root / "ds_other", seed=3)
    (root / "tiny.json").write_text(json.dumps(tiny_config().to_dict()))
    return root


def _train(tiny: Path, out: str, **kw):
    return train_tiny(tiny, out, **kw)


def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "malenia.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _roll_back(run: Path, to_step: int) -> None:
    """As if the launch had been killed after its checkpoint at `to_step`: newer checkpoints and the model gone."""
    import shutil

    for folder in (run / "checkpoints").glob("step_*"):
        if int(folder.name.split("_")[1]) > to_step:
            shutil.rmtree(folder)
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"step": to_step, "path": f"step_{to_step:08d}"}))
    shutil.rmtree(run / "model")


def test_a_finished_run_launched_again_keeps_its_model_folder_and_what_was_fitted_into_it(tiny):
    from malenia.model.folder import update_model_folder, verify_model_folder

    _train(tiny, "done")
    update_model_folder(tiny / "done" / "model", {"calibration_note.txt": "fitted after training"})
    before = verify_model_folder(tiny / "done" / "model")
    result = _train(tiny, "done")
    assert result.steps == 3 and result.resumed_from == 3 and result.model_dir == tiny / "done" / "model"
    assert verify_model_folder(tiny / "done" / "model") == before  # not rewritten: the added file is still listed


def test_a_resumed_launch_with_other_data_batches_or_schedule_is_refused_naming_the_options(tiny):
    _train(tiny, "opts", steps=2)
    _roll_back(tiny / "opts", 1)
    with pytest.raises(InputError, match=r"--steps 2 \(now 4\)"):
        _train(tiny, "opts", steps=4)
    with pytest.raises(InputError, match=r"--batch-size 2 \(now 1\)"):
        _train(tiny, "opts", steps=2, batch_size=1)
    with pytest.raises(InputError, match=r"--data .*ds \(now .*ds_other\)"):
        _train(tiny, "opts", steps=2, data=tiny / "ds_other")
    with pytest.raises(InputError, match=r"--lr none \(now 0.01\)"):
        _train(tiny, "opts", steps=2, lr=0.01)
    # how often it logs and checkpoints, and the per-launch time limit, may change
    result = _train(tiny, "opts", steps=2, checkpoint_every=5, log_every=2, max_seconds=600)
    assert result.resumed_from == 1 and result.steps == 2


def test_after_a_resume_the_metrics_hold_each_step_once(tiny):
    _train(tiny, "metrics", steps=4)
    _roll_back(tiny / "metrics", 3)  # step 4 was logged by the "killed" launch and is trained again
    _train(tiny, "metrics", steps=4)
    rows = [json.loads(line) for line in (tiny / "metrics" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]


def test_a_checkpoint_pointer_to_a_removed_folder_resumes_from_the_newest_left_or_is_refused(tiny, capsys):
    import shutil

    from malenia.train.checkpoint import latest_checkpoint

    _train(tiny, "gone", steps=3)
    ckpts = tiny / "gone" / "checkpoints"
    shutil.rmtree(ckpts / "step_00000003")  # the pointer names it; step 2 is kept (the newest two)
    assert latest_checkpoint(tiny / "gone") == ckpts / "step_00000002"
    assert "step_00000003, which is gone" in capsys.readouterr().err
    shutil.rmtree(ckpts / "step_00000002")
    with pytest.raises(InputError, match="no other checkpoint is left"):
        latest_checkpoint(tiny / "gone")


@pytest.mark.parametrize("option", [["--set", "patch_size=[0,0,0]"], ["--set", "num_tokens=0"],
                                    ["--set", "optim.lr=abc"], ["--set", "optim=1"], ["--set", "use_cmki=maybe"]])
def test_a_bad_config_value_is_refused_before_training(tiny, option):
    out = _cli("train", "--data", tiny / "ds", "--out", tiny / "bad_set", "--steps", 1, *option)
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
    assert "invalid" in out.stderr and option[1].split("=")[0].split(".")[-1] in out.stderr
    assert not (tiny / "bad_set").exists()


@pytest.mark.parametrize("option", [["--lr", "-1"], ["--batch-size", "0"], ["--device", "tpu"],
                                    ["--warmup-steps", "-5"], ["--max-minutes", "-1"], ["--steps", "0"],
                                    ["--replay-fraction", "1.5"], ["--workers", "-1"]])
def test_a_bad_number_or_device_is_a_usage_error(tiny, option):
    out = _cli("train", "--data", tiny / "ds", "--out", tiny / "bad_flag", *option)
    assert out.returncode == 2 and option[0] in out.stderr, out.stderr
    assert not (tiny / "bad_flag").exists()


def test_a_missing_init_is_a_model_error_and_a_foreign_model_folder_is_refused_before_training(tiny):
    out = _cli("train", "--data", tiny / "ds", "--out", tiny / "no_init", "--init", tiny / "nowhere")
    assert out.returncode == 4 and "model folder not found" in out.stderr, out.stderr
    (tiny / "foreign" / "model").mkdir(parents=True)
    (tiny / "foreign" / "model" / "notes.txt").write_text("mine")
    out = _cli("train", "--config", tiny / "tiny.json", "--data", tiny / "ds", "--out", tiny / "foreign", "--steps", 1)
    assert out.returncode == 5 and "not replaced" in out.stderr, out.stderr
    assert not (tiny / "foreign" / "checkpoints").exists()  # refused before the first step, not after the run


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    """safetensors writes its metadata in a per-process random order; the model folder's files must not."""
    import hashlib

    from malenia.knowledge.bank import AttributeBank

    import numpy as np

    bank = AttributeBank(["a", "b"], ["one", "two"], ["shape", "surface"], np.eye(2, 4, dtype=np.float32), "enc", "v")
    digests = set()
    for i in range(6):
        bank.save(tmp_path / f"bank{i}.safetensors")
        digests.add(hashlib.sha256((tmp_path / f"bank{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    assert AttributeBank.load(tmp_path / "bank0.safetensors").texts == ["one", "two"]
