"""`malenia fit-verifier --model M --data D [--data D2 ...] [--split all] --val-data V [--val-data V2 ...] [--val-split val]`:
false-positive reduction.

Runs the model over `--data` (cases the network did not train on; a repeated `--data` pools several) as
`malenia segment` does, with its calibrated threshold and minimum volume, labels each lesion it keeps real
(it touches a reference lesion) or false, and fits the lesion verifier on their features (malenia.model.lesion_verifier; `--features`
names the set). It also reports, for every candidate set, what the fit and cut do to a training disease left
out of them in turn: the share of its lesions kept and of false lesions kept. Then runs
it over `--val-data`'s validation split (a repeated `--val-data` pools several, as `malenia calibrate --data`)
and chooses the cut, offline (cut 0 keeps every lesion: the
verifier is only used where it helps), by `--objective`: by default half the mean case
DSC and half the lesion-detection F1, as `malenia calibrate`, and as it, the highest cut within one lesion's
worth of the best score (the fewest false positives among cuts the validation cases cannot tell apart;
`--no-margin`: the best score exactly, the lower cut on a tie). Stores M/lesion_verifier.json (the manifest
is re-hashed); `segment`, `evaluate` and the Slicer module then drop the lesions under the cut.
Run it after `malenia calibrate`: the verifier sees the lesions the calibrated post-processing keeps.
"""

from __future__ import annotations

import argparse

from malenia.commands._runtime import add_model_run_options, require_updatable_model
from malenia.evaluate.metrics import OBJECTIVES
from malenia.model.verifier_features import FEATURE_SETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-verifier", help="fit a false-positive filter on the model's own lesions into a model folder")
    p.add_argument("--model", required=True, help="model folder (lesion_verifier.json is written into it)")
    p.add_argument("--data", required=True, action="append", metavar="DATASET",
                   help="dataset folder (malenia-dataset/1) of cases the network did not train on; repeat to pool "
                        "several (say synthetic cases and planted real nodules)")
    p.add_argument("--split", default="all", help="split of --data to fit on (default all)")
    p.add_argument("--val-data", required=True, action="append", metavar="DATASET",
                   help="dataset folder whose validation split chooses the cut; repeat to pool several")
    p.add_argument("--val-split", default="val", help="split of every --val-data (default val; never a test split you "
                                                      "report)")
    p.add_argument("--threshold", type=float, default=None, help="foreground threshold (default: the model's calibrated one)")
    p.add_argument("--min-volume", type=float, default=None, help="minimum lesion volume in mm³ (default: the model's)")
    p.add_argument("--features", choices=sorted(FEATURE_SETS), default="all",
                   help="the measurements the verifier reads (malenia.model.lesion_verifier.FEATURE_SETS; default all)")
    p.add_argument("--objective", choices=OBJECTIVES, default=OBJECTIVES[0],
                   help="what the cut maximises on the validation cases (as malenia calibrate): dsc_f1 (default) = "
                        "1/2 mean case DSC + 1/2 lesion-detection F1; dsc = mean case DSC alone (up to model 2.6.0)")
    p.add_argument("--no-margin", dest="margin", action="store_false",
                   help="take the best-scoring cut exactly, the lower on a tie (the rule up to model 2.10.1); by default "
                        "the highest cut within one lesion's worth of the best score is chosen, as malenia calibrate")
    add_model_run_options(p, dry_run="print the fit, leave the model folder unchanged")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from malenia.commands._runtime import configure_cpu

    configure_cpu(args.threads)  # before torch is imported: the model runs over both splits
    from malenia.data.dataset import require_dataset
    from malenia.evaluate.evaluate import make_segmenter
    from malenia.evaluate.verifier_fit import collect, fit_and_choose
    from malenia.model.lesion_verifier import FILE
    from malenia.model.folder import load_model_folder, update_model_folder
    from malenia.train.progress import Progress

    for data in args.data:
        require_dataset(data)
    for data in args.val_data:
        require_dataset(data, "--val-data")
    model = load_model_folder(args.model, device=args.device)
    require_updatable_model(model.path, args.dry_run)
    # segment's probability and post-processing (any verifier the model has is not used here)
    segmenter = make_segmenter(model, args.device, args.threshold, args.min_volume)
    split, val_split = (None if s == "all" else s for s in (args.split, args.val_split))
    progress = Progress(1, args.progress, "fit-verifier")
    fit_cases = collect(segmenter, args.data, split, on_case=progress.case)
    val_cases = collect(segmenter, args.val_data, val_split, on_case=progress.case)
    progress.emit(progress.total, "done", stage="done")
    progress.close()
    o = segmenter.options
    verifier = fit_and_choose(
        fit_cases, val_cases,
        fitted_on={"dataset": " + ".join(str(d) for d in args.data), "split": args.split, "threshold": o.threshold,
                   "min_volume_mm3": o.min_volume_mm3},
        validated_on={"dataset": " + ".join(str(d) for d in args.val_data), "split": args.val_split}, features=args.features,
        objective=args.objective, margin=args.margin)
    fitted, val = verifier.meta["fitted_on"], verifier.meta["validation"]
    left_out = verifier.meta["left_out"]
    if left_out["table"]:
        print("a training disease left out of the fit and the cut in turn: its real lesions kept, false lesions kept "
              "(means over the diseases)\n| features | left-out lesions kept | false lesions kept |\n|---|---|---|")
        for row in left_out["table"]:
            mark = "**" if row["features"] == left_out["set"] else ""
            print(f"| {mark}{row['features']}{mark} | {row['left_out_kept']:.2f} (min {min(row['kept'].values()):.2f}) "
                  f"| {row['false_kept']:.2f} |")
    else:
        print("fewer than two diseases with real lesions: no disease left out")
    print(f"fitted on {fitted['lesions']} lesions of {len(fit_cases)} cases ({fitted['real']} real), "
          f"features {left_out['set']}: {', '.join(verifier.features)}")
    print(f"objective: {val['objective']}")
    print("| cut | mean DSC | recall | precision | F1 | score | lesions per case |\n|---|---|---|---|---|---|---|")
    for row in val["table"]:
        mark = "**" if row["cut"] == verifier.cut else ""
        print(f"| {mark}{row['cut']:g}{mark} | {row['mean_dsc']:.4f} | {row['recall']:.3f} | {row['precision']:.3f} | "
              f"{row['f1']:.3f} | {row['score']:.4f} | {row['lesions_per_case']:.2f} |")
    print(f"chosen cut {verifier.cut:g} on {val['cases']} validation cases: mean DSC {val['mean_dsc']:.4f} "
          f"(without the verifier {val['mean_dsc_without']:.4f}), detection recall {val['recall']:.3f}, "
          f"precision {val['precision']:.3f}")
    if val["margin"]:
        print(f"cuts within one lesion's worth ({val['margin']:g}) of the best score count as tied; the highest wins "
              "(fewest false positives)")
    if not args.dry_run:
        update_model_folder(model.path, {FILE: json.dumps(verifier.to_json(), indent=1) + "\n"},
                            {"lesion_verifier": {"cut": verifier.cut, "lesions": fitted["lesions"], "features": left_out["set"],
                                                 "validation_mean_dsc": val["mean_dsc"]}})
        print(f"written: {model.path / FILE}")
    return 0
