"""`malenia import kits23 DIR --out DATASET [--reports DIR]`: the KiTS23 challenge data.

Official layout (github.com/neheller/kits23): DIR/dataset/case_XXXXX/imaging.nii.gz and
segmentation.nii.gz (DIR may also be the dataset folder itself). Labels: 1 kidney, 2 tumor,
3 cyst -> organ kidney (split into kidney_left / kidney_right), lesions kidney_tumor and
kidney_cyst. Cases without segmentation.nii.gz (or with only the instances/ folder) are skipped
with a warning. The case id is the folder name (case_00000), as in the attribute workbook.
Lesion location (left / right kidney) is measured from the lesion's side of the patient's midline.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from malenia.data.importers.common import LabelScheme, SourceCase, add_common_arguments, run_import
from malenia.errors import InputError

SCHEME = LabelScheme(
    "kits23",
    organs={1: "kidney"},
    lesions={2: "kidney_tumor", 3: "kidney_cyst"},
    host_organ="kidney",
    measure_location="kidney_side",
)
CASE_PATTERN = re.compile(r"^case_\d{5}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kits_dir", metavar="DIR", help="the KiTS23 repository or its dataset/ folder")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cases, missing = discover(Path(args.kits_dir))
    for case_id in missing:
        print(f"warning: {case_id} has no segmentation.nii.gz; skipped", file=sys.stderr)
    return run_import(args, SCHEME, cases, name="kits23", description="Imported from KiTS23 (kidney tumours and cysts)")


def discover(root: Path) -> tuple[list[SourceCase], list[str]]:
    """(labelled cases, ids of case folders without segmentation)."""
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    dataset = root / "dataset" if (root / "dataset").is_dir() else root
    folders = sorted(p for p in dataset.iterdir() if p.is_dir() and CASE_PATTERN.match(p.name))
    if not folders:
        raise InputError(f"{root}: no KiTS23 case folders (dataset/case_XXXXX/) found")
    cases, missing = [], []
    for folder in folders:
        image, label = folder / "imaging.nii.gz", folder / "segmentation.nii.gz"
        if not image.is_file():
            raise InputError(f"{folder.name}: imaging.nii.gz is missing")
        if not label.is_file():
            missing.append(folder.name)
            continue
        cases.append(SourceCase(folder.name, image, label))
    return cases, missing
