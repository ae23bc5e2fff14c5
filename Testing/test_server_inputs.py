"""The training server's handling of odd inputs, through the real app (TestClient) on a fresh data folder (session
65's probe): a report's numeric case_id stored as text, a multipart body cut off inside its trailing `name` field
accepted, and a stored case whose files were damaged reported as "already stored" to an upload that could mend it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from malenia.server.app import create_app
from malenia.server.config import ServerConfig
from malenia.server.service import TrainingService
from malenia.server.testdata import make_case, make_model_folder

PARTS = (("image", "image.nii.gz"), ("lesions", "lesions.nii.gz"), ("report", "report.json"))
BOUNDARY = "malenia-test-boundary"


@pytest.fixture()
def api(tmp_path):
    make_model_folder(tmp_path / "base")
    svc = TrainingService(ServerConfig(tmp_path / "data", base_model=str(tmp_path / "base"), train_command=["true"]),
                          start_worker=False)
    token, _ = svc.tokens.add("t")
    with TestClient(create_app(svc, close_on_shutdown=False), headers={"Authorization": f"Bearer {token}"}) as client:
        yield svc, client
    svc.close()


def _parts(folder: Path, **report_fields) -> dict[str, bytes]:
    parts = {name: (folder / f).read_bytes() for name, f in PARTS}
    if report_fields:
        parts["report"] = json.dumps({**json.loads(parts["report"]), **report_fields}).encode()
    return parts


def _body(parts: dict[str, bytes], name: str) -> bytes:
    """A multipart body as a client writes it: the three files, then the `name` field, then the closing boundary."""
    out = b"".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode() + v + b"\r\n" for k, v in parts.items())
    return out + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n--{BOUNDARY}--\r\n'.encode()


def _post_body(client, body: bytes):
    return client.post("/cases", content=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def _nothing_stored(svc) -> bool:
    return not svc.cases.list() and not list(svc.layout.cases.iterdir()) and not list(svc.layout.staging.iterdir())


@pytest.mark.parametrize("case_id", [123, 1.5, None, ["a"], {"a": 1}])
def test_a_report_case_id_that_is_not_a_string_is_422_and_nothing_stored(api, tmp_path, case_id):
    svc, client = api
    r = client.post("/cases", files={k: (k, v) for k, v in _parts(make_case(tmp_path / "c"), case_id=case_id).items()})
    assert r.status_code == 422 and "case_id must be a string" in r.json()["detail"], r.text
    assert _nothing_stored(svc)


def test_case_ids_are_strings_in_uploads_listings_and_jobs(api, tmp_path):
    svc, client = api
    r = client.post("/cases", files={k: (k, v) for k, v in _parts(make_case(tmp_path / "c"), case_id="123").items()})
    assert r.status_code == 201 and r.json()["case"]["name"] == "123", r.text
    listed = client.get("/cases").json()["cases"]
    assert [c["id"] for c in listed] == [r.json()["case"]["id"]] and isinstance(listed[0]["id"], str)
    for body in ({"steps": 1, "case_ids": [123]}, {"steps": 1, "val_case_ids": [1]}, {"steps": 1, "base_version": 1}):
        assert client.post("/jobs", json=body).status_code == 422, body
    assert not svc.store.query("SELECT id FROM jobs")


def test_a_complete_hand_written_body_with_a_name_is_stored(api, tmp_path):
    svc, client = api
    r = _post_body(client, _body(_parts(make_case(tmp_path / "c")), "my-name"))
    assert r.status_code == 201 and r.json()["case"]["name"] == "my-name", r.text


@pytest.mark.parametrize("cut", ["inside the name value", "after the name value", "inside the closing boundary",
                                 "after the lesions part"])
def test_a_body_cut_short_after_the_files_is_refused_and_nothing_stored(api, tmp_path, cut):
    svc, client = api
    parts = _parts(make_case(tmp_path / "c"))
    body = _body(parts, "my-name")
    end = {"inside the name value": body.index(b"my-name") + 3, "after the name value": body.index(b"my-name") + 9,
           "inside the closing boundary": len(body) - 8,
           "after the lesions part": body.index(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="report"'.encode())}
    r = _post_body(client, body[:end[cut]])
    assert r.status_code in (400, 422) and r.json()["detail"], (cut, r.status_code, r.text)
    assert _nothing_stored(svc)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_uploading_a_stored_case_again_mends_its_damaged_files(api, tmp_path, damage):
    svc, client = api
    files = {k: (k, v) for k, v in _parts(make_case(tmp_path / "c")).items()}
    first = client.post("/cases", files=files).json()["case"]
    image = svc.layout.case_dir(first["id"]) / "image.nii.gz"
    size = image.stat().st_size
    os.truncate(image, size // 2) if damage == "truncated" else image.unlink()
    again = client.post("/cases", files=files)
    assert again.status_code == 200 and again.json() == {"case": first, "duplicate": True}, again.text
    assert image.stat().st_size == size and (image.parent / "case.json").is_file()
    assert len(svc.cases.list()) == 1 and not list(svc.layout.staging.iterdir())
    inode = image.stat().st_ino
    intact = client.post("/cases", files=files)  # an intact stored case is left as it is
    assert intact.status_code == 200 and image.stat().st_ino == inode


@pytest.mark.parametrize("spoil", ["a list", "null sha256", "numeric name", "info a list", "same sha256 twice"])
def test_a_stored_case_record_of_the_wrong_shape_is_quarantined_at_start_not_a_crash(tmp_path, spoil):
    make_model_folder(tmp_path / "base")
    cfg = ServerConfig(tmp_path / "data", base_model=str(tmp_path / "base"), train_command=["true"])
    svc = TrainingService(cfg, start_worker=False)
    case_id = svc.add_case_folder(make_case(tmp_path / "c")).case["id"]
    svc.close()
    folder = tmp_path / "data" / "cases" / case_id
    record = json.loads((folder / "case.json").read_text())
    if spoil == "same sha256 twice":  # a copy of the folder under another id: the database keeps one
        twin = folder.with_name("c" + "0" * 16)
        twin.mkdir()
        for f in folder.iterdir():
            twin.joinpath(f.name).write_bytes(f.read_bytes())
        (twin / "case.json").write_text(json.dumps({**record, "id": twin.name}))
    else:
        import sqlite3

        with sqlite3.connect(tmp_path / "data" / "server.db") as db:  # the row lost: the start re-registers
            db.execute("DELETE FROM cases")
        spoilt = {"a list": [record], "null sha256": {**record, "sha256": None}, "numeric name": {**record, "name": 5},
                  "info a list": {**record, "info": [1]}}[spoil]
        (folder / "case.json").write_text(json.dumps(spoilt))
    svc = TrainingService(cfg, start_worker=False)
    try:
        assert any("moved to quarantine" in note for note in svc.startup_notes), svc.startup_notes
        listed = svc.cases.list()  # every listed case is whole and its fields of their types
        assert all(isinstance(c["name"], str) and isinstance(c["lesions"], list) for c in listed)
        assert len(listed) == (1 if spoil == "same sha256 twice" else 0)
    finally:
        svc.close()


@pytest.mark.parametrize("spoil", ["copied record", "a list", "stale manifest hash", "seq a string"])
def test_a_model_folder_with_a_wrong_version_record_is_left_alone_at_start_not_a_crash(tmp_path, spoil):
    import shutil

    make_model_folder(tmp_path / "base")
    cfg = ServerConfig(tmp_path / "data", base_model=str(tmp_path / "base"), train_command=["true"])
    TrainingService(cfg, start_worker=False).close()  # imports the base model as v1
    models = tmp_path / "data" / "models"
    shutil.copytree(models / "v1", models / "v2")  # a version folder whose row was never written
    record = json.loads((models / "v1" / "server_version.json").read_text())
    spoilt = {"copied record": record, "a list": [record], "seq a string": {**record, "name": "v2", "seq": "2"},
              "stale manifest hash": {**record, "name": "v2", "seq": 2, "manifest_sha256": "0" * 64}}[spoil]
    (models / "v2" / "server_version.json").write_text(json.dumps(spoilt))
    svc = TrainingService(cfg, start_worker=False)
    try:
        assert any(note.startswith("model folder v2: left alone") for note in svc.startup_notes), svc.startup_notes
        assert [v["name"] for v in svc.registry.list()] == ["v1"]
    finally:
        svc.close()
    (models / "v2" / "server_version.json").write_text(json.dumps({**record, "name": "v2", "seq": 2}))
    svc = TrainingService(cfg, start_worker=False)  # the same folder with a true record is registered
    try:
        assert [v["name"] for v in svc.registry.list()] == ["v1", "v2"]
    finally:
        svc.close()
