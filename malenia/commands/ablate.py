"""`malenia ablate`: the paper's ablations (Tables 3 and 4) at small scale, same data, steps and seed.

    malenia ablate --data SEEN --out DIR --steps N --eval UNSEEN_DATASET:test --eval SEEN_DATASET:test

Variants (config switches of malenia.model.config; `report` = the whole-report text of single-positive runs):
  baseline   single-scale alignment, one positive per lesion: a short report naming the lesion type
  s1         + attribute descriptions: the positive is the paragraph of the lesion's 8 descriptions
  s2         + multi-scale alignment (all 3 blocks)
  s3         + multi-positive loss: the 8 descriptions are 8 positives (= full Malenia)
  no_cmki    s3 without CMKI's two-way attention (deep fusion)
  mask_only  s3 with the final mask from the mask-token branch only
  text_only  s3 with the final mask from the text branch only
Each variant trains into DIR/<variant>/ (resumable; a finished one is not retrained), is evaluated on every
--eval dataset, and DIR/ablation.md / ablation.json gather the measured numbers.
"""

from __future__ import annotations
from malenia.commands._types import count

import argparse

ABLATION_JSON, ABLATION_MD = "ablation.json", "ablation.md"  # DIR's tables

VARIANTS: dict[str, tuple[dict, str]] = {
    "baseline": ({"multi_scale_alignment": False, "multi_positive": False}, "raw"),
    "s1": ({"multi_scale_alignment": False, "multi_positive": False}, "paragraph"),
    "s2": ({"multi_scale_alignment": True, "multi_positive": False}, "paragraph"),
    "s3": ({}, "paragraph"),
    "no_cmki": ({"use_cmki": False}, "paragraph"),
    "mask_only": ({"branches": "mask"}, "paragraph"),
    "text_only": ({"branches": "text"}, "paragraph"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="train and evaluate the paper's ablation variants at small scale")
    p.add_argument("--data", required=True, help="training dataset (seen lesion types)")
    p.add_argument("--out", required=True, help="folder for one run per variant and the ablation table")
    p.add_argument("--config", default="compact", help="compact, paper, or a config.json")
    p.add_argument("--steps", type=count, required=True, help="optimiser steps per variant (same for all)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--eval", action="append", default=[], metavar="DATASET[:SPLIT]",
                   help="evaluation dataset (split default test); repeatable")
    p.add_argument("--split", default="train")
    p.add_argument("--max-cases", type=count, default=None, help="evaluate at most N cases per dataset")
    p.add_argument("--batch-size", type=count, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=count, default=None)
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from malenia.atomic import write_json, write_text
    from malenia.data.dataset import require_dataset
    from malenia.evaluate.evaluate import evaluate_dataset, make_segmenter
    from malenia.commands.train import build_config
    from malenia.model.folder import MANIFEST, load_model_folder
    from malenia.train.loop import TrainOptions, train

    if args.threads:
        torch.set_num_threads(args.threads)
    names = variant_names(args.variants)
    require_outputs(Path(args.out), names)
    evals = []
    for item in args.eval:
        path, _, split = item.partition(":")
        evals.append((require_dataset(path, "--eval"), split or "test"))
    out = Path(args.out)
    rows = []
    for name in names:
        changes, report_style = VARIANTS[name]
        cfg = build_config(args.config, []).replace(**changes)
        run_dir = out / name
        opts = TrainOptions(data=Path(args.data), out=run_dir, config=cfg, steps=args.steps, split=args.split,
                            val_split=None, batch_size=args.batch_size, seed=args.seed, progress=args.progress,
                            report_style=report_style, model_name=f"ablation-{name}",
                            training_data=f"{args.data} split {args.split}")
        manifest = run_dir / "model" / MANIFEST
        done = manifest.is_file() and json.loads(manifest.read_text())["training"]["steps"] >= args.steps
        if not done:
            train(opts)
        model = load_model_folder(run_dir / "model")
        row = {"variant": name, "changes": changes, "report": report_style, "steps": args.steps,
               "seconds": json.loads(manifest.read_text())["training"].get("seconds_this_launch"), "results": {}}
        for path, split in evals:
            target = run_dir / f"eval_{path.name}_{split}.json"
            if target.is_file():
                res = json.loads(target.read_text())
            else:
                res = evaluate_dataset(model.path, path, split, max_cases=args.max_cases, segmenter=make_segmenter(model))
                write_json(target, res)
            row["results"][f"{path.name}:{split}"] = {
                g: ({"dsc": res["groups"][g]["dsc"], "nsd": res["groups"][g]["nsd"]} if res["groups"].get(g) else None)
                for g in ("seen", "unseen")
            }
        rows.append(row)
        write_json(out / ABLATION_JSON, {"steps": args.steps, "config": args.config, "seed": args.seed, "variants": rows})
        write_text(out / ABLATION_MD, ablation_markdown(rows))
    print(ablation_markdown(rows))
    return 0


def variant_names(text: str) -> list[str]:
    """The --variants list: known names, at least one (an empty list would train nothing and report success)."""
    from malenia.errors import InputError

    names = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))  # a name given twice runs once
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        what = f"unknown ablation variant(s) {unknown}" if unknown else f"--variants {text!r} names no variant"
        raise InputError(f"{what}; choose from {list(VARIANTS)}")
    return names


def require_outputs(out, names: list[str]) -> None:
    """OutputError before the first variant trains when a path the ablation writes cannot be written: the tables
    are written after each variant's training, a run folder when its training starts."""
    from malenia.commands._runtime import require_output_file, require_output_folder

    require_output_folder(out)
    for name in names:
        require_output_folder(out / name, "--out")
    for table in (ABLATION_JSON, ABLATION_MD):
        require_output_file(out / table, "--out")


def ablation_markdown(rows: list[dict]) -> str:
    def f(v):
        return "–" if v is None else f"{100 * v:.1f}"

    cols = []
    for r in rows:
        for key, groups in r["results"].items():
            for g, v in groups.items():
                if v is not None and (key, g) not in cols:
                    cols.append((key, g))
    head = "| variant | " + " | ".join(f"{g} DSC ({k}) | {g} NSD ({k})" for k, g in cols) + " |"
    lines = [head, "|---|" + "---|---|" * len(cols)]
    for r in rows:
        cells = []
        for k, g in cols:
            v = r["results"].get(k, {}).get(g)
            cells += [f(v["dsc"]) if v else "–", f(v["nsd"]) if v else "–"]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
