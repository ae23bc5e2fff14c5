"""`malenia synth`: synthetic lesion datasets with controlled attributes (docs/data.md, "Synthesis")."""

from __future__ import annotations

import argparse

from malenia.errors import InputError
from malenia.commands._runtime import require_output_folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="synthesise a lesion dataset on real CT organs or procedural phantoms")
    p.add_argument("--base", action="append", required=True, metavar="DIR|phantom",
                   help="anatomy source: 'phantom' or a folder with a CT and organ labels (repeatable; cases cycle through them)")
    p.add_argument("--diseases", default=None, help="comma-separated disease keys, or all / seen / unseen / novel (validation-only types, malenia.aspects.NOVEL_TYPES) / transplant (training-only types, malenia.aspects.TRANSPLANT_TYPES); not with --nodules")
    p.add_argument("--cases", type=int, default=None, metavar="N", help="number of cases (with --nodules: at most N)")
    p.add_argument("--nodules", default=None, metavar="DATASET|DIR",
                   help="plant real LIDC nodules (a dataset from `malenia import lidc`, or the LIDC folder) instead of drawn lesions")
    p.add_argument("--nodule-split", default="all", choices=("all", "train", "val", "test"),
                   help="with --nodules: plant the nodules of this patient split only (default all; each case keeps its split)")
    p.add_argument("--all-nodules", action="store_true",
                   help="with --nodules: also plant nodules cut by their crop or attached to the chest wall (they show a flat face)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder to write")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="same seed, same dataset (default 0)")
    p.add_argument("--lesions-per-case", default="1-3", metavar="K|A-B", help="lesions per case (default 1-3)")
    p.add_argument("--size", default=None, help="grid size in voxels, X[,Y,Z] (phantom default 128; real bases are cropped/padded)")
    p.add_argument("--spacing", default=None, help="voxel spacing in mm, S or X,Y,Z (phantom default 3; real bases are resampled)")
    p.add_argument("--split", default="zero_shot", help="split protocol: a name in Resources/splits/ or a json path (default zero_shot)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--mix-attributes", type=float, default=0.0, metavar="P",
                   help="share of lesions whose shape, density variation and margin are drawn apart from their "
                        "disease, among the descriptions the chosen diseases show (default 0: every lesion as its profile)")
    p.add_argument("--mix-density", type=float, default=0.0, metavar="P",
                   help="share of lesions whose density level against their host (lower, similar, higher) is drawn "
                        "apart from their disease among the levels the chosen diseases show, named for the lesion's "
                        "organ; calcific, fluid and lung densities keep theirs (default 0)")
    p.add_argument("--host-floor", action="store_true",
                   help="draw relative densities against a pancreas no fainter than its parenchyma, fluid at water "
                        "or above and solid lesions above fat (a real base's coarse pancreas label averages the gland "
                        "with fat; default off: the datasets of model 2.11.1 and earlier)")
    p.add_argument("--diameter", action="append", default=None, metavar="DISEASE=LO-HI",
                   help="draw DISEASE's diameters log-uniformly from LO to HI mm instead of its profile's range "
                        "(repeatable, one per disease; a lesion too big for its organ is shrunk to fit, as always)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="write only every N-th case, from the K-th, of the --cases dataset (same ids, splits and content), "
                        "for N processes whose parts scripts/merge_datasets.py joins into the one-process dataset; "
                        "give them the same --name")
    p.add_argument("--name", default=None, help="dataset name and case id prefix (default: the folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _triple(text: str | None, kind: type, what: str):
    if text is None:
        return None
    try:
        vals = [kind(v) for v in str(text).split(",")]
    except ValueError:
        raise InputError(f"--{what} must be one number or three comma-separated numbers, got {text!r}") from None
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or any(v <= 0 for v in vals):
        raise InputError(f"--{what} must be one positive number or three, got {text!r}")
    if what == "size" and any(v < 16 or v > 1024 for v in vals):
        raise InputError(f"--size must be between 16 and 1024 voxels per axis, got {text!r}")
    if what == "spacing" and any(v < 0.3 or v > 10 for v in vals):
        raise InputError(f"--spacing must be between 0.3 and 10 mm, got {text!r}")
    return tuple(vals)


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must be K/N (for example 2/8), got {text!r}") from None
    return k, n


def run(args: argparse.Namespace) -> int:
    from malenia.data.synthesis.generate import (parse_diameters, parse_diseases, parse_range, print_progress,
                                                 synthesize_dataset)

    require_output_folder(args.out)  # "afile/ds exists" would misname what is in the way
    if args.nodules is not None:
        return _run_nodules(args)
    if args.diseases is None or args.cases is None:
        raise InputError("--diseases and --cases are required (unless --nodules plants real nodules)")
    diseases = parse_diseases(args.diseases)
    index = synthesize_dataset(
        args.out, args.base, diseases, args.cases, args.seed,
        lesions_per_case=parse_range(args.lesions_per_case),
        size=_triple(args.size, int, "size"), spacing=_triple(args.spacing, float, "spacing"),
        split=args.split, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        name=args.name, overwrite=args.overwrite, progress=None if args.quiet else print_progress,
        mix_attributes=args.mix_attributes, mix_density=args.mix_density, shard=_shard(args.shard), host_floor=args.host_floor,
        diameters_mm=parse_diameters(args.diameter),
    )
    sizes = ", ".join(f"{k} {len(v)}" for k, v in index.split.items())
    print(f"wrote {len(index.cases)} cases to {args.out} ({sizes})")
    return 0


def _run_nodules(args: argparse.Namespace) -> int:
    from malenia.data.synthesis.generate import parse_range, print_progress
    from malenia.data.synthesis.plant import plant_dataset

    if args.shard is not None:
        raise InputError("--shard does not apply to --nodules (run one process per --seed instead)")
    if args.diseases is not None:
        raise InputError("--diseases does not apply to --nodules (every planted nodule is a lung_tumor)")
    if args.size is not None:
        raise InputError("--size does not apply to --nodules (the base keeps its field of view)")
    if args.host_floor:
        raise InputError("--host-floor does not apply to --nodules (a real nodule keeps its own CT values)")
    if args.diameter:
        raise InputError("--diameter does not apply to --nodules (a real nodule keeps its own size)")
    result = plant_dataset(
        args.out, args.nodules, args.base, split=args.nodule_split, seed=args.seed,
        lesions_per_case=parse_range(args.lesions_per_case), spacing=_triple(args.spacing, float, "spacing"),
        allow_truncated=args.all_nodules, max_cases=args.cases, name=args.name, overwrite=args.overwrite,
        progress=None if args.quiet else print_progress,
    )
    sizes = ", ".join(f"{k} {len(v)}" for k, v in result.index.split.items())
    print(f"wrote {len(result.index.cases)} cases with {result.placed} planted nodules to {args.out} ({sizes}); "
          f"{len(result.notes)} nodule(s) left out, {len(result.not_placed)} did not fit")
    return 0
