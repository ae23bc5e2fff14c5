"""The retraining server over real HTTP: auth, versions, uploads (valid, malformed, concurrent), jobs, models.

A real `malenia serve` subprocess on 127.0.0.1 and the real client. Jobs run the trainer double of
malenia.server.testdata (the training CLI contract with a configurable step time); the end-to-end test
with the real `malenia train` is in test_server_e2e.py.
"""

from __future__ import annotations

import concurrent.futures as cf
import gzip
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from malenia.server import API_HEADER
from malenia.server import client as client_mod
from malenia.server.client import AuthRejected, MaleniaClient, RequestFailed, VersionMismatch
from malenia.server.testdata import ServerProcess, make_case, make_model_folder

FAKE_TRAINER = [sys.executable, "-m", "malenia.server.testdata", "train"]
LIMITS = {"max_request_bytes": 3_000_000, "max_image_bytes": 2_000_000, "max_lesions_bytes": 1_000_000,
          "max_report_bytes": 200_000}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    make_model_folder(root / "base")
    srv = ServerProcess(root / "data", settings={
        "base_model": str(root / "base"), "train_command": FAKE_TRAINER, "promotion": "always", "limits": LIMITS},
        env={"MALENIA_FAKE_STEP_SECONDS": "0.01"})
    srv.start()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM), "\n".join(srv.lines[-20:])


@pytest.fixture(scope="module")
def client(server):
    with MaleniaClient(server.url, server.token) as c:
        yield c


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    return [make_case(root / f"case{i}", seed=i, n_lesions=1 + i % 2) for i in range(3)]


def stored_state(server) -> tuple[list[str], list[str], int]:
    data = server.data
    db_rows = json.loads(subprocess.run(
        [sys.executable, "-c", "import sqlite3,json,sys; db=sqlite3.connect(sys.argv[1]); "
         "print(json.dumps([r[0] for r in db.execute('SELECT id FROM cases')]))", str(data / "server.db")],
        capture_output=True, text=True, check=True).stdout)
    return sorted(db_rows), sorted(p.name for p in (data / "cases").iterdir()), len(list((data / "staging").iterdir()))


# -- health, versions, auth --------------------------------------------------------------------------

def test_first_start_prints_token_once_and_stores_only_its_hash(server):
    assert server.token and server.token.startswith("mlt_")
    secret = server.token.split("_", 2)[2]
    assert secret.encode() not in (server.data / "server.db").read_bytes()
    wal = server.data / "server.db-wal"
    assert not wal.exists() or secret.encode() not in wal.read_bytes()
    import sqlite3

    with sqlite3.connect(server.data / "server.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_health_is_public_and_reports_versions(server):
    body = httpx.get(f"{server.url}/health").json()
    assert body["status"] == "ok" and body["api_version"].split(".")[0] == "1" and body["malenia_version"]


def test_every_endpoint_but_health_rejects_missing_wrong_or_revoked_token(server, client):
    assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    schema = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {server.token}"}).json()
    revoked = subprocess.run([sys.executable, "-m", "malenia.cli", "serve", "token", "add", "soon-revoked",
                              "--data", str(server.data)], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert client_mod.MaleniaClient(server.url, revoked).cases() == client.cases()  # valid before revoking
    subprocess.run([sys.executable, "-m", "malenia.cli", "serve", "token", "revoke", "soon-revoked",
                    "--data", str(server.data)], check=True, capture_output=True)
    listing = subprocess.run([sys.executable, "-m", "malenia.cli", "serve", "token", "list", "--data", str(server.data)],
                             capture_output=True, text=True, check=True).stdout
    assert "soon-revoked" in listing and "revoked" in listing and revoked.split("_", 2)[2] not in listing
    fill = {"case_id": "c" + "0" * 16, "job_id": "j" + "0" * 12, "version": "v1", "path": "manifest.json"}
    bad_tokens = [None, "Bearer", "Bearer mlt_deadbeef_" + "x" * 43, f"Bearer {server.token}x", f"Basic {server.token}",
                  f"Bearer {revoked}"]
    checked = 0
    for path, methods in schema["paths"].items():
        url = server.url + path.format(**fill)
        for method in methods:
            for bad in bad_tokens:
                headers = {"Authorization": bad} if bad else {}
                resp = httpx.request(method.upper(), url, headers=headers, json={"steps": 1})
                expected = 200 if path == "/health" else 401
                assert resp.status_code == expected, (method, path, bad, resp.status_code, resp.text)
                checked += 1
    assert {"/cases", "/jobs", "/models", "/models/{version}/files/{path}", "/jobs/{job_id}/cancel"} <= set(schema["paths"])
    assert checked >= 6 * 12
    assert httpx.get(f"{server.url}/no-such-path").status_code == 401


def test_api_major_version_checked_both_ways(server, monkeypatch):
    headers = {"Authorization": f"Bearer {server.token}", API_HEADER: "2.0"}
    resp = httpx.get(f"{server.url}/cases", headers=headers)
    assert resp.status_code == 400 and "not compatible" in resp.json()["detail"]
    headers[API_HEADER] = "1.7"  # a newer minor is fine
    assert httpx.get(f"{server.url}/cases", headers=headers).status_code == 200
    monkeypatch.setattr(client_mod, "API_VERSION", "2.0")
    with pytest.raises(VersionMismatch, match="update the server"):
        MaleniaClient(server.url, server.token).connect()


def test_client_errors_are_clear(server):
    with pytest.raises(AuthRejected, match="rejected the token"):
        MaleniaClient(server.url, "mlt_00000000_" + "y" * 43).connect()
    with pytest.raises(client_mod.ServerUnreachable, match="cannot reach"):
        MaleniaClient(f"http://127.0.0.1:{server.port + 1 if server.port < 65535 else 1}", server.token, timeout=3).connect()
    with pytest.raises(client_mod.ClientError, match="http"):
        MaleniaClient("ftp://example", server.token)
    assert server.token not in repr(MaleniaClient(server.url, server.token))


# -- uploads ------------------------------------------------------------------------------------------

def test_upload_is_stored_once_listed_and_deleted(server, client, cases, tmp_path):
    first = client.upload_case(cases[0], name="../../etc/passwd")
    assert not first["duplicate"] and first["case"]["name"] == "etc_passwd"
    case_id = first["case"]["id"]
    folder = server.data / "cases" / case_id
    assert sorted(p.name for p in folder.iterdir()) == ["case.json", "image.nii.gz", "lesions.nii.gz", "report.json"]
    assert (folder / "image.nii.gz").read_bytes() == (cases[0] / "image.nii.gz").read_bytes()
    again = client.upload_case(cases[0])
    assert again["duplicate"] and again["case"]["id"] == case_id
    # the same report with other whitespace is the same case
    alt = tmp_path / "alt"
    alt.mkdir()
    for f in ("image.nii.gz", "lesions.nii.gz"):
        (alt / f).write_bytes((cases[0] / f).read_bytes())
    (alt / "report.json").write_text(json.dumps(json.loads((cases[0] / "report.json").read_text())))
    assert client.upload_case(alt)["case"]["id"] == case_id
    assert [c["id"] for c in client.cases()].count(case_id) == 1
    assert client.cases()[0]["lesions"][0]["voxels"] > 0
    client.delete_case(case_id)
    assert not folder.exists() and case_id not in [c["id"] for c in client.cases()]
    with pytest.raises(RequestFailed) as err:
        client.delete_case(case_id)
    assert err.value.status == 404


def _corrupt(case: Path, dst: Path, how: str) -> Path:
    dst.mkdir(parents=True)
    for f in ("image.nii.gz", "lesions.nii.gz", "report.json"):
        (dst / f).write_bytes((case / f).read_bytes())
    img = sitk.ReadImage(str(case / "image.nii.gz"))
    lab = sitk.ReadImage(str(case / "lesions.nii.gz"))
    report = json.loads((case / "report.json").read_text())

    def write_labels(arr, like=lab):
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(like)
        sitk.WriteImage(out, str(dst / "lesions.nii.gz"), useCompression=True)

    arr = sitk.GetArrayFromImage(lab)
    if how == "grid_size":
        sitk.WriteImage(sitk.GetImageFromArray(arr[:-1]), str(dst / "lesions.nii.gz"), useCompression=True)
    elif how == "grid_spacing":
        lab2 = sitk.Image(lab)
        lab2.SetSpacing([s * 1.1 for s in lab.GetSpacing()])
        sitk.WriteImage(lab2, str(dst / "lesions.nii.gz"), useCompression=True)
    elif how == "grid_origin":
        lab2 = sitk.Image(lab)
        lab2.SetOrigin([5.0, 0.0, 0.0])
        sitk.WriteImage(lab2, str(dst / "lesions.nii.gz"), useCompression=True)
    elif how == "negative_label":
        a = arr.astype(np.int16)
        a[0, 0, 0] = -1
        write_labels(a)
    elif how == "fractional_label":
        a = arr.astype(np.float32)
        a[a == 1] = 1.5
        write_labels(a)
    elif how == "label_not_in_report":
        a = arr.copy()
        a[0, 0, :3] = 7
        write_labels(a)
    elif how == "report_label_not_in_mask":
        report["lesions"].append({**report["lesions"][0], "label": 9})
        (dst / "report.json").write_text(json.dumps(report))
    elif how == "broken_json":
        (dst / "report.json").write_text('{"format": "malenia-case/1", "lesions": [')
    elif how == "wrong_report_format":
        (dst / "report.json").write_text(json.dumps({**report, "format": "something-else"}))
    elif how == "unknown_vocabulary_id":
        report["lesions"][0]["attributes"]["shape"] = [{"id": "shape.no_such_thing", "text": "odd"}]
        (dst / "report.json").write_text(json.dumps(report))
    elif how == "not_nifti":
        (dst / "image.nii.gz").write_bytes(gzip.compress(b"P5 this is not a NIfTI file" * 100))
    elif how == "truncated_image":
        data = (case / "image.nii.gz").read_bytes()
        (dst / "image.nii.gz").write_bytes(data[: len(data) // 2])
    elif how == "image_4d":
        vec = sitk.JoinSeries([img, img])
        sitk.WriteImage(vec, str(dst / "image.nii.gz"), useCompression=True)
    else:
        raise AssertionError(how)
    return dst


MALFORMED = {
    "grid_size": "size", "grid_spacing": "spacing", "grid_origin": "origin", "negative_label": "0..K",
    "fractional_label": "integers", "label_not_in_report": "does not describe", "report_label_not_in_mask": "absent",
    "broken_json": "not valid JSON", "wrong_report_format": "format", "unknown_vocabulary_id": "vocabulary",
    "not_nifti": "NIfTI", "truncated_image": "image", "image_4d": "3D",
}


@pytest.mark.parametrize("how", sorted(MALFORMED))
def test_malformed_upload_is_refused_with_reason_and_nothing_stored(server, client, cases, tmp_path, how):
    before = stored_state(server)
    bad = _corrupt(cases[1], tmp_path / how, how)
    with pytest.raises(RequestFailed) as err:
        client.upload_case(bad)
    assert 400 <= err.value.status < 500 and MALFORMED[how].lower() in err.value.detail.lower(), err.value.detail
    assert stored_state(server) == before


def _post(server, parts: list[tuple[str, str, bytes]], headers=None, chunked=False):
    boundary = "b0undary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"; filename="{fn}"\r\n\r\n'.encode()
                    + data + b"\r\n" for n, fn, data in parts) + f"--{boundary}--\r\n".encode()
    h = {"Authorization": f"Bearer {server.token}", "Content-Type": f"multipart/form-data; boundary={boundary}",
         **(headers or {})}
    content = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    return httpx.post(f"{server.url}/cases", content=content, headers=h, timeout=30)


def test_form_level_tricks_refused_and_nothing_stored(server, cases):
    files = {f: (cases[0] / f).read_bytes() for f in ("image.nii.gz", "lesions.nii.gz", "report.json")}
    before = stored_state(server)
    traversal = [("image", "../../../../tmp/evil.nii.gz", files["image.nii.gz"]),
                 ("lesions", "/etc/passwd", files["lesions.nii.gz"]), ("report", "..\\..\\r.json", files["report.json"])]
    missing = traversal[:2]
    extra = traversal + [("../../server.db", "x", b"1")]
    twice = traversal + [("image", "again", files["image.nii.gz"])]
    for parts, status, reason in ((missing, 422, "missing part"), (extra, 422, "unexpected form field"),
                                  (twice, 422, "sent twice")):
        resp = _post(server, parts)
        assert resp.status_code == status and reason in resp.json()["detail"], resp.text
    assert stored_state(server) == before
    resp = httpx.post(f"{server.url}/cases", content=b"{}", headers={"Authorization": f"Bearer {server.token}",
                                                                     "Content-Type": "application/json"})
    assert resp.status_code == 422 and "multipart" in resp.json()["detail"]
    ok = _post(server, traversal)  # client file names are ignored entirely
    assert ok.status_code in (200, 201)
    assert not Path("/tmp/evil.nii.gz").exists()
    assert sorted(p.name for p in (server.data / "cases" / ok.json()["case"]["id"]).iterdir()) == \
        ["case.json", "image.nii.gz", "lesions.nii.gz", "report.json"]
    auth = {"Authorization": f"Bearer {server.token}"}
    for path in ("/cases/..%2F..%2Fserver.db", "/cases/../server.db", "/models/v1/files/..%2F..%2Fserver.db",
                 "/models/v1/files/../../server.db", "/models/..%2Fcases/files/manifest.json", "/jobs/..%2F..%2Fx/log"):
        resp = httpx.get(server.url + path, headers=auth)
        assert resp.status_code in (404, 422), (path, resp.status_code)
        assert b"SQLite" not in resp.content
    resp = httpx.delete(server.url + "/cases/..%2F..%2Fserver.db", headers=auth)
    assert resp.status_code in (404, 422) and (server.data / "server.db").exists()


def test_oversized_uploads_refused_early_and_while_streaming(server, cases, tmp_path):
    rng = np.random.default_rng(0)
    big = tmp_path / "big"
    make_case(big, shape_zyx=(40, 128, 128))
    noise = sitk.GetImageFromArray(rng.integers(-1000, 1000, size=(40, 128, 128)).astype(np.int16))
    noise.CopyInformation(sitk.ReadImage(str(big / "lesions.nii.gz")))
    sitk.WriteImage(noise, str(big / "image.nii.gz"), useCompression=True)
    assert (big / "image.nii.gz").stat().st_size > LIMITS["max_image_bytes"] // 2
    before = stored_state(server)
    files = [(n, f, (big / f).read_bytes()) for n, f in (("image", "image.nii.gz"), ("lesions", "lesions.nii.gz"),
                                                        ("report", "report.json"))]
    padded = [("image", "image.nii.gz", files[0][2] * 3)] + files[1:]
    resp = _post(server, padded)  # Content-Length over max_request_bytes: refused before reading
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]
    resp = _post(server, padded, chunked=True)  # no Content-Length: refused while streaming
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]
    assert stored_state(server) == before


def test_twenty_concurrent_identical_uploads_store_one_case(server, tmp_path):
    case = make_case(tmp_path / "same", seed=42, n_lesions=2)
    before = stored_state(server)

    def upload(_):
        with MaleniaClient(server.url, server.token) as c:
            return c.upload_case(case)

    with cf.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(upload, range(20)))
    ids = {r["case"]["id"] for r in results}
    assert len(ids) == 1 and sum(not r["duplicate"] for r in results) == 1
    after = stored_state(server)
    assert after[0] == sorted(before[0] + list(ids)) and after[1] == after[0] and after[2] == 0


# -- jobs and versions --------------------------------------------------------------------------------

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_job_to_new_version_download_promote_rollback(server, client, cases, tmp_path):
    ids = [client.upload_case(c)["case"]["id"] for c in cases]
    current = client.versions()["current"]
    job = client.start_job(steps=15, case_ids=ids, replay_fraction=0.3)
    assert job["state"] in ("queued", "running")
    updates = []
    done = client.wait(job["id"], timeout=120, poll=0.1, on_update=updates.append)
    assert done["state"] == "succeeded", (done, client.log(job["id"]))
    p = done["progress"]
    assert p["step"] == p["total"] == 15 and [s for s, _ in p["losses"]] == list(range(1, 16))
    assert p["loss"] == pytest.approx(1 / 15) and p["first_step_seconds"] >= 0
    assert len(done["params"]["train_ids"]) == 2 and len(done["params"]["val_ids"]) == 1
    log = client.log(job["id"], lines=3)
    assert len(log.strip().splitlines()) == 3 and "exit code 0" in log
    new = done["result_version"]
    versions = client.versions()
    assert versions["current"] == new != current
    info = client.version(new)
    assert info["parent"] == current and info["job_id"] == job["id"]
    assert info["manifest"]["version"] == new and "fine-tuned from" in info["manifest"]["training_data"]
    dl = client.download_version(new, tmp_path / "model")
    assert _sha(dl / "manifest.json") == info["manifest_sha256"]
    for rel, digest in info["manifest"]["files"].items():
        assert _sha(dl / rel) == digest
    from safetensors.numpy import load_file

    assert float(load_file(str(dl / "weights.safetensors"))["w"][0, 0]) == 15.0
    assert client.rollback()["name"] == current and client.versions()["current"] == current
    assert client.promote(new)["current"] and client.versions()["current"] == new
    with pytest.raises(RequestFailed) as err:
        client.promote("v999")
    assert err.value.status == 404


def test_bad_job_requests_refused(client, cases):
    for kwargs, reason in (({"steps": 0}, "steps"), ({"steps": 5, "case_ids": ["c" + "f" * 16]}, "no case"),
                           ({"steps": 5, "case_ids": ["../../etc"]}, "not a valid case id"),
                           ({"steps": 5, "base_version": "v99"}, "no model version"),
                           ({"steps": 5, "replay_fraction": 2.0}, "replay_fraction")):
        with pytest.raises(RequestFailed) as err:
            client.start_job(**kwargs)
        assert 400 <= err.value.status < 500 and reason in err.value.detail, err.value.detail


def test_failing_trainer_gives_failed_job_with_reason(tmp_path, cases):
    make_model_folder(tmp_path / "base")
    srv = ServerProcess(tmp_path / "data", settings={"base_model": str(tmp_path / "base"), "train_command": FAKE_TRAINER},
                        env={"MALENIA_FAKE_FAIL": "1"}).start()
    try:
        with MaleniaClient(srv.url, srv.token) as c:
            c.upload_case(cases[0])
            job = c.wait(c.start_job(steps=3)["id"], timeout=60, poll=0.1)
            assert job["state"] == "failed" and "exited with code 3" in job["error"] and "on purpose" in job["error"]
            assert [v["name"] for v in c.versions()["versions"]] == ["v1"]
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)


def test_free_text_descriptions_are_embedded_into_the_new_versions_bank(tmp_path):
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder

    text = "punctate calcification along the posterior wall"
    make_model_folder(tmp_path / "base", real_bank=True)
    case = make_case(tmp_path / "case", free_text=text)
    srv = ServerProcess(tmp_path / "data", env={"MALENIA_FAKE_STEP_SECONDS": "0.01"}, settings={
        "base_model": str(tmp_path / "base"), "train_command": FAKE_TRAINER, "promotion": "never"}).start()
    try:
        with MaleniaClient(srv.url, srv.token) as c:
            stored = c.upload_case(case)["case"]
            assert stored["free_text"] == [{"aspect": "specific_features", "text": text}]
            job = c.wait(c.start_job(steps=2)["id"], timeout=90, poll=0.2)
            assert job["state"] == "succeeded", c.log(job["id"])
            assert "promote by hand" in job["notes"][-1] and c.versions()["current"] == "v1"
            new = c.download_version(job["result_version"], tmp_path / "new")
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)
    base = AttributeBank.load(tmp_path / "base" / "attribute_bank.safetensors")
    bank = AttributeBank.load(new / "attribute_bank.safetensors")
    assert text not in base.texts and len(bank) == len(base) + 1
    row = bank.texts.index(text)
    assert bank.aspects[row] == "specific_features" and bank.ids[row].startswith("free.specific_features.")
    expected = load_text_encoder().encode([text])[0]
    assert float(np.dot(bank.embeddings[row], expected)) == pytest.approx(1.0, abs=1e-4)


def test_promotion_rule():
    from malenia.server.versions import decide_promotion

    assert decide_promotion("not_worse", 0.0, 0.70, 0.70).promote
    assert decide_promotion("not_worse", 0.0, 0.71, 0.70).promote
    assert not decide_promotion("not_worse", 0.0, 0.69, 0.70).promote
    assert decide_promotion("not_worse", 0.02, 0.69, 0.70).promote
    missing = decide_promotion("not_worse", 0.0, None, 0.70)
    assert not missing.promote and "no validation DSC" in missing.reason
    assert decide_promotion("always", 0.0, None, None).promote and not decide_promotion("never", 0.0, 1.0, 0.0).promote


def test_launcher_command_lines(tmp_path):
    from malenia.server.config import ServerConfig
    from malenia.server.jobs import launcher_prefix

    cpu = launcher_prefix(ServerConfig(tmp_path), gpus=0, job_id="j000000000001")
    assert cpu == [sys.executable, "-m", "malenia.cli", "train"]
    gpu = launcher_prefix(ServerConfig(tmp_path), gpus=4, job_id="j000000000001")
    assert gpu[:4] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4"]
    assert "--standalone" in gpu and gpu[-3:] == ["-m", "malenia.cli", "train"]
    multi = launcher_prefix(ServerConfig(tmp_path, nnodes=2, rdzv_endpoint="head:29400"), gpus=8, job_id="j000000000001")
    assert {"--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=head:29400", "--rdzv_id=j000000000001"} <= set(multi)
    forced = launcher_prefix(ServerConfig(tmp_path, launcher="torchrun"), gpus=0, job_id="j000000000001")
    assert "--nproc_per_node=1" in forced
    assert launcher_prefix(ServerConfig(tmp_path, train_command=["x", "y"]), gpus=8, job_id="j1") == ["x", "y"]
    from malenia.errors import InputError

    with pytest.raises(InputError, match="rdzv_endpoint"):
        ServerConfig(tmp_path, nnodes=2)
