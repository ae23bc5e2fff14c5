"""Output paths and model folders refused before the work, not after it (session 65's probe): a command that would
spend minutes mining, training, profiling or embedding and then fail to write its result says so at once, in one
line with exit code 5 (4 for a damaged model); an interrupted demo leaves no folder of its own behind.

Each test replaces the expensive step by one that fails the test, so that reaching it (the old order) is a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from malenia.cli import main
from malenia.errors import EXIT_BAD_INPUT, EXIT_BAD_MODEL, EXIT_OUTPUT, EXIT_USAGE, ModelError, OutputError
from malenia.paths import builtin_model_dir

SYNTH = ["synth", "--base", "phantom", "--diseases", "liver_tumor", "--cases", "1", "--size", "32"]


def _never(*args, **kwargs):
    pytest.fail("the work ran before the output was checked")


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory) -> Path:
    """A copy of the built-in model (its manifest and every listed file intact)."""
    folder = tmp_path_factory.mktemp("models") / "model"
    shutil.copytree(builtin_model_dir(), folder)
    return folder


@pytest.fixture(scope="module")
def tampered(tmp_path_factory, model_copy) -> Path:
    """The built-in model with one byte of its weights changed."""
    folder = tmp_path_factory.mktemp("tampered") / "model"
    shutil.copytree(model_copy, folder)
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1
    weights.write_bytes(bytes(data))
    return folder


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("x")
    return path


def test_mine_refuses_a_folder_or_a_path_under_a_file_before_mining(tmp_path, a_file, capsys, monkeypatch):
    monkeypatch.setattr("malenia.evaluate.mining.mine", _never)
    # a dataset and model that do not exist: the output is checked first (they would give exit 3 or 4)
    base = ["mine", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data")]
    assert main([*base, "--out", str(tmp_path)]) == EXIT_OUTPUT
    assert f"--out {tmp_path} is a folder, not a file" in _err(capsys)
    assert main([*base, "--out", str(a_file / "negatives.json")]) == EXIT_OUTPUT
    assert f"{a_file} is not a folder" in _err(capsys)


def test_bench_train_refuses_a_profile_folder_before_the_steps(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("malenia.train.bench.measure", _never)
    assert main(["bench", "train", "--steps", "1", "--profile", str(tmp_path)]) == EXIT_OUTPUT
    assert f"--profile {tmp_path} is a folder, not a file" in _err(capsys)


@pytest.mark.parametrize("argv, says", [
    (["bench", "synth", "--model", "m"], "--model does not apply to bench synth"),
    (["bench", "train", "--model", "m"], "--model does not apply to bench train"),
    (["bench", "model", "--profile", "p.txt"], "bench model does not take --profile"),
    (["bench", "segment", "--batch-size", "2", "--data", "d"], "bench segment does not take --batch-size, --data"),
    (["bench", "model", "--model", "m", "--config", "paper"], "--config's network or --model's, not both"),
])
def test_bench_refuses_options_its_target_would_ignore(argv, says, capsys, monkeypatch):
    for target in ("malenia.train.bench.measure", "malenia.evaluate.bench_model.measure",
                   "malenia.infer.bench_segment.synthetic_ct", "malenia.data.synthesis.bench.run"):
        monkeypatch.setattr(target, _never)
    assert main(argv) == EXIT_BAD_INPUT
    assert says in _err(capsys)


def test_bench_segment_and_model_refuse_a_tampered_model_as_segment_does(tampered, capsys, monkeypatch):
    monkeypatch.setattr("malenia.infer.bench_segment.synthetic_ct", _never)
    monkeypatch.setattr("malenia.evaluate.bench_model.measure", _never)
    for target in ("segment", "model"):
        assert main(["bench", target, "--model", str(tampered)]) == EXIT_BAD_MODEL
        assert "sha256 mismatch for weights.safetensors" in _err(capsys)


def test_bench_model_measures_the_network_of_model(model_copy, monkeypatch, capsys):
    from malenia.model.config import MaleniaConfig

    measured = []

    def measure(config, repeats=3):
        measured.append(config)
        raise KeyboardInterrupt  # enough: what it was asked to measure is known

    monkeypatch.setattr("malenia.evaluate.bench_model.measure", measure)
    main(["bench", "model", "--model", str(model_copy)])
    main(["bench", "model"])
    assert isinstance(measured[0], MaleniaConfig)
    assert measured[0].to_dict() == MaleniaConfig.from_dict(
        __import__("json").loads((model_copy / "config.json").read_text())).to_dict()
    assert measured[1] == "compact"  # without --model, --config's default


def test_a_failed_segment_run_in_bench_segment_is_its_own_one_line_error():
    from malenia.infer.bench_segment import _raise_failure

    with pytest.raises(ModelError, match=r"^m: sha256 mismatch$"):
        _raise_failure(EXIT_BAD_MODEL, "warning: x\nmalenia segment: error: m: sha256 mismatch\n")
    with pytest.raises(OutputError):
        _raise_failure(EXIT_OUTPUT, "malenia segment: error: disk full")
    with pytest.raises(RuntimeError, match="failed \\(1\\)"):
        _raise_failure(1, "Traceback ...\nValueError: a bug")


def test_ablate_refuses_unwritable_outputs_and_an_empty_variant_list_before_training(tmp_path, a_file, capsys,
                                                                                         monkeypatch):
    monkeypatch.setattr("malenia.train.loop.train", _never)
    base = ["ablate", "--data", str(tmp_path / "no-data"), "--steps", "1"]
    assert main([*base, "--out", str(a_file)]) == EXIT_OUTPUT
    assert f"--out {a_file} is a file, not a folder" in _err(capsys)
    (tmp_path / "abl" / "ablation.json").mkdir(parents=True)  # the table, written after the first variant trains
    assert main([*base, "--out", str(tmp_path / "abl")]) == EXIT_OUTPUT
    assert "ablation.json is a folder, not a file" in _err(capsys)
    (tmp_path / "abl" / "ablation.json").rmdir()
    (tmp_path / "abl" / "s1").write_text("x")  # where a variant's run folder goes
    assert main([*base, "--out", str(tmp_path / "abl"), "--variants", "s1"]) == EXIT_OUTPUT
    assert "s1 is a file, not a folder" in _err(capsys)
    for variants in (",", " , ,", ""):
        assert main([*base, "--out", str(tmp_path / "abl2"), "--variants", variants]) == EXIT_BAD_INPUT
        err = _err(capsys)
        assert "names no variant" in err and "'baseline'" in err and "'text_only'" in err
    assert not (tmp_path / "abl2").exists()
    with pytest.raises(SystemExit) as stop:
        main([*base[:-1], "0", "--out", str(tmp_path / "abl2")])
    assert stop.value.code == EXIT_USAGE


def test_knowledge_table_and_bank_refuse_a_folder_before_building(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("malenia.knowledge.workbook.read_workbook", _never)
    monkeypatch.setattr("malenia.knowledge.encoder.load_text_encoder", _never)
    for action in ("table", "bank"):
        assert main(["knowledge", action, "--out", str(tmp_path)]) == EXIT_OUTPUT
        assert f"--out {tmp_path} is a folder, not a file" in _err(capsys)


def test_evaluate_and_train_refuse_a_run_folder_under_a_file(tmp_path, a_file, capsys):
    for argv in (["evaluate", "--data", str(tmp_path / "no-data")], ["train", "--data", str(tmp_path / "no-data")]):
        assert main([*argv, "--out", str(a_file / "run")]) == EXIT_OUTPUT  # before the dataset is read
        assert f"cannot create --out {a_file / 'run'}: {a_file} is not a folder" in _err(capsys)


def test_synth_names_the_file_in_the_way_of_a_new_dataset(a_file, capsys, monkeypatch):
    monkeypatch.setattr("malenia.data.synthesis.generate.synthesize_dataset", _never)
    monkeypatch.setattr("malenia.data.synthesis.plant.plant_dataset", _never)
    for extra in ([], ["--nodules", "n"]):
        assert main([*SYNTH, *extra, "--out", str(a_file / "ds")]) == EXIT_OUTPUT
        assert f"cannot create --out {a_file / 'ds'}: {a_file} is not a folder" in _err(capsys)  # not "... exists"


def _unwritable(monkeypatch, folder: Path) -> None:
    """os.access says `folder` is not writable (the tests may run as root, who may write anywhere)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != folder and real(p, mode, **kw))


def test_a_fit_into_a_model_folder_that_cannot_be_replaced_is_refused_before_fitting(tmp_path, model_copy, capsys,
                                                                                      monkeypatch):
    from malenia.commands._runtime import require_updatable_model

    assert main([*SYNTH, "--out", str(tmp_path / "ds")]) == 0
    capsys.readouterr()
    monkeypatch.setattr("malenia.evaluate.attribute_examples.examples_from_dataset", _never)
    _unwritable(monkeypatch, model_copy.parent)  # update_model_folder stages the new folder beside the old
    assert main(["fit-appearance", "--model", str(model_copy), "--data", str(tmp_path / "ds")]) == EXIT_OUTPUT
    err = _err(capsys)
    assert f"cannot update the model folder {model_copy}" in err and "is not writable" in err and "--dry-run" in err
    require_updatable_model(model_copy, dry_run=True)  # a dry run writes nothing: nothing to refuse
    with pytest.raises(OutputError, match="not writable"):
        require_updatable_model(model_copy)


def test_require_output_helpers(tmp_path, a_file, monkeypatch):
    from malenia.commands._runtime import require_output_file, require_output_folder

    require_output_file(tmp_path / "new" / "deeper" / "f.json")  # folders that do not exist yet are made
    require_output_file(a_file)  # an existing file is replaced
    require_output_folder(tmp_path / "new" / "deeper")
    require_output_folder(None)
    require_output_file(None)
    _unwritable(monkeypatch, tmp_path)
    with pytest.raises(OutputError, match="is not writable"):
        require_output_file(tmp_path / "f.json")
    with pytest.raises(OutputError, match="the folder is not writable"):
        require_output_folder(tmp_path)


def test_segments_own_check_still_names_a_file_in_the_way(tmp_path, a_file):
    from malenia.infer.outputs import _check_target

    with pytest.raises(OutputError, match=f"cannot create output folder {a_file / 'o'}: {a_file} is not a folder"):
        _check_target(a_file / "o", overwrite=False)


def test_an_interrupted_demo_leaves_no_folder_it_made(tmp_path, monkeypatch):
    import SimpleITK as sitk

    from malenia.infer.demo import run_demo

    tiny = SimpleNamespace(image=sitk.Image(4, 4, 4, sitk.sitkInt16), lesions=sitk.Image(4, 4, 4, sitk.sitkUInt8),
                           report=SimpleNamespace(to_json=lambda: {}))
    monkeypatch.setattr("malenia.data.synthesis.make_demo_case", lambda seed: tiny)
    monkeypatch.setattr("malenia.infer.pipeline.load_model", lambda *a, **k: object())

    def interrupted(*args, **kwargs):  # Ctrl-C while the sample CT is being segmented
        raise KeyboardInterrupt

    monkeypatch.setattr("malenia.infer.pipeline.read_input", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "new" / "demo")
    assert list(tmp_path.iterdir()) == []  # neither DIR nor the folder above it that the demo made
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]  # a user's folder stays as it was


def test_no_empty_folder_left_removes_only_the_empty_folders_the_block_made(tmp_path):
    from malenia.atomic import no_empty_folder_left

    with pytest.raises(KeyboardInterrupt):
        with no_empty_folder_left(tmp_path / "a" / "b" / "c"):
            (tmp_path / "a" / "b" / "c").mkdir(parents=True)
            (tmp_path / "a" / "kept.txt").write_text("x")
            raise KeyboardInterrupt
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a" / "kept.txt").is_file()
    with no_empty_folder_left(tmp_path / "ok"):  # success: what the block made stays, even empty
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


def test_a_variant_named_twice_runs_once():
    from malenia.commands.ablate import variant_names

    assert variant_names("s1, s2,s1,,s2") == ["s1", "s2"]


def test_an_interrupted_atomic_write_leaves_no_folder_it_made_above_its_target(tmp_path):
    """segment --out new/deeper/D (or any staged write) stopped before publishing: the folders made for it go too,
    a folder that was there stays, and a successful write keeps them."""
    from malenia.atomic import atomic_dir

    (tmp_path / "mine").mkdir()
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "mine" / "new" / "deeper" / "D") as staging:
            (staging / "report.json").write_text("{}")
            raise KeyboardInterrupt
    assert list((tmp_path / "mine").iterdir()) == []
    with atomic_dir(tmp_path / "mine" / "new" / "deeper" / "D") as staging:
        (staging / "report.json").write_text("{}")
    assert (tmp_path / "mine" / "new" / "deeper" / "D" / "report.json").is_file()
