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


def _run(tmp_path: Path, *args: str, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}" + FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.jsonl"
    env = dict(os.environ, CALLS=str(calls))
    proc = subprocess.run(["bash", str(SCRIPT), "--python", str(fake), "--out", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=cwd)
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
    (["--minutes", "1", "--init", "no-such-model"], "--init no-such-model is not a folder"),
    (["--minutes", "1", "--base", "no-such-base"], "--base no-such-base is not a folder"),
    (["--minutes", "1", "--hard-negatives", "no-such.json"], "--hard-negatives no-such.json is not a file"),
    (["--minutes", "1", "--transplant", "many"], "--transplant needs a number of cases, got 'many'"),
    (["--minutes", "1", "--mixed"], "--mixed needs a number of cases, got ''"),
    (["--minutes", "1", "--ema"], "--ema needs a value"),
    (["--minutes", "1", "--mix-density", "1.5"], "--mix-density needs a share from 0 to 1, got '1.5'"),
])
def test_bad_options_are_refused_before_anything_runs(tmp_path, args, message):
    proc, calls = _run(tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert calls == []


def test_the_gpu_round_recipe_reaches_synth_merge_train_and_bench(tmp_path):
    """The twenty-seventh round's recipe as options: seed-1 seen_train shards, an attribute-mixed and LIDC replay,
    the CPU's mined file, and the bench after training."""
    nodules = tmp_path / "lidc_a"
    nodules.mkdir()
    mined = tmp_path / "mined.json"
    mined.write_text("{}")
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "3", "--test-cases", "1", "--device", "cpu",
                       "--mixed", "5", "--nodules", str(nodules), "--hard-negatives", str(mined), "--lr", "1e-4",
                       "--replay-fraction", "0.6", "--bench", "--ema", "0.999", "--freeze", "backbone.encoder.", "--host-floor",
                       "--mix-density", "0.5")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    synth = [c[3:] for c in calls if c[:3] == ["-m", "malenia.cli", "synth"]]
    drawn = [c for c in synth if "--nodules" not in c]  # training, replay and test sets alike; real nodules keep their HU
    assert len(drawn) == 6 and all("--host-floor" in c for c in drawn)  # 2 + 2 shards, 2 test sets
    assert not [c for c in synth if "--nodules" in c and "--host-floor" in c]
    seen = [c for c in synth if "seen_train" in c]
    assert sorted(c[c.index("--shard") + 1] for c in seen) == ["1/2", "2/2"]  # 4 cores - 2: two shards
    assert all(c[c.index("--seed") + 1] == "1" and c[c.index("--cases") + 1] == "3" for c in seen)
    mixed = [c for c in synth if "seen_mix" in c]
    assert len(mixed) == 2 and all(c[c.index("--seed") + 1] == "8" and "--mix-attributes" in c for c in mixed)
    assert all(c[c.index("--mix-density") + 1] == "0.5" for c in mixed)  # the replay's mixed cases only
    assert not [c for c in synth if "--mix-density" in c and "seen_mix" not in c]
    planted = [c for c in synth if "--nodules" in c]
    assert len(planted) == 1 and planted[0][planted[0].index("--nodules") + 1] == str(nodules)
    merges = [c for c in calls if c and c[0].endswith("merge_datasets.py")]
    assert [m[1] for m in merges] == ["data/seen_train", "data/replay"]
    assert sorted(merges[1][2:]) == ["data/mixed1", "data/mixed2", "data/nodules1"]
    train = [c for c in calls if c[:3] == ["-m", "malenia.cli", "train"]][0]
    assert train[train.index("--data") + 1] == "data/seen_train" and train[train.index("--replay") + 1] == "data/replay"
    assert train[train.index("--replay-fraction") + 1] == "0.6" and train[train.index("--lr") + 1] == "1e-4"
    assert train[train.index("--hard-negatives") + 1] == str(mined) and "--missed-fraction" in train
    assert train[train.index("--ema") + 1] == "0.999" and train[train.index("--freeze") + 1] == "backbone.encoder."
    bench = [c for c in calls if c[:4] == ["-m", "malenia.cli", "bench", "train"]]
    assert len(bench) == 1 and bench[0][bench[0].index("--config") + 1] == "run/model/config.json"


def test_without_replay_options_train_gets_no_replay(tmp_path):
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert not [c for c in calls if "--host-floor" in c or "--mix-density" in c]
    train = [c for c in calls if c[:3] == ["-m", "malenia.cli", "train"]][0]
    assert "--replay" not in train and "--hard-negatives" not in train
    assert not [c for c in calls if c[:4] == ["-m", "malenia.cli", "bench", "train"]]


def test_relative_paths_reach_synth_and_train_absolute(tmp_path):
    """The script works inside --out: folders and files given relative to where it was started still resolve."""
    for name in ("model", "base", "lidc"):
        (tmp_path / name).mkdir()
    (tmp_path / "mined.json").write_text("{}")
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu",
                       "--init", "model", "--base", "phantom", "--base", "base", "--nodules", "lidc",
                       "--hard-negatives", "mined.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    train = [c for c in calls if c[:3] == ["-m", "malenia.cli", "train"]][0]
    assert train[train.index("--init") + 1] == str(tmp_path / "model")
    assert train[train.index("--hard-negatives") + 1] == str(tmp_path / "mined.json")
    for synth in (c for c in calls if c[:3] == ["-m", "malenia.cli", "synth"]):
        bases = [synth[i + 1] for i, a in enumerate(synth) if a == "--base"]
        assert bases == ["phantom", str(tmp_path / "base")]
    planted = [c for c in calls if "--nodules" in c][0]
    assert planted[planted.index("--nodules") + 1] == str(tmp_path / "lidc")


def test_replay_seed_draws_the_replay_afresh_and_keeps_the_training_set(tmp_path):
    """--replay-seed S (a repeated GPU round): mixed cases on seed S, each LIDC set on S+1, S+2; seen_train stays seed 1."""
    parts = [tmp_path / "lidc_a", tmp_path / "lidc_b"]
    for p in parts:
        p.mkdir()
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu", "--mixed", "3",
                       "--nodules", str(parts[0]), "--nodules", str(parts[1]), "--replay-seed", "50")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    synth = [c[3:] for c in calls if c[:3] == ["-m", "malenia.cli", "synth"]]
    seed = lambda c: c[c.index("--seed") + 1]  # noqa: E731
    assert {seed(c) for c in synth if "seen_mix" in c} == {"50"}
    assert sorted((c[c.index("--nodules") + 1], seed(c)) for c in synth if "--nodules" in c) == [
        (str(parts[0]), "51"), (str(parts[1]), "52")]
    assert {seed(c) for c in synth if "seen_train" in c} == {"1"}
    train = [c for c in calls if c[:3] == ["-m", "malenia.cli", "train"]][0]
    assert "(seed 50)" in train[train.index("--training-data") + 1]
    proc, _ = _run(tmp_path, "--minutes", "1", "--replay-seed", "fifty")
    assert proc.returncode == 2 and "--replay-seed needs a whole number" in proc.stderr


def test_transplant_cases_join_the_replay_on_their_own_seed(tmp_path):
    """--transplant N: N cases of the training-only transplanted looks (seed S+500) merged into the replay."""
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu", "--mixed", "2",
                       "--transplant", "7", "--replay-seed", "60")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    synth = [c[3:] for c in calls if c[:3] == ["-m", "malenia.cli", "synth"]]
    tp = [c for c in synth if c[c.index("--diseases") + 1] == "spleen_calcification"]  # the measured look by default
    assert len(tp) == 1 and tp[0][tp[0].index("--seed") + 1] == "560" and tp[0][tp[0].index("--cases") + 1] == "7"
    assert tp[0][tp[0].index("--val-fraction") + 1] == "0"  # training cases only
    merges = [c for c in calls if c and c[0].endswith("merge_datasets.py")]
    assert "data/transplant" in merges[1]
    train = [c for c in calls if c[:3] == ["-m", "malenia.cli", "train"]][0]
    assert "7 transplanted-look cases (seed 560)" in train[train.index("--training-data") + 1]


def test_transplant_looks_choose_which_looks_are_drawn(tmp_path):
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu",
                       "--transplant", "3", "--transplant-looks", "transplant")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    synth = [c[3:] for c in calls if c[:3] == ["-m", "malenia.cli", "synth"]]
    assert [c[c.index("--diseases") + 1] for c in synth if c[c.index("--cases") + 1] == "3"] == ["transplant"]
    proc, _ = _run(tmp_path, "--minutes", "1", "--transplant-looks")
    assert proc.returncode == 2 and "--transplant-looks needs a list of looks" in proc.stderr


def test_wheels_folder_packages_shipped_unpacked_are_extracted_beside_the_wheels(tmp_path):
    """--wheels installs the wheels and extracts every *.tar.xz (scripts/gpu_payload.sh --xz: SimpleITK as its
    unpacked files, half the wheel's size) into the same site folder, which the run's commands then import from."""
    import tarfile

    wheels = tmp_path / "whl"
    (tmp_path / "pkg" / "fakepkg").mkdir(parents=True)
    (tmp_path / "pkg" / "fakepkg" / "__init__.py").write_text("VALUE = 7\n")
    wheels.mkdir()
    with tarfile.open(wheels / "fakepkg.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "pkg" / "fakepkg", arcname="fakepkg")
    (wheels / "other-1.0-py3-none-any.whl").write_bytes(b"")
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu",
                       "--wheels", str(wheels))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    site = tmp_path / "run" / "site"
    assert (site / "fakepkg" / "__init__.py").read_text() == "VALUE = 7\n"
    install = [c for c in calls if c[:3] == ["-m", "pip", "install"]]
    assert len(install) == 1 and install[0][-1].endswith("other-1.0-py3-none-any.whl") and str(site) in install[0]


@pytest.mark.parametrize("args, message", [
    ([], "output folder is required"),
    (["out", "--base", "no-such-folder"], "is not a folder"),
    (["out", "--nodules", "."], "is not a dataset"),
    (["out", "--hard-negatives", "missing.json"], "is not a file"),
    (["out", "--limit-mb", "many"], "whole number"),
    (["out", "--frobnicate"], "unknown option"),
    (["a", "b"], "one output folder"),
])
def test_gpu_payload_refuses_bad_options_before_downloading_anything(tmp_path, args, message):
    script = SCRIPT.parent / "gpu_payload.sh"
    proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written when the options are wrong"


def test_profile_measures_the_config_to_be_trained_at_the_run_s_batch_before_training(tmp_path):
    """--profile: `bench train --profile` of --init's config (the network that will be trained) at --batch-size,
    run before `train` (while the data is synthesised), its file in the output folder."""
    init = tmp_path / "init_model"
    init.mkdir()
    proc, calls = _run(tmp_path, "--minutes", "1", "--cases", "2", "--test-cases", "1", "--device", "cpu",
                       "--batch-size", "24", "--init", str(init), "--profile")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    kinds = [c[2:4] for c in calls if c[:2] == ["-m", "malenia.cli"]]
    profile = [c for c in calls if c[:4] == ["-m", "malenia.cli", "bench", "train"]]
    assert len(profile) == 1 and kinds.index(["bench", "train"]) < kinds.index(["train", "--data"])
    args = profile[0]
    assert args[args.index("--config") + 1] == f"{init}/config.json" and args[args.index("--batch-size") + 1] == "24"
    assert args[args.index("--profile") + 1] == "profile.txt" and args[args.index("--device") + 1] == "cpu"
