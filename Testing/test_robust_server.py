"""Hostile input to a real `malenia serve` on 127.0.0.1 (issue 16, items 3, 4, 8-12): every refusal a 4xx
with its reason, nothing stored, no traceback; secrets kept out of logs and other users' reach."""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from malenia.server.testdata import ServerProcess, make_case, make_model_folder

FAKE_TRAINER = [sys.executable, "-m", "malenia.server.testdata", "train"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    make_model_folder(root / "base")
    data = root / "data"
    (data / "models").mkdir(parents=True)
    stale = data / "models" / ".v9.partial.999999999-abcd"  # left by a kill -9: that process is gone
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    srv = ServerProcess(data, settings={"base_model": str(root / "base"), "train_command": FAKE_TRAINER,
                                        "promotion": "always"}, env={"MALENIA_FAKE_STEP_SECONDS": "0.01"},
                        log_level="info")
    srv.start()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM), "\n".join(srv.lines[-20:])


def _auth(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _upload(server, folder: Path) -> httpx.Response:
    files = {name: (name, (folder / f).read_bytes()) for name, f in
             (("image", "image.nii.gz"), ("lesions", "lesions.nii.gz"), ("report", "report.json"))}
    return httpx.post(f"{server.url}/cases", files=files, headers=_auth(server), timeout=60)


def _stored(server) -> list[str]:
    return sorted(p.name for p in (server.data / "cases").iterdir())


def test_secrets_private_and_stale_partials_removed_at_start(server):
    assert server.token and server.token.startswith("mlt_")
    assert not any(server.token in line for line in server.lines)  # output is captured: the token is not in it
    assert any("initial_token.txt" in line and "readable by this user only" in line for line in server.lines)
    for name in ("server.db", "server.db-wal", "server.db-shm"):
        path = server.data / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert not list((server.data / "models").glob(".*partial*"))


def test_malformed_requests_get_4xx_not_500(server):
    post = lambda path, **kw: httpx.post(f"{server.url}{path}", headers={**_auth(server), **kw.pop("headers", {})},
                                         timeout=30, **kw)
    json_type = {"Content-Type": "application/json"}
    for body in ('{"steps": 1e400}', '{"steps": 5, "replay_fraction": NaN}', '{"steps": 5, "replay_fraction": Infinity}',
                 '{"steps": 100000000000000000000000}', '{"steps": "x"}', "[1, 2", "\xff"):
        r = post("/jobs", content=body.encode("latin-1"), headers=json_type)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    rng = np.random.default_rng(0)
    for k in range(4):
        junk = rng.integers(0, 256, 4096 * (k + 1), dtype=np.uint8).tobytes()
        r = post("/cases", content=junk, headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert 400 <= r.status_code < 500, (k, r.status_code, r.text)
        r = post("/cases", content=b"--xyz\r\n" + junk, headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert 400 <= r.status_code < 500, (k, r.status_code, r.text)
    assert _stored(server) == [] and not list((server.data / "staging").iterdir())
    assert not any("Traceback" in line for line in server.lines), "\n".join(server.lines[-30:])


def _rewrite_image(folder: Path, change) -> Path:
    img = sitk.ReadImage(str(folder / "image.nii.gz"))
    arr = sitk.GetArrayFromImage(img)
    out = change(arr, img)
    if out is not None:
        new = sitk.GetImageFromArray(out)
        new.CopyInformation(img)
        sitk.WriteImage(new, str(folder / "image.nii.gz"), useCompression=True)
    return folder


def _truncate_data(folder: Path) -> Path:
    raw = gzip.decompress((folder / "image.nii.gz").read_bytes())
    (folder / "image.nii.gz").write_bytes(gzip.compress(raw[: len(raw) - 4096]))  # complete gzip, short data
    return folder


def _zero_z_spacing(folder: Path) -> Path:
    raw = bytearray(gzip.decompress((folder / "image.nii.gz").read_bytes()))
    raw[76 + 12:76 + 16] = np.float32(0).tobytes()  # pixdim[3]
    (folder / "image.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    return folder


def _unknown_disease(folder: Path) -> Path:
    report = json.loads((folder / "report.json").read_text())
    report["lesions"][0]["disease"] = "made_up_disease"
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_bad_images_are_refused_with_their_reason(server, tmp_path):
    def nan_voxel(arr, img):
        arr = arr.astype(np.float32)
        arr[3, 5, 5] = np.nan
        return arr

    cases = {
        "truncated": (_truncate_data, "shorter than the header"),
        "nan": (lambda f: _rewrite_image(f, nan_voxel), "NaN"),
        "mr_like": (lambda f: _rewrite_image(f, lambda a, i: np.clip(a, -330, 1000).astype(np.int16) + 0 * a), "Hounsfield"),
        "zero_z": (_zero_z_spacing, "spacing"),
        "disease": (_unknown_disease, "unknown disease"),
    }
    for name, (spoil, reason) in cases.items():
        folder = spoil(make_case(tmp_path / name, seed=3))
        r = _upload(server, folder)
        assert r.status_code == 422 and reason in r.json()["detail"], (name, r.status_code, r.text)
    assert _stored(server) == []
    assert _upload(server, make_case(tmp_path / "good", seed=3)).status_code == 201  # the unspoilt case is fine


def test_decompression_bomb_refused_from_its_header(server, tmp_path):
    """1024x1024x512 int16 zeros: 1 GiB that gzip packs into ~1 MB; refused before it is inflated."""
    folder = make_case(tmp_path / "bomb", seed=4)
    sitk.WriteImage(sitk.Image([16, 16, 16], sitk.sitkInt16), str(tmp_path / "hdr.nii"))
    header = bytearray((tmp_path / "hdr.nii").read_bytes()[:352])
    header[40:56] = np.array([3, 1024, 1024, 512, 1, 1, 1, 1], "<i2").tobytes()
    block = gzip.compress(bytes(64 << 20), 9)  # one 64 MiB member of zeros, repeated
    with open(folder / "image.nii.gz", "wb") as f:
        f.write(gzip.compress(bytes(header)))
        for _ in range(16):
            f.write(block)
    assert (folder / "image.nii.gz").stat().st_size < 2_000_000
    start = time.monotonic()
    r = _upload(server, folder)
    assert r.status_code in (413, 422) and "voxels" in r.json()["detail"], r.text
    assert time.monotonic() - start < 30  # header only: seconds even on a loaded machine (inflating took 9.4 s)


def test_access_log_has_no_query_strings(server):
    httpx.get(f"{server.url}/health?token=SECRET123", timeout=5)
    httpx.get(f"{server.url}/info?token=SECRET456", headers=_auth(server), timeout=5)
    time.sleep(0.3)
    assert any("GET /health" in line for line in server.lines) and any("GET /info" in line for line in server.lines)
    assert not any("SECRET" in line for line in server.lines)


def test_short_jobs_checkpoint_often_enough_to_resume(tmp_path):
    """Issue 16 item 12: with `malenia train`'s default interval (100 steps) a 60-step job had no checkpoint."""
    from malenia.server.config import ServerConfig
    from malenia.server.jobs import JobManager, checkpoint_every

    assert [checkpoint_every(n) for n in (1, 9, 60, 999, 5000, 10**6)] == [1, 1, 6, 99, 100, 100]
    argv = JobManager._train_argv(type("J", (), {"cfg": ServerConfig(tmp_path), "_gpus": 0})(), "j000000000001",
                                  tmp_path / "base", tmp_path / "data", tmp_path / "run",
                                  {"steps": 60, "replay_fraction": 0.5}, False, None)
    assert argv[argv.index("--checkpoint-every") + 1] == "6"


def test_token_from_environment_or_a_private_file(tmp_path, monkeypatch):
    """Issue 16 item 10: an alternative to the token in Slicer's plain-text settings."""
    from malenia.server.client import ClientError, resolve_token

    path = tmp_path / "server_token"
    monkeypatch.delenv("MALENIA_SERVER_TOKEN", raising=False)
    monkeypatch.setenv("MALENIA_SERVER_TOKEN_FILE", str(path))
    assert resolve_token(None) == ""
    path.write_text("mlt_file\n")
    path.chmod(0o644)
    with pytest.raises(ClientError, match="chmod 600"):
        resolve_token(None)
    path.chmod(0o600)
    assert resolve_token(None) == "mlt_file" and resolve_token(" mlt_given ") == "mlt_given"
    monkeypatch.setenv("MALENIA_SERVER_TOKEN", "mlt_env")
    assert resolve_token("") == "mlt_env"


def _report_edit(edit):
    def spoil(folder: Path) -> Path:
        text = (folder / "report.json").read_text()
        (folder / "report.json").write_text(edit(json.loads(text)) if callable(edit) else text.replace(*edit))
        return folder
    return spoil


def _nan_data_offset(folder: Path) -> Path:
    raw = bytearray(gzip.decompress((folder / "image.nii.gz").read_bytes()))
    raw[108:112] = np.float32(np.nan).tobytes()  # vox_offset
    (folder / "image.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    return folder


def _lesion(key, value):
    def edit(report):
        report["lesions"][0][key] = value
        return json.dumps(report)
    return edit


def _first_description_id(value):
    def edit(report):
        next(iter(report["lesions"][0]["attributes"].values()))[0]["id"] = value
        return json.dumps(report)
    return edit


def test_reports_of_the_wrong_types_and_odd_headers_are_422_with_no_server_path(server, tmp_path):
    """Session 64's probe: each of these was a 500 (or, for a label 1.7, stored as label 1)."""
    spoilers = {
        "lesions null": _report_edit(lambda r: json.dumps({**r, "lesions": None})),
        "lesions 5": _report_edit(lambda r: json.dumps({**r, "lesions": 5})),
        "extra 5": _report_edit(lambda r: json.dumps({**r, "extra": 5})),
        "disease list": _report_edit(_lesion("disease", ["x"])),
        "label 1.7": _report_edit(_lesion("label", 1.7)),
        "label true": _report_edit(_lesion("label", True)),
        "label Infinity": _report_edit(('"label": 1', '"label": Infinity')),
        "id list": _report_edit(_first_description_id(["x"])),
        "deep": _report_edit(lambda r: "[" * 100_000 + "]" * 100_000),
        "nan offset": _nan_data_offset,
        "not nifti": lambda f: ((f / "image.nii.gz").write_bytes(gzip.compress(b"no image here" * 100)), f)[1],
    }
    before = _stored(server)
    for name, spoil in spoilers.items():
        r = _upload(server, spoil(make_case(tmp_path / name.replace(" ", "_"), seed=5)))
        assert r.status_code == 422 and r.json()["detail"], (name, r.status_code, r.text)
        assert str(server.data) not in r.text and "/staging/" not in r.text, (name, r.text)
    boundary = "b" * 300
    r = httpx.post(f"{server.url}/cases", content=f"--{boundary}\r\n".encode(), timeout=30,
                   headers={**_auth(server), "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 422, r.text
    for body in ({"steps": True}, {"steps": 5, "stpes": 3}):  # not a count; a misspelt key
        assert httpx.post(f"{server.url}/jobs", json=body, headers=_auth(server), timeout=30).status_code == 422
    assert _stored(server) == before and not list((server.data / "staging").iterdir())
    assert not any("Traceback" in line for line in server.lines), "\n".join(server.lines[-30:])
