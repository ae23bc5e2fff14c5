"""Where training runs: a retraining server over HTTP, or this workstation (local mode, no HTTP).

Both offer the same calls and return the same JSON-like dicts, so the logic and panels do not care.
Local mode runs malenia.server's TrainingService in-process: the same case validation, the same job
worker (a `malenia train` subprocess on the local GPU or CPU), the same model versions, kept in a
folder on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


class RemoteBackend:
    kind = "server"

    def __init__(self, url: str, token: str, timeout: float = 60.0):
        from malenia.server.client import MaleniaClient

        self.client = MaleniaClient(url, token, timeout=timeout)

    def __repr__(self) -> str:
        return f"RemoteBackend({self.client.url!r})"

    def connect(self) -> dict[str, Any]:
        return self.client.connect()

    def upload_case(self, folder: Path, name: str, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        return self.client.upload_case(folder, name=name, progress=progress)

    def cases(self) -> list[dict[str, Any]]:
        return self.client.cases()

    def start_job(self, **params) -> dict[str, Any]:
        return self.client.start_job(**params)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.job(job_id)

    def jobs(self) -> list[dict[str, Any]]:
        return self.client.jobs()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.client.cancel(job_id)

    def log(self, job_id: str, lines: int = 50) -> str:
        return self.client.log(job_id, lines)

    def versions(self) -> dict[str, Any]:
        return self.client.versions()

    def download_version(self, name: str, dest: Path, progress=None) -> Path:
        return self.client.download_version(name, dest, progress=progress, overwrite=True)

    def close(self) -> None:
        self.client.close()


class LocalBackend:
    kind = "local"

    def __init__(self, data_dir: str | Path, settings: dict[str, Any] | None = None, python: str | None = None):
        """`python` runs `malenia train` and validation (inside Slicer: PythonSlicer, with the
        environment that finds the `malenia` package beside the modules)."""
        import os

        from malenia.server.config import load_config
        from malenia.server.service import TrainingService
        from MaleniaCommon.paths import subprocess_env

        overrides = dict(settings or {})
        if python:
            overrides.setdefault("python", python)
            overrides.setdefault("subprocess_env", {k: v for k, v in subprocess_env().items() if os.environ.get(k) != v})
        self.service = TrainingService(load_config(data_dir, overrides))

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.service.cfg.data_dir)!r})"

    def connect(self) -> dict[str, Any]:
        return self.service.info()

    def upload_case(self, folder: Path, name: str, progress=None) -> dict[str, Any]:
        result = self.service.add_case_folder(Path(folder), name=name)
        if progress:
            progress(1, 1)
        return {"case": result.case, "duplicate": result.duplicate}

    def cases(self) -> list[dict[str, Any]]:
        return self.service.cases.list()

    def start_job(self, **params) -> dict[str, Any]:
        return self.service.jobs.submit(params)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.service.jobs.get(job_id)

    def jobs(self) -> list[dict[str, Any]]:
        return self.service.jobs.list()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.service.jobs.cancel(job_id)

    def log(self, job_id: str, lines: int = 50) -> str:
        return self.service.jobs.log_tail(job_id, lines)

    def versions(self) -> dict[str, Any]:
        reg = self.service.registry
        return {"current": reg.current(), "versions": reg.list(), "history": reg.history()}

    def download_version(self, name: str, dest: Path, progress=None) -> Path:
        from malenia.server.versions import copy_model_folder

        copy_model_folder(self.service.layout.model_dir(name), Path(dest))
        return Path(dest)

    def close(self) -> None:
        self.service.close()
