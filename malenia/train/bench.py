"""`malenia bench train`: training steps per second here, and the share of a step in each phase.

    malenia bench train [--config compact] [--batch-size 16] [--device cpu|cuda] [--steps 5] [--data DATASET]
                        [--workers W] [--warmup 1] [--compile [BACKEND]] [--profile FILE] [--json]

The trainer's own setup and step (malenia.train.loop.Trainer) on a dataset (default: 4 phantom cases
synthesised into a temporary folder), batches drawn as in training (loader workers, pinned memory). Phases:
data wait (next batch + copy to the device), forward (without matching), matching (Hungarian matching of every
block, inside the forward), losses, backward, optimizer (clipping, AdamW, schedule). After --warmup untimed steps
(default 1), --steps steps are timed; on CUDA every phase boundary synchronises the device (malenia.train.timing), so
steps/s is slightly below the training loop's. The load average is printed: on a shared machine other work
slows every phase. `--profile FILE` then runs --steps more steps under torch.profiler (CPU, and CUDA where it
runs) and writes its operator table to FILE: which operators and kernels the step's time goes to, and how many of
them a step launches; one more step then counts the operators by the source line that issued them. On a GPU whose
step is bound by latency rather than arithmetic (docs/training.md, "Training on a GPU machine without network")
the launch count is what a faster step has to cut.
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


def _issued(event) -> bool:
    """An aten operator the host dispatched itself, not one another operator ran inside it."""
    parent = event.cpu_parent
    return event.name.startswith("aten::") and not (parent is not None and parent.name.startswith("aten::"))


def _per_phase(events, steps: int) -> dict[str, float]:
    """Host-issued aten operators per step in each phase of the trainer's step (the forward with the matching), by
    start time within the phase's ranges (the backward's operators may run on the autograd engine's own thread)."""
    from torch.autograd import DeviceType

    ranges = [(e.name.split(":", 1)[1], e.time_range.start, e.time_range.end) for e in events
              if e.name.startswith("phase:")]
    counts = dict.fromkeys(("forward", "losses", "backward", "optimizer"), 0)  # the forward holds the matching
    for e in events:
        if e.device_type == DeviceType.CPU and _issued(e):
            phase = next((n for n, a, b in ranges if a <= e.time_range.start < b), None)
            if phase in counts:
                counts[phase] += 1
    return {k: v / steps for k, v in counts.items()}


# Operators that only re-describe a tensor's memory or make an empty one: no kernel on a GPU, and no source line to fix.
_VIEWS = frozenset({"view", "_unsafe_view", "reshape", "_reshape_alias", "transpose", "t", "permute", "expand",
                    "expand_as", "unsqueeze", "squeeze", "slice", "select", "split", "split_with_sizes", "unbind",
                    "chunk", "narrow", "diagonal", "unflatten", "flatten", "as_strided", "alias", "detach",
                    "view_as", "lift_fresh", "empty", "empty_strided", "new_empty_strided"})


def operator_sites(trainer, batch, top: int = 40) -> list[tuple[str, str, int]]:
    """One training step on `batch` with every operator that does work (views left out) attributed to the
    innermost line of `malenia` that issued it: [(phase, "file:line", count)], most first. The backward's operators
    come from autograd, not from a source line, and are counted as one row. Where a per-step count comes from, so
    that a faster step knows which line to change (docs/training.md, "Fewer operators")."""
    import collections
    import contextlib
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    phase, counts = ["other"], collections.Counter()

    class Sites(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._schema.name.split("::")[-1] not in _VIEWS:
                frames = [] if phase[0] == "backward" else reversed(traceback.extract_stack(limit=40))
                site = next((f"{f.filename.split('/malenia/')[-1]}:{f.lineno}" for f in frames
                             if "/malenia/" in f.filename and not f.filename.endswith("bench.py")),
                            "(autograd)" if phase[0] == "backward" else "(elsewhere)")
                counts[(phase[0], site)] += 1
            return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def in_phase(name: str):
        outer, phase[0] = phase[0], name
        try:
            yield
        finally:
            phase[0] = outer

    with Sites():
        trainer.train_step(*batch, in_phase)
    return [(p, site, n) for (p, site), n in counts.most_common(top)]


def profile_steps(trainer, batches, device, steps: int, path: Path) -> dict[str, Any]:
    """`steps` training steps under torch.profiler; writes the operator table (by self time on the device that
    ran them) to `path` atomically and returns the counts per step: aten operators the host dispatched (in all and
    per phase), and CUDA kernels launched (None on the CPU). On a latency-bound GPU step most dispatched operators
    launch a kernel (views and shape queries do not)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    from malenia.atomic import write_text
    from malenia.train.data import to_device

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            values = trainer.train_step(*to_device(next(batches), device), lambda phase: record_function(f"phase:{phase}"))
        float(values["total"])
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.events()
    issued = sum(1 for e in events if e.device_type == DeviceType.CPU and _issued(e)) / steps
    kernels = sum(1 for e in events if e.device_type == DeviceType.CUDA) / steps if cuda else None
    phases = _per_phase(events, steps)
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=50)
    head = (f"malenia bench train --profile: {steps} training steps on {device}; per step {issued:.0f} aten operators "
            f"dispatched by the host (" + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()) + ")"
            + (f", {kernels:.0f} CUDA kernels" if cuda else "") + "\n\n")
    sites = operator_sites(trainer, to_device(next(batches), device))
    by_line = ("\n\nOperators doing work in one more step, by the source line that issued them (views left out):\n"
               + "\n".join(f"{n:7d}  {p:<9} {site}" for p, site, n in sites) + "\n")
    write_text(path, head + table + by_line)
    return {"profile": str(path), "profiled_steps": steps, "aten_ops_per_step": issued,
            "aten_ops_per_phase": phases, "cuda_kernels_per_step": kernels}


def measure(config: str, batch: int | None = None, device: str = "auto", steps: int = 5, data: Path | None = None,
            workers: int | None = None, warmup: int = 1, precision: str = "auto",
            compile: str | None = None, profile: Path | None = None) -> dict[str, Any]:
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
        count = (2 * steps + 1 if profile else steps) + warmup  # profiled: the steps again, and one by source line
        batches = batch_loader(trainer.stream, 0, count, trainer.batch, workers=workers,
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
        profiled = profile_steps(trainer, batches, info.device, steps, Path(profile)) if profile else {}
    share = {k: timer.seconds.get(k, 0.0) / total for k in PHASES}
    return {"config": cfg.name, "batch_size": trainer.batch, "device": str(info.device), "steps": steps, "warmup": warmup,
            "workers": workers, "amp_bfloat16": trainer.precision.bfloat16, "precision": trainer.precision.name,
            "compile": compile, "warmup_s": warmup_s, "steps_per_s": steps / total,
            "step_s": total / steps, "share": share, "host_overhead_share": share["data_wait"] + share["matching"]
            + share["losses"], "load_average": list(load), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else None, **profiled}


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
    if r.get("profile"):
        kernels = r.get("cuda_kernels_per_step")
        per = ", ".join(f"{k} {v:.0f}" for k, v in r["aten_ops_per_phase"].items())
        lines.append(f"  profile of {r['profiled_steps']} more steps: {r['profile']} ({r['aten_ops_per_step']:.0f} aten "
                     f"operators dispatched a step: {per}" + (f"; {kernels:.0f} CUDA kernels" if kernels is not None
                                                              else "") + ")")
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
                     args.precision, args.compile, args.profile)
    print(json.dumps(result) if args.json else _table(result))
    return 0
