"""The training loop: `train(TrainOptions) -> TrainResult`.

One process (CPU or one GPU) or several through torchrun (DDP, DistributedSampler). Per step: a batch of
lesion-centred patches -> MaleniaNet(image, bank, bank_aspects, targets) -> MaleniaCriterion -> AdamW with
gradient clipping and the warm-up cosine schedule; bfloat16 autocast on GPU. Every `checkpoint_every` steps
a resumable checkpoint (malenia.train.checkpoint); every `val_every` steps a patch-level validation Dice on
fixed validation patches; `RUN/metrics.jsonl` gets one line per logged step. At the end RUN/model is a model
folder (malenia.model.folder). Launching again with the same RUN resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from malenia.errors import InputError
from malenia.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, unwrap
from malenia.train.distributed import DistInfo, barrier, init_distributed, mean_across, shutdown, wrap_model
from malenia.train.progress import Progress
from malenia.train.schedule import build_optimizer, build_scheduler


@dataclass
class TrainOptions:
    data: Path
    out: Path
    config: Any  # MaleniaConfig
    steps: int | None = None  # default: config.optim.epochs * iterations_per_epoch
    split: str | None = "train"
    val_split: str | None = "val"
    replay: Path | None = None  # a second dataset mixed in (retraining: keeps old lesion types)
    replay_fraction: float = 0.5
    init: Path | None = None  # a model folder to start from
    batch_size: int | None = None  # per process; default config.optim.batch_size
    lr: float | None = None
    warmup_steps: int | None = None
    checkpoint_every: int = 100
    val_every: int = 200
    val_patches: int = 8
    log_every: int = 10
    progress: str = "bar"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    model_name: str = "malenia"
    model_version: str = "0"
    training_data: str = ""
    text_encoder: str | None = None
    max_seconds: float | None = None  # stop early (checkpoint + model folder) after this wall time
    report_style: str = "paragraph"  # single-positive ablations: "paragraph" (8 descriptions) or "raw" (type only)
    amp: bool = True


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float | None
    losses: list[float] = field(default_factory=list)  # global-batch loss per step of this launch
    model_dir: Path | None = None
    resumed_from: int = 0
    val_dsc: float | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def total_steps(opts: TrainOptions) -> int:
    if opts.steps is not None:
        return int(opts.steps)
    o = opts.config.optim
    return int(o.epochs * o.iterations_per_epoch)


def default_warmup(opts: TrainOptions, steps: int) -> int:
    if opts.warmup_steps is not None:
        return opts.warmup_steps
    o = opts.config.optim
    full = o.epochs * o.iterations_per_epoch
    return int(round(steps * o.warmup_epochs / o.epochs)) if full else 0


class _MetricsLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, obj: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()


def train(opts: TrainOptions) -> TrainResult:
    from malenia.model.losses import MaleniaCriterion
    from malenia.model.network import MaleniaNet

    info = init_distributed(opts.device)
    try:
        result = _train(opts, info, MaleniaNet, MaleniaCriterion)
        # Rank 0 writes the model folder after the loop; the others wait for it so that no process tears
        # down the process group while another still uses it (gloo aborts the early leaver otherwise).
        barrier(info)
        return result
    finally:
        shutdown(info)


def _train(opts, info: DistInfo, MaleniaNet, MaleniaCriterion):
    from malenia.data.dataset import read_dataset
    from malenia.train.data import PatchStream, build_training_bank, fixed_patches

    cfg = opts.config
    run = Path(opts.out)
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
    barrier(info)
    steps = total_steps(opts)
    if steps < 1:
        raise InputError("--steps must be at least 1")
    batch = int(opts.batch_size or cfg.optim.batch_size)
    _seed_everything(opts.seed)

    index = read_dataset(opts.data)
    train_ids = index.split_cases(opts.split)
    if not train_ids:
        raise InputError(f"dataset {opts.data} has no cases in split {opts.split!r}")
    val_ids = index.split_cases(opts.val_split) if opts.val_split and opts.val_split in index.split else []

    # Bank: every vocabulary description (+ free-text and whole-report rows of the training data).
    bank = build_training_bank(cfg, [opts.data] + ([opts.replay] if opts.replay else []), opts.text_encoder,
                               opts.report_style, splits={opts.data: train_ids})
    stream = PatchStream(opts.data, opts.split, cfg, bank, seed=opts.seed, augment=True,
                         samples_per_epoch=cfg.optim.iterations_per_epoch * batch * info.world_size,
                         replay=opts.replay, replay_fraction=opts.replay_fraction)

    model = MaleniaNet(cfg)
    inherited = None  # a fine-tune keeps its parent's calibrated post-processing until it is calibrated itself
    lineage: list[dict[str, Any]] = []  # the training stages this run continues, oldest first
    if opts.init:
        from malenia.model.folder import WEIGHTS, load_model_folder, load_weights

        init = load_model_folder(opts.init, build_network=False)
        if init.config.architecture() != cfg.architecture():
            raise InputError(f"--init model {opts.init} has a different architecture than config {cfg.name!r}")
        load_weights(model, init.path / WEIGHTS)
        inherited = init.inference_defaults().inherited_by(f"{init.name} {init.version}".strip())
        lineage = training_lineage(init.manifest)
    model.to(info.device)
    criterion = MaleniaCriterion(cfg)
    optimizer = build_optimizer(model.parameters(), opts.lr or cfg.optim.lr, cfg.optim.weight_decay, tuple(cfg.optim.betas))
    scheduler = build_scheduler(optimizer, steps, default_warmup(opts, steps))
    bank_t = torch.as_tensor(bank.embeddings, dtype=torch.float32, device=info.device)
    aspects_t = torch.as_tensor(bank.aspect_index, dtype=torch.int64, device=info.device)

    start, seconds_before = 0, 0.0
    ckpt = latest_checkpoint(run)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler, restore_rng=True)
        start, seconds_before = state.step, float(state.extra.get("seconds_total", 0.0))
        if state.extra.get("config") not in (None, json.loads(json.dumps(cfg.to_dict()))):
            raise InputError(f"{run} holds a run with another config; choose a new --out")
    ddp = wrap_model(model, info)

    log = _MetricsLog(run / "metrics.jsonl", info.is_main)
    progress = Progress(steps, opts.progress, "train", initial=start, enabled=info.is_main)
    progress.emit(start, "resuming" if start else "starting", stage="train")
    val_set = fixed_patches(opts.data, val_ids, cfg, bank, opts.val_patches, seed=opts.seed + 1) if val_ids and info.is_main else []

    use_amp = opts.amp and info.device.type == "cuda"
    losses: list[float] = []
    t_start = time.perf_counter()
    val_dsc = None
    step = start
    extra = {"config": cfg.to_dict(), "data": str(opts.data), "steps": steps, "batch_size": batch,
             "world_size": info.world_size, "seed": opts.seed}
    try:
        for step in range(start, steps):
            # The global batch of step s is the same whatever the number of processes (see PatchStream.batch).
            items = stream.batch(step, batch, info.rank, info.world_size)
            images, targets = stream.collate(items, info.device)
            ddp.train()
            with torch.autocast(device_type=info.device.type, dtype=torch.bfloat16, enabled=use_amp):
                output = ddp(images, bank_t, aspects_t, targets)
                parts = criterion(output, targets)
            loss = parts["total"]
            if not torch.isfinite(loss):
                raise InputError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            g_loss = mean_across(float(loss.detach()), info)
            losses.append(g_loss)
            done = step + 1
            if done % opts.log_every == 0 or done == steps or done == start + 1:
                row = {"step": done, "loss": g_loss, "lr": optimizer.param_groups[0]["lr"],
                       "grad_norm": float(grad_norm), "seconds": round(time.perf_counter() - t_start, 2),
                       **{k: mean_across(float(v.detach()), info) for k, v in parts.items() if k != "total"}}
                log.write(row)
            if val_set and (done % opts.val_every == 0 or done == steps):
                val_dsc = validate(unwrap(ddp), val_set, bank_t, aspects_t, info.device)
                log.write({"step": done, "val_dsc": val_dsc})
            progress.emit(done, "", loss=g_loss, val_dsc=val_dsc)
            over_time = opts.max_seconds is not None and time.perf_counter() - t_start > opts.max_seconds
            if done % opts.checkpoint_every == 0 or done == steps or over_time:
                if info.is_main:
                    extra["seconds_total"] = round(seconds_before + time.perf_counter() - t_start, 1)
                    save_checkpoint(run, done, ddp, optimizer, scheduler, extra)
                barrier(info)
            if over_time:
                step = done
                break
        else:
            step = steps
    finally:
        progress.close()
    final_step = step
    model_dir = None
    if info.is_main:
        from malenia.model.folder import save_model_folder

        training_data = opts.training_data or f"{index.name} ({opts.data}), split {opts.split}"
        model_dir = save_model_folder(
            run / "model", config=cfg, network=unwrap(ddp), bank=bank.inference_bank(),
            knowledge_table=_knowledge_table_json(), name=opts.model_name, version=opts.model_version,
            training_data=training_data, overwrite=True,
            report_rows=None if cfg.multi_positive else bank.report_embeddings, inference=inherited,
            extra={"training": {"steps": final_step, "of_steps": steps, "batch_size": batch * info.world_size,
                                "seconds_this_launch": round(time.perf_counter() - t_start, 1),
                                "seconds_total": round(seconds_before + time.perf_counter() - t_start, 1),
                                "val_patch_dsc": val_dsc, "seed": opts.seed}}
            | ({"lineage": lineage} if lineage else {}),
        )
        progress.emit(final_step, "model folder written", stage="done", val_dsc=val_dsc)
    barrier(info)
    return TrainResult(final_step, time.perf_counter() - t_start, losses[-1] if losses else None, losses,
                       model_dir, start, val_dsc)


def training_lineage(parent_manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages a model fine-tuned from `parent` continues: the parent's own lineage, then the parent."""
    train = parent_manifest.get("training") or {}
    stage = {"name": parent_manifest.get("name"), "version": parent_manifest.get("version"),
             "steps": train.get("steps"), "batch_size": train.get("batch_size"),
             "seconds": train.get("seconds_total", train.get("seconds_this_launch"))}
    return list(parent_manifest.get("lineage") or []) + [stage]


def _knowledge_table_json() -> dict[str, Any]:
    from malenia.knowledge.table import KnowledgeTable

    return KnowledgeTable.load().to_json()


@torch.no_grad()
def validate(model, patches, bank_t, aspects_t, device) -> float:
    """Mean Dice of the predicted foreground on fixed validation patches (a cheap, deterministic signal)."""
    from malenia.infer.predictor import foreground_probability

    model.eval()
    scores = []
    for image, gt in patches:
        out = model(image.to(device)[None], bank_t, aspects_t)
        fg = foreground_probability(out)[0, 0] > 0.5
        g = gt.to(device)
        inter = (fg & g).sum().item()
        denom = fg.sum().item() + g.sum().item()
        scores.append(1.0 if denom == 0 else 2 * inter / denom)
    return float(np.mean(scores)) if scores else math.nan
