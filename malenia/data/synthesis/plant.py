"""Datasets of real LIDC nodules planted in real lungs (`malenia synth --nodules`, docs/data.md).

Nodules come from a dataset written by `malenia import lidc` or straight from the LIDC folder
(image/, mask/, nodules.csv). Each nodule keeps its patient's split (`importers.lidc.patient_split`):
cases are built per split from that split's nodules only, so a training case never holds a nodule
of a validation or test patient. Nodules cut by their crop (mask touching a crop face) and nodules
attached to the chest wall, mediastinum or a large vessel (`dense_contact` >= importers.lidc.MAX_DENSE_CONTACT of
the mask's outer shell denser than -300 HU) are left out unless `allow_truncated`: pasted into
open lung, the cut face or the contact face would show as a flat seam (seen in the previews).

Per split, the nodules are shuffled by (seed, split) and dealt into cases of `lesions_per_case`
nodules; case i uses base i mod len(bases) (a nodule that fits nowhere in it tries the other
bases, then is reported as not placed). A case's report gives each planted nodule its mapped
ratings, the location of the lobe it lies in (when the base has lobe labels), the base's
enhancement, and in extra the LIDC metadata (patient, ratings, malignancy) and where it went.
The base's own lesions stay labelled (disease lung_tumor, attributes unknown). The base "phantom"
stands for PHANTOM_BASES freshly drawn phantoms (drawn from the seed), cycled like folders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import SimpleITK as sitk

from malenia.data.dataset import DATASET_FILE, is_dataset, read_case, read_dataset
from malenia.data.importers.lidc import unplantable
from malenia.data.synthesis.lung_base import LungBase, load_lung_base, phantom_lung_base
from malenia.data.synthesis.nodules import find_centre, nodule_patch, part_depth, paste, patch_radius_mm
from malenia.errors import InputError, OutputError

SPLITS = ("train", "val", "test")
PHANTOM_BASES = 12  # bodies drawn per "phantom" base: 3-4 s each at 3 mm on 2 cores, 12-15 s at 2 mm


@dataclass
class Nodule:
    case_id: str
    image: sitk.Image
    mask: sitk.Image
    attributes: dict[str, list[str]]  # vocabulary ids per aspect
    extra: dict[str, Any]  # the importer's lesion extra (patient_id, split, ratings, truncated, ...)

    @property
    def split(self) -> str:
        return str(self.extra["split"])


def load_nodules(path: str | Path, split: str = "all", allow_truncated: bool = False) -> tuple[list[Nodule], list[str]]:
    """Nodules of `split` ("all" or train/val/test) from an imported dataset or a raw LIDC folder; and notes."""
    path = Path(path)
    if (path / "nodules.csv").is_file():
        from malenia.data.importers.lidc import find_pairs, nodule_case

        scan = find_pairs(path)
        cases, notes = [], list(scan.problems)
        for pair in scan.pairs:
            try:
                cases.append(nodule_case(pair))
            except InputError as err:
                notes.append(str(err))
    elif is_dataset(path):
        index = read_dataset(path)
        if index.extra.get("source") != "lidc":
            raise InputError(f"{path}: not a dataset written by `malenia import lidc`")
        cases, notes = [read_case(path, cid) for cid in index.cases], []
    else:
        raise InputError(f"{path}: neither a LIDC folder (nodules.csv) nor a dataset from `malenia import lidc`")
    out = []
    for case in cases:
        lesion = case.report.lesions[0]
        if split != "all" and lesion.extra.get("split") != split:
            continue
        reason = None if allow_truncated else unplantable(lesion.extra)
        if reason:
            notes.append(f"{case.case_id}: {reason}; not planted")
            continue
        ids = {a: [d.id for d in ds if d.id] for a, ds in lesion.attributes.items()}
        out.append(Nodule(case.case_id, case.image, case.lesions, ids, dict(lesion.extra)))
    return out, notes


@dataclass
class PreparedBase:
    base: LungBase
    depth: np.ndarray  # mm from the edge of each voxel's lung part
    occupied: list[tuple[np.ndarray, float]] = field(default_factory=list)  # the base's own lesions


def prepare_base(folder: str | LungBase, spacing_xyz=None) -> PreparedBase:
    base = folder if isinstance(folder, LungBase) else load_lung_base(folder, spacing_xyz)
    depth = part_depth(base.lung, base.spacing_zyx)
    occupied = []
    for k in range(1, int(base.lesions.max()) + 1):
        idx = np.argwhere(base.lesions == k)
        if len(idx):
            c = idx.mean(0)
            occupied.append((c, float(np.sqrt((((idx - c) * base.spacing_zyx) ** 2).sum(1)).max())))
    return PreparedBase(base, depth, occupied)


@dataclass
class Canvas:
    hu: np.ndarray
    lesions: np.ndarray
    occupied: list[tuple[np.ndarray, float]]
    reports: list = field(default_factory=list)


def _base_lesion_reports(prepared: PreparedBase) -> list:
    from malenia.data.dataset import LesionReport
    from malenia.data.importers.lidc import described

    return [LesionReport(k, "lung_tumor", described({}), {"from_base": True, "note": "the base's own lesion; attributes unknown"})
            for k in range(1, int(prepared.base.lesions.max()) + 1)]


def try_plant(canvas: Canvas, prepared: PreparedBase, nodule: Nodule, rng: np.random.Generator) -> dict[str, Any] | None:
    """Plants one nodule when it fits; returns where it went (None: it does not fit this base)."""
    base = prepared.base
    patch = nodule_patch(nodule.image, nodule.mask, base.reference.GetSpacing(), base.reference.GetDirection())
    where = find_centre(base.lung, prepared.depth, patch, base.spacing_zyx, canvas.occupied, rng)
    if where is None:
        return None
    label = len(canvas.reports) + 1
    paste(canvas.hu, canvas.lesions, patch, where, label)
    canvas.occupied.append((where.centre.astype(float), patch_radius_mm(patch, patch.weight > 0, base.spacing_zyx)))
    part = base.parts[where.part]
    centre = base.reference.TransformIndexToPhysicalPoint([int(v) for v in where.centre[::-1]])
    voxels = int((canvas.lesions == label).sum())
    return {"base": base.source, "centre_lps": [round(float(v), 2) for v in centre], "lung_part": part.name,
            "side": part.side, "location_id": part.location_id, "voxels": voxels,
            "volume_ml": round(voxels * float(np.prod(base.spacing_zyx)) / 1000.0, 4)}


def nodule_report(label: int, nodule: Nodule, planted: dict[str, Any], enhancement_id: str):
    from malenia.data.dataset import LesionReport
    from malenia.data.importers.lidc import described

    ids = {a: list(v) for a, v in nodule.attributes.items()}
    ids["location"] = [planted["location_id"]] if planted["location_id"] else []
    ids["enhancement"] = [enhancement_id]
    lidc = {k: nodule.extra.get(k) for k in ("patient_id", "nodule_id", "split", "ratings", "malignancy", "diameter_mm",
                                             "side_from_affine", "truncated")}
    return LesionReport(label, "lung_tumor", described(ids), {"lidc": {"case_id": nodule.case_id, **lidc}, "planted": planted})


def plant_case(case_id: str, bases: Sequence[PreparedBase], first: int, nodules: Sequence[Nodule],
               rng: np.random.Generator) -> tuple[Any, list[str]]:
    """One case on bases[first] with as many of `nodules` as fit; (Case or None, case ids not placed)."""
    from malenia.data.dataset import Case, CaseReport, Description
    from malenia.data.importers.common import vocabulary_text

    prepared = bases[first % len(bases)]
    base = prepared.base
    enh = "enhancement.contrast" if base.phase == "contrast" else "enhancement.non_contrast"
    canvas = Canvas(base.hu.copy(), base.lesions.astype(np.uint16), list(prepared.occupied), _base_lesion_reports(prepared))
    missed = []
    for nodule in nodules:
        planted = try_plant(canvas, prepared, nodule, rng)
        if planted is None:
            missed.append(nodule.case_id)
            continue
        canvas.reports.append(nodule_report(len(canvas.reports) + 1, nodule, planted, enh))
    if len(canvas.reports) == int(base.lesions.max()):
        return None, missed
    images = [sitk.GetImageFromArray(a) for a in (np.clip(np.round(canvas.hu), -1024, 3071).astype(np.int16),
                                                   canvas.lesions.astype(np.uint8), base.lung)]
    for img in images:
        img.CopyInformation(base.reference)
    report = CaseReport(case_id, canvas.reports, Description(vocabulary_text(enh), enh),
                        source="malenia synth --nodules (LIDC-IDRI nodules planted in a real lung)",
                        extra={"base": base.source, "organ_labels": {str(k): p.name for k, p in base.parts.items()},
                               "lung_from": base.info.get("lung_from")})
    return Case(case_id, images[0], images[1], report, images[2]), missed


@dataclass
class PlantResult:
    index: Any  # DatasetIndex
    placed: int = 0
    not_placed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _deal(nodules: list[Nodule], split_no: int, seed: int, lesions_per_case: tuple[int, int]):
    """Yields (rng, nodules of one case) for one split; the caller may push nodules back via the list."""
    rng = np.random.default_rng([seed, split_no])
    queue = [nodules[i] for i in rng.permutation(len(nodules))]
    while queue:
        k = int(rng.integers(lesions_per_case[0], lesions_per_case[1] + 1))
        take, queue[:] = queue[:k], queue[k:]
        yield rng, take, queue


def _prepared_bases(bases: Sequence[str], spacing, seed: int) -> list[PreparedBase]:
    from malenia.data.synthesis.bases import find_bases
    from malenia.data.synthesis.generate import PHANTOM

    rng = np.random.default_rng([seed, 7919])  # bodies independent of the nodules' deal; "phantom" twice: 24 bodies
    prepared = []
    for b in bases:
        if str(b) == PHANTOM:
            prepared += [prepare_base(phantom_lung_base(rng, spacing, f"phantom_{i:02d}")) for i in range(PHANTOM_BASES)]
        else:
            prepared += [prepare_base(str(f), spacing) for f in find_bases(b)]
    return prepared


def plant_dataset(out: str | Path, nodules_from: str | Path, bases: Sequence[str], split: str = "all", seed: int = 0,
                  lesions_per_case: tuple[int, int] = (1, 3), spacing=None, allow_truncated: bool = False,
                  max_cases: int | None = None, name: str | None = None, overwrite: bool = False,
                  progress: Callable[[str], None] | None = None) -> PlantResult:
    """Writes the planted dataset (rules in the module doc); it appears whole or not at all."""
    from malenia.atomic import atomic_dir
    from malenia.data.dataset import DatasetIndex, write_case, write_dataset_index
    from malenia.data.importers.lidc import SPLIT_RULE

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists (use --overwrite to replace it)")
    if split not in ("all", *SPLITS):
        raise InputError(f"--nodule-split must be all, train, val or test, got {split!r}")
    nodules, notes = load_nodules(nodules_from, split, allow_truncated)
    if not nodules:
        raise InputError(f"{nodules_from}: no nodule to plant for split {split!r}")
    prepared = _prepared_bases(bases, spacing, seed)
    result = PlantResult(None, notes=notes)
    cases, split_cases, patients = [], {s: [] for s in SPLITS}, {s: set() for s in SPLITS}
    prefix = name or out.name
    attempts = 0  # cycles the bases (also past a case where nothing fitted)
    with atomic_dir(out, overwrite=overwrite, replaces=DATASET_FILE) as staging:
        for split_no, s in enumerate(SPLITS):
            tries: dict[str, int] = {}
            for rng, take, queue in _deal([n for n in nodules if n.split == s], split_no, seed, lesions_per_case):
                if max_cases is not None and len(cases) >= max_cases:
                    break
                t0 = time.perf_counter()
                case_id = f"{prefix}_{s}_{len(split_cases[s]):04d}"
                case, missed = plant_case(case_id, prepared, attempts, take, rng)
                attempts += 1
                for m in missed:
                    tries[m] = tries.get(m, 0) + 1
                    nodule = next(n for n in take if n.case_id == m)
                    (queue.append(nodule) if tries[m] < 2 * len(prepared) else result.not_placed.append(m))
                if case is None:
                    continue
                write_case(staging, case)
                cases.append(case_id)
                split_cases[s].append(case_id)
                lidc = [les.extra["lidc"] for les in case.report.lesions if "lidc" in les.extra]
                patients[s].update(x["patient_id"] for x in lidc)
                result.placed += len(lidc)
                if progress:
                    progress(f"[{len(cases)}] {case_id}: {len(lidc)} nodule(s) in {Path(case.report.extra['base']).name} "
                             f"in {time.perf_counter() - t0:.2f} s")
        if not cases:
            raise InputError("no nodule could be planted in these bases")
        result.index = DatasetIndex(
            name=prefix, cases=cases, split={k: v for k, v in split_cases.items() if v},
            description=f"LIDC-IDRI nodules planted in real lungs ({', '.join(Path(p.base.source).name for p in prepared)})",
            extra={"generator": "malenia synth --nodules", "seed": seed, "nodules_from": str(nodules_from),
                   "bases": [p.base.source for p in prepared], "split_rule": SPLIT_RULE, "nodule_split": split,
                   "lesions_per_case": list(lesions_per_case), "spacing": list(spacing) if spacing else None,
                   "allow_truncated": allow_truncated, "nodules_planted": result.placed,
                   "not_placed": result.not_placed, "patients": {k: sorted(v) for k, v in patients.items() if v}})
        write_dataset_index(staging, result.index)
    return result
