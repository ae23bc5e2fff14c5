"""Resumable training checkpoints, without pickle.

    RUN/checkpoints/step_00001200/weights.safetensors   network weights (the model state dict)
    RUN/checkpoints/step_00001200/state.safetensors     optimizer tensors and torch RNG states
    RUN/checkpoints/step_00001200/average.safetensors   with --ema: the averaged weights and their count
    RUN/checkpoints/step_00001200/state.json            step, scheduler, optimizer scalars, numpy/python RNG,
                                                        anything the loop adds (config, data, ...)
    RUN/checkpoints/latest.json                         {"step": N, "path": "step_..."}

Each step folder appears whole (malenia.atomic.atomic_dir) and `latest.json` is replaced only after it,
so a run killed at any moment resumes from the last complete checkpoint: it loses at most one interval.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from malenia.atomic import atomic_dir, write_json
from malenia.errors import InputError
from malenia.model.precision import standard_layout

LATEST = "latest.json"
AVERAGE = "average.safetensors"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Splits an optimizer state_dict into tensors (safetensors) and the rest (JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    py = random.getstate()
    meta = {"python": [py[0], list(py[1]), py[2]], "numpy": _jsonable(np.random.get_state())}
    return tensors, meta


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


@dataclass
class Checkpoint:
    step: int
    path: Path
    extra: dict[str, Any]


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any] | None = None, keep: int = 2,
                    average: torch.nn.Module | None = None) -> Path:
    """Writes RUN/checkpoints/step_N atomically, points latest.json at it, keeps the newest `keep`."""
    ckpt_root = Path(run_dir) / "checkpoints"
    name = f"step_{step:08d}"
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = _rng_state()
    meta = {
        "format": "malenia-checkpoint/1",
        "step": int(step),
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_meta,
        "extra": extra or {},
    }
    with atomic_dir(ckpt_root / name, overwrite=True) as staging:
        with standard_layout(unwrap(model)) as plain:
            save_model(plain, str(staging / "weights.safetensors"))  # drops aliased (shared) tensors
        save_file({**opt_tensors, **rng_tensors}, str(staging / "state.safetensors"))
        if average is not None:
            with standard_layout(average) as plain:
                save_model(plain, str(staging / AVERAGE))
        (staging / "state.json").write_text(json.dumps(meta), encoding="utf-8")
    write_json(ckpt_root / LATEST, {"step": int(step), "path": name})
    old = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir() and p.name != name)
    for stale in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(stale, ignore_errors=True)
    return ckpt_root / name


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.exists():
        return None
    try:
        path = Path(run_dir) / "checkpoints" / json.loads(pointer.read_text(encoding="utf-8"))["path"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(f"{pointer}: unreadable checkpoint pointer ({err})") from None
    if path.resolve().parent != pointer.parent.resolve():
        raise InputError(f"{pointer}: points outside its checkpoints folder ({path})")
    if path.is_dir():
        return path
    # Its folder was removed (by hand: save_checkpoint writes the pointer only after the folder). A run must not
    # silently start again from step 0 over its own checkpoints: resume from the newest one left, if any.
    left = sorted(p for p in pointer.parent.glob("step_*") if p.is_dir())
    if not left:
        raise InputError(f"{pointer} names {path.name}, which is gone, and no other checkpoint is left; remove "
                         f"{pointer.parent} to train this run from the start, or choose a new --out")
    print(f"warning: {pointer} names {path.name}, which is gone; resuming from {left[-1].name}", file=sys.stderr)
    return left[-1]


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, restore_rng: bool = True, average: torch.nn.Module | None = None) -> Checkpoint:
    """Restores weights (and optimizer, scheduler, RNG when given) from a step folder."""
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        state = load_file(str(path / "state.safetensors"))
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise InputError(f"checkpoint {path} is unreadable ({err})") from None
    if meta.get("format") != "malenia-checkpoint/1":
        raise InputError(f"checkpoint {path}: unknown format {meta.get('format')!r}")
    try:
        with standard_layout(unwrap(model)) as plain:  # safetensors' alias check needs the standard layout
            load_model(plain, str(path / "weights.safetensors"), strict=True)
    except RuntimeError as err:
        raise InputError(f"checkpoint {path} does not fit this model configuration: {str(err).splitlines()[0]}") from None
    except (OSError, SafetensorError) as err:  # a missing or truncated weights file
        raise InputError(f"checkpoint {path} is unreadable ({err})") from None
    if average is not None:
        _load_average(path, average)
    if optimizer is not None:
        optimizer.load_state_dict(_unflatten_optimizer(state, meta["optimizer"]))
        _parameter_layouts(optimizer)
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng:
        _set_rng_state(state, meta["rng"])
    return Checkpoint(int(meta["step"]), path, meta.get("extra", {}))


def _load_average(path: Path, average: torch.nn.Module) -> None:
    """The averaged weights of a run with --ema; a checkpoint written without --ema has none to resume."""
    if not (path / AVERAGE).exists():
        raise InputError(f"checkpoint {path} was written without --ema; resume it without --ema, or choose a new --out")
    with standard_layout(average) as plain:
        load_model(plain, str(path / AVERAGE), strict=True)


def _parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Each per-parameter state tensor (AdamW's moments) back in its parameter's memory layout. They are saved
    contiguous and come back so, while a bfloat16 CPU run keeps its convolution weights channels-last; torch's fused
    AdamW walks a parameter and its moments in memory order, so a resumed run would pair the wrong elements
    (found by the resume test when the trainer took the fused optimizer)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
