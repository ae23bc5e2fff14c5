"""`malenia import lidc DIR --out DATASET`: LIDC-IDRI nodule crops with masks and ratings -> dataset.

DIR holds `image/<patient>_R_<nodule>.nii.gz` (CT crop, HU, native spacing), `mask/<same name>`
(binary mask on the same grid) and `nodules.csv` (one row per nodule with the radiologists'
majority-vote ratings). Each nodule becomes one case `<patient>_R_<nodule>`: the crop, the mask as
lesion 1 (disease lung_tumor), the ratings mapped to vocabulary ids (`lidc_ratings.py`) and, in the
lesion's extra, the patient id, the raw ratings (malignancy included), the diameter and centre, the
crop faces the mask touches (`truncated`: a nodule cut by its crop) and the side of the body from the
crop's affine (LPS x of the centre: beyond +-SIDE_MARGIN_MM of the scanner axis; else unknown), and
`dense_contact`, the fraction of the mask's outer shell denser than -300 HU (a nodule attached to the
chest wall, mediastinum or a large vessel).

Pairs that cannot be used are reported, never written, never fatal: an image or mask without its
partner, a file without a csv row, a csv row without files (LIDC-IDRI-1002 in the shared copy), a
mask on a different grid than its image, an empty mask, an unreadable file.

Split: `patient_split` (below), a fixed rule on the patient id, so every nodule of one patient lands
in the same split and nothing of a validation or test patient can enter training.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.errors import InputError, OutputError

DISEASE = "lung_tumor"
SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.10), ("test", 0.20))
SPLIT_SALT = "malenia-lidc-split/1"
SPLIT_RULE = ("sha256('malenia-lidc-split/1:' + patient_id), first 8 hex digits / 2^32: "
              "< 0.70 train, < 0.80 val, else test")
SIDE_MARGIN_MM = 30.0
DENSE_HU = -300.0
MAX_DENSE_CONTACT = 0.2  # a larger share of the rim denser than DENSE_HU: attached to dense tissue
FACES = ("z_low", "z_high", "y_low", "y_high", "x_low", "x_high")


def patient_split(patient_id: str) -> str:
    """train / val / test for a patient: a hash of the id, so the rule never changes with the data."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{patient_id}".encode("utf-8")).hexdigest()
    u = int(digest[:8], 16) / 2**32
    edge = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        edge += fraction
        if u < edge:
            return name
    return SPLIT_FRACTIONS[-1][0]


@dataclass
class NodulePair:
    case_id: str
    patient_id: str
    image: Path
    mask: Path
    row: dict[str, str]


@dataclass
class LidcScan:
    pairs: list[NodulePair]
    problems: list[str] = field(default_factory=list)


def find_pairs(root: str | Path) -> LidcScan:
    """Pairs image/mask/csv row by name; everything that does not pair is listed in `problems`."""
    root = Path(root)
    table = root / "nodules.csv"
    if not (root / "image").is_dir() or not (root / "mask").is_dir() or not table.is_file():
        raise InputError(f"{root}: expected image/, mask/ and nodules.csv (the LIDC nodule layout, docs/data.md)")
    rows = _read_rows(table)
    images = {p.name: p for p in (root / "image").glob("*.nii*")}
    masks = {p.name: p for p in (root / "mask").glob("*.nii*")}
    problems = [f"{n}: mask without image" for n in sorted(set(masks) - set(images))]
    problems += [f"{n}: image without mask" for n in sorted(set(images) - set(masks))]
    pairs = []
    for name in sorted(set(images) & set(masks)):
        case_id = name.split(".nii")[0]
        row = rows.pop(case_id, None)
        if row is None:
            problems.append(f"{name}: no row in nodules.csv")
            continue
        pairs.append(NodulePair(case_id, row["patient_id"].strip(), images[name], masks[name], row))
    problems += [f"{cid}: row in nodules.csv without image and mask files" for cid in sorted(rows)]
    return LidcScan(pairs, problems)


def _read_rows(path: Path) -> dict[str, dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            needed = {"patient_id", "nodule_id", "diameter_mm", "coordX", "coordY", "coordZ"}
            missing = needed - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path.name}: missing column(s) {sorted(missing)}")
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise InputError(f"{path.name}: not UTF-8 text ({err})") from None
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        key = f"{row['patient_id'].strip()}_R_{row['nodule_id'].strip()}"
        if key in out:
            raise InputError(f"{path.name}: nodule {key} listed twice")
        out[key] = row
    return out


def touched_faces(mask: np.ndarray) -> list[str]:
    """The crop faces (z/y/x, low/high) that the mask reaches: there the nodule may be cut off."""
    out = []
    for axis in range(3):
        moved = np.moveaxis(mask, axis, 0)
        if moved[0].any():
            out.append(FACES[2 * axis])
        if moved[-1].any():
            out.append(FACES[2 * axis + 1])
    return out


def read_pair(pair: NodulePair):
    """(image, mask as uint8 0/1) of one nodule, or InputError for a mismatched grid or empty mask."""
    from malenia.data.ct_io import grid_mismatch

    try:
        image = sitk.ReadImage(str(pair.image))
        mask = sitk.ReadImage(str(pair.mask))
    except RuntimeError as err:
        raise InputError(f"{pair.case_id}: unreadable ({str(err).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or mask.GetDimension() != 3:
        raise InputError(f"{pair.case_id}: not a 3D image")
    differs = grid_mismatch(mask, image)
    if differs:
        raise InputError(f"{pair.case_id}: mask grid differs from the image ({differs})")
    arr = sitk.GetArrayFromImage(mask) > 0
    if not arr.any():
        raise InputError(f"{pair.case_id}: empty mask")
    lesions = sitk.GetImageFromArray(arr.astype(np.uint8))
    lesions.CopyInformation(image)
    return sitk.Cast(image, sitk.sitkInt16), lesions


def nodule_case(pair: NodulePair):
    """The Malenia Case of one nodule (rules in the module doc)."""
    from malenia.data.dataset import Case, CaseReport, LesionReport
    from malenia.data.importers.lidc_ratings import map_ratings, ratings_metadata

    image, lesions = read_pair(pair)
    try:
        ids, notes = map_ratings(pair.row)
        ratings = ratings_metadata(pair.row)
        centre = [round(float(pair.row[k]), 2) for k in ("coordX", "coordY", "coordZ")]
        diameter = round(float(pair.row["diameter_mm"]), 2)
    except (InputError, ValueError) as err:
        raise InputError(f"{pair.case_id}: {err}") from None
    mask = sitk.GetArrayViewFromImage(lesions) > 0
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    side = "left" if centre[0] > SIDE_MARGIN_MM else "right" if centre[0] < -SIDE_MARGIN_MM else None
    extra = {
        "patient_id": pair.patient_id, "nodule_id": pair.row["nodule_id"].strip(),
        "series_uid": pair.row.get("seriesuid", "").strip(), "split": patient_split(pair.patient_id),
        "ratings": ratings, "malignancy": ratings.get("Malignancy", {}).get("value"),
        "diameter_mm": diameter, "centre_lps": centre, "side_from_affine": side,
        "voxels": int(mask.sum()), "volume_ml": round(mask.sum() * voxel_mm3 / 1000.0, 4),
        "truncated": touched_faces(mask), "dense_contact": dense_contact(sitk.GetArrayViewFromImage(image), mask),
        "components": int(_components(mask)),
        **({"notes": notes} if notes else {}),
    }
    lesion = LesionReport(1, DISEASE, described(ids), extra)
    report = CaseReport(pair.case_id, [lesion], None, source="LIDC-IDRI (majority-vote ratings)",
                        extra={"patient_id": pair.patient_id})
    return Case(pair.case_id, image, lesions, report)


def dense_contact(hu: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the voxels just outside the mask denser than DENSE_HU: the chest wall, mediastinum or
    a large vessel the nodule touches (juxtapleural / juxtavascular); pasted elsewhere it shows a flat face."""
    from scipy import ndimage as ndi

    shell = ndi.binary_dilation(mask, np.ones((3, 3, 3), bool)) & ~mask
    return round(float((hu[shell] > DENSE_HU).mean()), 3) if shell.any() else 0.0


def _components(mask: np.ndarray) -> int:
    from scipy import ndimage as ndi

    return ndi.label(mask, structure=np.ones((3, 3, 3), bool))[1]


def described(ids: dict[str, list[str]]):
    """{aspect: [Description]} for every aspect, with the vocabulary's current texts."""
    from malenia.aspects import ASPECTS
    from malenia.data.dataset import Description
    from malenia.data.importers.common import vocabulary_text

    return {a: [Description(vocabulary_text(i), i) for i in ids.get(a, [])] for a in ASPECTS}


@dataclass
class LidcImport:
    cases: list[str] = field(default_factory=list)
    split: dict[str, list[str]] = field(default_factory=lambda: {"train": [], "val": [], "test": []})
    patients: dict[str, set[str]] = field(default_factory=lambda: {"train": set(), "val": set(), "test": set()})
    problems: list[str] = field(default_factory=list)


def unplantable(lesion_extra: dict) -> str | None:
    """Why `malenia synth --nodules` would not plant this nodule in an open lung (without --all-nodules): cut by
    its crop or attached to dense tissue, either would show a flat seam; None when it plants."""
    if lesion_extra.get("truncated"):
        return f"cut by its crop ({', '.join(lesion_extra['truncated'])})"
    if lesion_extra.get("dense_contact", 0.0) >= MAX_DENSE_CONTACT:
        return f"attached to dense tissue ({lesion_extra['dense_contact']:.0%} of its rim)"
    return None


def import_lidc(root: str | Path, out: str | Path, overwrite: bool = False, limit: int | None = None,
                progress: bool = False, split: str = "all", plantable: bool = False) -> LidcImport:
    """Writes the dataset (it appears whole, or not at all); unusable pairs are listed, not fatal. `split`: only
    the nodules of that patient split; `plantable`: only those `malenia synth --nodules` plants (`unplantable`),
    say for a payload carried to a GPU machine."""
    from malenia.atomic import atomic_dir
    from malenia.data.dataset import DATASET_FILE, DatasetIndex, write_case, write_dataset_index

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; use --overwrite to replace it")
    scan = find_pairs(root)
    pairs = scan.pairs[: max(0, limit)] if limit is not None else scan.pairs
    result = LidcImport(problems=list(scan.problems))
    iterator = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc="import lidc", unit="nodule", file=sys.stderr)
    with atomic_dir(out, overwrite=overwrite, replaces=DATASET_FILE) as staging:
        for pair in iterator:
            try:
                case = nodule_case(pair)
            except InputError as err:
                result.problems.append(str(err))
                continue
            extra = case.report.lesions[0].extra
            if split != "all" and extra["split"] != split or plantable and unplantable(extra):
                continue
            write_case(staging, case)
            result.cases.append(case.case_id)
            result.split[extra["split"]].append(case.case_id)
            result.patients[extra["split"]].add(pair.patient_id)
        if not result.cases:
            chosen = (f" of the {split} split" if split != "all" else "") + (" that plants" if plantable else "")
            raise InputError(f"{root}: no usable nodule{chosen} (problems: {'; '.join(result.problems[:3]) or 'none'})")
        write_dataset_index(staging, DatasetIndex(
            name=out.name, cases=result.cases, split={k: v for k, v in result.split.items() if v},
            description="LIDC-IDRI lung nodule crops with masks and majority-vote ratings (CC BY 3.0)",
            extra={"source": "lidc", "split_rule": SPLIT_RULE, "disease": DISEASE,
                   "patients": {k: sorted(v) for k, v in result.patients.items()},
                   "problems": result.problems}
                  | ({"selection": {"split": split, "plantable": plantable}} if split != "all" or plantable else {})))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="folder with image/, mask/ and nodules.csv")
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--limit", type=int, default=None, help="import only the first N pairs (by name)")
    parser.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                        help="import only the nodules of this patient split (default all)")
    parser.add_argument("--plantable", action="store_true",
                        help="import only the nodules `malenia synth --nodules` plants (not cut by their crop, not "
                             "attached to dense tissue): a compact set, say for a GPU machine's payload")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    result = import_lidc(args.dir, args.out, overwrite=args.overwrite, limit=args.limit, progress=not args.quiet,
                         split=args.split, plantable=args.plantable)
    for problem in result.problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    sizes = ", ".join(f"{k} {len(v)} nodules / {len(result.patients[k])} patients" for k, v in result.split.items() if v)
    print(f"imported {len(result.cases)} nodules into {args.out} ({sizes}); {len(result.problems)} problem(s) reported")
    return 0
