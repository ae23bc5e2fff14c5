"""What the MSD and KiTS23 importers share: label schemes -> lesion instances, organs, reports.

One source case (an image and its label map in the source's numbering) becomes one Malenia case:
  * image.nii.gz: the CT as read by `read_ct` (validated; stored as int16 when lossless);
  * lesions.nii.gz: instances 1..K, numbered by decreasing volume (1 = principal lesion). Each
    lesion label value is split into connected components (26-connectivity); components under
    `min_lesion_mm3` (default 10 mm^3) are annotation specks and become background. Components
    of different label values (KiTS23 tumour vs cyst) stay different lesions even when touching;
  * organs.nii.gz: the source's organ labels, renumbered 1.. with names in report.extra
    ["organ_labels"]; a host organ includes the lesions inside it (MSD liver and pancreas,
    KiTS23 kidney) as TotalSegmentator's organ masks do. KiTS23's kidney mask is split into
    kidney_left / kidney_right by the patient's midline;
  * report.json: per lesion the disease given by its label value (MSD Task07's "cancer" label
    is pancreatic tumour or cyst: the workbook report decides, otherwise the disease stays None
    and the case goes to split "undecided"), and the attributes below.

Attributes. When `--reports DIR` holds DIR/<case_id>.json (the CaseReport files written by
`malenia import annotations`), each report lesion of disease D describes the principal (largest)
instance of D: it gets all eight aspects. Other instances of D in the same scan get only the
appearance aspects that a radiologist reports once for a scan's lesions of one kind (density,
density variation, surface, enhancement) - location, shape, relationship and specific features
belong to the described lesion. Several report lesions of D go to the instances of D in order of
size. Without a report, attributes come only from what is measured: enhancement (scan level, by
`detect_phase`), and location where the organ mask allows it: kidney side (lesion centroid
against the patient's midline) and pancreatic head / body / tail (thirds of the gland's
right-to-left extent, a coarse stand-in for the SMV and aortic landmarks). Measured aspects are
listed in the lesion's extra["measured"]. The scan's enhancement fills every lesion's
enhancement aspect when the lesion has none.

Splits (the zero-shot protocol of DESIGN.md): "train" = cases with a seen-disease lesion or no
lesion at all (negatives; unseen lesions in them must be masked out by the sampler's `diseases`
filter), "test" = cases with an unseen-disease lesion, "undecided" = cases with a lesion whose
disease is unknown.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from malenia.aspects import ASPECTS, SEEN_DISEASES, UNSEEN_DISEASES
from malenia.errors import InputError, OutputError

DEFAULT_MIN_LESION_MM3 = 10.0
SHARED_ASPECTS = ("density", "density_variation", "surface", "enhancement")
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LabelScheme:
    """How a source numbers its labels: value -> organ name, and value -> disease for lesions."""

    source: str
    organs: dict[int, str]
    lesions: dict[int, str | None]  # disease key; None = decided by the report among `undecided`
    undecided: tuple[str, ...] = ()
    host_organ: str | None = None  # the organ (name in `organs`) that contains the lesions
    measure_location: str | None = None  # "kidney_side" | "pancreas_thirds" | None


@dataclass
class SourceCase:
    case_id: str
    image: Path
    label: Path


@dataclass
class Instance:
    value: int  # label value in the source
    disease: str | None
    voxels: int
    volume_mm3: float
    centroid_lps: np.ndarray
    mask_index: int  # component number, for painting


@dataclass
class ImportSummary:
    cases: list[str] = field(default_factory=list)
    lesions: int = 0
    diseases: dict[str, int] = field(default_factory=dict)
    dropped_components: int = 0
    reports_attached: int = 0
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# command line


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--reports", default=None, help="folder of <case_id>.json reports from `malenia import annotations`")
    parser.add_argument("--min-lesion-mm3", type=float, default=DEFAULT_MIN_LESION_MM3,
                        help=f"drop lesion components smaller than this (default {DEFAULT_MIN_LESION_MM3:g} mm^3)")
    parser.add_argument("--limit", type=int, default=None, help="import only the first N cases")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable cases with a warning instead of stopping")
    parser.add_argument("--force", action="store_true", help="accept images outside the usual CT Hounsfield range")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--no-phase", action="store_true", help="do not measure the contrast phase of cases without a report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_import(args: argparse.Namespace, scheme: LabelScheme, cases: list[SourceCase], name: str, description: str) -> int:
    from malenia.atomic import atomic_dir
    from malenia.data.dataset import DATASET_FILE

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out} exists; use --overwrite to replace it")
    if args.limit is not None:
        cases = cases[: max(0, args.limit)]
    reports_dir = Path(args.reports) if args.reports else None
    if reports_dir is not None and not reports_dir.is_dir():
        raise InputError(f"reports folder not found: {reports_dir}")
    with atomic_dir(out, overwrite=args.overwrite, replaces=DATASET_FILE) as staging:
        summary = import_cases(
            cases, scheme, staging, name=name, description=description, reports_dir=reports_dir,
            min_lesion_mm3=args.min_lesion_mm3, force=args.force, skip_bad=args.skip_bad,
            measure_phase=not args.no_phase, progress=not args.quiet,
        )
    for w in summary.warnings:
        print(f"warning: {w}", file=sys.stderr)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary.diseases.items())) or "none"
    print(
        f"imported {len(summary.cases)} case(s) into {out}: {summary.lesions} lesion(s) ({kinds}); "
        f"reports attached to {summary.reports_attached}; {summary.dropped_components} component(s) under "
        f"{args.min_lesion_mm3:g} mm^3 dropped" + (f"; skipped {len(summary.skipped)}" if summary.skipped else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------
# the import itself


def import_cases(
    cases: list[SourceCase],
    scheme: LabelScheme,
    out: Path,
    name: str,
    description: str = "",
    reports_dir: Path | None = None,
    min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3,
    force: bool = False,
    skip_bad: bool = False,
    measure_phase: bool = True,
    progress: bool = False,
) -> ImportSummary:
    """Writes every case and dataset.json into `out` (an existing, empty folder)."""
    from malenia.data.dataset import DatasetIndex, write_case, write_dataset_index

    if not cases:
        raise InputError(f"no cases found to import for {scheme.source}")
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate case ids: {dupes[:5]}")
    summary = ImportSummary()
    split: dict[str, list[str]] = {"train": [], "test": [], "undecided": []}
    iterator: Iterable[SourceCase] = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc=f"import {scheme.source}", unit="case", file=sys.stderr)
    for source_case in iterator:
        try:
            report = _report_for(reports_dir, source_case.case_id)
            case, dropped, attached, notes = convert_case(source_case, scheme, report, min_lesion_mm3, force, measure_phase)
        except InputError as err:
            if not skip_bad:
                raise InputError(f"case {source_case.case_id}: {err}") from None
            summary.skipped.append(source_case.case_id)
            summary.warnings.append(f"skipped case {source_case.case_id}: {err}")
            continue
        write_case(out, case)
        summary.cases.append(case.case_id)
        summary.dropped_components += dropped
        summary.reports_attached += int(attached)
        summary.warnings.extend(f"case {case.case_id}: {n}" for n in notes)
        diseases = [lesion.disease for lesion in case.report.lesions]
        summary.lesions += len(diseases)
        for d in diseases:
            summary.diseases[str(d)] = summary.diseases.get(str(d), 0) + 1
        if any(d is None for d in diseases):
            split["undecided"].append(case.case_id)
        if any(d in UNSEEN_DISEASES for d in diseases):
            split["test"].append(case.case_id)
        if not diseases or any(d in SEEN_DISEASES for d in diseases):
            split["train"].append(case.case_id)
    if not summary.cases:
        raise InputError(f"no case of {scheme.source} could be imported")
    index = DatasetIndex(
        name=name,
        cases=summary.cases,
        split={k: v for k, v in split.items() if v},
        description=description,
        extra={
            "source": scheme.source,
            "organ_labels": {str(i + 1): n for i, n in enumerate(_organ_names(scheme))},
            "source_labels": {
                **{str(v): f"organ {n}" for v, n in scheme.organs.items()},
                **{str(v): f"lesion {d or ' or '.join(scheme.undecided)}" for v, d in scheme.lesions.items()},
            },
            "min_lesion_mm3": min_lesion_mm3,
            "reports_attached": summary.reports_attached,
        },
    )
    write_dataset_index(out, index)
    return summary


def convert_case(
    source: SourceCase,
    scheme: LabelScheme,
    report,
    min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3,
    force: bool = False,
    measure_phase: bool = True,
):
    """(Case, dropped component count, report attached?, notes) for one source case."""
    from malenia.data.ct_io import read_ct, read_label
    from malenia.data.dataset import Case, CaseReport, Description, LesionReport

    image = read_ct(source.image, force=force)
    label_image = read_label(source.label, image)
    labels = sitk.GetArrayViewFromImage(label_image)
    known = {0, *scheme.organs, *scheme.lesions}
    unknown = sorted(set(_values(labels)) - known)
    if unknown:
        raise InputError(f"{source.label.name}: label value(s) {unknown} are not in the {scheme.source} scheme {sorted(known)}")

    instances, components, dropped = lesion_instances(labels, scheme, image, min_lesion_mm3)
    lesion_map = np.zeros(labels.shape, dtype=np.uint8 if len(instances) < 256 else np.uint16)
    for k, inst in enumerate(instances, start=1):
        box, comp = components[inst.value]
        lesion_map[box][comp == inst.mask_index] = k
    organ_map, organ_names, midline_x = organ_labels(labels, scheme, image)

    notes: list[str] = []
    lesions = [
        LesionReport(
            label=k,
            disease=inst.disease,
            attributes={a: [] for a in ASPECTS},
            extra={"source_label": inst.value, "voxels": inst.voxels, "volume_ml": round(inst.volume_mm3 / 1000.0, 4),
                   "centroid_lps": [round(float(v), 2) for v in inst.centroid_lps]},
        )
        for k, inst in enumerate(instances, start=1)
    ]
    measured = measured_locations(instances, scheme, labels, image, midline_x)
    attached = False
    enhancement = None
    case_extra: dict[str, Any] = {"source": scheme.source, "organ_labels": organ_names}
    if report is not None:
        attached = attach_report(lesions, report, scheme, notes, measured)
        enhancement = report.enhancement
        if enhancement is not None:
            case_extra["enhancement_from"] = "report"
    for lesion, vid in zip(lesions, measured):
        if vid and not lesion.attributes["location"]:
            lesion.attributes["location"] = [Description(vocabulary_text(vid), vid)]
            lesion.extra.setdefault("measured", []).append("location")
    if enhancement is None and measure_phase:
        from malenia.data.contrast import detect_phase

        estimate = detect_phase(image)
        if estimate.vocabulary_id:
            enhancement = Description(vocabulary_text(estimate.vocabulary_id), estimate.vocabulary_id)
            case_extra["enhancement_from"] = estimate.method
            case_extra["blood_pool_hu"] = None if estimate.aorta_hu is None else round(estimate.aorta_hu, 1)
    if enhancement is not None:
        for lesion in lesions:
            if not lesion.attributes["enhancement"]:
                lesion.attributes["enhancement"] = [enhancement]
                if case_extra.get("enhancement_from") != "report":
                    lesion.extra.setdefault("measured", []).append("enhancement")
    organs = None
    if organ_names:
        organs = sitk.GetImageFromArray(organ_map)
        organs.CopyInformation(image)
    lesion_image = sitk.GetImageFromArray(lesion_map)
    lesion_image.CopyInformation(image)
    case = Case(
        case_id=source.case_id,
        image=compact_ct(image),
        lesions=lesion_image,
        report=CaseReport(source.case_id, lesions, enhancement, source=scheme.source, extra=case_extra),
        organs=organs,
    )
    return case, dropped, attached, notes


def lesion_instances(labels: np.ndarray, scheme: LabelScheme, image: sitk.Image, min_lesion_mm3: float):
    """Connected components per lesion label value, largest first; (instances, component maps, dropped)."""
    spacing = np.array(image.GetSpacing())
    voxel_mm3 = float(np.prod(spacing))
    instances: list[Instance] = []
    components: dict[int, np.ndarray] = {}
    dropped = 0
    for value, disease in scheme.lesions.items():
        box = bounding_box(labels == value)
        if box is None:
            continue
        mask = labels[box] == value  # components in the lesions' bounding box only (memory on big scans)
        comp, n = ndi.label(mask, structure=STRUCTURE_26)
        components[value] = (box, comp)
        counts = np.bincount(comp.ravel(), minlength=n + 1)
        centroids = ndi.center_of_mass(mask, comp, index=np.arange(1, n + 1))
        offset = np.array([sl.start for sl in box], dtype=float)
        for i in range(1, n + 1):
            volume = counts[i] * voxel_mm3
            if volume < min_lesion_mm3:
                dropped += 1
                continue
            zyx = np.array(centroids[i - 1]) + offset
            lps = np.array(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))
            instances.append(Instance(value, disease, int(counts[i]), volume, lps, i))
    instances.sort(key=lambda inst: (-inst.voxels, inst.value, tuple(inst.centroid_lps)))
    return instances, components, dropped


def organ_labels(labels: np.ndarray, scheme: LabelScheme, image: sitk.Image) -> tuple[np.ndarray, dict[str, str], float | None]:
    """Organ label map (uint8, 1..), its names {"1": name}, and the patient's midline x (LPS mm) when measured."""
    names = _organ_names(scheme)
    out = np.zeros(labels.shape, dtype=np.uint8)
    midline = None
    for value, organ in scheme.organs.items():
        mask = labels == value
        if organ == scheme.host_organ:
            mask = mask | np.isin(labels, list(scheme.lesions))
        if organ == "kidney":
            midline = patient_midline_x(image)
            side = _side_map(mask, image, midline)
            out[mask & (side > 0)] = names.index("kidney_left") + 1
            out[mask & (side <= 0)] = names.index("kidney_right") + 1
        else:
            out[mask] = names.index(organ) + 1
    if scheme.measure_location == "kidney_side" and midline is None:
        midline = patient_midline_x(image)
    return out, {str(i + 1): n for i, n in enumerate(names)}, midline


def _organ_names(scheme: LabelScheme) -> list[str]:
    names: list[str] = []
    for organ in scheme.organs.values():
        names.extend(["kidney_left", "kidney_right"] if organ == "kidney" else [organ])
    return names


def _side_map(mask: np.ndarray, image: sitk.Image, midline_x: float) -> np.ndarray:
    """+1 where a voxel of `mask`'s components lies on the patient's left (LPS x > midline), -1 right."""
    side = np.zeros(mask.shape, dtype=np.int8)
    box = bounding_box(mask)
    if box is None:
        return side
    comp, n = ndi.label(mask[box], structure=STRUCTURE_26)
    centroids = ndi.center_of_mass(mask[box], comp, index=np.arange(1, n + 1))
    offset = np.array([sl.start for sl in box], dtype=float)
    lut = np.zeros(n + 1, dtype=np.int8)
    for i, zyx in enumerate(centroids, start=1):
        x = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in (np.asarray(zyx) + offset)[::-1]])[0]
        lut[i] = 1 if x > midline_x else -1
    side[box] = lut[comp]
    return side


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel (None when there is none)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _values(labels: np.ndarray) -> list[int]:
    """Distinct label values (a histogram: linear time on big integer volumes)."""
    if labels.dtype.kind in "iu" and labels.size and labels.min() >= 0 and labels.max() < 65536:
        return np.flatnonzero(np.bincount(labels.ravel())).tolist()
    return np.unique(labels).tolist()


def patient_midline_x(image: sitk.Image) -> float:
    """LPS x (mm) of the body's centre: mean x of the voxels above -300 HU (air excluded)."""
    hu = sitk.GetArrayViewFromImage(image)
    step = max(1, int(np.ceil((hu.size / 4e6) ** (1 / 3))))  # subsample big volumes
    sub = hu[::step, ::step, ::step]
    idx = np.argwhere(sub > -300)
    if len(idx) == 0:
        idx = np.argwhere(np.ones_like(sub, dtype=bool))
    zyx = idx.mean(axis=0) * step
    return float(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]])[0])


def measured_locations(instances: list[Instance], scheme: LabelScheme, labels: np.ndarray, image: sitk.Image,
                       midline_x: float | None) -> list[str | None]:
    """Per instance, the location vocabulary id that the organ masks give (None where they cannot)."""
    out: list[str | None] = [None] * len(instances)
    if scheme.measure_location == "kidney_side" and midline_x is not None:
        for i, inst in enumerate(instances):
            out[i] = "location.kidney.left" if inst.centroid_lps[0] > midline_x else "location.kidney.right"
    elif scheme.measure_location == "pancreas_thirds":
        organ_values = [v for v, n in scheme.organs.items() if n == "pancreas"] + list(scheme.lesions)
        idx = np.argwhere(np.isin(labels, organ_values))
        if len(idx) == 0:
            return out
        xs = _physical_x(image, idx[:: max(1, len(idx) // 200000)])
        lo, hi = float(np.percentile(xs, 1)), float(np.percentile(xs, 99))
        if hi <= lo:
            return out
        for i, inst in enumerate(instances):
            f = (float(inst.centroid_lps[0]) - lo) / (hi - lo)  # 0 at the right end (head), 1 at the left (tail)
            out[i] = "location.pancreas.head" if f < 1 / 3 else "location.pancreas.body" if f < 2 / 3 else "location.pancreas.tail"
    return out


def _physical_x(image: sitk.Image, idx_zyx: np.ndarray) -> np.ndarray:
    ijk = idx_zyx[:, ::-1].astype(float) * np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return image.GetOrigin()[0] + ijk @ direction[0]


def attach_report(lesions, report, scheme: LabelScheme, notes: list[str], measured: list[str | None] | None = None) -> bool:
    """Gives report lesions' diseases and descriptions to the case's instances (rules in the module doc).

    `lesions` are in decreasing volume. A report lesion whose location id matches an instance's
    measured location (e.g. the left kidney) describes the largest such instance; otherwise the
    largest instance of its disease not yet described.
    """
    measured = measured or [None] * len(lesions)
    where = {id(lesion): vid for lesion, vid in zip(lesions, measured)}
    by_disease: dict[str, list] = {}
    for rl in report.lesions:
        if rl.disease:
            by_disease.setdefault(rl.disease, []).append(rl)
        else:
            notes.append(f"report lesion {rl.label} has no disease; ignored")
    # MSD Task07: the "cancer" label is a tumour or a cyst; a report naming one of them decides
    undecided = [lesion for lesion in lesions if lesion.disease is None]
    if undecided and scheme.undecided:
        named = [d for d in by_disease if d in scheme.undecided]
        if len(named) == 1:
            for lesion in undecided:
                lesion.disease = named[0]
        elif len(named) > 1:
            notes.append(f"report names {named} for one label value; lesions left undecided")
    used = False
    for disease, report_lesions in by_disease.items():
        targets = [lesion for lesion in lesions if lesion.disease == disease]
        if not targets:
            notes.append(f"report describes a {disease} but the label map has none")
            continue
        used = True
        described = set()
        for rl in report_lesions:
            free = [t for t in targets if id(t) not in described]
            if not free:
                notes.append(f"report has more {disease} lesions than the label map; extra ones ignored")
                break
            wanted = {d.id for d in rl.attributes.get("location", []) if d.id}
            target = next((t for t in free if where[id(t)] in wanted), free[0])
            described.add(id(target))
            _copy_aspects(rl, target, ASPECTS, "report")
        principal = report_lesions[0]
        for target in targets:
            if id(target) not in described:
                _copy_aspects(principal, target, SHARED_ASPECTS, "report (appearance shared with the described lesion)")
    return used


def _copy_aspects(source, target, aspects, origin: str) -> None:
    for aspect in aspects:
        if source.attributes.get(aspect):
            target.attributes[aspect] = list(source.attributes[aspect])
    target.extra["attributes_from"] = origin


def _report_for(reports_dir: Path | None, case_id: str):
    """The CaseReport DIR/<case_id>.json when present (other files there, e.g. summary.json, are not read)."""
    from malenia.data.dataset import read_report

    if reports_dir is None:
        return None
    path = reports_dir / f"{case_id}.json"
    return read_report(path) if path.is_file() else None


def compact_ct(image: sitk.Image) -> sitk.Image:
    """int16 when every value is an integer in range (halves the file), else float32."""
    values = sitk.GetArrayViewFromImage(image)
    if values.size and values.min() >= -32768 and values.max() <= 32767 and np.array_equal(values, np.round(values)):
        return sitk.Cast(image, sitk.sitkInt16)
    return image


@lru_cache(maxsize=1)
def _vocabulary():
    from malenia.knowledge.vocabulary import Vocabulary

    return Vocabulary.load()


def vocabulary_text(vid: str) -> str:
    """The current wording of a vocabulary id (ids are stable, texts may change)."""
    vocab = _vocabulary()
    if vid not in vocab:
        raise InputError(f"attribute id {vid!r} is not in the vocabulary")
    return vocab.text(vid)
