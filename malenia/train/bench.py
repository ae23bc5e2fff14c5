"""`malenia bench train`: training steps per second here, and the share of a step in each phase.

    malenia bench train [--config compact] [--batch-size 16] [--device cpu|cuda] [--steps 5] [--data DATASET]
                        [--workers W] [--warmup 1] [--compile [BACKEND]] [--json]

The trainer's own setup and step (malenia.train.loop.Trainer) on a dataset (default: 4 phantom cases
synthesised into a temporary folder), batches drawn as in training (loader workers, pinned memory). Phases:
data wait (next batch + copy to the device), forward (without matching), matching (Hungarian matching of every
block, inside the forward), losses, backward, optimizer (clipping, AdamW, schedule). After --warmup untimed steps
(default 1), --steps steps are timed; on CUDA every phase boundary synchronises the device (malenia.train.timing), so
steps/s is slightly below the training loop's. The load average is printed: on a shared machine other work
slows every phase.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("data_wait", "forward", "matching", "losses", "backward", "optimizer")


def _bench_dataset(folder: Path, patch: tuple[int, ...]) -> Path:
    from malenia.data.synthesis.generate import synthesize_dataset

    size = max(96, max(patch) + 16)
    synthesize_dataset(folder, ["phantom"], ["liver_tumor", "kidney_cyst", "lung_tumor", "colon_tumor"], 4, 0,
                       size=(size, size, size), val_fraction=0.0, test_fraction=0.0, progress=None)
    return folder


def _config(name: str):
    """A config by name (compact, paper) or a config.json (MaleniaConfig.to_dict)."""
    from malenia.errors import InputError
    from malenia.model.config import MaleniaConfig, get_config

    if not name.endswith(".json"):
        return get_config(name)
    try:
        return MaleniaConfig.from_dict(json.loads(Path(name).read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise InputError(f"cannot read model config {name}: {err}") from None


def measure(config: str, batch: int | None = None, device: str = "auto", steps: int = 5, data: Path | None = None,
            workers: int | None = None, warmup: int = 1, precision: str = "auto",
            compile: str | None = None) -> dict[str, Any]:
    import torch

    from malenia.train.data import batch_loader, default_workers, to_device
    from malenia.train.distributed import init_distributed
    from malenia.train.loop import Trainer, TrainOptions
    from malenia.train.timing import PhaseTimer

    cfg = _config(config)
    with tempfile.TemporaryDirectory(prefix="malenia-bench-") as tmp:
        data = Path(data) if data else _bench_dataset(Path(tmp) / "data", tuple(cfg.patch_size))
        info = init_distributed(device)
        opts = TrainOptions(data=data, out=Path(tmp) / "run", config=cfg, steps=steps + warmup, split="all", val_split=None,
                            batch_size=batch, progress="none", num_workers=workers, precision=precision, compile=compile)
        trainer = Trainer(opts, info)
        trainer.setup()
        workers = workers if workers is not None else default_workers()
        batches = batch_loader(trainer.stream, 0, steps + warmup, trainer.batch, workers=workers,
                               pin_memory=info.device.type == "cuda")
        trainer.t_start, trainer._now = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        for _ in range(warmup):  # allocations, cuDNN's choices, compiling, workers starting
            trainer.train_step(*to_device(next(batches), info.device))
        if info.device.type == "cuda":
            torch.cuda.synchronize(info.device)  # the warm-up's queued work belongs to its time
        warmup_s = time.perf_counter() - t0
        timer = PhaseTimer(info.device)
        model = trainer.model
        model.matcher.supervise = timer.wrap("matching", model.matcher.supervise)
        load = os.getloadavg()
        start = time.perf_counter()
        for _ in range(steps):
            with timer("data_wait"):
                host = next(batches)
                images, targets = to_device(host, info.device)
            values = trainer.train_step(images, targets, timer)
        float(values["total"])  # the last step's work is done
        total = time.perf_counter() - start
    share = {k: timer.seconds.get(k, 0.0) / total for k in PHASES}
    return {"config": cfg.name, "batch_size": trainer.batch, "device": str(info.device), "steps": steps, "warmup": warmup,
            "workers": workers, "amp_bfloat16": trainer.precision.bfloat16, "precision": trainer.precision.name,
            "compile": compile, "warmup_s": warmup_s, "steps_per_s": steps / total,
            "step_s": total / steps, "share": share, "host_overhead_share": share["data_wait"] + share["matching"]
            + share["losses"], "load_average": list(load), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else None}


def _table(r: dict[str, Any]) -> str:
    where = r["gpu"] or f"CPU, {r['torch_threads']} threads of {r['cpus']} cores"
    lines = [f"malenia bench train --config {r['config']} --batch-size {r['batch_size']}  ({where}, torch {r['torch']}, "
             f"{r['workers']} loader workers, {r['precision']}"
             + (f", compiled with {r['compile']}" if r['compile'] else "") + ")",
             f"  {r['steps_per_s']:.3f} steps/s ({r['step_s']:.3f} s a step, {r['steps']} timed steps after {r['warmup']} warm-up "
             f"in {r['warmup_s']:.1f} s)"]
    for k in PHASES:
        lines.append(f"  {k:<10} {100 * r['share'][k]:5.1f} %")
    lines.append(f"  data wait + matching + losses: {100 * r['host_overhead_share']:.1f} % of a step")
    lines.append(f"  load average before: {r['load_average'][0]:.1f} on {r['cpus']} cores (other work slows every phase)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from malenia.errors import InputError

    if args.steps < 1:
        raise InputError("--steps must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if args.warmup < 0:
        raise InputError("--warmup must be 0 or more")
    result = measure(args.config, args.batch_size, args.device, args.steps, args.data, args.workers, args.warmup,
                     args.precision, args.compile)
    print(json.dumps(result) if args.json else _table(result))
    return 0
