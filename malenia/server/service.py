"""The training service: store, cases, model versions and the job queue behind one object.

The HTTP app (`app.py`) is a thin layer over it, and local mode (a workstation with its own GPU,
no HTTP) uses it directly: the same validation, the same jobs, the same versions.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from malenia import __version__
from malenia.errors import InputError
from malenia.server import API_VERSION, CASE_PARTS
from malenia.server.cases import CaseStore, IngestResult
from malenia.server.config import ServerConfig
from malenia.server.jobs import JobManager
from malenia.server.layout import Layout
from malenia.server.store import Store
from malenia.server.tokens import TokenStore
from malenia.server.uploads import StagedUpload
from malenia.model.folder import MANIFEST, sha256_file
from malenia.server.versions import Registry


class TrainingService:
    def __init__(self, cfg: ServerConfig, start_worker: bool = True):
        self.cfg = cfg
        self.layout = Layout(cfg.data_dir)
        self.layout.create()
        self.store = Store(self.layout.db)
        self.tokens = TokenStore(self.store)
        self.cases = CaseStore(self.store, self.layout, cfg.limits, cfg.geometry)
        self.registry = Registry(self.store, self.layout)
        self.jobs = JobManager(cfg, self.store, self.layout, self.cases, self.registry)
        self.startup_notes: list[str] = []
        self.layout.clear_staging()
        self.startup_notes += self.cases.reconcile()
        self.startup_notes += self.registry.reconcile()
        self.startup_notes += self._import_base_model()
        self.startup_notes += self.jobs.recover()
        if start_worker:
            self.jobs.start()

    def close(self) -> None:
        self.jobs.stop()
        self.store.close()

    def info(self) -> dict[str, Any]:
        return {"malenia_version": __version__, "api_version": API_VERSION, "current_version": self.registry.current(),
                "train_config": self.cfg.train_config, "promotion": self.cfg.promotion,
                "limits": vars(self.cfg.limits), "cases": len(self.cases.list())}

    def _import_base_model(self) -> list[str]:
        if self.registry.list():
            return []
        from malenia.paths import builtin_model_dir

        source = Path(self.cfg.base_model) if self.cfg.base_model else builtin_model_dir()
        if not (source / MANIFEST).exists():
            return [f"no model version yet (no model folder at {source}); import one with `malenia serve model import`"]
        return [self.import_model(source, reason="initial model")["notes"][-1]]

    def import_model(self, source: Path, reason: str = "imported", make_current: bool | None = None) -> dict[str, Any]:
        """Registers an existing model folder as a version; it becomes current if there is none (or if asked)."""
        version = self.registry.register(Path(source), parent=None, job_id=None, metrics={},
                                         notes=[f"{reason}: imported from {source}"])
        if make_current or (make_current is None and self.registry.current() is None):
            self.registry.promote(version["name"], reason)
        return self.registry.get(version["name"])

    def add_case_folder(self, folder: Path, name: str | None = None) -> IngestResult:
        """Local mode and tools: stores a case folder (image.nii.gz, lesions.nii.gz, report.json) as an upload would."""
        staging = self.layout.new_staging_dir("local")
        staged = StagedUpload(staging, fields={"name": name or Path(folder).name})
        try:
            for part, fname in CASE_PARTS.items():
                src = Path(folder) / fname
                if not src.is_file():
                    raise InputError(f"{folder}: missing {fname}")
                shutil.copyfile(src, staging / fname)
                staged.part_sha256[part] = sha256_file(staging / fname)
        except BaseException:
            staged.discard()
            raise
        return self.cases.ingest(staged)
