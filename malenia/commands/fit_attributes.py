"""`malenia fit-attributes --model M --data DATASET [--split train] [--masks reference|predicted]`: measured attributes.

Measures every reference lesion of the split (malenia.infer.lesion_features: density against the
host, heterogeneity, shape, margin, position in the body), fits one small classifier per aspect
on those measurements and the lesions' descriptions (malenia.knowledge.measured_attributes), and
stores them in M/measured_attributes.json (the manifest is re-hashed). `segment`, `evaluate` and
the Slicer module then combine them with the tokens' attribute matches; `--dry-run` only prints.
Fit on the data the model was trained on: the reference masks of the training split.
"""

from __future__ import annotations

import argparse

from malenia.commands._runtime import add_model_run_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-attributes", help="fit attribute classifiers on lesion measurements into a model folder")
    p.add_argument("--model", required=True, help="model folder (measured_attributes.json is written into it)")
    p.add_argument("--data", required=True, help="dataset folder (malenia-dataset/1): the model's training data")
    p.add_argument("--split", default="train", help="dataset split (default train; 'all' for every case)")
    p.add_argument("--masks", choices=("reference", "predicted"), default="reference",
                   help="measure the reference masks, or the model's own predicted masks of the reference lesions it "
                        "detects (runs the model over the split, as `malenia segment`; default reference)")
    p.add_argument("--weight", type=float, default=None,
                   help="share of the measured evidence in the combined attributes, 0..1 (default 0.75, chosen on validation lesions)")
    add_model_run_options(p, dry_run="print the fit, leave the model folder unchanged")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    if args.masks == "predicted":  # before torch is imported: the model runs over the split
        from malenia.commands._runtime import configure_cpu

        configure_cpu(args.threads)
    from malenia.data.dataset import require_dataset
    from malenia.errors import InputError
    from malenia.evaluate.attribute_examples import examples_from_dataset
    from malenia.knowledge.measured_attributes import FILE, WEIGHT, fit
    from malenia.model.folder import load_model_folder, update_model_folder
    from malenia.train.progress import Progress

    weight = WEIGHT if args.weight is None else args.weight
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"--weight must be in [0, 1], got {weight}")
    require_dataset(args.data)
    model = load_model_folder(args.model, device=args.device, build_network=args.masks == "predicted")
    progress = Progress(1, args.progress, "fit-attributes")
    split = None if args.split == "all" else args.split
    if args.masks == "predicted":
        from malenia.evaluate.attribute_examples import examples_from_predictions
        from malenia.evaluate.evaluate import make_segmenter

        examples = list(examples_from_predictions(make_segmenter(model, args.device), args.data, split,
                                                  on_case=progress.case))
    else:
        examples = list(examples_from_dataset(args.data, split, on_case=progress.case))
    progress.emit(progress.total, "done", stage="done")
    progress.close()
    fitted = fit(examples, fitted_on={"dataset": str(args.data), "split": args.split, "masks": args.masks})
    fitted.weight = weight
    print(f"{len(examples)} lesions; classifiers for {', '.join(sorted(fitted.aspects))}")
    for label, key in (("accuracy", "leave_one_disease_out"), ("balanced accuracy", "leave_one_disease_out_balanced")):
        print(f"leave-one-disease-out {label}: " + ", ".join(f"{a} {v:.3f}" if v is not None else f"{a} -"
                                                             for a, v in fitted.meta[key].items()))
    if not args.dry_run:
        update_model_folder(model.path, {FILE: json.dumps(fitted.to_json(), indent=1) + "\n"},
                            {"measured_attributes": {"aspects": sorted(fitted.aspects), "weight": weight,
                                                     "lesions": len(examples), "masks": args.masks}})
        print(f"written: {model.path / FILE}")
    return 0
