"""`malenia bench TARGET`: speed and memory measurements on this machine."""

from __future__ import annotations

import argparse
import importlib

from malenia.model.precision import COMPILE_BACKENDS, PRECISIONS

# The train group's options whose default is None: given to another target they would be ignored.
TRAIN_ONLY = (("batch_size", "--batch-size"), ("data", "--data"), ("compile", "--compile"), ("workers", "--workers"),
              ("profile", "--profile"))

# target -> "module:function"; each function takes the parsed args and prints its figures.
TARGETS = {
    "model": "malenia.evaluate.bench_model:run",
    "synth": "malenia.data.synthesis.bench:run",
    "segment": "malenia.infer.bench_segment:run",
    "train": "malenia.train.bench:run",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure speed and memory (model, segment, ...)")
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--config", default=None,
                   help="model configuration name (compact or paper; default compact): model and train measure it; "
                        "segment runs a freshly initialised model of it instead of the built-in one")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="segment: the model folder it runs (default: built-in); model: measure this folder's network "
                        "instead of --config's")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="train and segment: the network's arithmetic, as their --precision (default auto)")
    train = p.add_argument_group("train", "malenia bench train: steps/s and the share of a step in each phase")
    train.add_argument("--batch-size", type=int, default=None, help="patches per step (default: the config's)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    train.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step (default 5)")
    train.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones (default 1)")
    train.add_argument("--data", default=None, help="dataset (default: 4 phantom cases synthesised for the bench)")
    train.add_argument("--compile", nargs="?", const="inductor", choices=COMPILE_BACKENDS, default=None,
                       help="as train --compile: torch.compile the network's fixed-shape parts (compiling happens "
                            "in the warm-up steps)")
    train.add_argument("--workers", type=int, default=None, help="loader worker processes (default: from the CPU count)")
    train.add_argument("--profile", default=None, metavar="FILE",
                       help="then profile --steps more steps (torch.profiler) and write the operator table to FILE")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    module, func = TARGETS[args.target].split(":")
    return getattr(importlib.import_module(module), func)(args) or 0


def _check_options(args: argparse.Namespace) -> None:
    """Refuses, before any measuring, options the target would ignore (the figures would not be of what was named)
    and a --profile file that could not be written after the profiled steps."""
    from malenia.commands._runtime import require_output_file
    from malenia.errors import InputError

    if args.model is not None and args.target not in ("model", "segment"):
        raise InputError(f"--model does not apply to bench {args.target} (bench model and bench segment take it)")
    if args.target == "model" and args.model is not None and args.config is not None:
        raise InputError("bench model measures --config's network or --model's, not both")
    if args.target == "segment" and args.model is not None and args.config is not None:
        # --model's folder has its own config.json: a --config beside it would name a network that is not run
        raise InputError("bench segment runs --model's folder or a fresh model of --config, not both")
    if args.target == "segment" and args.config is not None:
        from malenia.model.config import get_config

        get_config(args.config)  # an unknown name refused now, not after the CT is made
    given = [flag for name, flag in TRAIN_ONLY if getattr(args, name) is not None]
    if given and args.target != "train":
        raise InputError(f"bench {args.target} does not take {', '.join(given)} (bench train's options)")
    if args.config is None and args.target != "segment" and not (args.target == "model" and args.model is not None):
        # the default is set here, not by argparse, so that a --config given can be told; segment keeps None:
        # without --config it runs the built-in model (a fresh compact one only where none is installed)
        args.config = "compact"
    require_output_file(args.profile, "--profile")
