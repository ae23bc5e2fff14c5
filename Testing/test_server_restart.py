"""Jobs across a killed server, cancel and the queue: a real server subprocess, a real slow job command.

The job command is the trainer double of malenia.server.testdata (0.1 s per step, resumable checkpoints
every 5 steps, like `malenia train`'s RUN/checkpoints).
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from pathlib import Path

import pytest

from malenia.server.client import MaleniaClient
from malenia.server.testdata import ServerProcess, make_case, make_model_folder

FAKE_TRAINER = [sys.executable, "-m", "malenia.server.testdata", "train"]
SLOW = {"MALENIA_FAKE_STEP_SECONDS": "0.1"}


def processes_mentioning(text: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def wait_for(predicate, timeout=60.0, poll=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def setup(tmp_path):
    make_model_folder(tmp_path / "base")
    cases = [make_case(tmp_path / f"case{i}", seed=i) for i in range(2)]
    return tmp_path, cases


@pytest.mark.parametrize("resume", [True, False], ids=["resumed", "marked-interrupted"])
def test_server_killed_during_job_then_restarted(setup, resume):
    root, cases = setup
    srv = ServerProcess(root / "data", env=SLOW, settings={
        "base_model": str(root / "base"), "train_command": FAKE_TRAINER, "promotion": "never",
        "resume_interrupted": resume}).start()
    token = srv.token
    try:
        with MaleniaClient(srv.url, token) as c:
            for case in cases:
                c.upload_case(case)
            current = c.versions()["current"]
            v1_files = folder_hashes(srv.data / "models" / current)
            job = c.start_job(steps=40)
            wait_for(lambda: (c.job(job["id"])["progress"].get("step") or 0) >= 12)
        run_dir = str(srv.data / "jobs" / job["id"] / "run")
        assert processes_mentioning(run_dir), "the job should be running"
        srv.kill()  # SIGKILL: no shutdown handler runs
        srv.start()
        assert srv.token is None  # not a first start: no new token printed
        note = [ln for ln in srv.lines if job["id"] in ln]
        assert note, srv.lines
        with MaleniaClient(srv.url, token) as c:
            if resume:
                assert "resumes from its last checkpoint" in note[-1]
                done = c.wait(job["id"], timeout=60, poll=0.2)
                assert done["state"] == "succeeded", (done, c.log(job["id"]))
                manifest = c.version(done["result_version"])["manifest"]
                assert manifest["training"]["resumed_from"] >= 10  # continued from a checkpoint, not from 0
                assert any("server restarted while running" in n for n in done["notes"])
            else:
                done = c.job(job["id"])
                assert done["state"] == "interrupted" and "run folder is kept" in done["error"]
                assert Path(run_dir, "checkpoints").is_dir()
            versions = c.versions()
            assert versions["current"] == current  # promotion "never": the current model is untouched
            assert folder_hashes(srv.data / "models" / current) == v1_files
            wait_for(lambda: not processes_mentioning(run_dir), timeout=20)  # no orphaned trainer left
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)


def test_cancel_running_and_queued_jobs_and_queue_goes_on(setup):
    root, cases = setup
    srv = ServerProcess(root / "data", env=SLOW, settings={
        "base_model": str(root / "base"), "train_command": FAKE_TRAINER, "promotion": "always",
        "cancel_grace_s": 2.0}).start()
    try:
        with MaleniaClient(srv.url, srv.token) as c:
            c.upload_case(cases[0])
            first = c.start_job(steps=1000)
            second = c.start_job(steps=1000)
            third = c.start_job(steps=3)
            wait_for(lambda: c.job(first["id"])["state"] == "running" and (c.job(first["id"])["progress"].get("step") or 0) >= 2)
            assert c.job(second["id"])["state"] == "queued"  # one at a time
            assert c.cancel(second["id"])["state"] == "cancelled"
            run_dir = str(srv.data / "jobs" / first["id"] / "run")
            assert processes_mentioning(run_dir)
            t0 = time.monotonic()
            c.cancel(first["id"])
            assert wait_for(lambda: c.job(first["id"])["state"] == "cancelled", timeout=15)
            assert time.monotonic() - t0 < 10
            wait_for(lambda: not processes_mentioning(run_dir), timeout=10)
            assert not Path(run_dir, "model").exists()
            done = c.wait(third["id"], timeout=60, poll=0.2)
            assert done["state"] == "succeeded" and c.versions()["current"] == done["result_version"]
            assert c.job(second["id"])["started"] is None
            with pytest.raises(Exception, match="already cancelled"):
                c.cancel(first["id"])
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)
