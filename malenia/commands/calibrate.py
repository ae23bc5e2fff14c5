"""`malenia calibrate --model M --data DATASET [--data DATASET ...] [--split val]`: post-processing chosen on
validation cases.

Sweeps the foreground threshold and the minimum lesion volume (malenia.evaluate.calibrate), prints
the table and stores the best pair (up to one lesion's worth of score; `--no-margin`: exactly) in
M/inference.json (the manifest is re-hashed), from where `segment`, `demo`, `evaluate` and the Slicer module take
their defaults. `--dry-run` only prints.
A repeated `--data` pools the split of every dataset named (e.g. synthetic validation cases and real
nodules: a minimum volume chosen on cases without small lesions would delete every small lesion).
"""

from __future__ import annotations

import argparse

from malenia.commands._types import count
from malenia.commands._runtime import add_model_run_options, require_updatable_model
from malenia.evaluate.metrics import OBJECTIVES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="choose the threshold and minimum lesion volume on a validation split")
    p.add_argument("--model", required=True, help="model folder to calibrate (inference.json is written into it)")
    p.add_argument("--data", required=True, action="append", metavar="DATASET",
                   help="dataset folder (malenia-dataset/1); repeat to pool several datasets' split")
    p.add_argument("--split", default="val", help="dataset split, of every --data (default val; never the test split "
                                                  "you report)")
    p.add_argument("--max-cases", type=count, default=None, help="use only the first N cases of the split")
    p.add_argument("--objective", choices=OBJECTIVES, default=OBJECTIVES[0],
                   help="what the choice maximises: dsc_f1 (default) = 1/2 mean case DSC + 1/2 lesion-detection F1; "
                        "dsc = mean case DSC alone (the rule up to model 2.6.0; blind to small lesions)")
    p.add_argument("--no-margin", dest="margin", action="store_false",
                   help="take the best score exactly (the rule up to model 2.10.0); by default the setting with the "
                        "fewest false positives within one lesion's worth of the best score is chosen")
    add_model_run_options(p, dry_run="print the sweep, leave the model folder unchanged")
    p.set_defaults(func=run)


def markdown(result: dict) -> str:
    cal = result["calibration"]
    lines = [f"Calibrated on {cal['cases']} cases of {cal['dataset']} ({cal['split']}): {cal['objective']}.", "",
             "| threshold | min volume (mm³) | mean DSC | recall | precision | F1 | score | lesions per case |",
             "|---|---|---|---|---|---|---|---|"]
    for row in cal["table"]:
        chosen = row["threshold"] == result["threshold"] and row["min_volume_mm3"] == result["min_volume_mm3"]
        mark = "**" if chosen else ""
        lines.append(f"| {mark}{row['threshold']}{mark} | {mark}{row['min_volume_mm3']:g}{mark} | {row['mean_dsc']:.4f} | "
                     f"{row['recall']:.3f} | {row['precision']:.3f} | {row['f1']:.3f} | {row['score']:.4f} | "
                     f"{row['lesions_per_case']:.1f} |")
    lines += ["", f"Chosen: threshold {result['threshold']}, minimum volume {result['min_volume_mm3']:g} mm³ "
                  f"(mean DSC {cal['mean_dsc']:.4f}, detection recall {cal['recall']:.3f}, precision "
                  f"{cal['precision']:.3f}, {cal['lesions_per_case']:.1f} lesions per case)."]
    best = cal.get("best")
    if cal.get("margin") and best and (best["threshold"], best["min_volume_mm3"]) != (result["threshold"],
                                                                                       result["min_volume_mm3"]):
        lines.append(f"The best score, {best['score']:.4f} at {best['threshold']} / {best['min_volume_mm3']:g} mm³, "
                     f"is within one lesion ({cal['margin']:.4f}) of the chosen one, which has fewer false positives.")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from malenia.data.dataset import require_dataset
    from malenia.evaluate.calibrate import calibrate
    from malenia.evaluate.evaluate import make_segmenter
    from malenia.model.folder import INFERENCE, load_model_folder, update_model_folder
    from malenia.train.progress import Progress

    if args.threads:
        torch.set_num_threads(args.threads)
    for data in args.data:
        require_dataset(data)
    model = load_model_folder(args.model, device=args.device)
    require_updatable_model(model.path, args.dry_run)
    progress = Progress(1, args.progress, "calibrate")

    result = calibrate(make_segmenter(model, args.device), args.data, None if args.split == "all" else args.split,
                       max_cases=args.max_cases, on_case=progress.case, objective=args.objective,
                       margin=args.margin)
    progress.emit(progress.total, "done", stage="done")
    progress.close()
    print(markdown(result), end="")
    if not args.dry_run:
        from malenia.infer.site_table import model_disease_rule

        rule = model_disease_rule(model)  # the unclassified rule (`malenia knowledge openset --fit`) is kept
        result = {**result, **({"disease": rule} if rule is not None else {})}
        update_model_folder(model.path, {INFERENCE: json.dumps(result, indent=2) + "\n"},
                            {"inference": {k: result[k] for k in ("threshold", "min_volume_mm3")}})
        print(f"written: {model.path / INFERENCE}")
    return 0
