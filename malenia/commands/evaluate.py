"""`malenia evaluate`: score a model folder on a dataset; or write its model card from saved results.

    malenia evaluate --model M --data DATASET [--split test] [--out DIR]
        -> DIR/evaluation.json and DIR/evaluation.md (printed too)
    malenia evaluate --model M --card RESULT.json [RESULT.json ...] [--commands FILE]
        -> M/MODEL_CARD.md from those results (the manifest is re-hashed)
    malenia evaluate --compare A.json B.json [--json]
        -> two evaluations of the same cases side by side, with the paired 95 % interval of each difference
"""

from __future__ import annotations

import argparse

from malenia.commands._types import count, positive, share
from malenia.commands._runtime import add_model_run_options, require_output_folder
from malenia.model.precision import PRECISIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="DSC/NSD, detection, attribute matching and disease accuracy on a dataset")
    p.add_argument("--model", default=None, help="model folder (default: the built-in model)")
    p.add_argument("--data", default=None, help="dataset folder (malenia-dataset/1)")
    p.add_argument("--image", default=None, help="instead of --data: one labelled CT (with --label, --disease)")
    p.add_argument("--label", default=None,
                   help="lesion label map of --image (each connected component a lesion; on another grid, placed on "
                        "the CT's by physical position)")
    p.add_argument("--disease", default=None, help="disease key of the lesions in --label (e.g. lung_tumor)")
    p.add_argument("--split", default="test", help="dataset split (default test; 'all' for every case)")
    p.add_argument("--out", default=None, help="folder for evaluation.json and evaluation.md")
    p.add_argument("--predictions", default=None, metavar="DIR",
                   help="also write each case's `malenia segment` outputs to DIR/<case>/")
    p.add_argument("--outlines", choices=("predicted", "reference"), default="predicted",
                   help="predicted: the lesions the model finds (default); reference: each reference lesion described "
                        "on its own outline, as `segment --mask` describes a reader's outline (names and attributes "
                        "on every lesion; DSC and detection are 1 by construction)")
    p.add_argument("--nsd-tolerance", type=positive, default=None, help="NSD tolerance in mm (default 2.0)")
    p.add_argument("--iou", type=share, default=None, help="IoU for a detected lesion (default 0.1)")
    p.add_argument("--threshold", type=float, default=None,
                   help="foreground probability threshold (default: the model's calibrated value, else 0.5)")
    p.add_argument("--min-volume", type=float, default=None, metavar="MM3",
                   help="remove lesions smaller than this, mm^3 (default: the model's calibrated value, else 50)")
    p.add_argument("--max-cases", type=count, default=None, help="evaluate only the first N cases of the split")
    p.add_argument("--refine", action="store_true", help="as segment --refine: re-draw well-contrasted lesions from the CT")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="as segment --precision: the network's arithmetic (default auto)")
    p.add_argument("--overlap", type=float, default=None,
                   help="as segment --overlap: sliding-window overlap (default: segment's)")
    p.add_argument("--mirror", action="store_true",
                   help="as segment --mirror: test-time mirroring about the axes the model trained mirrored on")
    p.add_argument("--verifier-cut", type=float, default=None, metavar="P",
                   help="as segment --verifier-cut: P(real) a lesion needs to pass the verifier (default: the model's)")
    p.add_argument("--knowledge", action="append", default=None, metavar="DIR",
                   help="site disease profiles merged into the model's knowledge table (repeatable; also $MALENIA_KNOWLEDGE)")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the Markdown tables")
    p.add_argument("--card", nargs="+", default=None, metavar="RESULT.json",
                   help="write MODEL_CARD.md into --model from these evaluation.json files (no evaluation run)")
    p.add_argument("--commands", default=None, help="with --card: a text file of the commands that made the model")
    p.add_argument("--compare", nargs=2, default=None, metavar=("A.json", "B.json"),
                   help="compare two evaluation.json files of the same cases (say two models): group means, B - A and "
                        "its paired bootstrap 95 %% interval (no evaluation run)")
    add_model_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    require_output_folder(args.out)
    if args.card:
        return write_card(args)
    if args.compare:
        return compare(args)
    _check_scan_options(args)
    with tempfile.TemporaryDirectory(prefix="malenia-eval-") as tmp:
        if args.image:
            _labelled_scan_dataset(args, tmp)
        return evaluate(args)


def _read_results(paths) -> list[dict]:
    import json
    from pathlib import Path

    from malenia.errors import InputError

    results = []
    for f in paths:
        try:
            results.append(json.loads(Path(f).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read evaluation result {f}: {err}") from None
    return results


# The predictor settings an evaluation records (malenia.evaluate.evaluate): two evaluations of one model that differ
# in any of them measured two ways of running it, and the comparison says which is which.
SETTINGS = ("threshold", "min_volume_mm3", "verifier_cut", "overlap", "refine", "mirror", "precision")


def _model_names(results, files) -> tuple[str, str]:
    """Each evaluation's model as "name version". Two that read alike are told apart by the predictor settings they
    differ in (one model at overlap 0.25 and 0.5), and by the model folder they were measured with where nothing else
    differs or their weights do too (two runs of one recipe are both "malenia 0"), so that the table says which is A
    and which is B."""
    models = [r.get("model") if isinstance(r.get("model"), dict) else {} for r in results]
    names = [" ".join(str(m.get(k) or "") for k in ("name", "version")).strip() or str(f) for m, f in zip(models, files)]
    if names[0] != names[1]:
        return names[0], names[1]
    folders = [str(m.get("path") or f) for m, f in zip(models, files)]
    differ = [k for k in SETTINGS if results[0].get(k) != results[1].get(k)]
    same_weights = bool(models[0].get("sha256")) and models[0].get("sha256") == models[1].get("sha256")
    tags = [([folder] if not differ or (folders[0] != folders[1] and not same_weights) else [])
            + [f"{k.replace('_', ' ')} {r.get(k)}" for k in differ] for folder, r in zip(folders, results)]
    return f"{names[0]} ({', '.join(tags[0])})", f"{names[1]} ({', '.join(tags[1])})"


def compare(args: argparse.Namespace) -> int:
    import json

    from malenia.errors import InputError
    from malenia.evaluate.intervals import comparison_markdown, paired_comparison

    a, b = _read_results(args.compare)
    for r, f in zip((a, b), args.compare):
        if not isinstance(r, dict) or not isinstance(r.get("groups"), dict) or not isinstance(r.get("cases"), list):
            raise InputError(f"{f} is not a malenia evaluation result (evaluation.json with groups and cases)")
    if args.json:
        print(json.dumps(paired_comparison(a, b), indent=2))
        return 0
    print(comparison_markdown(a, b, _model_names((a, b), args.compare)), end="")
    return 0


def write_card(args: argparse.Namespace) -> int:
    from pathlib import Path

    from malenia.evaluate.model_card import write_model_card

    results = _read_results(args.card)
    commands = Path(args.commands).read_text(encoding="utf-8") if args.commands else None
    path = write_model_card(args.model, results, commands)
    print(f"model card written: {path}")
    return 0


def _check_scan_options(args: argparse.Namespace) -> None:
    """--image replaced --data, and --label or --disease without --image were dropped, without a word: the user
    then read the scores of another evaluation than the one asked for."""
    from malenia.errors import InputError

    if args.image and args.data:
        raise InputError("--image (one labelled CT) and --data (a dataset) are two evaluations; give one")
    stray = [name for name, value in (("--label", args.label), ("--disease", args.disease)) if value]
    if stray and not args.image:
        raise InputError(f"{' and '.join(stray)} go with --image (one labelled CT), not with a dataset")


def _labelled_scan_dataset(args: argparse.Namespace, tmp: str) -> None:
    """--image/--label: a one-case dataset in `tmp` becomes --data."""
    from pathlib import Path

    from malenia.errors import InputError
    from malenia.evaluate.evaluate import dataset_from_labelled_scan

    if not args.label:
        raise InputError("--image needs --label (its lesion label map)")
    args.data = str(dataset_from_labelled_scan(args.image, args.label, args.disease, Path(tmp) / "ds"))
    args.split = "test"
    args.data_label = f"{args.image} (label {args.label})"


def _warn_unknown_disease(disease: str | None, known: list[str]) -> None:
    """--disease not in the table in force: its lesions can never be named right. A warning, not an error: scoring
    a disease the table lacks is a fair open-set question, but a typo (hepatic_haemangiomaa) should not pass unseen."""
    import difflib
    import sys

    if disease and disease not in known:
        close = difflib.get_close_matches(disease, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (an open-set test: its lesions are never named right)"
        print(f"malenia evaluate: warning: --disease {disease!r} is not in the knowledge table in force{hint}",
              file=sys.stderr)


def evaluate(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from malenia.atomic import write_json, write_text
    from malenia.data.dataset import require_dataset
    from malenia.errors import InputError
    from malenia.evaluate.evaluate import evaluate_dataset, make_segmenter, markdown_tables, selected_cases
    from malenia.evaluate.metrics import DEFAULT_IOU_THRESHOLD, DEFAULT_NSD_TOLERANCE_MM
    from malenia.knowledge.site import origin_json
    from malenia.model.folder import load_model_folder
    from malenia.train.progress import Progress

    if not args.data:
        raise InputError("--data or --image is required (or --card to write a model card)")
    require_dataset(args.data)
    selected_cases(args.data, None if args.split == "all" else args.split, args.max_cases)  # files first, then the model
    if args.outlines == "reference":
        from malenia.commands._runtime import refuse_finding_options

        refuse_finding_options(args, "--outlines reference describes the reference lesions as they are")
    model = load_model_folder(args.model, device=args.device)
    segmenter = make_segmenter(model, args.device, args.threshold, args.min_volume, args.knowledge, refine=args.refine,
                               precision=args.precision, overlap=args.overlap, verifier_cut=args.verifier_cut,
                               mirror=args.mirror)
    _warn_unknown_disease(getattr(args, "disease", None) if args.image else None, segmenter.table.diseases)
    progress = Progress(1, args.progress, "evaluate", stream=sys.stderr if args.json else None)

    result = evaluate_dataset(
        args.model, args.data, None if args.split == "all" else args.split,
        nsd_tolerance=args.nsd_tolerance or DEFAULT_NSD_TOLERANCE_MM,
        iou_threshold=args.iou or DEFAULT_IOU_THRESHOLD, device=args.device, max_cases=args.max_cases,
        on_case=progress.case, segmenter=segmenter, predictions=args.predictions, outlines=args.outlines,
    )
    progress.emit(progress.total, "done", stage="done")
    progress.close()
    if getattr(args, "data_label", None):
        result["data"]["path"] = args.data_label
    result["model"]["path"] = str(model.path)
    result["knowledge"] = origin_json(segmenter.table)  # the table and site profiles the diseases were named with
    result["refine"] = bool(args.refine)
    result["precision"] = segmenter.precision.name
    result["overlap"] = segmenter.options.overlap
    result["mirror"] = list(segmenter.mirror_axes)  # the axes the network's output was averaged over
    result["verifier_cut"] = None if segmenter.verifier is None else segmenter.verifier.cut
    # where the post-processing came from: the model's calibration only when neither value was overridden
    calibration = model.inference_defaults().calibration if args.threshold is None and args.min_volume is None else None
    result["calibration"] = {k: v for k, v in calibration.items() if k != "table"} if calibration else None
    md = markdown_tables(result)
    if args.out:
        write_json(Path(args.out) / "evaluation.json", result)
        write_text(Path(args.out) / "evaluation.md", md)
    print(json.dumps(result, indent=2) if args.json else md)
    return 0
