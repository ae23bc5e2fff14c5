"""The training loop: `train(TrainOptions) -> TrainResult`, run by a `Trainer` laid out as nnU-Net's:
`setup` (data, bank, network, optimiser, schedule, resume), `train_step`, `validate`, `checkpoint`, `finish`.

One process (CPU or one GPU) or several through torchrun (DDP, DistributedSampler). Per step: a batch of
lesion-centred patches (built ahead by loader worker processes, malenia.train.data.batch_loader, copied from
pinned memory) -> MaleniaNet(image, bank, bank_aspects, targets) -> MaleniaCriterion -> AdamW with gradient
clipping; bfloat16 autocast where the device computes it natively and channels-last on CPU
(malenia.model.precision). The learning rate follows a warm-up cosine over `steps`, or over the wall
time with `minutes` (a time-limited run ends annealed). A step does not wait on the device: the loss values
are read back (one synchronisation) only when a metrics line, a checkpoint or the end needs them. Every
`checkpoint_every` steps a resumable checkpoint (malenia.train.checkpoint); every `val_every` steps a
patch-level validation Dice on fixed validation patches; `RUN/metrics.jsonl` gets one line per logged step.
At the end RUN/model is a model folder (malenia.model.folder). Launching again with the same RUN resumes from
the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from malenia.data.sampler import augment_config
from malenia.errors import InputError
from malenia.model.precision import compile_network, resolve_precision
from malenia.train.averaging import averaged_network, freeze, weight_average
from malenia.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, unwrap
from malenia.train.distributed import DistInfo, barrier, init_distributed, max_across, mean_values, shutdown, wrap_model
from malenia.train.progress import Progress
from malenia.train.schedule import (WallClockSchedule, build_optimizer, build_scheduler, freeze_input_channels,
                                    parameter_groups)
from malenia.train.timing import untimed

MAX_SKIPPED_IN_A_ROW = 20  # bfloat16 steps with non-finite gradients before the run counts as diverged


@dataclass
class TrainOptions:
    data: Path
    out: Path
    config: Any  # MaleniaConfig
    steps: int | None = None  # default: config.optim.epochs * iterations_per_epoch (with `minutes`: no limit)
    split: str | None = "train"
    val_split: str | None = "val"
    replay: Path | None = None  # a second dataset mixed in (retraining: keeps old lesion types)
    replay_fraction: float = 0.5
    hard_negatives: Path | list[Path] | None = None  # `malenia mine`'s false positives of the main dataset (files merged)
    hard_negative_fraction: float = 0.5  # share of the background patches placed on them
    missed_fraction: float = 0.0  # share of the lesion patches drawn among the lesions those files record as missed
    replay_hard_negatives: Path | list[Path] | None = None  # the same, mined on the replay dataset
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
    num_workers: int | None = None  # loader worker processes; None: malenia.train.data.default_workers()
    # the manifest's name and version; None: a fine-tune keeps --init's name, versioned "<its version>+ft" (semver
    # build metadata), so a report says what it descends from; from scratch "malenia" and "0"
    model_name: str | None = None
    model_version: str | None = None
    training_data: str = ""
    text_encoder: str | None = None
    max_seconds: float | None = None  # stop early (checkpoint + model folder) after this wall time
    minutes: float | None = None  # the run's wall time (all launches): the schedule is laid over it, then it stops
    report_style: str = "paragraph"  # single-positive ablations: "paragraph" (8 descriptions) or "raw" (type only)
    precision: str = "auto"  # malenia.model.precision: auto (bfloat16 where native), bf16 or fp32
    augment: dict[str, Any] | None = None  # AugmentConfig fields changed from the sampler's defaults
    compile: str | None = None  # torch.compile backend over the fixed-shape parts (malenia.model.precision); None: eager
    ema: float | None = None  # decay of an average of the weights that validation reads and the model folder ships
    freeze: tuple[str, ...] = ()  # parameter-name prefixes left untrained (malenia.train.averaging.freeze)


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


def total_steps(opts: TrainOptions) -> int | None:
    if opts.steps is not None:
        return int(opts.steps)
    if opts.minutes:
        return None  # the time is the limit
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

    def keep_until(self, step: int) -> None:
        """Drops the lines of steps after `step`: a launch killed after its last checkpoint logged steps that the
        resumed launch trains again (and a line cut by the kill); the file then holds each step once."""
        if not self.enabled or not self.path.exists():
            return
        from malenia.atomic import write_text

        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, obj: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()


def train(opts: TrainOptions) -> TrainResult:
    info = init_distributed(opts.device)
    trainer = None
    try:
        trainer = Trainer(opts, info)
        trainer.setup()
        result = trainer.run()
        # Rank 0 writes the model folder after the loop; the others wait for it so that no process tears
        # down the process group while another still uses it (gloo aborts the early leaver otherwise).
        barrier(info)
        return result
    finally:
        # The DDP wrapper holds the process group and its gloo worker threads: released here, while the
        # interpreter is whole, not at exit, where tearing them down can abort a rank (seen once in CI:
        # "terminate called without an active exception", SIGABRT after a finished 2-process run).
        del trainer
        gc.collect()
        shutdown(info)


class Trainer:
    def __init__(self, opts: TrainOptions, info: DistInfo):
        self.opts, self.info, self.cfg = opts, info, opts.config
        self.run_dir = Path(opts.out)
        self.steps = total_steps(opts)
        if self.steps is not None and self.steps < 1:
            raise InputError("--steps must be at least 1")
        if opts.minutes is not None and opts.minutes <= 0:
            raise InputError("--minutes must be positive")
        for flag, every in (("--val-every", opts.val_every), ("--log-every", opts.log_every),
                            ("--checkpoint-every", opts.checkpoint_every)):
            if every < 1:
                raise InputError(f"{flag} must be at least 1 (steps), not {every}")
        self.budget_s = opts.minutes * 60 if opts.minutes else None
        self.batch = int(opts.batch_size or self.cfg.optim.batch_size)
        self.precision = resolve_precision(opts.precision, info.device)
        self.skipped_steps = self.skipped_in_a_row = 0
        self.losses: list[float] = []
        self._pending: list[tuple[int, dict[str, torch.Tensor]]] = []  # steps whose values are not read back yet
        self.val_dsc: float | None = None
        self.start, self.seconds_before = 0, 0.0

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from contextlib import nullcontext

        from malenia.atomic import no_empty_folder_left

        # refused before the first step (an --init of another network, a split without cases, texts the bank cannot
        # embed, Ctrl+C): no empty run folder (nor folders above it) left behind that a later run would take for its own
        with no_empty_folder_left(self.run_dir) if self.info.is_main else nullcontext():
            if self.info.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            barrier(self.info)
            _seed_everything(self.opts.seed)
            self._setup_data()
            self._setup_model()
            self._resume()
        self.log = _MetricsLog(self.run_dir / "metrics.jsonl", self.info.is_main)
        self.log.keep_until(self.start)
        self.progress = Progress(self.steps or 0, self.opts.progress, "train", initial=self.start,
                                 enabled=self.info.is_main)

    def _setup_data(self) -> None:
        from malenia.data.dataset import read_dataset
        from malenia.train.data import PatchStream, build_training_bank, fixed_patches

        opts, cfg, info = self.opts, self.cfg, self.info
        self.index = read_dataset(opts.data)
        train_ids = self.index.split_cases(opts.split)
        if not train_ids:
            raise InputError(f"dataset {opts.data} has no cases in split {opts.split!r}")
        val_ids = self.index.split_cases(opts.val_split) if opts.val_split and opts.val_split in self.index.split else []
        # Bank: every vocabulary description (+ free-text and whole-report rows of the training data).
        self.bank = build_training_bank(cfg, [opts.data] + ([opts.replay] if opts.replay else []), opts.text_encoder,
                                        opts.report_style, splits={opts.data: train_ids}, init=opts.init)
        self.augment = augment_config(opts.augment)
        self.stream = PatchStream(opts.data, opts.split, cfg, self.bank, seed=opts.seed, augment=self.augment,
                                  samples_per_epoch=cfg.optim.iterations_per_epoch * self.batch * info.world_size,
                                  replay=opts.replay, replay_fraction=opts.replay_fraction,
                                  hard_negatives=opts.hard_negatives, hard_negative_fraction=opts.hard_negative_fraction,
                                  missed_fraction=opts.missed_fraction, replay_hard_negatives=opts.replay_hard_negatives)
        self.val_set = (fixed_patches(opts.data, val_ids, cfg, self.bank, opts.val_patches, seed=opts.seed + 1)
                        if val_ids and info.is_main else [])

    def _setup_model(self) -> None:
        from malenia.model.folder import FIRST_CONV
        from malenia.model.losses import MaleniaCriterion
        from malenia.model.network import MaleniaNet

        opts, cfg, dev = self.opts, self.cfg, self.info.device
        self.model = MaleniaNet(cfg)
        self.inherited = None  # a fine-tune keeps its parent's calibrated post-processing until calibrated itself
        self.inherited_files: dict[str, bytes] = {}  # ... its measured-attribute classifiers and lesion verifier
        self.lineage: list[dict[str, Any]] = []  # the training stages this run continues, oldest first
        parent_channels = self._load_init() if opts.init else 0
        self.frozen = freeze(self.model, tuple(opts.freeze))
        self.precision.prepare_model(self.model.to(dev))
        self.average = weight_average(self.model, opts.ema)  # before compiling: the copy stays eager
        if opts.compile:
            compile_network(self.model, opts.compile)
        self.criterion = MaleniaCriterion(cfg)
        lr = opts.lr or cfg.optim.lr
        own_rates = {}
        if parent_channels:
            own_rates[FIRST_CONV] = cfg.optim.new_window_lr_scale
            freeze_input_channels(self.model.get_parameter(FIRST_CONV), parent_channels)
        self.optimizer = build_optimizer(parameter_groups(self.model, lr, cfg.optim.dense_head_lr_scale, own_rates),
                                         lr, cfg.optim.weight_decay, tuple(cfg.optim.betas))
        if self.budget_s is not None:
            o = cfg.optim
            self.scheduler = WallClockSchedule(self.optimizer, o.warmup_epochs / o.epochs if o.epochs else 0.0,
                                               opts.warmup_steps)
        else:
            self.scheduler = build_scheduler(self.optimizer, self.steps, default_warmup(self.opts, self.steps))
        self.bank_t = torch.as_tensor(self.bank.embeddings, dtype=torch.float32, device=dev)
        self.aspects_t = torch.as_tensor(self.bank.aspect_index, dtype=torch.int64, device=dev)

    def _load_init(self) -> int:
        """Loads --init's weights; returns the parent's input channels when this network adds windows, else 0."""
        from malenia.model.folder import WEIGHTS, load_model_folder, load_weights

        init = load_model_folder(self.opts.init, build_network=False)
        new_parts: tuple[str, ...] = ()
        if self.cfg.adds_dense_head_to(init.config):
            new_parts = ("dense.",)  # the parent's network plus a dense head that starts from its prior
        elif not self.cfg.loads_weights_of(init.config):
            from malenia.model.config import FREE_OVER_WEIGHTS

            theirs = init.config.architecture()
            differ = sorted(k for k, v in self.cfg.architecture().items()
                            if theirs.get(k) != v and k not in FREE_OVER_WEIGHTS)
            raise InputError(f"--init model {self.opts.init} has a different architecture than config {self.cfg.name!r} "
                             f"({', '.join(differ)}); leave out --config to fine-tune with --init's own config.json")
        widen = len(self.cfg.network_windows) > len(init.config.network_windows)
        load_weights(self.model, init.path / WEIGHTS, new_parts, widen_from=init.config if widen else None)
        self.inherited = init.inference_defaults().inherited_by(f"{init.name} {init.version}".strip())
        self.lineage = training_lineage(init.manifest)
        self.inherited_files = inherited_files(init)
        return len(init.config.network_windows) if widen else 0

    def _resume(self) -> None:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is not None:
            state = load_checkpoint(ckpt, self.model, self.optimizer, self.scheduler, restore_rng=True,
                                    average=self.average)
            self.start, self.seconds_before = state.step, float(state.extra.get("seconds_total", 0.0))
            if state.extra.get("config") not in (None, json.loads(json.dumps(self.cfg.to_dict()))):
                raise InputError(f"{self.run_dir} holds a run with another config; choose a new --out")
            self._check_same_options(state.extra)
        self.ddp = wrap_model(self.model, self.info)
        self.extra = {"config": self.cfg.to_dict(), "data": str(self.opts.data), "steps": self.steps,
                      "minutes": self.opts.minutes, "batch_size": self.batch, "world_size": self.info.world_size,
                      "seed": self.opts.seed, "ema": self.opts.ema, "freeze": list(self.opts.freeze),
                      "options": self._run_options()}

    def _run_options(self) -> dict[str, Any]:
        """The options that decide what a run trains on and how (its data, batches and schedule), as the flags
        that set them; a resumed launch must give the same ones. Free to change between launches: --max-minutes,
        --workers, --threads, --device, --precision and how often it logs, validates and checkpoints."""
        o = self.opts
        options = {"--data": paths(o.data), "--split": o.split, "--val-split": o.val_split, "--replay": paths(o.replay),
                   "--replay-fraction": o.replay_fraction, "--hard-negatives": paths(o.hard_negatives),
                   "--hard-negative-fraction": o.hard_negative_fraction, "--missed-fraction": o.missed_fraction,
                   "--replay-hard-negatives": paths(o.replay_hard_negatives), "--init": paths(o.init),
                   "--steps": self.steps, "--minutes": o.minutes, "--batch-size": self.batch, "--lr": o.lr,
                   "--warmup-steps": o.warmup_steps, "--seed": o.seed, "--augment": o.augment,
                   "--report-style": o.report_style, "--ema": o.ema, "--freeze": list(o.freeze)}
        return json.loads(json.dumps(options))

    def _check_same_options(self, saved_extra: dict[str, Any]) -> None:
        """InputError naming each option a resumed launch changed: the checkpoint's schedule, sampler position and
        optimiser state belong to the options it was written with, and a change would be silently ignored."""
        saved = saved_extra.get("options") or {  # checkpoints written before the options were recorded
            "--ema": saved_extra.get("ema"), "--freeze": saved_extra.get("freeze", [])}
        mine = self._run_options()
        changed = [f"{flag} {_shown(saved[flag])} (now {_shown(mine.get(flag))})" for flag in saved
                   if saved[flag] != mine.get(flag)]
        if changed:
            raise InputError(f"{self.run_dir} holds a run started with other options: {'; '.join(changed)}. Resume it "
                             "with the same options, choose a new --out, or continue from its model with --init "
                             f"{self.run_dir / 'model'}")

    # ---- the loop ------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from malenia.train.data import batch_loader, default_workers, to_device

        opts, info = self.opts, self.info
        workers = opts.num_workers if opts.num_workers is not None else default_workers(_processes_per_node(info))
        batches = batch_loader(self.stream, self.start, self.steps, self.batch, info.rank, info.world_size, workers,
                               pin_memory=info.device.type == "cuda")
        self.t_start = time.perf_counter()
        self._now = self.seconds_before
        step = self.start
        self.progress.emit(step, "resuming" if step else "starting", stage="train", fraction=self._fraction())
        try:
            while not self._finished(step):
                # The global batch of step s is the same whatever the number of processes (see PatchStream.batch).
                values = self.train_step(*to_device(next(batches), info.device))
                step += 1
                self._pending.append((step, values))
                self._after_step(step)
            self.checkpoint(step, force=step > self.start)
        finally:
            self.progress.close()
        return self.finish(step)

    def train_step(self, images: torch.Tensor, targets: list, timer=untimed) -> dict[str, torch.Tensor]:
        """One optimiser step; returns the loss terms and gradient norm as device tensors (nothing read back).
        `timer(phase)`: a context per phase (malenia.train.timing, for `malenia bench train`)."""
        self.ddp.train()
        images = self.precision.prepare_input(images)
        with self.precision.autocast():
            dense_stage = self.cfg.train_stage == "dense"
            with timer("forward"):
                output = self.ddp(images, self.bank_t, self.aspects_t, None if dense_stage else targets,
                                  dense_only=dense_stage)
            with timer("losses"):
                parts = self.criterion.dense_stage(output, targets) if dense_stage else self.criterion(output, targets)
        with timer("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
        with timer("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.ddp.parameters(), self.cfg.optim.grad_clip)
            if self._finite_gradients(grad_norm):
                self.optimizer.step()
                if self.average is not None:
                    self.average.update_parameters(unwrap(self.ddp))
            self._now = self._elapsed()  # the time every process agrees on (the schedule and the stop use it)
            if isinstance(self.scheduler, WallClockSchedule):
                self.scheduler.fraction = self._fraction()
            self.scheduler.step()
        return {k: v.detach() for k, v in parts.items()} | {"grad_norm": grad_norm.detach()}

    def _finite_gradients(self, grad_norm: torch.Tensor) -> bool:
        """False (the step is skipped, as a gradient scaler would) when a bfloat16 backward gave non-finite
        gradients although the loss was finite: 77 of 1 869 steps of a CPU fine-tune, the overflow in the
        bottleneck's last convolution, not reproducible step by step (bfloat16 CPU kernels are not bitwise
        deterministic; docs/training.md, eighth round). One read-back per step, in bfloat16
        only, after the backward (the matching already reads its costs back once per step, so a GPU waits no
        longer); float32 never showed it and is not checked. Many skips in a row are a divergence."""
        if not self.precision.bfloat16 or bool(torch.isfinite(grad_norm)):
            self.skipped_in_a_row = 0
            return True
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise InputError(f"training diverged: {self.skipped_in_a_row} steps in a row gave non-finite gradients; "
                             "lower --lr or use --precision fp32")
        return False

    def _after_step(self, done: int) -> None:
        opts = self.opts
        if self.skipped_in_a_row:
            self.log.write({"step": done, "skipped": "non-finite gradients (bfloat16); no optimiser step"})
        last = self._finished(done)
        if done % opts.log_every == 0 or last or done == self.start + 1:
            self._flush(log_last=True)
        else:
            self.progress.emit(done, "", fraction=self._fraction())  # the last values read back, no new ones
        if self.val_set and (done % opts.val_every == 0 or last):
            self.validate(done)
        if done % opts.checkpoint_every == 0 and not last:
            self.checkpoint(done)

    def _flush(self, log_last: bool = False) -> None:
        """Reads back the pending steps' values (one synchronisation), checks them, logs the newest."""
        if not self._pending:
            return
        names = list(self._pending[-1][1])
        stacked = torch.stack([torch.stack([v[k].float() for k in names]) for _, v in self._pending])
        values = mean_values(stacked, self.info)  # [steps][names], the mean over processes
        for (step, _), row in zip(self._pending, values):
            if not math.isfinite(row[names.index("total")]):
                raise InputError(f"training diverged at step {step} (loss {row[names.index('total')]}); lower --lr")
        self.losses.extend(row[names.index("total")] for row in values)
        done, row = self._pending[-1][0], dict(zip(names, values[-1]))
        self._pending.clear()
        loss = row.pop("total")
        if log_last:
            self.log.write({"step": done, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                            "grad_norm": row.pop("grad_norm"), "seconds": round(time.perf_counter() - self.t_start, 2),
                            **row})
        self.progress.emit(done, "", loss=loss, val_dsc=self.val_dsc, fraction=self._fraction())

    def _elapsed(self) -> float:
        """Wall seconds of the run over all launches; the same number in every process (the schedule uses it)."""
        return max_across(self.seconds_before + time.perf_counter() - self.t_start, self.info)

    def _fraction(self, elapsed: float | None = None) -> float | None:
        """Elapsed share of the time budget (None without one); by default at the last step's end."""
        return min(1.0, (self._now if elapsed is None else elapsed) / self.budget_s) if self.budget_s else None

    def _finished(self, step: int) -> bool:
        if self.steps is not None and step >= self.steps:
            return True
        if self.budget_s is not None and self._fraction() >= 1.0:
            return True
        launch = self._now - self.seconds_before
        return step > self.start and self.opts.max_seconds is not None and launch > self.opts.max_seconds

    # ---- validation, checkpoints, the model folder ----------------------------------------------------------
    def validate(self, done: int) -> None:
        self.val_dsc = validate(self._shipped(), self.val_set, self.bank_t, self.aspects_t, self.info.device,
                                dense_only=self.cfg.train_stage == "dense")
        self.log.write({"step": done, "val_dsc": self.val_dsc})
        self.progress.emit(done, "", val_dsc=self.val_dsc, fraction=self._fraction())

    def _shipped(self) -> torch.nn.Module:
        """The weights validation measures and the model folder holds: the average with --ema, else the network."""
        return averaged_network(self.average, unwrap(self.ddp))

    def checkpoint(self, done: int, force: bool = True) -> None:
        self._flush()
        if not force:
            return
        if self.info.is_main:
            self.extra["seconds_total"] = round(self.seconds_before + time.perf_counter() - self.t_start, 1)
            save_checkpoint(self.run_dir, done, self.ddp, self.optimizer, self.scheduler, self.extra,
                            average=self.average)
        barrier(self.info)

    def _model_is_current(self, step: int) -> bool:
        """True when RUN/model is a model folder this run wrote at `step` (its manifest says so)."""
        from malenia.errors import ModelError
        from malenia.model.folder import read_manifest

        try:
            manifest = read_manifest(self.run_dir / "model")
        except ModelError:
            return False
        return (manifest.get("training") or {}).get("steps") == step

    def finish(self, final_step: int) -> TrainResult:
        """Rank 0 writes RUN/model, a model folder with the final weights."""
        model_dir = None
        seconds = time.perf_counter() - self.t_start
        if self.info.is_main and final_step == self.start and self._model_is_current(final_step):
            # a finished run launched again trains nothing: its model folder, and what was fitted into it since
            # (calibration, verifier, appearance check), stay as they are
            model_dir = self.run_dir / "model"
            self.progress.emit(final_step, "already trained; model folder kept", stage="done", fraction=1.0)
        elif self.info.is_main:
            model_dir = self._write_model(final_step, seconds)
            self.progress.emit(final_step, "model folder written", stage="done", val_dsc=self.val_dsc, fraction=1.0)
        barrier(self.info)
        return TrainResult(final_step, seconds, self.losses[-1] if self.losses else None, self.losses, model_dir,
                           self.start, self.val_dsc)

    def _write_model(self, final_step: int, seconds: float) -> Path:
        from malenia.model.folder import save_model_folder

        opts, info = self.opts, self.info
        training = {"steps": final_step, "of_steps": self.steps, "minutes": opts.minutes,
                    "batch_size": self.batch * info.world_size, "seconds_this_launch": round(seconds, 1),
                    "seconds_total": round(self.seconds_before + seconds, 1), "val_patch_dsc": self.val_dsc,
                    "seed": opts.seed, "precision": self.precision.name,
                    "compile": opts.compile, "skipped_steps": self.skipped_steps}
        if opts.ema is not None:
            training["ema"] = opts.ema  # the weights are the average, not the last step's
        if opts.freeze:
            training["frozen"] = {"prefixes": list(opts.freeze), "parameters": self.frozen}
        # what the sampler ran with, defaults included: test-time mirroring follows its flip axes
        training["augment"] = dataclasses.asdict(self.augment)
        return save_model_folder(
            self.run_dir / "model", config=self.cfg, network=self._shipped(), bank=self.bank.inference_bank(),
            knowledge_table=_knowledge_table_json(), **model_identity(opts, self.lineage[-1] if self.lineage else None),
            training_data=opts.training_data or f"{self.index.name} ({opts.data}), split {opts.split}",
            overwrite=True, report_rows=None if self.cfg.multi_positive else self.bank.report_embeddings,
            inference=self.inherited, files=self.inherited_files,
            extra={"training": training} | ({"lineage": self.lineage} if self.lineage else {})
            | inherited_markers(self.inherited_files, self.lineage),
        )


def inherited_files(init) -> dict[str, bytes]:
    """What a fine-tune keeps of its --init model folder as is: the measured-attribute classifiers, which
    read lesion measurements, not the network (malenia.knowledge.measured_attributes), and the lesion
    verifier (malenia.model.lesion_verifier), which also reads the network's probability: like the calibrated
    post-processing it is the parent's until `malenia fit-verifier` runs on the new model; and the appearance
    check (malenia.knowledge.appearance), whose cut was calibrated on the parent's masks until `malenia
    knowledge openset --fit` runs on the new model."""
    from malenia.knowledge.appearance import FILE as APPEARANCE
    from malenia.model.lesion_verifier import FILE as VERIFIER
    from malenia.knowledge.measured_attributes import FILE as MEASURED

    return {f: (init.path / f).read_bytes() for f in (MEASURED, VERIFIER, APPEARANCE) if f in init.manifest.get("files", {})}


def inherited_markers(files: Mapping[str, bytes], lineage: list[dict[str, Any]]) -> dict[str, Any]:
    """Manifest entries saying which inherited files came from which parent."""
    from malenia.knowledge.appearance import FILE as APPEARANCE
    from malenia.model.lesion_verifier import FILE as VERIFIER
    from malenia.knowledge.measured_attributes import FILE as MEASURED

    parent = {"inherited_from": f"{lineage[-1]['name']} {lineage[-1]['version']}"} if lineage else {}
    keys = {MEASURED: "measured_attributes", VERIFIER: "lesion_verifier", APPEARANCE: "appearance"}
    return {keys[f]: dict(parent) for f in files if f in keys} if parent else {}


def paths(value: Path | list[Path] | None) -> list[str]:
    """One path, several or none, as resolved strings (a run resumed from another working folder is the same run)."""
    return [str(Path(x).resolve()) for x in ([value] if isinstance(value, (str, Path)) else value or [])]


def _shown(value: Any) -> str:
    """An option's value as a user typed it (one path for a single path, 'none' for an absent option)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return "none" if value in (None, []) else str(value)


def _processes_per_node(info: DistInfo) -> int:
    import os

    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if info.enabled else 1


def model_identity(opts: TrainOptions, parent: Mapping[str, Any] | None) -> dict[str, str]:
    """The manifest's name and version: as given, else those of `parent` (the lineage's last stage, --init's model)
    with "+ft" added as semver build metadata (".ft" once it has some: a fine-tune of a fine-tune), else "malenia"
    and "0"."""
    name, version = str((parent or {}).get("name") or "malenia"), str((parent or {}).get("version") or "")
    derived = (f"{version}.ft" if "+" in version else f"{version}+ft") if version else "0"
    return {"name": opts.model_name or name, "version": opts.model_version or derived}


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
def validate(model, patches, bank_t, aspects_t, device, dense_only: bool = False) -> float:
    """Mean Dice of the predicted foreground on fixed validation patches (a cheap, deterministic signal).
    `dense_only` (the dense stage, whose tokens are untrained): the dense head's map, without the token path."""
    model.eval()
    scores = []
    for image, gt in patches:
        if dense_only:
            prob = model(image.to(device)[None], bank_t, aspects_t, dense_only=True)[0].float().sigmoid()
        else:
            prob = model(image.to(device)[None], bank_t, aspects_t).foreground()
        fg = prob[0, 0] > 0.5  # the map inference thresholds (tokens, the dense head or their mean)
        g = gt.to(device)
        inter = (fg & g).sum().item()
        denom = fg.sum().item() + g.sum().item()
        scores.append(1.0 if denom == 0 else 2 * inter / denom)
    return float(np.mean(scores)) if scores else math.nan
