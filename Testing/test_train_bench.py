"""`malenia bench train`: the trainer's real step, timed per phase."""

import json

import pytest

from malenia.cli import main
from train_helpers import make_tiny_dataset, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_train_times_every_phase_of_real_steps(tmp_path, capsys):
    make_tiny_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config().to_dict()))
    assert main(["bench", "train", "--config", str(cfg), "--data", str(tmp_path / "ds"), "--batch-size", "3",
                 "--steps", "2", "--device", "cpu", "--workers", "1", "--precision", "fp32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["batch_size"] == 3 and r["steps"] == 2 and r["workers"] == 1 and r["device"] == "cpu"
    assert r["precision"] == "fp32 channels-last" and r["amp_bfloat16"] is False
    share = r["share"]
    assert set(share) == {"data_wait", "forward", "matching", "losses", "backward", "optimizer"}
    assert all(v > 0 for k, v in share.items() if k != "data_wait"), share
    assert 0.9 < sum(share.values()) <= 1.0 + 1e-6  # the phases cover the step
    assert r["steps_per_s"] > 0 and abs(r["step_s"] * r["steps_per_s"] - 1) < 1e-6
    assert main(["bench", "train", "--steps", "0"]) != 0
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_bench_train_compiled_runs_the_same_step_and_says_so(tmp_path, capsys):
    """--compile BACKEND reaches the trainer (eager: dynamo traces the network's parts without generating code)."""
    from malenia.train.bench import _table

    make_tiny_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config().to_dict()))
    assert main(["bench", "train", "--config", str(cfg), "--data", str(tmp_path / "ds"), "--batch-size", "2",
                 "--steps", "1", "--device", "cpu", "--workers", "0", "--precision", "fp32", "--compile", "eager",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["compile"] == "eager" and r["warmup_s"] > 0 and r["steps_per_s"] > 0
    assert "compiled with eager" in _table(r).splitlines()[0]
    with pytest.raises(SystemExit):  # argparse: not a backend
        main(["bench", "train", "--compile", "tensorrt"])


def test_bench_train_profile_writes_the_operator_table_and_counts_what_a_step_dispatches(tmp_path, capsys):
    """--profile FILE: the operator table of --steps more steps, and the host's aten operators per step and phase
    (each at least one kernel launch on a GPU: what a latency-bound step has to cut)."""
    from malenia.train.bench import _table

    make_tiny_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config().to_dict()))
    out = tmp_path / "profile" / "train.txt"
    out.parent.mkdir()
    assert main(["bench", "train", "--config", str(cfg), "--data", str(tmp_path / "ds"), "--batch-size", "2",
                 "--steps", "1", "--device", "cpu", "--workers", "0", "--precision", "fp32", "--profile", str(out),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["profile"] == str(out) and r["profiled_steps"] == 1 and r["cuda_kernels_per_step"] is None
    phases = r["aten_ops_per_phase"]
    assert set(phases) == {"forward", "losses", "backward", "optimizer"} and all(v > 0 for v in phases.values())
    assert sum(phases.values()) <= r["aten_ops_per_step"]  # the input's copy and the rest sit outside the phases
    text = out.read_text()
    assert text.startswith("malenia bench train --profile: 1 training steps on cpu;")
    assert "aten::convolution_backward" in text and "Self CPU" in text
    by_line = text.split("by the source line that issued them")[1].splitlines()[1:]
    rows = [line.split() for line in by_line if line.strip()]
    assert {r[1] for r in rows} >= {"forward", "losses", "backward"}
    assert any(r[1] == "forward" and r[2].startswith("model/") and ":" in r[2] for r in rows)  # a file:line of malenia
    assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)
    assert [p.name for p in out.parent.iterdir()] == ["train.txt"]  # written atomically: no staging file left
    assert "aten operators dispatched a step: forward" in _table(r)
