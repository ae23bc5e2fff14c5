"""scripts/gpu_train.sh: its options reach `malenia train` as given (run with a recording stand-in for the
Python of a GPU machine, so the shell logic runs for real without synthesising or training)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_train.sh"

# Records each call's argv as one JSON line; `train` leaves what the script reads afterwards (the metrics and
# the model folder it packs); `os.cpu_count()` answers 4.
FAKE_PYTHON = """
import json, os, sys
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:1] == ["-c"] and "cpu_count()" in args[1] and "torch" not in args[1]:
    print(4)
elif args[:3] == ["-m", "malenia.cli", "train"]:
    out = args[args.index("--out") + 1]
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    open(os.path.join(out, "model", "weights.safetensors"), "w").write("w")
    open(os.path.join(out, "metrics.jsonl"), "w").write('{"step": 1}\\n')
"""


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}" + FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.jsonl"
    env = dict(os.environ, CALLS=str(calls))
    proc = subprocess.run(["bash", str(SCRIPT), "--python", str(fake), "--out", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, [json.loads(line) for line in lines]


def test_set_and_augment_reach_train_unchanged(tmp_path):
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu",
                       "--augment", "scale=[0.7, 1.4]", "--set", "dense_lesion_weight=1",
                       "--augment", "scale_isotropic=true")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    train = [c for c in calls if c[:3] == ["-m", "malenia.cli", "train"]]
    assert len(train) == 1
    args = train[0]
    pairs = [(args[i], args[i + 1]) for i in range(len(args) - 1) if args[i] in ("--set", "--augment")]
    assert pairs == [("--augment", "scale=[0.7, 1.4]"), ("--set", "dense_lesion_weight=1"),
                     ("--augment", "scale_isotropic=true")]
    assert args[args.index("--minutes") + 1] == "1" and args[args.index("--device") + 1] == "cpu"
    assert list((tmp_path / "run").glob("model.tgz.part-*")), "the model folder was not packed"


def test_without_train_options_train_gets_none(tmp_path):
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    train = [c for c in calls if c[:3] == ["-m", "malenia.cli", "train"]][0]
    assert "--set" not in train and "--augment" not in train


@pytest.mark.parametrize("args, message", [
    (["--minutes", "1", "--augment"], "--augment needs KEY=VALUE"),
    (["--minutes", "1", "--sett", "a=1"], "unknown option --sett"),
    (["--cases", "2"], "--minutes is required"),
])
def test_bad_options_are_refused_before_anything_runs(tmp_path, args, message):
    proc, calls = _run(tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert calls == []
