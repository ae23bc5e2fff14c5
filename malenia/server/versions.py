"""Model versions: immutable model folders under DATA/models/vN, a current pointer, promotion and rollback.

A version is registered by copying a model folder (docs/architecture.md, "Model folder") into a
staging folder, letting the caller adjust it (e.g. extend the attribute bank), rewriting the
manifest's sha256 list and renaming it into place; the database row comes last. Nothing ever
deletes a version. `promotions` is the history of the current pointer; rollback deactivates the
latest entry and the one before it becomes current again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from malenia import __version__
from malenia.atomic import atomic_dir, write_json
from malenia.errors import InputError, ModelError
from malenia.server.cases import Conflict, NotFound
from malenia.server.layout import Layout, check_id
from malenia.server.store import Store, dumps, now

MODEL_FORMAT = "malenia-model/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_relpath(rel: str) -> str:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or rel.startswith("."):
        raise ModelError(f"manifest lists an unsafe path {rel!r}")
    return str(p)


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{folder}: no manifest.json (not a model folder)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{folder}/manifest.json: unreadable ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT or not isinstance(manifest.get("files"), dict):
        raise ModelError(f"{folder}: manifest.json is not a {MODEL_FORMAT} manifest")
    return manifest


def verify_model_folder(folder: Path) -> dict[str, Any]:
    """The manifest, after checking that every listed file exists with its sha256."""
    manifest = read_manifest(folder)
    for rel, digest in manifest["files"].items():
        path = folder / safe_relpath(rel)
        if not path.is_file():
            raise ModelError(f"{folder}: {rel} listed in the manifest is missing")
        if sha256_file(path) != digest:
            raise ModelError(f"{folder}: sha256 of {rel} does not match the manifest")
    return manifest


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
        """Copies a verified model folder in as the next version; `adjust(folder, manifest)` may change files."""
        manifest = verify_model_folder(source)
        with self._lock:
            seq = int(self.store.query_one("SELECT COALESCE(MAX(seq), 0) FROM versions")[0]) + 1
            while self.layout.model_dir(f"v{seq}").exists():  # folder without a row: recovered below, skip its name
                seq += 1
            name = f"v{seq}"
            with atomic_dir(self.layout.model_dir(name)) as staging:
                for rel in ["manifest.json", *manifest["files"]]:
                    dst = staging / safe_relpath(rel)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source / rel, dst)
                if adjust is not None:
                    notes = notes + adjust(staging, manifest)
                manifest = dict(manifest)
                manifest["version"] = name
                manifest["created"] = manifest.get("created") if job_id is None else _iso_now()
                manifest["malenia_version"] = manifest.get("malenia_version") or __version__
                if training_data:
                    manifest["training_data"] = training_data
                manifest["files"] = {rel: sha256_file(staging / rel) for rel in manifest["files"]}
                write_json(staging / "manifest.json", manifest)
                verify_model_folder(staging)
                record = {"name": name, "seq": seq, "created": now(), "parent": parent, "job_id": job_id,
                          "manifest_sha256": sha256_file(staging / "manifest.json"), "metrics": metrics, "notes": notes}
                write_json(staging / "server_version.json", record)  # re-registration after a crash
            self._insert(record)
        return self.get(name)

    def _insert(self, record: dict[str, Any]) -> None:
        self.store.execute(
            "INSERT INTO versions(name, seq, created, parent, job_id, manifest_sha256, metrics, notes) VALUES(?,?,?,?,?,?,?,?)",
            (record["name"], record["seq"], record["created"], record["parent"], record["job_id"],
             record["manifest_sha256"], dumps(record["metrics"]), dumps(record["notes"])))

    def reconcile(self) -> list[str]:
        """Model folders whose row was not written (crash) are registered again, never dropped."""
        notes = []
        known = {r["name"] for r in self.store.query("SELECT name FROM versions")}
        for folder in sorted(self.layout.models.iterdir()):
            if folder.name in known or folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                check_id("version", folder.name)
                record = json.loads((folder / "server_version.json").read_text())
                verify_model_folder(folder)
                self._insert(record)
                notes.append(f"version {folder.name}: re-registered after an interrupted registration")
            except (OSError, ValueError, KeyError, InputError, ModelError) as err:
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
        if rel == "manifest.json":
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


def copy_model_folder(src: Path, dst: Path) -> None:
    """A verified copy of a version (used by local mode and the client's download)."""
    manifest = verify_model_folder(src)
    with atomic_dir(dst, overwrite=True) as staging:
        for rel in ["manifest.json", *manifest["files"]]:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, staging / rel)
