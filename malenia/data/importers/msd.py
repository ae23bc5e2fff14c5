"""`malenia import msd TASKDIR --out DATASET [--reports DIR]`: a Medical Segmentation Decathlon CT task.

Official layout (medicaldecathlon.com): TaskXX_Name/dataset.json, imagesTr/<name>_<n>.nii.gz,
labelsTr/<name>_<n>.nii.gz (imagesTs has no labels and is not imported). Cases are listed by
dataset.json's "training" entries; the AppleDouble "._*" files shipped in the archives are ignored.
The case id is the file name without .nii.gz (liver_2, pancreas_001), as in the attribute workbook.

Label schemes (dataset.json "labels", checked on import):
  Task03_Liver          1 liver, 2 cancer                 -> organ liver, lesion liver_tumor
  Task06_Lung           1 cancer                          -> lesion lung_tumor
  Task07_Pancreas       1 pancreas, 2 cancer              -> organ pancreas, lesion pancreas_tumor or pancreas_cyst
                                                             (the workbook report decides; see common.py)
  Task08_HepaticVessel  1 Vessel, 2 Tumour                -> organ hepatic_vessel, lesion hepatic_vessel_tumor
  Task10_Colon          1 colon cancer primaries          -> lesion colon_tumor
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from malenia.data.importers.common import LabelScheme, SourceCase, add_common_arguments, run_import
from malenia.errors import InputError

SCHEMES: dict[str, tuple[LabelScheme, dict[str, str]]] = {
    "03": (
        LabelScheme("msd/Task03_Liver", organs={1: "liver"}, lesions={2: "liver_tumor"}, host_organ="liver"),
        {"0": "background", "1": "liver", "2": "cancer"},
    ),
    "06": (
        LabelScheme("msd/Task06_Lung", organs={}, lesions={1: "lung_tumor"}),
        {"0": "background", "1": "cancer"},
    ),
    "07": (
        LabelScheme("msd/Task07_Pancreas", organs={1: "pancreas"}, lesions={2: None},
                    undecided=("pancreas_tumor", "pancreas_cyst"), host_organ="pancreas", measure_location="pancreas_thirds"),
        {"0": "background", "1": "pancreas", "2": "cancer"},
    ),
    "08": (
        LabelScheme("msd/Task08_HepaticVessel", organs={1: "hepatic_vessel"}, lesions={2: "hepatic_vessel_tumor"}),
        {"0": "background", "1": "vessel", "2": "tumour"},
    ),
    "10": (
        LabelScheme("msd/Task10_Colon", organs={}, lesions={1: "colon_tumor"}),
        {"0": "background", "1": "colon cancer primaries"},
    ),
}
TASK_BY_NAME = {"liver": "03", "lung": "06", "pancreas": "07", "hepaticvessel": "08", "colon": "10"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("taskdir", metavar="TASKDIR", help="an MSD task folder, e.g. Task03_Liver")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    task_dir = Path(args.taskdir)
    scheme, cases, meta = discover(task_dir)
    name = f"msd_{scheme.source.split('/')[-1].lower()}"
    return run_import(args, scheme, cases, name=name, description=f"Imported from MSD {meta.get('name', '')}: {meta.get('description', '')}".strip())


def discover(task_dir: Path) -> tuple[LabelScheme, list[SourceCase], dict]:
    """The task's label scheme and its labelled cases."""
    if not task_dir.is_dir():
        raise InputError(f"not a folder: {task_dir}")
    meta_path = task_dir / "dataset.json"
    if not meta_path.is_file():
        raise InputError(f"{task_dir}: not an MSD task folder (no dataset.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{meta_path}: not valid JSON ({err})") from None
    task = _task_number(task_dir, meta)
    if task not in SCHEMES:
        raise InputError(f"{task_dir.name}: MSD task {task} is not a supported CT lesion task (03, 06, 07, 08, 10)")
    scheme, expected = SCHEMES[task]
    labels = {str(k): str(v).strip().lower() for k, v in meta.get("labels", {}).items()}
    if labels != expected:
        raise InputError(f"{meta_path.name}: labels {meta.get('labels')} differ from the official Task{task} scheme {expected}")
    modality = {str(v).upper() for v in meta.get("modality", {"0": "CT"}).values()}
    if modality != {"CT"}:
        raise InputError(f"{meta_path.name}: modality {sorted(modality)} is not CT")
    cases = []
    entries = meta.get("training")
    if not entries:  # fall back to the folder contents
        entries = [{"image": f"./imagesTr/{p.name}", "label": f"./labelsTr/{p.name}"}
                   for p in sorted((task_dir / "labelsTr").glob("*.nii.gz")) if not p.name.startswith("._")]
    for entry in entries:
        try:
            image, label = task_dir / entry["image"], task_dir / entry["label"]
        except (TypeError, KeyError):
            raise InputError(f"{meta_path.name}: malformed training entry {entry!r}") from None
        if image.name.startswith("._"):
            continue
        if not image.is_file() or not label.is_file():
            raise InputError(f"{task_dir.name}: dataset.json lists {entry['image']} / {entry['label']} but the file is missing")
        cases.append(SourceCase(image.name.removesuffix(".gz").removesuffix(".nii"), image, label))
    return scheme, cases, meta


def _task_number(task_dir: Path, meta: dict) -> str:
    m = re.match(r"Task(\d+)_", task_dir.name)
    if m:
        return f"{int(m.group(1)):02d}"
    key = re.sub(r"[^a-z]", "", str(meta.get("name", "")).lower())
    if key in TASK_BY_NAME:
        return TASK_BY_NAME[key]
    raise InputError(f"{task_dir.name}: cannot tell the MSD task (folder not named TaskXX_Name, dataset.json name {meta.get('name')!r})")
