"""`python -m malenia.server.validate_job --data D --split val --out R.json MODEL...`

The promotion check of a job: every model (the new version and the current one) is evaluated with
`malenia.evaluate.evaluate_dataset` on the same validation cases, so their DSCs compare like with
like. Runs as the job's subprocess (cancellable, isolated from the server); prints progress JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from malenia.atomic import write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="malenia.server.validate_job")
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import torch

    from malenia.evaluate.evaluate import evaluate_dataset

    if args.device == "cuda" and not torch.cuda.is_available():
        args.device = "cpu"
    results = {}
    for i, model in enumerate(args.models):
        def on_case(k: int, n: int, case_id: str, i=i) -> None:
            frac = (i + k / max(n, 1)) / len(args.models)
            print(json.dumps({"stage": "validate", "fraction": round(frac, 4), "message": f"model {i + 1}: case {case_id}",
                              "step": None, "total": None, "loss": None, "val_dsc": None}), flush=True)

        result = evaluate_dataset(model, args.data, args.split, device=args.device, on_case=on_case)
        overall = result.get("overall") or {}
        results[str(model)] = {"dsc": overall.get("dsc"), "nsd": overall.get("nsd"), "cases": overall.get("cases")}
    write_json(args.out, {"format": "malenia-server-validation/1", "split": args.split, "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
