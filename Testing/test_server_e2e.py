"""End to end with the real parts: upload -> fine-tune (compact, a few CPU steps, the real `malenia train`)
-> a new version -> download -> sha256 matches -> the real `malenia segment` runs with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from malenia.data.dataset import DatasetIndex, write_dataset_index
from malenia.paths import builtin_model_dir
from malenia.server.client import MaleniaClient
from malenia.server.testdata import ServerProcess, make_case

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def base_model(tmp_path: Path, cases: list[Path]) -> Path:
    """The built-in model when it is shipped, else a compact model from one real training step."""
    if (builtin_model_dir() / "manifest.json").is_file():
        return builtin_model_dir()
    data = tmp_path / "base_data"
    for case in cases:
        (data / "cases").mkdir(parents=True, exist_ok=True)
        os.symlink(case, data / "cases" / case.name)
    write_dataset_index(data, DatasetIndex("base", [c.name for c in cases], {"train": [c.name for c in cases]}))
    subprocess.run([sys.executable, "-m", "malenia.cli", "train", "--config", "compact", "--data", str(data),
                    "--out", str(tmp_path / "base_run"), "--steps", "1", "--progress", "none"],
                   check=True, env={**os.environ, **THREADS}, timeout=300)
    return tmp_path / "base_run" / "model"


def test_upload_finetune_download_and_segment_with_the_new_version(tmp_path):
    cases = [make_case(tmp_path / f"case{i}", shape_zyx=(24, 48, 48), seed=i,
                       free_text="faint rim calcification" if i == 0 else None) for i in range(2)]
    base = base_model(tmp_path, cases)
    srv = ServerProcess(tmp_path / "data", env=THREADS, settings={
        "base_model": str(base), "launcher": "auto", "promotion": "not_worse", "promotion_tolerance": 1.0,
        "extra_train_args": ["--threads", "1"]}).start()
    try:
        with MaleniaClient(srv.url, srv.token) as c:
            assert c.connect()["current_version"] == "v1"
            ids = [c.upload_case(case)["case"]["id"] for case in cases]
            # train on the case with typed free text, validate on the other (explicit split)
            job = c.start_job(steps=3, case_ids=ids[:1], val_case_ids=ids[1:], replay_fraction=0.0)
            done = c.wait(job["id"], timeout=600, poll=0.5)
            log = c.log(job["id"], 60)
            assert done["state"] == "succeeded", (done, log)
            assert "-m malenia.cli train" in log and "--init" in log  # the real trainer ran
            print(f"\nstart -> first training step: {done['progress']['first_step_seconds']:.1f} s")
            assert done["progress"]["step"] == 3 and len(done["progress"]["losses"]) >= 1
            new = done["result_version"]
            versions = c.versions()
            assert [v["name"] for v in versions["versions"]] == ["v1", new]
            info = c.version(new)
            metrics = info["metrics"]
            assert metrics["val_cases"] == 1 and metrics["val_dsc"] is not None and metrics["baseline_dsc"] is not None
            assert versions["current"] == new  # tolerance 1.0: not worse by construction, so promoted
            model = c.download_version(new, tmp_path / "downloaded")
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)
    manifest = json.loads((model / "manifest.json").read_text())
    assert hashlib.sha256((model / "manifest.json").read_bytes()).hexdigest() == info["manifest_sha256"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((model / rel).read_bytes()).hexdigest() == digest
    out = tmp_path / "segmented"
    run = subprocess.run([sys.executable, "-m", "malenia.cli", "segment", str(cases[1] / "image.nii.gz"),
                          "--model", str(model), "--out", str(out)], capture_output=True, text=True,
                         env={**os.environ, **THREADS}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert (out / "lesions.nii.gz").is_file()
    assert report["model"]["sha256"] == manifest["files"]["weights.safetensors"]
