"""Stored cases compared by content, not size (session 66), over a real `malenia serve` on 127.0.0.1 with the real
client. Two different cases whose files have the same sizes are two cases. A stored case whose file was changed in
place at its old size was taken as intact (the check summed the sizes), so an identical upload answered "already
stored" and left the damage; each stored file's sha256 is now recorded in its row (schema 2) and compared. A database
from before that column opens, keeps its cases, and has the hashes recorded by the next identical upload."""

from __future__ import annotations

import gzip
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from malenia.file_hash import sha256_file
from malenia.server.client import MaleniaClient
from malenia.server.testdata import ServerProcess, make_case, make_model_folder

FAKE_TRAINER = [sys.executable, "-m", "malenia.server.testdata", "train"]
FILES = ("image.nii.gz", "lesions.nii.gz", "report.json")


@pytest.fixture
def server(tmp_path):
    make_model_folder(tmp_path / "base")
    srv = ServerProcess(tmp_path / "data", settings={"base_model": str(tmp_path / "base"),
                                                     "train_command": FAKE_TRAINER})
    srv.start()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM), "\n".join(srv.lines[-20:])


def _raw_case(folder: Path, seed: int) -> Path:
    """A case sent as raw (uncompressed) NIfTI, as a client may: its sizes depend on the grid alone, so two seeds
    give two cases with every file of the same size and different bytes."""
    src = make_case(folder.parent / f"{folder.name}-src", seed=seed)
    folder.mkdir(parents=True)
    for name in ("image", "lesions"):
        sitk.WriteImage(sitk.ReadImage(str(src / f"{name}.nii.gz")), str(folder / f"{name}.nii"))
        (folder / f"{name}.nii").rename(folder / f"{name}.nii.gz")  # the upload's part name; the server gzips it
    (folder / "report.json").write_bytes((src / "report.json").read_bytes().replace(src.name.encode(), f"case-{folder.name}".encode()))
    return folder


def _db(server, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(server.data / "server.db") as db:
        return db.execute(sql, args).fetchall()


def test_two_different_cases_of_the_same_sizes_are_both_stored(server, tmp_path):
    a, b = _raw_case(tmp_path / "a", seed=1), _raw_case(tmp_path / "b", seed=2)
    for f in FILES:
        assert (a / f).stat().st_size == (b / f).stat().st_size
        assert (a / f).read_bytes() != (b / f).read_bytes()
    with MaleniaClient(server.url, server.token) as client:
        first, second = client.upload_case(a), client.upload_case(b)
        assert not first["duplicate"] and not second["duplicate"], (first, second)
        assert first["case"]["id"] != second["case"]["id"]
        assert sorted(c["id"] for c in client.cases()) == sorted([first["case"]["id"], second["case"]["id"]])
    for up, src in ((first, a), (second, b)):  # each stored folder holds its own upload
        stored = server.data / "cases" / up["case"]["id"]
        assert gzip.decompress((stored / "image.nii.gz").read_bytes()) == (src / "image.nii.gz").read_bytes()
        assert (stored / "report.json").read_bytes() == (src / "report.json").read_bytes()


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("sent", ["gzipped", "raw"])
def test_an_identical_upload_mends_a_stored_file_changed_at_its_old_size(server, tmp_path, sent):
    case = make_case(tmp_path / "c", seed=3) if sent == "gzipped" else _raw_case(tmp_path / "c", seed=3)
    with MaleniaClient(server.url, server.token) as client:
        first = client.upload_case(case)["case"]
        image = server.data / "cases" / first["id"] / "image.nii.gz"
        good, size = image.read_bytes(), image.stat().st_size
        assert _db(server, "SELECT files_sha256 FROM cases")[0][0] is not None
        inode = image.stat().st_ino
        assert client.upload_case(case) == {"case": first, "duplicate": True}
        assert image.stat().st_ino == inode  # intact: left as it is
        _flip_a_byte(image)
        assert image.stat().st_size == size and image.read_bytes() != good
        assert client.upload_case(case) == {"case": first, "duplicate": True}
        mended = image.read_bytes()
        assert gzip.decompress(mended) == gzip.decompress(good)  # raw: gzipped afresh, so only the content is equal
        assert len(client.cases()) == 1
    if sent == "gzipped":
        assert mended == good


def test_a_database_from_before_the_hash_column_opens_and_is_brought_up_to_date(server, tmp_path):
    case = make_case(tmp_path / "c", seed=4)
    with MaleniaClient(server.url, server.token) as client:
        stored = client.upload_case(case)["case"]
    assert server.stop() in (0, -signal.SIGTERM)
    _db(server, "ALTER TABLE cases DROP COLUMN files_sha256")  # the schema-1 table
    _db(server, "UPDATE meta SET value='1' WHERE key='schema_version'")
    token = server.token  # printed at the first start only
    server.start()
    with MaleniaClient(server.url, token) as client:
        assert client.cases() == [stored]
        assert _db(server, "SELECT files_sha256 FROM cases") == [(None,)]
        image = server.data / "cases" / stored["id"] / "image.nii.gz"
        inode = image.stat().st_ino
        assert client.upload_case(case) == {"case": stored, "duplicate": True}
        assert image.stat().st_ino == inode  # the same bytes as the upload: intact, kept
        recorded = _db(server, "SELECT files_sha256 FROM cases")[0][0]
        assert f'"image.nii.gz":"{sha256_file(image)}"' in recorded
        _flip_a_byte(image)
        assert client.upload_case(case)["duplicate"] and sha256_file(image) == sha256_file(case / "image.nii.gz")
    assert _db(server, "SELECT value FROM meta WHERE key='schema_version'") == [("2",)]
