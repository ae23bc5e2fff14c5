"""`malenia bench TARGET`: speed and memory measurements on this machine."""

from __future__ import annotations

import argparse
import importlib

# target -> "module:function"; each function takes the parsed args and prints its figures.
TARGETS = {
    "model": "malenia.evaluate.bench_model:run",
    "synth": "malenia.data.synthesis.bench:run",
    "segment": "malenia.infer.bench_segment:run",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure speed and memory (model, segment, ...)")
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--config", default="compact", help="model configuration name (compact or paper)")
    p.add_argument("--model", default=None, help="model folder (default: built-in)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    module, func = TARGETS[args.target].split(":")
    return getattr(importlib.import_module(module), func)(args) or 0
