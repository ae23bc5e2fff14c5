"""`malenia fit-appearance --model M --data DATASET [--split train]`: the look of each trained disease.

Measures every reference lesion of the split (malenia.infer.lesion_features) and fits, per disease with
enough lesions, a Gaussian over the core's CT value, its spread and the contrast to the host
(malenia.knowledge.appearance), stored in M/appearance.json (the manifest is re-hashed). Its cut starts
at 0 (nothing ruled out): `malenia knowledge openset --model M --data VALIDATION --fit` calibrates it on
the lesions the model detects, and refits the unclassified rule with it in place. Fit on the data the
model was trained on; `--dry-run` only prints.
"""

from __future__ import annotations

import argparse

from malenia.commands._runtime import add_model_run_options, require_updatable_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-appearance", help="fit each trained disease's lesion look (rules diseases out) into a model folder")
    p.add_argument("--model", required=True, help="model folder (appearance.json is written into it)")
    p.add_argument("--data", required=True, help="dataset folder (malenia-dataset/1): the model's training data")
    p.add_argument("--split", default="train", help="dataset split (default train; 'all' for every case)")
    p.add_argument("--alpha", type=float, default=None,
                   help="share of a known disease's own validation lesions the calibrated cut may rule out (default 0.1)")
    add_model_run_options(p, dry_run="print the fit, leave the model folder unchanged")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from malenia.data.dataset import require_dataset
    from malenia.errors import InputError
    from malenia.evaluate.attribute_examples import examples_from_dataset
    from malenia.knowledge.appearance import ALPHA, FILE, fit_appearance
    from malenia.model.folder import load_model_folder, update_model_folder
    from malenia.train.progress import Progress

    alpha = ALPHA if args.alpha is None else args.alpha
    if not 0.0 < alpha < 0.5:
        raise InputError(f"--alpha must be in (0, 0.5), got {alpha}")
    require_dataset(args.data)
    model = load_model_folder(args.model, device=args.device, build_network=False)
    require_updatable_model(model.path, args.dry_run)
    progress = Progress(1, args.progress, "fit-appearance")
    examples = list(examples_from_dataset(args.data, None if args.split == "all" else args.split, on_case=progress.case))
    progress.emit(progress.total, "done", stage="done")
    progress.close()
    try:
        fitted = fit_appearance([(e.disease, e.features) for e in examples],
                                fitted_on={"dataset": str(args.data), "split": args.split, "masks": "reference"})
    except ValueError as err:
        raise InputError(f"{args.data} ({args.split}): {err}") from None
    fitted.alpha = alpha
    print(f"{len(examples)} lesions; appearance models for " + ", ".join(f"{d} ({k.lesions})" for d, k in fitted.looks.items()))
    print("cut 0 (nothing ruled out) until `malenia knowledge openset --fit` calibrates it on validation lesions")
    if not args.dry_run:
        update_model_folder(model.path, {FILE: json.dumps(fitted.to_json(), indent=1) + "\n"},
                            {"appearance": {"diseases": sorted(fitted.looks), "lesions": len(examples), "alpha": alpha}})
        print(f"written: {model.path / FILE}")
    return 0
