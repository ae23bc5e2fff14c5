"""`malenia knowledge openset`: how often a lesion of an unseen disease is called unclassified vs named wrongly.

    malenia knowledge openset --model M --data D [--split val] [--fit [--fit-weight ASPECT ...]] [--json]

Runs the model on the split, keeps the detected lesions with their attribute scores, and for every
disease d present: with d's profile removed from the table in force, the share of d's lesions
called "unclassified" vs given another name; with it present, the share named correctly.
`--fit` fits the unclassified rule on these lesions (malenia.knowledge.openset) and stores it in
M/inference.json under "disease" (beside the post-processing calibration; the manifest is re-hashed);
`segment`, `evaluate` and Slicer then use it. A model with an appearance check (M/appearance.json,
`malenia fit-appearance`) first has its cut calibrated on the same lesions (the alpha-quantile of their
scores under their own disease, malenia.knowledge.appearance), and the rule is fitted with it in place.
Fit on a validation split, never on the test split.
"""

from __future__ import annotations

import argparse

from malenia.commands._types import count
from malenia.commands._runtime import require_updatable_model
from malenia.aspects import ASPECTS

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
FITTABLE_ASPECTS = tuple(a for a in ASPECTS if a != "enhancement")  # the scan's phase is no evidence (weight 0)


def register(actions) -> None:
    p = actions.add_parser("openset", help="unseen diseases: unclassified vs named wrongly; --fit stores the rule")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the built-in model)")
    p.add_argument("--data", required=True, help="dataset folder (malenia-dataset/1)")
    p.add_argument("--split", default="val", help="dataset split (default val; 'all' for every case)")
    p.add_argument("--max-cases", type=count, default=None)
    p.add_argument("--knowledge", action="append", default=None, metavar="DIR", help="site profile folder (repeatable)")
    p.add_argument("--fit", action="store_true", help="fit the unclassified rule and store it in the model folder")
    p.add_argument("--fit-weight", action="append", default=[], metavar="ASPECT", choices=FITTABLE_ASPECTS,
                   help="with --fit: also fit this aspect's weight in disease inference (grid 0-1; repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=count, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def store_rule(model, rule: dict, appearance=None) -> None:
    """Merges the rule into MODEL/inference.json under "disease", keeping the post-processing values, and
    writes the calibrated `appearance` (if any) with it, in one update of the folder."""
    import json

    from malenia.knowledge.appearance import FILE
    from malenia.model.folder import INFERENCE, update_model_folder

    path = model.path / INFERENCE
    data = json.loads(path.read_text(encoding="utf-8")) if INFERENCE in model.manifest.get("files", {}) else \
        {k: v for k, v in model.inference_defaults().to_dict().items() if v is not None}
    data["disease"] = rule
    files = {INFERENCE: json.dumps(data, indent=2) + "\n"}
    if appearance is not None:
        files[FILE] = json.dumps(appearance.to_json(), indent=1) + "\n"
    update_model_folder(model.path, files)


def calibrate_appearance(appearance, lesions, where: dict) -> dict:
    """Sets the appearance cut on the detected lesions' scores under their own disease; what it did."""
    own = [les.appearance[les.disease] for les in lesions if les.appearance and les.disease in les.appearance]
    appearance.calibrate(own, where)
    return {"cut": appearance.cut, "alpha": appearance.alpha, "lesions": len(own),
            "own_ruled_out": sum(s < appearance.cut for s in own) / len(own)}


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    import torch

    from malenia.data.dataset import require_dataset
    from malenia.errors import InputError
    from malenia.evaluate.openset import scored_lesions
    from malenia.evaluate.evaluate import make_segmenter
    from malenia.knowledge.inference import inference_params
    from malenia.knowledge.openset import decisions, fit_rule, rates, with_weights
    from malenia.model.folder import INFERENCE, load_model_folder

    if args.fit_weight and not args.fit:
        print("malenia knowledge openset: error: --fit-weight needs --fit", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    require_dataset(args.data)
    model = load_model_folder(args.model, device=args.device)
    require_updatable_model(model.path, not args.fit)  # only --fit stores its rule
    segmenter = make_segmenter(model, args.device, knowledge=args.knowledge)
    table = segmenter.table
    lesions, counts = scored_lesions(segmenter, args.data, None if args.split == "all" else args.split, args.max_cases)
    if not lesions:
        raise InputError(f"the model detected none of the {counts['reference_lesions']} lesions of {args.data} "
                         f"({args.split}): nothing to measure")
    params = inference_params(table)
    appearance = model.appearance()
    cut = appearance.cut if appearance is not None else 0.0
    diseases, dec = decisions(lesions, table, cut)
    out = {"data": str(args.data), "split": args.split, **counts,
           "rule_in_force": {"contradiction_fit": params["contradiction_fit"], "min_typicality": params["min_typicality"],
                             **({"aspect_weights": table.origin["unclassified"]["aspect_weights"]}
                                if "aspect_weights" in table.origin["unclassified"] else {}),
                             "source": table.origin["unclassified"]["source"],
                             **rates(diseases, dec, params["contradiction_fit"], params["min_typicality"])}}
    own = table.origin["unclassified"]["table_rule"]
    if table.origin["unclassified"]["source"] == "model":  # also the table's own rule, for comparison
        own_dec = decisions(lesions, with_weights(table, own.get("aspect_weights") or {}), cut)
        out["table_rule"] = {**own, "source": "table", **rates(*own_dec, own["contradiction_fit"], own["min_typicality"])}
    if appearance is not None:
        out["appearance"] = {"cut": cut, "alpha": appearance.alpha}
    if args.fit:
        where = {"dataset": Path(args.data).resolve().name, "split": args.split}
        if appearance is not None:
            out["appearance"] = calibrate_appearance(appearance, lesions, where)
        cut = appearance.cut if appearance is not None else 0.0
        rule = fit_rule(lesions, table, cut, {a: WEIGHT_GRID for a in args.fit_weight})
        rule["dataset"], rule["split"] = where["dataset"], args.split
        diseases, dec = decisions(lesions, with_weights(table, rule.get("aspect_weights") or {}), cut)
        out["fitted_rule"] = {**rule, **rates(diseases, dec, rule["contradiction_fit"], rule["min_typicality"])}
        store_rule(model, rule, appearance)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{counts['detected']} of {counts['reference_lesions']} lesions detected in {counts['cases']} cases "
          f"({args.data}, {args.split})")
    if "appearance" in out:
        a = out["appearance"]
        print(f"appearance check: cut {a['cut']:.4g} (alpha {a['alpha']})"
              + (f", calibrated on {a['lesions']} lesions ({a['own_ruled_out']:.2f} of them lose their own disease)"
                 if "lesions" in a else ""))
    for key in ("rule_in_force", "table_rule", "fitted_rule"):
        if key in out:
            r = out[key]
            weights = "".join(f", {a} weight {w}" for a, w in (r.get("aspect_weights") or {}).items())
            print(f"{key.replace('_', ' ')}: contradiction fit {r['contradiction_fit']}, min typicality {r['min_typicality']}"
                  + weights)
            for d, v in r["per_disease"].items():
                known = f"; present: correct {v['known_correct']:.2f}, unclassified {v['known_unclassified']:.2f}" \
                    if "known_correct" in v else ""
                print(f"  {d:<22} n={v['lesions']:<4} removed: unclassified {v['unseen_unclassified']:.2f}, "
                      f"named wrongly {v['unseen_named_wrongly']:.2f}{known}")
    if args.fit:
        print(f"stored in {model.path / INFERENCE} (\"disease\")")
    return 0
