"""Where the server keeps its files under DATA, and the only ways a request may name them.

    DATA/server.db                 SQLite (WAL): tokens, cases, jobs, versions, promotions
    DATA/server.json               optional settings (config.py)
    DATA/staging/                  uploads and versions being assembled (emptied at start)
    DATA/cases/<case id>/          image.nii.gz, lesions.nii.gz, report.json, case.json
    DATA/models/<version>/         model folders (docs/architecture.md "Model folder"), never modified
    DATA/jobs/<job id>/            data/ (dataset view), replay/, run/ (the trainer's --out), log.txt

Ids are made by the server and checked against these patterns before they touch a path;
nothing a client sends (file names, case ids in reports) is ever used as a path.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from malenia.errors import InputError

CASE_ID_RE = re.compile(r"^c[0-9a-f]{16,64}$")
JOB_ID_RE = re.compile(r"^j[0-9a-f]{12}$")
VERSION_RE = re.compile(r"^v[1-9][0-9]{0,6}$")


def check_id(kind: str, value: str) -> str:
    pattern = {"case": CASE_ID_RE, "job": JOB_ID_RE, "version": VERSION_RE}[kind]
    if not isinstance(value, str) or not pattern.match(value):
        raise InputError(f"not a valid {kind} id: {str(value)[:80]!r}")
    return value


def clean_name(text: str | None, fallback: str = "case") -> str:
    """A display label from client text: safe characters only, never used as a path."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text or "")).strip("._-")[:80]
    return cleaned or fallback


class Layout:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.db = self.root / "server.db"
        self.staging = self.root / "staging"
        self.cases = self.root / "cases"
        self.models = self.root / "models"
        self.jobs = self.root / "jobs"

    def create(self) -> None:
        for folder in (self.root, self.staging, self.cases, self.models, self.jobs):
            folder.mkdir(parents=True, exist_ok=True)

    def clear_staging(self) -> None:
        """Leftovers of requests that were cut off: never referenced by the database."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def new_staging_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}.", dir=self.staging))

    def case_dir(self, case_id: str) -> Path:
        return self.cases / check_id("case", case_id)

    def model_dir(self, version: str) -> Path:
        return self.models / check_id("version", version)

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / check_id("job", job_id)
