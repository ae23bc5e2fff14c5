"""`malenia mine --model M --data DATASET --out FILE`: a model's false positives, as training hard negatives.

Runs M over a dataset split (default train) with the predictor `malenia segment` runs and records
every predicted lesion that touches no reference lesion (malenia.evaluate.mining). The file feeds
`malenia train --hard-negatives FILE`, which centres a share of the background patches there.
"""

from __future__ import annotations

import argparse

from malenia.commands._types import count
from malenia.commands._runtime import add_model_run_options, require_output_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mine", help="record a model's false positives on a dataset (hard negatives for training)")
    p.add_argument("--model", required=True, help="model folder whose false positives are mined")
    p.add_argument("--data", required=True, help="dataset folder (malenia-dataset/1), usually the training data")
    p.add_argument("--split", default="train", help="dataset split (default train; 'all' for every case)")
    p.add_argument("--out", required=True, help="hard-negatives file to write (JSON)")
    p.add_argument("--threshold", type=float, default=None, help="foreground threshold (default: the model's)")
    p.add_argument("--min-volume", type=float, default=None,
                   help="smallest false positive kept, mm³ (default: the model's minimum lesion volume)")
    p.add_argument("--max-cases", type=count, default=None, help="use only the first N cases of the split")
    add_model_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from malenia.data.dataset import require_dataset
    from malenia.data.hard_negatives import write_hard_negatives
    from malenia.evaluate.evaluate import make_segmenter
    from malenia.evaluate.mining import mine
    from malenia.model.folder import load_model_folder
    from malenia.train.progress import Progress

    if args.threads:
        torch.set_num_threads(args.threads)
    require_output_file(args.out)  # before the mining, whose result is only written at its end
    require_dataset(args.data)
    model = load_model_folder(args.model, device=args.device)
    defaults = model.inference_defaults()
    threshold = defaults.threshold if args.threshold is None else args.threshold
    min_volume = defaults.min_volume_mm3 if args.min_volume is None else args.min_volume
    progress = Progress(1, args.progress, "mine")

    found = mine(make_segmenter(model, args.device), args.data, None if args.split == "all" else args.split,
                 threshold, min_volume, max_cases=args.max_cases, on_case=progress.case)
    found.meta["model"] = {"name": model.manifest.get("name"), "version": model.manifest.get("version")}
    progress.emit(progress.total, "done", stage="done")
    progress.close()
    write_hard_negatives(args.out, found)
    with_fp = sum(1 for c in found.cases.values() if len(c.centres))
    print(f"{found.count} false positives in {with_fp} of {len(found.cases)} cases, {found.missed_count} lesions missed "
          f"(threshold {threshold}, >= {min_volume:g} mm³): {args.out}")
    print(missed_table(found.meta["by_polarity"]))
    return 0


def missed_table(by_polarity: dict[str, list[dict]]) -> str:
    """The missed lesions per lesion type and contrast polarity (`evaluate`'s by_polarity rows), as `mine` prints them."""
    lines = ["missed / lesions, by the lesion's contrast to its host:",
             f"  {'lesion type':<22}" + "".join(f"{row['band']:>10}" for row in by_polarity.get("all", []))]
    for kind, bands in by_polarity.items():
        cells = [f"{row['lesions'] - row['detected']}/{row['lesions']}" if row["lesions"] else "-" for row in bands]
        lines.append(f"  {kind:<22}" + "".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)
