"""`malenia fit-attributes --model M --data DATASET [--split train] [--masks reference|predicted]`: measured attributes.
`malenia fit-attributes --model M --aspect-weight location=1.0` (no --data): re-weighs the model's own classifiers.

Measures every reference lesion of the split (malenia.infer.lesion_features: density against the
host, heterogeneity, shape, margin, position in the body), fits one small classifier per aspect
on those measurements and the lesions' descriptions (malenia.knowledge.measured_attributes), and
stores them in M/measured_attributes.json (the manifest is re-hashed). `segment`, `evaluate` and
the Slicer module then combine them with the tokens' attribute matches; `--dry-run` only prints.
Fit on the data the model was trained on: the reference masks of the training split.
Without --data nothing is refitted: --weight and --aspect-weight set the measured share of the
classifiers the model already has (a choice made on validation lesions, docs/knowledge.md).
"""

from __future__ import annotations

import argparse

from malenia.commands._runtime import add_model_run_options, require_updatable_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-attributes", help="fit attribute classifiers on lesion measurements into a model folder")
    p.add_argument("--model", required=True, help="model folder (measured_attributes.json is written into it)")
    p.add_argument("--data", help="dataset folder (malenia-dataset/1): the model's training data; without it the "
                                  "model's classifiers are kept and only --weight / --aspect-weight change")
    p.add_argument("--split", default="train", help="dataset split (default train; 'all' for every case)")
    p.add_argument("--masks", choices=("reference", "predicted"), default="reference",
                   help="measure the reference masks, or the model's own predicted masks of the reference lesions it "
                        "detects (runs the model over the split, as `malenia segment`; default reference)")
    p.add_argument("--weight", type=float, default=None,
                   help="share of the measured evidence in the combined attributes, 0..1 (default 0.75, chosen on validation lesions)")
    p.add_argument("--aspect-weight", action="append", default=[], metavar="ASPECT=W",
                   help="one aspect's own measured share, 0..1 (repeatable; e.g. location=1.0)")
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
    own = aspect_weights(args.aspect_weight)
    if args.data is None:
        return reweigh(args, own)
    require_dataset(args.data)
    model = load_model_folder(args.model, device=args.device, build_network=args.masks == "predicted")
    require_updatable_model(model.path, args.dry_run)
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
    fitted.weight, fitted.aspect_weights = weight, own
    print(f"{len(examples)} lesions; classifiers for {', '.join(sorted(fitted.aspects))}")
    for label, key in (("accuracy", "leave_one_disease_out"), ("balanced accuracy", "leave_one_disease_out_balanced")):
        print(f"leave-one-disease-out {label}: " + ", ".join(f"{a} {v:.3f}" if v is not None else f"{a} -"
                                                             for a, v in fitted.meta[key].items()))
    if not args.dry_run:
        update_model_folder(model.path, {FILE: json.dumps(fitted.to_json(), indent=1) + "\n"},
                            {"measured_attributes": {"aspects": sorted(fitted.aspects), "weight": weight,
                                                     **({"aspect_weights": own} if own else {}),
                                                     "lesions": len(examples), "masks": args.masks}})
        print(f"written: {model.path / FILE}")
    return 0


def aspect_weights(items: list[str]) -> dict[str, float]:
    """`ASPECT=W` arguments as {aspect: w}; an unknown aspect or a share outside [0, 1] is refused."""
    from malenia.aspects import ASPECTS
    from malenia.errors import InputError

    out = {}
    for item in items:
        aspect, _, value = item.partition("=")
        try:
            w = float(value)
        except ValueError:
            raise InputError(f"--aspect-weight {item!r}: expected ASPECT=W, e.g. location=1.0") from None
        if aspect not in ASPECTS:
            raise InputError(f"--aspect-weight {item!r}: unknown aspect; one of {', '.join(ASPECTS)}")
        if not 0.0 <= w <= 1.0:
            raise InputError(f"--aspect-weight {item!r}: the share must be in [0, 1]")
        out[aspect] = w
    return out


def reweigh(args: argparse.Namespace, own: dict[str, float]) -> int:
    """The model's own classifiers with new shares (--weight where given, `own` per aspect); nothing is refitted."""
    import json

    from malenia.errors import InputError
    from malenia.knowledge.measured_attributes import FILE
    from malenia.model.folder import load_model_folder, update_model_folder

    if args.weight is None and not own:
        raise InputError("without --data, give --weight or --aspect-weight (nothing would change)")
    model = load_model_folder(args.model, build_network=False)
    measured = model.measured_attributes()
    if measured is None:
        raise InputError(f"{args.model} has no measured attributes to re-weigh; fit them with --data DATASET")
    measured.weight = measured.weight if args.weight is None else args.weight
    measured.aspect_weights = {**measured.aspect_weights, **own}
    print(f"measured share {measured.weight}" + "".join(f", {a} {w}" for a, w in measured.aspect_weights.items()))
    if not args.dry_run:
        entry = {**model.manifest.get("measured_attributes", {}), "weight": measured.weight,
                 "aspect_weights": measured.aspect_weights}
        update_model_folder(model.path, {FILE: json.dumps(measured.to_json(), indent=1) + "\n"},
                            {"measured_attributes": entry})
        print(f"written: {model.path / FILE}")
    return 0
