"""`malenia train`: train (or fine-tune, or resume) a Malenia model on a dataset.

    malenia train --config compact --data DATASET --out RUN [--steps N | --minutes M] [--workers W] [--progress json]
    torchrun --nproc_per_node=8 -m malenia.cli train --config paper --data DATASET --out RUN

RUN/checkpoints/ (resumable), RUN/metrics.jsonl and, at the end, RUN/model/ (a model folder). Running the
same command again resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json

from malenia.commands._types import count, fraction, positive, whole
from malenia.model.precision import COMPILE_BACKENDS, PRECISIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (CPU, one GPU, or several through torchrun)")
    p.add_argument("--config", default=None,
                   help="model configuration: compact, paper, or a config.json (MaleniaConfig.to_dict); default: "
                        "--init's own config.json (a fine-tune keeps its parent's architecture), else compact")
    p.add_argument("--data", required=True, help="dataset folder (malenia-dataset/1)")
    p.add_argument("--out", required=True, help="run folder (created; an existing run is resumed)")
    p.add_argument("--init", default=None, help="start from this model folder's weights (fine-tuning)")
    p.add_argument("--steps", type=count, default=None, help="optimiser steps (default: from the config)")
    p.add_argument("--split", default="train", help="training split of the dataset (default: train; 'all' for all cases)")
    p.add_argument("--val-split", default="val", help="validation split (skipped when the dataset has none)")
    p.add_argument("--replay", default=None, help="a second dataset mixed into training (keeps earlier lesion types)")
    p.add_argument("--hard-negatives", action="append", default=None,
                   help="false positives of a model on --data (`malenia mine`): background patches are centred there "
                        "(repeatable: the files are merged case by case)")
    p.add_argument("--replay-hard-negatives", action="append", default=None,
                   help="the same for --replay: a model's mistakes mined on the replay dataset (repeatable)")
    p.add_argument("--hard-negative-fraction", type=fraction, default=0.5,
                   help="share of the background patches placed on a hard negative, in each dataset (default 0.5)")
    p.add_argument("--missed-fraction", type=fraction, default=0.0,
                   help="share of the lesion patches drawn among the lesions the hard-negatives files record as "
                        "missed by the mining model (default 0: every lesion alike)")
    p.add_argument("--replay-fraction", type=fraction, default=0.5, help="share of replay samples (default 0.5)")
    p.add_argument("--batch-size", type=count, default=None, help="patches per process and step (default: config)")
    p.add_argument("--lr", type=positive, default=None, help="peak learning rate (default: config)")
    p.add_argument("--warmup-steps", type=whole, default=None, help="linear warm-up steps (default: config's share)")
    p.add_argument("--checkpoint-every", type=count, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--val-every", type=count, default=200, help="steps between validations (default 200)")
    p.add_argument("--log-every", type=count, default=10, help="steps between lines of RUN/metrics.jsonl (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--threads", type=count, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="arithmetic: auto = bfloat16 autocast where the device computes it natively (CUDA, CPUs with "
                        "AVX512-BF16 or AMX), else float32; channels-last on CPU either way")
    p.add_argument("--compile", nargs="?", const="inductor", choices=COMPILE_BACKENDS, default=None,
                   help="torch.compile the network's fixed-shape parts (backend inductor unless named: fused kernels, "
                        "a minute or more of compiling first; no gain for compact at batch 16 on an H200, "
                        "docs/training.md)")
    p.add_argument("--minutes", type=positive, default=None,
                   help="train for this wall time: warm-up then a cosine that ends when the time is up, so the run "
                        "ends annealed (with --steps: whichever comes first; counted over resumed launches)")
    p.add_argument("--max-minutes", type=positive, default=None,
                   help="stop this launch after this wall time, checkpoint and write the model folder (resumable; "
                        "the schedule is not shortened: use --minutes for a time-limited run)")
    p.add_argument("--workers", type=whole, default=None,
                   help="processes drawing training batches ahead of the loop (default: from the CPU count; "
                        "0: in the training process); the patches are the same for any number")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999: about the last 1 000 steps); "
                        "validation reads it and the model folder ships it (docs/training.md, thirty-third round)")
    p.add_argument("--freeze", action="append", default=[], metavar="PREFIX",
                   help="leave the parameters whose names start with PREFIX untrained, e.g. backbone.encoder. "
                        "(repeatable; the backward then skips that part)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set multi_positive=false (ablations); repeatable")
    p.add_argument("--augment", action="append", default=[], metavar="KEY=VALUE",
                   help="change the sampler's augmentation (malenia.data.sampler.AugmentConfig), e.g. --augment "
                        "scale=[0.6,1.5] --augment flip_axes=[0,1]; repeatable, recorded in the manifest")
    p.add_argument("--report-style", choices=("paragraph", "raw"), default="paragraph",
                   help="single-positive ablations: the whole-report text (8 descriptions, or the lesion type only)")
    p.add_argument("--name", default=None,
                   help="model name written to the manifest (default: --init's name, else malenia)")
    p.add_argument("--version", default=None,
                   help="model version written to the manifest (default: --init's version + '+ft', else 0)")
    p.add_argument("--training-data", default="", help="description of the training data for the manifest")
    p.add_argument("--text-encoder", default=None, help="text encoder name or local folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                   help="bar: tqdm; json: one JSON object per line on stdout")
    # what an interrupted run leaves: its checkpoints, which the same command resumes
    p.set_defaults(func=run, interrupted_note="the checkpoints written so far stay in RUN/checkpoints and the same "
                                              "command resumes from the last one")


def parse_overrides(items: list[str], option: str = "--set") -> dict:
    """`KEY=VALUE` strings -> config changes; VALUE is JSON (true, 0.5, [1,2]) or a bare string."""
    from malenia.errors import InputError

    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"{option} needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def build_config(name: str, overrides: list[str]):
    """The config named or read from a config.json, with the `--set` changes; InputError for any bad value."""
    from malenia.errors import InputError, ModelError
    from malenia.model.config import get_config

    try:
        return _config_with(name, overrides)
    except ModelError as err:  # a value out of range in --set or in the config file: the user's input
        raise InputError(str(err)) from None


def _config_with(name: str, overrides: list[str]):
    import dataclasses

    from malenia.errors import InputError
    from malenia.model.config import get_config

    if name.endswith(".json"):
        from pathlib import Path

        from malenia.model.config import MaleniaConfig

        try:
            cfg = MaleniaConfig.from_dict(json.loads(Path(name).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"cannot read model config {name}: {err}") from None
    else:
        cfg = get_config(name)
    changes = parse_overrides(overrides)
    # "optim.lr=..." and the like reach the optimiser's own config
    optim = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("optim.")}
    changes = {k: v for k, v in changes.items() if not k.startswith("optim.")}
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - fields) + sorted(f"optim.{k}" for k in set(optim) - {f.name for f in dataclasses.fields(cfg.optim)})
    if unknown:
        raise InputError(f"unknown config field(s) {unknown} in --set")
    if optim:
        changes["optim"] = dataclasses.replace(cfg.optim, **optim)
    return cfg.replace(**changes) if changes else cfg


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from malenia.commands._runtime import require_output_folder
    from malenia.data.dataset import require_dataset
    from malenia.data.sampler import augment_config
    from malenia.atomic import check_replaceable
    from malenia.model.folder import MANIFEST, verify_model_folder
    from malenia.train.loop import TrainOptions, train

    if args.threads:
        torch.set_num_threads(args.threads)
    require_output_folder(args.out)
    # what the run writes at its end is refused now, not after the training: RUN/model replaces only a model folder
    check_replaceable(Path(args.out) / "model", MANIFEST)
    data = require_dataset(args.data)
    if args.replay:
        require_dataset(args.replay, "--replay")
    if args.init:
        verify_model_folder(args.init)  # a missing or damaged --init is a model error, before its config is read
    cfg = build_config(args.config or (str(Path(args.init) / "config.json") if args.init else "compact"), args.set)
    opts = TrainOptions(
        data=data, out=Path(args.out), config=cfg, steps=args.steps, split=args.split, val_split=args.val_split,
        replay=Path(args.replay) if args.replay else None, replay_fraction=args.replay_fraction,
        hard_negatives=[Path(f) for f in args.hard_negatives] if args.hard_negatives else None,
        hard_negative_fraction=args.hard_negative_fraction, missed_fraction=args.missed_fraction,
        replay_hard_negatives=[Path(f) for f in args.replay_hard_negatives] if args.replay_hard_negatives else None,
        init=Path(args.init) if args.init else None, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, checkpoint_every=args.checkpoint_every, val_every=args.val_every,
        log_every=args.log_every,
        progress=args.progress, seed=args.seed, device=args.device, model_name=args.name,
        model_version=args.version, training_data=args.training_data, text_encoder=args.text_encoder,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None, report_style=args.report_style,
        minutes=args.minutes, num_workers=args.workers, precision=args.precision, compile=args.compile,
        augment=parse_overrides(args.augment, "--augment") or None, ema=args.ema, freeze=tuple(args.freeze),
    )
    augment_config(opts.augment)  # a bad field is refused before training sets up
    result = train(opts)
    if result.model_dir is not None and args.progress != "json":
        loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
        print(f"trained to step {result.steps} in {result.seconds / 60:.1f} min (final loss {loss}); model: {result.model_dir}")
    return 0
