"""`malenia bench segment --config`: session 66 found it ignored beside --model and beside an installed built-in
model (the figures were of another network than the one named). Now --config runs a fresh model of that
configuration, --model with --config is refused, and an unknown name is refused before the CT is made."""

from __future__ import annotations

import json

import pytest

from malenia.cli import main
from malenia.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from malenia.infer import bench_segment
from malenia.model.folder import MANIFEST
from malenia.paths import builtin_model_dir


def _never(*args, **kwargs):
    pytest.fail("the bench started before its options were checked")


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, says", [
    (["--model", "some/model", "--config", "paper"], "runs --model's folder or a fresh model of --config, not both"),
    (["--config", "enormous"], "unknown model config 'enormous'"),
])
def test_bench_segment_refuses_config_it_could_not_honour_before_any_work(argv, says, capsys, monkeypatch):
    monkeypatch.setattr(bench_segment, "synthetic_ct", _never)
    monkeypatch.setattr(bench_segment, "fresh_model", _never)
    assert main(["bench", "segment", *argv]) == EXIT_BAD_INPUT
    assert says in _err(capsys)


@pytest.fixture
def measured(monkeypatch) -> list:
    """What the CT run was asked to segment: the configuration name of the model folder it got (None: the
    built-in model). A small CT stands in for the 512 x 512 x 200 one only to keep the test short."""
    real_ct, seen = bench_segment.synthetic_ct, []

    def measure(path, model, out, device, precision):
        seen.append(None if model is None else json.loads((model / "config.json").read_text())["name"])
        raise KeyboardInterrupt  # the first run is all the test needs

    monkeypatch.setattr(bench_segment, "synthetic_ct", lambda: real_ct(size=(24, 24, 12)))
    monkeypatch.setattr(bench_segment, "measure", measure)
    return seen


def test_bench_segment_config_runs_a_fresh_model_of_that_config(measured):
    assert main(["bench", "segment", "--config", "paper"]) == EXIT_INTERRUPTED
    assert measured == ["paper"]


@pytest.mark.skipif(not (builtin_model_dir() / MANIFEST).is_file(), reason="no built-in model installed")
def test_bench_segment_without_config_runs_the_built_in_model(measured):
    assert main(["bench", "segment"]) == EXIT_INTERRUPTED
    assert measured == [None]
