"""The commands' guards against a user's slips: nothing of theirs replaced, bad numbers and paths refused before any
work, one line instead of a traceback (a new user's probe of the CLI, session 64)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from malenia.atomic import atomic_dir, write_json
from malenia.cli import main
from malenia.errors import EXIT_BAD_INPUT, EXIT_OUTPUT, EXIT_PIPE, EXIT_USAGE, InputError, OutputError
from segment_helpers import REPO, cli_env

SYNTH = ["synth", "--base", "phantom", "--diseases", "liver_tumor", "--cases", "1", "--size", "32"]


def test_overwrite_replaces_only_a_folder_of_its_own_kind(tmp_path):
    mine = tmp_path / "thesis"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "t.txt").write_text("chapter 1")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for target in (mine, a_file):
        with pytest.raises(OutputError, match="not replaced"):
            with atomic_dir(target, overwrite=True, replaces="dataset.json"):
                pytest.fail("nothing may be staged for a target that will not be replaced")
    assert (mine / "sub" / "t.txt").read_text() == "chapter 1" and a_file.read_text() == "x"
    dataset, empty = tmp_path / "ds", tmp_path / "empty"
    empty.mkdir()
    write_json(dataset / "dataset.json", {})
    for target in (dataset, empty):
        with atomic_dir(target, overwrite=True, replaces="dataset.json") as staging:
            (staging / "new.txt").write_text("new")
        assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_synth_overwrite_leaves_a_users_folder_alone_and_datasets_follow_the_umask(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "t.txt").write_text("keep")
    assert main([*SYNTH, "--out", str(mine), "--overwrite"]) == EXIT_OUTPUT
    assert "not a folder this command writes" in capsys.readouterr().err
    assert (mine / "sub" / "t.txt").read_text() == "keep"
    old = os.umask(0o022)
    try:
        assert main([*SYNTH, "--out", str(tmp_path / "ds")]) == 0
        assert main([*SYNTH, "--out", str(tmp_path / "ds"), "--overwrite"]) == 0  # its own kind: replaced
    finally:
        os.umask(old)
    assert oct((tmp_path / "ds").stat().st_mode & 0o777) == oct(0o755)  # not mkdtemp's 0700
    assert oct((tmp_path / "ds" / "dataset.json").stat().st_mode & 0o777) == oct(0o644)  # not mkstemp's 0600


@pytest.mark.parametrize("argv", [
    ["segment", "ct.nii.gz", "--out", "o", "--threads", "0"],
    ["segment", "ct.nii.gz", "--out", "o", "--threads", "-2"],
    ["evaluate", "--data", "d", "--max-cases", "0"],
    ["evaluate", "--data", "d", "--max-cases", "-1"],
    ["evaluate", "--data", "d", "--iou", "2"],
    ["evaluate", "--data", "d", "--nsd-tolerance", "-1"],
    ["evaluate", "--data", "d", "--nsd-tolerance", "nan"],
    ["mine", "--data", "d", "--out", "m.json", "--max-cases", "0"],
])
def test_numbers_out_of_range_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_USAGE and "error: argument" in capsys.readouterr().err


def test_a_minimum_volume_that_is_not_finite_is_refused_before_the_model_runs():
    from malenia.infer.pipeline import SegmentOptions

    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(InputError, match="minimum lesion volume"):
            SegmentOptions(min_volume_mm3=bad)


def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    for argv in (["evaluate", "--data", str(tmp_path / "no-such-dataset"), "--out", str(a_file)],
                 ["train", "--data", str(tmp_path / "no-such-dataset"), "--out", str(a_file), "--steps", "1"]):
        assert main(argv) == EXIT_OUTPUT  # before the dataset is even read
        assert "is a file, not a folder" in capsys.readouterr().err


def test_a_missing_profile_folder_is_named_and_an_empty_name_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MALENIA_KNOWLEDGE", str(tmp_path / "env-typo"))
    assert main(["knowledge", "list", "--knowledge", str(tmp_path / "typo")]) == 0  # no profiles there, as before
    err = capsys.readouterr().err
    assert all(f"warning: site profile folder {tmp_path / name} does not exist" in err for name in ("typo", "env-typo"))
    monkeypatch.delenv("MALENIA_KNOWLEDGE")
    assert main(["knowledge", "add", "x_test", "--name", " ", "--organ", "liver", "-d", "shape.round=0.9",
                 "--knowledge", str(tmp_path / "kn")]) == EXIT_BAD_INPUT
    assert "--name must not be empty" in capsys.readouterr().err
    assert main(["knowledge", "add", "x_test", "--name", "X test", "--organ", "liver", "-d", "shape.round=0.9",
                 "--knowledge", str(tmp_path / "kn")]) == 0  # a new folder to write into is made
    assert (tmp_path / "kn" / "x_test.json").is_file() and "warning" not in capsys.readouterr().err


def test_a_case_file_missing_is_named_before_an_evaluation_starts(tmp_path, capsys):
    assert main([*SYNTH[:6], "2", *SYNTH[7:], "--out", str(tmp_path / "ds")]) == 0
    case = sorted((tmp_path / "ds" / "cases").iterdir())[1]
    (case / "lesions.nii.gz").unlink()
    code = main(["evaluate", "--data", str(tmp_path / "ds"), "--split", "all", "--model", str(tmp_path / "no-model")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and f"missing case files: {case.name}/lesions.nii.gz" in err  # not the model's error


def test_listing_a_server_folder_that_does_not_exist_does_not_make_one(tmp_path, capsys):
    for argv in (["serve", "token", "list"], ["serve", "model", "list"]):
        assert main([*argv, "--data", str(tmp_path / "typo")]) == EXIT_BAD_INPUT
        assert "is not a server data folder" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_a_closed_standard_output_stops_the_command_without_a_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "malenia.cli", "knowledge", "list"], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the first line, as `| head -0` would
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_PIPE and "standard output was closed" in err and "Traceback" not in err


def test_a_truncated_case_image_is_refused_not_read_as_zeros(tmp_path):
    from malenia.data.dataset import read_case

    assert main([*SYNTH, "--out", str(tmp_path / "ds")]) == 0
    case = next((tmp_path / "ds" / "cases").iterdir())
    data = (case / "image.nii.gz").read_bytes()
    (case / "image.nii.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_case(tmp_path / "ds", case.name)


def test_an_interrupt_between_the_two_renames_of_an_overwrite_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "model"
    write_json(target / "manifest.json", {"old": True})
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if Path(dst) == target and ".partial." in Path(src).name:  # the old folder is aside, the new one not in place
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target, overwrite=True, replaces="manifest.json") as staging:
            write_json(staging / "manifest.json", {"new": True})
    monkeypatch.undo()
    assert (target / "manifest.json").read_text().strip().startswith('{\n  "old"')
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # staging removed


def test_sigterm_unwinds_any_command_as_ctrl_c_does(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "malenia.cli", *SYNTH[:6], "200", *SYNTH[7:], "--out",
                             str(tmp_path / "ds")], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".ds.partial.*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # synthesising into its staging folder
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # no staging folder, no dataset


@pytest.mark.parametrize("pointer", ["[]", '{"step": 3}', '{"path": "../../another-run/checkpoints/step_00000003"}'])
def test_a_damaged_checkpoint_pointer_is_one_line(tmp_path, pointer):
    from malenia.train.checkpoint import LATEST, latest_checkpoint

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / LATEST).write_text(pointer)
    with pytest.raises(InputError, match="checkpoint"):
        latest_checkpoint(tmp_path)
