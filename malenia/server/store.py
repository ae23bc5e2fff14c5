"""SQLite store for tokens, cases, jobs and model versions (WAL mode, one connection behind a lock).

Files live beside the database (see `layout.py`); a row is written only after its files are in
place, and startup reconciliation (`service.py`) repairs the other order after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 2  # 2: cases.files_sha256

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, salt TEXT NOT NULL, hash TEXT NOT NULL,
    created REAL NOT NULL, revoked REAL, last_used REAL);
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created REAL NOT NULL,
    bytes INTEGER NOT NULL, info TEXT NOT NULL, files_sha256 TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    started REAL, finished REAL, params TEXT NOT NULL, progress TEXT NOT NULL DEFAULT '{}',
    pid INTEGER, pid_start TEXT, result_version TEXT, error TEXT, notes TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS versions (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, created REAL NOT NULL, parent TEXT, job_id TEXT,
    manifest_sha256 TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}', notes TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS promotions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL, time REAL NOT NULL, reason TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1);
"""

# Columns added after their table was first released: (table, column, declaration). CREATE TABLE IF NOT EXISTS
# leaves an older database's table as it was, so these are added to it on opening (nullable: its rows have none).
ADDED_COLUMNS = (("cases", "files_sha256", "TEXT"),)  # schema 2: sha256 of each stored case file

JSON_COLUMNS = {"info", "params", "progress", "notes", "metrics", "files_sha256"}


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _private(self.path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a registered model or case must survive a power cut
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        _add_columns(self._db)
        self.set_meta("schema_version", str(SCHEMA_VERSION))

    @property
    def journal_mode(self) -> str:
        return self.query_one("PRAGMA journal_mode")[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Serialised read-modify-write: BEGIN IMMEDIATE holds the write lock across processes too."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def execute(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def query(self, sql: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [_decode(row) for row in self._db.execute(sql, args).fetchall()]

    def query_one(self, sql: str, args: tuple | list = ()):
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return row

    def get(self, sql: str, args: tuple | list = ()) -> dict[str, Any] | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    # -- small key/value table (current version, etc.)
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.query_one("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else default

    def set_meta(self, key: str, value: str, db: sqlite3.Connection | None = None) -> None:
        (db or self).execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (key, value))


def _add_columns(db: sqlite3.Connection) -> None:
    """ADDED_COLUMNS that an older database lacks. Another process (`malenia serve token add` beside the server)
    may add one between the look and the ALTER: its "duplicate column" is then the wanted state."""
    for table, column, declaration in ADDED_COLUMNS:
        if column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        except sqlite3.OperationalError as err:
            if "duplicate column" not in str(err):
                raise


def _private(path: Path) -> None:
    """Token hashes and case details: readable by the server's user only (SQLite gives its -wal and -shm
    files the database's mode). An existing database from an older version is tightened too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if os.name == "posix":
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if p.exists():
                os.chmod(p, 0o600)


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in JSON_COLUMNS & out.keys():
        if isinstance(out[key], str):
            out[key] = json.loads(out[key])
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def now() -> float:
    return time.time()
