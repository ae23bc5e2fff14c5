"""Server settings as data: defaults here, overridden by DATA/server.json and then by the command line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from malenia.errors import InputError

GiB = 1024**3
MiB = 1024**2


@dataclass
class UploadLimits:
    """Refused before reading (Content-Length) and again while streaming."""

    max_request_bytes: int = 3 * GiB
    max_image_bytes: int = 2 * GiB
    max_lesions_bytes: int = 512 * MiB
    max_report_bytes: int = 2 * MiB
    # Checked from the NIfTI header before anything is decompressed (a 1.5 MB gzip may promise 1 GB of
    # zeros); 512 x 512 x 1600 is a whole body at 0.625 mm. Data under the cap is checked in 4 MiB chunks.
    max_voxels: int = 512 * 512 * 1600
    max_labels: int = 1000


@dataclass
class GeometryTolerance:
    """Image and lesion grids agree when size is equal and these hold (NIfTI stores float32)."""

    spacing_rtol: float = 1e-4
    origin_tol_voxels: float = 0.01  # fraction of the smallest spacing
    direction_atol: float = 1e-4


@dataclass
class ServerConfig:
    data_dir: Path
    limits: UploadLimits = field(default_factory=UploadLimits)
    geometry: GeometryTolerance = field(default_factory=GeometryTolerance)
    # Training jobs
    # "" = the base model's own config.json: a fine-tune continues its parent's architecture (input windows, head),
    # which a preset name may not match (malenia-compact 2.8.0 reads two HU windows, the `compact` preset one)
    train_config: str = ""
    launcher: str = "auto"  # auto | torchrun | python
    gpus: int | None = None  # None: count the local CUDA devices
    nnodes: int = 1  # > 1: torchrun rendezvous at rdzv_endpoint (docs/server.md)
    rdzv_endpoint: str | None = None
    train_command: list[str] | None = None  # replaces `python -m malenia.cli train` (tests, custom trainers)
    python: str | None = None  # runs training and validation; None: this Python (Slicer's local mode: PythonSlicer)
    subprocess_env: dict[str, str] | None = None  # added to the environment of those processes
    extra_train_args: list[str] = field(default_factory=list)
    max_steps: int = 1_000_000
    val_fraction: float = 0.2
    replay_dataset: str | None = None  # earlier training data (e.g. the synthetic set) offered for replay
    resume_interrupted: bool = True  # requeue jobs interrupted by a restart when their run has checkpoints
    resume_flag: str | None = None  # `malenia train` resumes by itself when --out holds checkpoints
    cancel_grace_s: float = 10.0
    # Model versions
    base_model: str | None = None  # imported as the first version on an empty server (default: built-in)
    promotion: str = "not_worse"  # not_worse | always | never
    promotion_tolerance: float = 0.0  # new val DSC may be this much lower and still count as not worse
    text_encoder: str | None = None  # for free-text descriptions; None: the knowledge default

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.launcher not in ("auto", "torchrun", "python"):
            raise InputError(f"launcher must be auto, torchrun or python, got {self.launcher!r}")
        if self.promotion not in ("not_worse", "always", "never"):
            raise InputError(f"promotion must be not_worse, always or never, got {self.promotion!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise InputError("nnodes > 1 needs rdzv_endpoint (HOST:PORT of the rendezvous)")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        return out


def load_config(data_dir: str | Path, overrides: dict[str, Any] | None = None) -> ServerConfig:
    """Defaults, then DATA/server.json (if present), then `overrides` (None values ignored)."""
    data_dir = Path(data_dir)
    values: dict[str, Any] = {}
    path = data_dir / "server.json"
    if path.exists():
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(values, dict):
            raise InputError(f"{path}: must hold a JSON object")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values.pop("data_dir", None)
    known = {f.name for f in fields(ServerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown server setting(s) {unknown}; known: {sorted(known - {'data_dir'})}")
    limits = _sub(UploadLimits, values.pop("limits", {}), "limits")
    geometry = _sub(GeometryTolerance, values.pop("geometry", {}), "geometry")
    return ServerConfig(data_dir=data_dir, limits=limits, geometry=geometry, **values)


def _sub(cls, obj: Any, name: str):
    if isinstance(obj, cls):
        return obj
    if not isinstance(obj, dict):
        raise InputError(f"server setting {name!r} must be an object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise InputError(f"unknown {name} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**obj)
