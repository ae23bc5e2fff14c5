"""Model versions: immutable model folders under DATA/models/vN, a current pointer, promotion and rollback.

A version is registered by copying a model folder (docs/architecture.md, "Model folder") into a
staging folder, letting the caller adjust it (e.g. extend the attribute bank), rewriting the
manifest's sha256 list and renaming it into place; the database row comes last. Nothing ever
deletes a version. `promotions` is the history of the current pointer; rollback deactivates the
latest entry and the one before it becomes current again.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from malenia import __version__
from malenia.atomic import clean_stale, rename_no_replace, write_json
from malenia.errors import InputError, ModelError
from malenia.json_files import wrong_fields
from malenia.model.folder import (MANIFEST, copy_model_files, copy_model_folder, read_manifest, rewrite_manifest,  # noqa: F401
                                  safe_relpath, sha256_file, verify_model_folder)
from malenia.server.cases import Conflict, NotFound
from malenia.server.layout import Layout, check_id
from malenia.server.store import Store, dumps, now


@dataclass
class Decision:
    promote: bool
    reason: str


def decide_promotion(policy: str, tolerance: float, new_dsc: float | None, baseline_dsc: float | None) -> Decision:
    """`not_worse`: promote when the new validation DSC >= the current model's on the same cases - tolerance."""
    if policy == "always":
        return Decision(True, "promotion policy 'always'")
    if policy == "never":
        return Decision(False, "promotion policy 'never': promote by hand")
    if new_dsc is None or baseline_dsc is None:
        missing = "new model" if new_dsc is None else "current model"
        return Decision(False, f"not promoted: no validation DSC of the {missing} on the same cases to compare")
    if new_dsc + tolerance >= baseline_dsc:
        return Decision(True, f"validation DSC {new_dsc:.4f} is not worse than current {baseline_dsc:.4f}")
    return Decision(False, f"not promoted: validation DSC {new_dsc:.4f} is worse than current {baseline_dsc:.4f}")


class Registry:
    def __init__(self, store: Store, layout: Layout):
        self.store, self.layout = store, layout
        self._lock = threading.Lock()

    # -- registration
    def register(self, source: Path, *, parent: str | None, job_id: str | None, metrics: dict[str, Any],
                 notes: list[str], training_data: str | None = None,
                 adjust: Callable[[Path, dict[str, Any]], list[str]] | None = None) -> dict[str, Any]:
        """Copies a verified model folder in as the next version; `adjust(folder, manifest)` may change files.

        Safe with other processes registering at the same time (`malenia serve model import` while the
        server runs): the version name is claimed by a rename that never replaces, so each registration
        gets its own number and no folder is ever overwritten.
        """
        manifest = verify_model_folder(source)
        staging = Path(tempfile.mkdtemp(prefix=f".import.partial.{os.getpid()}-", dir=self.layout.models))
        try:
            manifest = copy_model_files(source, staging, manifest)
            if adjust is not None:
                notes = notes + adjust(staging, manifest)
            manifest["created"] = manifest.get("created") if job_id is None else _iso_now()
            manifest["malenia_version"] = manifest.get("malenia_version") or __version__
            if training_data:
                manifest["training_data"] = training_data
            with self._lock:
                record = self._claim(staging, manifest, parent, job_id, metrics, notes)
                try:
                    self._insert(record)
                except sqlite3.IntegrityError:  # a starting server's reconcile registered our folder first
                    row = self.store.get("SELECT manifest_sha256 FROM versions WHERE name=?", (record["name"],))
                    if row is None or row["manifest_sha256"] != record["manifest_sha256"]:
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone once renamed into place
        return self.get(record["name"])

    def _claim(self, staging: Path, manifest: dict[str, Any], parent: str | None, job_id: str | None,
               metrics: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """Names the staged folder vN (the next free N) and renames it into place; returns its record."""
        seq = int(self.store.query_one("SELECT COALESCE(MAX(seq), 0) FROM versions")[0]) + 1
        for _ in range(10000):
            name = f"v{seq}"
            if self.layout.model_dir(name).exists():  # taken by another process (or a crash, recovered later)
                seq += 1
                continue
            rewrite_manifest(staging, {**manifest, "version": name})
            verify_model_folder(staging)
            record = {"name": name, "seq": seq, "created": now(), "parent": parent, "job_id": job_id,
                      "manifest_sha256": sha256_file(staging / MANIFEST), "metrics": metrics, "notes": notes}
            write_json(staging / "server_version.json", record)  # re-registration after a crash
            try:
                rename_no_replace(staging, self.layout.model_dir(name))
            except FileExistsError:
                seq += 1
                continue
            return record
        raise ModelError("no free model version number")

    def _insert(self, record: dict[str, Any]) -> None:
        self.store.execute(
            "INSERT INTO versions(name, seq, created, parent, job_id, manifest_sha256, metrics, notes) VALUES(?,?,?,?,?,?,?,?)",
            (record["name"], record["seq"], record["created"], record["parent"], record["job_id"],
             record["manifest_sha256"], dumps(record["metrics"]), dumps(record["notes"])))

    def reconcile(self) -> list[str]:
        """Model folders whose row was not written (crash) are registered again, never dropped."""
        notes = [f"removed stale partial model folder {n}" for n in clean_stale(self.layout.models)]
        known = {r["name"] for r in self.store.query("SELECT name FROM versions")}
        for folder in sorted(self.layout.models.iterdir()):
            if folder.name in known or folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                check_id("version", folder.name)
                record = _version_record(folder)
                verify_model_folder(folder)
                self._insert(record)
                notes.append(f"version {folder.name}: re-registered after an interrupted registration")
            except (OSError, ValueError, InputError, ModelError, sqlite3.IntegrityError) as err:
                notes.append(f"model folder {folder.name}: left alone, not a registrable version ({err})")
        return notes

    # -- queries
    def list(self) -> list[dict[str, Any]]:
        current = self.current()
        return [self._public(r, current) for r in self.store.query("SELECT * FROM versions ORDER BY seq")]

    def get(self, name: str) -> dict[str, Any]:
        row = self.store.get("SELECT * FROM versions WHERE name=?", (check_id("version", name),))
        if row is None:
            raise NotFound(f"no model version {name!r}")
        return self._public(row, self.current())

    def manifest(self, name: str) -> dict[str, Any]:
        self.get(name)
        return read_manifest(self.layout.model_dir(name))

    def file_path(self, name: str, rel: str) -> tuple[Path, str]:
        """A file of a version, only if the manifest lists it (or is the manifest); with its sha256."""
        version = self.get(name)
        folder = self.layout.model_dir(name)
        if rel == MANIFEST:
            return folder / rel, version["manifest_sha256"]
        files = read_manifest(folder)["files"]
        if rel not in files:
            raise NotFound(f"version {name} has no file {rel[:120]!r}")
        return folder / safe_relpath(rel), files[rel]

    def _public(self, row: dict[str, Any], current: str | None) -> dict[str, Any]:
        out = {k: row[k] for k in ("name", "created", "parent", "job_id", "manifest_sha256", "metrics", "notes")}
        out["current"] = row["name"] == current
        return out

    # -- the current pointer
    def current(self) -> str | None:
        row = self.store.query_one("SELECT version FROM promotions WHERE active=1 ORDER BY seq DESC LIMIT 1")
        return row[0] if row else None

    def promote(self, name: str, reason: str) -> dict[str, Any]:
        self.get(name)
        with self.store.transaction() as db:
            db.execute("INSERT INTO promotions(version, time, reason, active) VALUES(?,?,?,1)", (name, now(), reason))
        return self.get(name)

    def rollback(self) -> dict[str, Any]:
        with self.store.transaction() as db:
            rows = db.execute("SELECT seq, version FROM promotions WHERE active=1 ORDER BY seq DESC LIMIT 2").fetchall()
            if len(rows) < 2:
                raise Conflict("nothing to roll back to: the current version is the first one promoted")
            db.execute("UPDATE promotions SET active=0 WHERE seq=?", (rows[0][0],))
        return self.get(rows[1][1])

    def history(self) -> list[dict[str, Any]]:
        return self.store.query("SELECT version, time, reason, active FROM promotions ORDER BY seq")


def _iso_now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version_record(folder: Path) -> dict[str, Any]:
    """server_version.json of a model folder, each field of its JSON type, naming this folder and its manifest as it is
    now (a list, a copy from another version or a stale manifest hash would stop the start or register a wrong row);
    ValueError if not."""
    record = json.loads((folder / "server_version.json").read_text(encoding="utf-8"))
    optional = (str, type(None))
    wrong = wrong_fields(record, {"name": str, "seq": int, "created": (int, float), "parent": optional,
                                  "job_id": optional, "manifest_sha256": str, "metrics": dict, "notes": list})
    if wrong:
        raise ValueError(f"server_version.json field(s) {wrong} missing or of the wrong type")
    if record["name"] != folder.name:
        raise ValueError(f"server_version.json names version {record['name'][:20]!r}, not {folder.name}")
    if record["manifest_sha256"] != sha256_file(folder / MANIFEST):
        raise ValueError("server_version.json's manifest_sha256 does not match the manifest")
    return record
