"""The training server's narrow windows, opened on purpose in one process (a session-64 probe found each): a cancel
that lands between the queue's read and the job's start, a replayed case deleted under a running job, a crash
between a version's registration and the job's end, a predecessor's staging folder with this process's id, and a
full disk."""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from malenia import atomic
from malenia.server.cases import Conflict
from malenia.server.config import ServerConfig
from malenia.server.service import TrainingService
from malenia.server.testdata import make_case, make_model_folder
from malenia.server.uploads import StagedUpload

FAKE_TRAINER = [sys.executable, "-m", "malenia.server.testdata", "train"]


@pytest.fixture()
def service(tmp_path):
    make_model_folder(tmp_path / "base")
    cfg = ServerConfig(tmp_path / "data", base_model=str(tmp_path / "base"), train_command=FAKE_TRAINER,
                       promotion="always", subprocess_env={"MALENIA_FAKE_STEP_SECONDS": "0.01"})
    svc = TrainingService(cfg, start_worker=False)  # the test plays the worker
    yield svc
    svc.close()


def _store_case(svc: TrainingService, seed: int) -> str:
    folder = make_case(svc.layout.new_staging_dir("upload") / "case", seed=seed)
    parts = {k: hashlib.sha256((folder / f"{k}.nii.gz").read_bytes()).hexdigest() for k in ("image", "lesions")}
    return svc.cases.ingest(StagedUpload(folder, parts)).case["id"]


def _submit(svc: TrainingService, case_ids: list[str]) -> dict:
    job = svc.jobs.submit({"steps": 5, "case_ids": case_ids, "replay_fraction": 0.5})
    return svc.store.get("SELECT * FROM jobs WHERE id=?", (job["id"],))


def test_a_cancel_between_the_queue_read_and_the_start_holds(service):
    row = _submit(service, [_store_case(service, 1), _store_case(service, 2)])  # the worker has read it
    assert service.jobs.cancel(row["id"])["state"] == "cancelled"
    service.jobs._run(row)  # ... and then starts it
    assert service.jobs.get(row["id"])["state"] == "cancelled"
    assert not (service.layout.job_dir(row["id"]) / "run").exists() and len(service.registry.list()) == 1


def test_a_job_requeued_after_its_version_was_registered_adds_no_second_version(service):
    row = _submit(service, [_store_case(service, 1), _store_case(service, 2)])
    service.jobs._run(row)
    done = service.jobs.get(row["id"])
    assert done["state"] == "succeeded" and done["result_version"] == "v2", done
    # The server stops between the registration and the job's end: running again, its model folder complete.
    service.store.execute("UPDATE jobs SET state='running', result_version=NULL WHERE id=?", (row["id"],))
    assert any("requeued to register its model" in note for note in service.jobs.recover())
    service.jobs._run(service.store.get("SELECT * FROM jobs WHERE id=?", (row["id"],)))
    assert [v["name"] for v in service.registry.list()] in (["v1", "v2"], ["v2", "v1"])
    assert service.jobs.get(row["id"])["result_version"] == "v2"


def test_a_case_a_running_job_replays_cannot_be_deleted(service):
    first = _submit(service, [_store_case(service, 1), _store_case(service, 2)])
    service.jobs._run(first)  # succeeded: its training cases are replayed by later jobs
    earlier = service.store.get("SELECT params FROM jobs WHERE id=?", (first["id"],))["params"]["train_ids"]
    row = _submit(service, [_store_case(service, 3), _store_case(service, 4)])
    _, _, replay, resolved = service.jobs._prepare(row["id"], row["params"])  # what _run does before training
    service.jobs._update(row["id"], params={**row["params"], **resolved})
    service.store.execute("UPDATE jobs SET state='running' WHERE id=?", (row["id"],))
    assert replay is not None and sorted(resolved["replay_ids"]) == sorted(earlier)
    with pytest.raises(Conflict):
        service.cases.delete(earlier[0], service.jobs.active_case_ids())


def test_a_predecessors_staging_folder_with_this_process_id_is_cleaned(tmp_path, monkeypatch):
    now = time.time()
    monkeypatch.setattr(atomic, "_STARTED", now - 3600)  # this process started an hour ago
    theirs, ours = (tmp_path / f".v{k}.partial.{os.getpid()}-x" for k in (1, 2))
    for folder, age in ((theirs, 7200), (ours, 1800)):  # before and after this process started
        folder.mkdir()
        os.utime(folder, (now - age, now - age))
    assert atomic.clean_stale(tmp_path) == [theirs.name]
    assert ours.is_dir() and not theirs.exists()


def test_a_full_disk_is_a_507_with_its_reason(service, monkeypatch):
    from fastapi.testclient import TestClient

    from malenia.server.app import create_app

    token, _ = service.tokens.add("t")

    def full(staged):
        staged.discard()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(service.cases, "ingest", full)
    folder = make_case(Path(service.layout.root) / "upload-src", seed=1)
    files = {k: (f"{k}{'.json' if k == 'report' else '.nii.gz'}",
                 (folder / (f"{k}.json" if k == "report" else f"{k}.nii.gz")).read_bytes())
             for k in ("image", "lesions", "report")}
    with TestClient(create_app(service, close_on_shutdown=False)) as client:
        r = client.post("/cases", files=files, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 507 and "storage is full" in r.json()["detail"], r.text
    assert not list(service.layout.staging.iterdir())
