"""Training cases: each stored exactly once, keyed by its content hash.

An upload is validated in its staging folder; the folder is renamed into DATA/cases/<id> and only
then recorded in SQLite. A lock around "look up hash, rename, insert" makes concurrent identical
uploads resolve to one case; the UNIQUE column is the last guard.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malenia.atomic import write_json
from malenia.data.dataset import CASE_FILES
from malenia.errors import InputError
from malenia.file_hash import sha256_file
from malenia.json_files import wrong_fields
from malenia.server.config import GeometryTolerance, UploadLimits
from malenia.server.layout import Layout, check_id, clean_name
from malenia.server.store import Store, dumps, now
from malenia.server.uploads import StagedUpload
from malenia.server.validation import check_case


class NotFound(InputError):
    """Unknown case, job or version (HTTP 404)."""


class Conflict(InputError):
    """The request clashes with the server's state, e.g. deleting a case a running job uses (HTTP 409)."""


@dataclass
class IngestResult:
    case: dict[str, Any]
    duplicate: bool


class CaseStore:
    def __init__(self, store: Store, layout: Layout, limits: UploadLimits, tolerance: GeometryTolerance):
        self.store, self.layout, self.limits, self.tolerance = store, layout, limits, tolerance
        self._lock = threading.Lock()

    def ingest(self, staged: StagedUpload) -> IngestResult:
        """Validates a staged upload and stores it (or finds the identical stored case)."""
        try:
            checked = check_case(staged.folder, self.limits, self.tolerance)
            sha = staged.content_sha256(checked.report_sha256)
            name = clean_name(staged.fields.get("name") or checked.report.case_id)
            files = _files_sha256(staged.folder)  # as they will be stored (a raw .nii part was gzipped in staging)
            with self._lock:
                existing = self.store.get("SELECT * FROM cases WHERE sha256=?", (sha,))
                if existing:
                    if not self._intact(existing, files):  # the same content again: it mends the stored copy
                        self._replace_files(existing, staged, files)
                    elif existing["files_sha256"] is None:  # a row from before schema 2, found intact: record them
                        self.store.execute("UPDATE cases SET files_sha256=? WHERE id=?", (dumps(files), existing["id"]))
                    return IngestResult(self._public(existing), True)
                case_id = self._new_id(sha)
                info = checked.info()
                nbytes = sum((staged.folder / f).stat().st_size for f in CASE_FILES)
                record = {"id": case_id, "sha256": sha, "name": name, "created": now(), "bytes": nbytes, "info": info,
                          "files_sha256": files}
                write_json(staged.folder / "case.json", record)  # lets a restart re-register the folder
                target = self.layout.case_dir(case_id)
                if target.exists():  # left by a crash between rename and insert: same content
                    shutil.rmtree(target)
                os.replace(staged.folder, target)
                _fsync_dir(self.layout.cases)
                self.store.execute("INSERT INTO cases(id, sha256, name, created, bytes, info, files_sha256) "
                                   "VALUES(?,?,?,?,?,?,?)", (case_id, sha, name, record["created"], nbytes, dumps(info),
                                                             dumps(files)))
                return IngestResult(self._public(record), False)
        finally:
            staged.discard()  # no-op once renamed

    def _intact(self, row: dict[str, Any], staged_files: dict[str, str]) -> bool:
        """Whether a stored case still has, byte for byte, the files it was stored with: their sha256 against those
        recorded then (a file deleted, truncated or changed in place at its old size would otherwise be reported
        as "already stored" to every later upload of it). A row from before schema 2 has none recorded: its files
        are compared with the upload's, the same content by the case's hash (equal bytes unless it came as a raw
        .nii, gzipped afresh: then the upload's copy replaces the stored one once, harmlessly)."""
        folder = self.layout.case_dir(row["id"])
        expected = row["files_sha256"] or staged_files
        try:
            if sum((folder / f).stat().st_size for f in CASE_FILES) != row["bytes"]:
                return False  # the cheap look first: no hashing of a file already known to be cut short
            return all(sha256_file(folder / f) == expected.get(f) for f in CASE_FILES)
        except OSError:
            return False

    def _replace_files(self, row: dict[str, Any], staged: StagedUpload, files: dict[str, str]) -> None:
        """The damaged folder of `row` swapped for the staged upload of the same content (same id, same row)."""
        nbytes = sum((staged.folder / f).stat().st_size for f in CASE_FILES)
        record = {**{k: row[k] for k in ("id", "sha256", "name", "created", "info")}, "bytes": nbytes,
                  "files_sha256": files}
        write_json(staged.folder / "case.json", record)
        target, trash = self.layout.case_dir(row["id"]), self.layout.new_staging_dir("deleted")
        if target.exists():
            os.replace(target, trash / row["id"])
        os.replace(staged.folder, target)
        _fsync_dir(self.layout.cases)
        self.store.execute("UPDATE cases SET bytes=?, files_sha256=? WHERE id=?", (nbytes, dumps(files), row["id"]))
        shutil.rmtree(trash, ignore_errors=True)

    def _new_id(self, sha: str) -> str:
        for n in range(16, 65, 8):  # a 16-hex-digit prefix clash is astronomically rare; widen if it happens
            candidate = "c" + sha[:n]
            if not self.store.get("SELECT id FROM cases WHERE id=?", (candidate,)):
                return candidate
        raise RuntimeError("case id space exhausted")

    def list(self) -> list[dict[str, Any]]:
        return [self._public(r) for r in self.store.query("SELECT * FROM cases ORDER BY created, id")]

    def get(self, case_id: str) -> dict[str, Any]:
        row = self.store.get("SELECT * FROM cases WHERE id=?", (check_id("case", case_id),))
        if row is None:
            raise NotFound(f"no case {case_id!r}")
        return self._public(row)

    def folder(self, case_id: str) -> Path:
        self.get(case_id)
        return self.layout.case_dir(case_id)

    def delete(self, case_id: str, in_use: set[str]) -> None:
        self.get(case_id)
        if case_id in in_use:
            raise Conflict(f"case {case_id} is used by a queued or running job; cancel it first")
        with self._lock:
            trash = self.layout.new_staging_dir("deleted")
            os.replace(self.layout.case_dir(case_id), trash / case_id)
            self.store.execute("DELETE FROM cases WHERE id=?", (case_id,))
            shutil.rmtree(trash, ignore_errors=True)

    def reconcile(self) -> list[str]:
        """After a crash: folders without a row are re-registered, rows without a folder dropped."""
        notes = []
        rows = {r["id"]: r for r in self.store.query("SELECT id, sha256 FROM cases")}
        for folder in sorted(self.layout.cases.iterdir()):
            if folder.name in rows or not folder.is_dir():
                continue
            try:
                record = _case_record(folder)
                files = record.get("files_sha256")  # absent from a case.json written before schema 2
                self.store.execute("INSERT INTO cases(id, sha256, name, created, bytes, info, files_sha256) "
                                   "VALUES(?,?,?,?,?,?,?)", (record["id"], record["sha256"], record["name"],
                                                             record["created"], record["bytes"], dumps(record["info"]),
                                                             None if files is None else dumps(files)))
                notes.append(f"case {folder.name}: re-registered after an interrupted upload")
            except (OSError, ValueError, InputError, sqlite3.IntegrityError) as err:  # e.g. a copy: same sha256
                quarantine = self.layout.root / "quarantine"
                quarantine.mkdir(exist_ok=True)
                os.replace(folder, quarantine / f"{folder.name}.{int(now())}")
                notes.append(f"case folder {folder.name}: unreadable ({err}); moved to quarantine/")
        for case_id in rows:
            if not (self.layout.cases / case_id).is_dir():
                self.store.execute("DELETE FROM cases WHERE id=?", (case_id,))
                notes.append(f"case {case_id}: files missing; record removed")
        return notes

    @staticmethod
    def _public(row: dict[str, Any]) -> dict[str, Any]:
        info = row["info"]
        return {"id": row["id"], "sha256": row["sha256"], "name": row["name"], "created": row["created"],
                "bytes": row["bytes"], "lesions": info.get("lesions", []), "free_text": info.get("free_text", []),
                "grid": info.get("grid", {})}


def _case_record(folder: Path) -> dict[str, Any]:
    """The case.json of a stored case folder, every field of its JSON type (a list, a null hash or a number as the
    name would otherwise stop the server's start, or be stored as text and break the listing); ValueError if not."""
    record = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    wrong = wrong_fields(record, {"id": str, "sha256": str, "name": str, "created": (int, float), "bytes": int,
                                  "info": dict})
    if wrong:
        raise ValueError(f"case.json field(s) {wrong} missing or of the wrong type")
    files = record.get("files_sha256")
    if files is not None and not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
        raise ValueError("case.json field files_sha256 is not an object of file name -> sha256")
    check_id("case", record["id"])
    if record["id"] != folder.name or not all((folder / f).exists() for f in CASE_FILES):
        raise ValueError("incomplete")
    return record


def _files_sha256(folder: Path) -> dict[str, str]:
    """The sha256 of each case file in `folder`, by file name."""
    return {f: sha256_file(folder / f) for f in CASE_FILES}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
