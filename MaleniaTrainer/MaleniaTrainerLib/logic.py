"""MaleniaTrainer's logic without the Slicer application.

Settings (server URL, token, mode, folders) live in a QSettings-like store: Slicer's settings inside
Slicer, `MemorySettings` elsewhere. The token is read from there when a backend is made and is never
put in the MRML scene, a repr, a log line or an error message. The scene's parameter node keeps the
non-secret state (server URL, running job, model in use) so a saved scene says what was used.

Long calls (upload, download, connection) run through `Background` in a thread; the widget polls it
with a QTimer, so the GUI never waits on the network. Those threads touch neither Qt nor the settings
nor the MRML scene: the panel reads the settings and makes the backend on the GUI thread, the threads
call only the backend (`in_thread` functions below), and results reach settings and scene in the
done-handlers, on the GUI thread again (MRML events fired from another thread would run observers there).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from MaleniaCommon import settings as shared
from MaleniaCommon.model_check import verify_model_folder_cached

from .backends import LocalBackend, RemoteBackend
from .corrections import CorrectionItem, scan_corrections

KEY_URL = "MaleniaTrainer/ServerURL"
KEY_TOKEN = "MaleniaTrainer/Token"
KEY_MODE = "MaleniaTrainer/Mode"  # "server" | "local"
KEY_LOCAL_DIR = "MaleniaTrainer/LocalDataDir"
KEY_CORRECTIONS = shared.CORRECTIONS_FOLDER  # where MaleniaSegment saves them (one key for both modules)
KEY_MODELS = "MaleniaTrainer/ModelsDir"
KEY_SEGMENT_MODEL = shared.MODEL_FOLDER  # the model folder MaleniaSegment uses (shared with that module)
PARAMETER_NODE_TAG = "MaleniaTrainer"  # the module's name: its parameter node's singleton tag and ModuleName, as in Slicer


class MemorySettings:
    """The QSettings calls the logic uses (`value`, `setValue`), kept in a dict (outside Slicer)."""

    def __init__(self, values: dict[str, Any] | None = None):
        self._values = dict(values or {})

    def value(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802 (Qt's name)
        self._values[key] = value


@dataclass
class UploadOutcome:
    item: CorrectionItem
    case_id: str | None = None
    duplicate: bool = False
    error: str | None = None


@dataclass
class JobView:
    id: str
    state: str
    step: int = 0
    total: int = 0
    fraction: float = 0.0
    loss: float | None = None
    val_dsc: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    stage: str = ""
    message: str = ""
    error: str | None = None
    result_version: str | None = None
    notes: list[str] = field(default_factory=list)
    val_points: list[tuple[int, float]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "interrupted")

    @property
    def summary(self) -> str:
        parts = [self.state]
        if self.total:
            parts.append(f"step {self.step}/{self.total}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.val_dsc is not None:
            parts.append(f"val DSC {self.val_dsc:.3f}")
        if self.result_version:
            parts.append(f"-> {self.result_version}")
        if self.error:
            parts.append(self.error)
        return " · ".join(parts)

    @staticmethod
    def from_json(job: dict[str, Any]) -> "JobView":
        p = job.get("progress") or {}
        return JobView(job["id"], job["state"], int(p.get("step") or 0), int(p.get("total") or 0),
                       float(p.get("fraction") or 0.0), p.get("loss"), p.get("val_dsc"),
                       [(int(s), float(v)) for s, v in p.get("losses", [])], p.get("stage", ""), p.get("message", ""),
                       job.get("error"), job.get("result_version"), list(job.get("notes") or []),
                       [(int(s), float(v)) for s, v in p.get("val", [])])


class Background:
    """A call in a daemon thread: poll `done`, then read `result` or `error` (a one-line message)."""

    def __init__(self, fn: Callable[..., Any], *args, redact: Callable[[str], str] = str, **kwargs):
        self.done = False
        self.result: Any = None
        self.error: str | None = None
        self.progress: tuple[int, int] = (0, 0)
        self._redact = redact
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except Exception as err:  # shown to the user, one line
            self.error = self._redact(describe_error(err))
        finally:
            self.done = True

    def wait(self, timeout: float | None = None) -> "Background":
        self._thread.join(timeout)
        return self


def describe_error(err: Exception) -> str:
    from malenia.errors import MaleniaError
    from malenia.server.client import AuthRejected, ServerUnreachable, VersionMismatch

    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, ServerUnreachable):
        return f"Server unreachable: {text}"
    if isinstance(err, AuthRejected):
        return f"Token rejected: {text}"
    if isinstance(err, VersionMismatch):
        return f"Version mismatch: {text}"
    if isinstance(err, MaleniaError):
        return text
    return f"{type(err).__name__}: {text}"


class TrainerLogic:
    def __init__(self, scene=None, settings=None, local_settings: dict[str, Any] | None = None, python: str | None = None):
        self.scene = scene
        self.settings = settings if settings is not None else MemorySettings()
        self.local_settings = local_settings or {}  # extra TrainingService settings in local mode
        self._python = python  # runs local training; None: MaleniaCommon.paths.python_executable()
        self._backend = None
        self._backend_key: tuple | None = None

    # -- settings (the token only through these two)
    def configure(self, url: str | None = None, token: str | None = None, mode: str | None = None,
                  corrections_dir: str | None = None, models_dir: str | None = None, local_dir: str | None = None) -> None:
        for key, value in ((KEY_URL, url), (KEY_TOKEN, token), (KEY_MODE, mode), (KEY_CORRECTIONS, corrections_dir),
                           (KEY_MODELS, models_dir), (KEY_LOCAL_DIR, local_dir)):
            if value is not None:
                self.settings.setValue(key, str(value).strip())
        if url is not None:
            self._set_parameter("ServerURL", str(url).strip())

    @property
    def python(self) -> str:
        """The Python that runs local training: PythonSlicer inside Slicer (never the Slicer application)."""
        from MaleniaCommon.paths import python_executable

        return self._python or python_executable()

    @property
    def server_url(self) -> str:
        return str(self.settings.value(KEY_URL, "") or "")

    @property
    def has_token(self) -> bool:
        return bool(self.settings.value(KEY_TOKEN, ""))

    @property
    def mode(self) -> str:
        return str(self.settings.value(KEY_MODE, "server") or "server")

    @property
    def corrections_dir(self) -> Path:
        return shared.folder(self.settings, KEY_CORRECTIONS, "corrections")

    @property
    def models_dir(self) -> Path:
        return shared.folder(self.settings, KEY_MODELS, "models")

    @property
    def local_dir(self) -> Path:
        return shared.folder(self.settings, KEY_LOCAL_DIR, "local-training")

    def redact(self, text: str) -> str:
        return self.redactor()(text)

    def redactor(self) -> Callable[[str], str]:
        """redact() with the token read now: safe to call from a worker thread."""
        token = str(self.settings.value(KEY_TOKEN, "") or "")
        return (lambda text: text.replace(token, "***")) if token else (lambda text: text)

    def __repr__(self) -> str:
        return f"TrainerLogic(mode={self.mode!r}, url={self.server_url!r})"

    # -- backend
    def backend(self):
        key = (self.mode, self.server_url, self.settings.value(KEY_TOKEN, ""), str(self.local_dir))
        if self._backend is None or key != self._backend_key:
            self.close()
            if self.mode == "local":
                self._backend = LocalBackend(self.local_dir, self.local_settings, python=self.python)
            else:
                if not self.server_url:
                    from malenia.server.client import ClientError

                    raise ClientError("no server URL set")
                self._backend = RemoteBackend(self.server_url, str(self.settings.value(KEY_TOKEN, "") or ""))
            self._backend_key = key
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def connect(self) -> dict[str, Any]:
        """Reachability, version and token check; returns the server's info (raises with a clear message)."""
        return self.backend().connect()

    def connection_message(self, info: dict[str, Any]) -> str:
        where = "this workstation" if self.mode == "local" else self.server_url
        return (f"Connected to {where}: malenia {info.get('malenia_version')}, API {info.get('api_version')}, "
                f"current model {info.get('current_version') or 'none'}, {info.get('cases', 0)} case(s) stored")

    # -- corrections and upload
    def corrections(self) -> list[CorrectionItem]:
        return scan_corrections(self.corrections_dir)

    def upload(self, items: list[CorrectionItem], progress: Callable[[int, int, str], None] | None = None) -> list[UploadOutcome]:
        """Uploads each item; a refused case is reported and the others still go."""
        return upload_items(self.backend(), items, progress, self.redactor())

    # -- training
    def start_training(self, steps: int, case_ids: list[str] | None = None, replay_fraction: float = 0.5,
                       base_version: str | None = None) -> JobView:
        view = start_job(self.backend(), steps, case_ids, replay_fraction, base_version)
        self.remember_job(view)
        return view

    def remember_job(self, view: JobView) -> None:
        """The running job in the parameter node (GUI thread)."""
        self._set_parameter("JobId", view.id)

    def job(self, job_id: str) -> JobView:
        return JobView.from_json(self.backend().job(job_id))

    def cancel(self, job_id: str) -> JobView:
        return JobView.from_json(self.backend().cancel(job_id))

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> JobView:
        deadline = time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if view.finished or time.monotonic() > deadline:
                return view
            time.sleep(poll)

    # -- model versions
    def versions(self) -> tuple[list[dict[str, Any]], str | None]:
        return list_versions(self.backend())

    def download_destination(self, version: str) -> Path:
        where = self.server_url.split("://", 1)[-1].replace(":", "_").replace("/", "_") if self.mode != "local" else "local"
        return self.models_dir / where / version

    def download(self, version: str, progress: Callable[[int, int], None] | None = None) -> Path:
        """A verified copy of the version under the models folder (downloaded once, sha256 checked)."""
        return fetch_version(self.backend(), version, self.download_destination(version), progress)

    def use_model(self, folder: Path) -> None:
        """Makes a model folder MaleniaSegment's model (a shared setting and the parameter node; GUI thread: the
        download's worker verified the folder, so unchanged files are not hashed again here)."""
        verify_model_folder_cached(Path(folder))
        self.settings.setValue(KEY_SEGMENT_MODEL, str(folder))
        self._set_parameter("ModelFolder", str(folder))

    @property
    def segment_model(self) -> str | None:
        value = self.settings.value(KEY_SEGMENT_MODEL, "")
        return str(value) if value else None

    # -- MRML parameter node (non-secret state only)
    def parameter_node(self):
        """The module's parameter node, found and made as Slicer's ScriptedLoadableModuleLogic.getParameterNode does:
        singleton tag and "ModuleName" attribute the module's name, a unique node name. Node selectors and Slicer's
        getAllParameterNodes() find a module's nodes by that attribute only, and MaleniaTrainerLogic.getParameterNode()
        returns this same node."""
        if self.scene is None:
            return None
        node = self.scene.GetSingletonNode(PARAMETER_NODE_TAG, "vtkMRMLScriptedModuleNode")
        if node is not None:
            if node.GetAttribute("ModuleName") != PARAMETER_NODE_TAG:  # a scene close resets a singleton's attributes
                node.SetAttribute("ModuleName", PARAMETER_NODE_TAG)
            return node
        node = self.scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # owned by the Python variable, as in Slicer's createParameterNode
        node.SetSingletonTag(PARAMETER_NODE_TAG)
        node.SetAttribute("ModuleName", PARAMETER_NODE_TAG)
        node.SetName(self.scene.GenerateUniqueName(PARAMETER_NODE_TAG))
        return self.scene.AddNode(node)

    def _set_parameter(self, key: str, value: str) -> None:
        node = self.parameter_node()
        if node is not None:
            node.SetParameter(key, value)


# -- in_thread: what Background threads run (the backend only; no settings, scene or Qt) --------------

def upload_items(backend, items: list[CorrectionItem], progress: Callable[[int, int, str], None] | None,
                 redact: Callable[[str], str]) -> list[UploadOutcome]:
    from malenia.server.client import AuthRejected, ServerUnreachable, VersionMismatch

    outcomes = []
    for n, item in enumerate(items):
        def on_bytes(done: int, total: int, n=n, item=item) -> None:
            if progress:
                progress(n * 1000 + int(1000 * done / max(total, 1)), len(items) * 1000, item.label)
        try:
            result = backend.upload_case(item.path, name=item.label.replace("/", "_"), progress=on_bytes)
            outcomes.append(UploadOutcome(item, result["case"]["id"], bool(result["duplicate"])))
        except (AuthRejected, ServerUnreachable, VersionMismatch):
            raise  # nothing else will work either
        except Exception as err:
            outcomes.append(UploadOutcome(item, error=redact(describe_error(err))))
    if progress:
        progress(len(items) * 1000, len(items) * 1000, "")
    return outcomes


def start_job(backend, steps: int, case_ids: list[str] | None = None, replay_fraction: float = 0.5,
              base_version: str | None = None) -> JobView:
    return JobView.from_json(backend.start_job(steps=int(steps), case_ids=case_ids, val_case_ids=None,
                                               base_version=base_version, replay_fraction=float(replay_fraction)))


def active_job(backend) -> JobView | None:
    """The job the backend runs or has queued (the running one first, else the oldest queued), or None."""
    jobs = [j for j in backend.jobs() if j["state"] in ("queued", "running")]
    jobs.sort(key=lambda j: (j["state"] != "running", j.get("created") or 0))
    return JobView.from_json(backend.job(jobs[0]["id"])) if jobs else None


def list_versions(backend) -> tuple[list[dict[str, Any]], str | None]:
    listing = backend.versions()
    return listing["versions"], listing["current"]


def fetch_version(backend, version: str, dest: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """A verified copy of `version` at `dest` (kept when already there and intact). Runs on a worker thread; its
    check is remembered, so that `use_model` on the GUI thread then does not hash the files again."""
    if dest.is_dir():
        try:
            verify_model_folder_cached(dest)
            return dest
        except Exception:
            pass  # damaged: fetch again
    path = backend.download_version(version, dest, progress=progress)
    verify_model_folder_cached(path)
    return path
