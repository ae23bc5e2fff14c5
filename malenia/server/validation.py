"""Checks an uploaded training case before anything is stored.

A case is the dataset format of `malenia.data.dataset` (image.nii.gz, lesions.nii.gz, report.json).
Checked with the same rules as `malenia segment` (malenia.data.ct_io owns them): both files are
readable NIfTI, 3D, within the voxel limit and with positive spacing in the header, all from the
header, so a decompression bomb is refused before anything is inflated; then the voxel data is read
once in 4 MiB chunks (ct_io.scan_data), never whole: it must be as long as the header says, the
image finite and in the CT Hounsfield range, the lesion labels non-negative integers and exactly the
labels the report describes. The two grids agree within tolerance; the report parses as a
`CaseReport`, its vocabulary ids exist and its diseases are known (a new disease is written with
disease null and its name in the lesion's extra.disease_text). Every failure is an InputError with a
one-line reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from malenia.data.ct_io import check_header_spacing, check_hu_range, scan_data
from malenia.data.dataset import IMAGE_FILE, LESIONS_FILE, REPORT_FILE, CaseReport
from malenia.errors import InputError
from malenia.knowledge.table import KnowledgeTable
from malenia.knowledge.vocabulary import Vocabulary
from malenia.server.config import GeometryTolerance, UploadLimits



@dataclass
class Grid:
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_type: str

    def to_json(self) -> dict[str, Any]:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction), "pixel_type": self.pixel_type}


@dataclass
class CheckedCase:
    report: CaseReport
    report_sha256: str  # of the canonical JSON, so formatting alone does not make a new case
    grid: Grid
    labels: dict[int, int]  # lesion label -> voxel count
    free_text: list[tuple[str, str]] = field(default_factory=list)  # (aspect, text) with id None

    def info(self) -> dict[str, Any]:
        return {
            "grid": self.grid.to_json(),
            "lesions": [{"label": k, "voxels": v, "disease": self.report.lesion(k).disease} for k, v in self.labels.items()],
            "free_text": [{"aspect": a, "text": t} for a, t in self.free_text],
            "report_case_id": self.report.case_id,
        }


def check_report(data: bytes) -> tuple[CaseReport, str]:
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise InputError(f"report: not valid JSON ({_first_line(err)})") from None
    try:
        report = CaseReport.from_json(obj)
    except InputError as err:
        raise InputError(f"report: {err}") from None
    known = vocabulary_ids()
    for lesion in report.lesions:
        for aspect, descriptions in lesion.attributes.items():
            for d in descriptions:
                if d.id is not None and known and (aspect, d.id) not in known:
                    raise InputError(f"report: lesion {lesion.label}: {aspect} id {d.id!r} is not in the vocabulary")
                if not d.text.strip():
                    raise InputError(f"report: lesion {lesion.label}: empty {aspect} description")
        diseases = known_diseases()
        if lesion.disease is not None and diseases and lesion.disease not in diseases:
            raise InputError(f"report: lesion {lesion.label}: unknown disease {str(lesion.disease)[:60]!r} (known: "
                             f"{', '.join(sorted(diseases))}; a new disease: disease null, its name in extra.disease_text)")
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return report, hashlib.sha256(canonical).hexdigest()


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


@lru_cache(maxsize=1)
def vocabulary_ids() -> frozenset[tuple[str, str]]:
    """(aspect, id) pairs of Resources/knowledge/vocabulary.json; empty if it cannot be read."""
    try:
        vocab = json.loads(Vocabulary.default_path().read_text(encoding="utf-8"))
        return frozenset((aspect, entry["id"]) for aspect, entries in vocab["aspects"].items() for entry in entries)
    except (OSError, KeyError, TypeError, ValueError):
        return frozenset()


def known_diseases() -> frozenset[str]:
    """Disease keys of the built-in knowledge table and of the site profiles in force (`<key>.json` in
    Resources/knowledge/diseases and $MALENIA_KNOWLEDGE; malenia.knowledge.site), looked up per upload
    so a profile added while the server runs counts at once. Empty when the table cannot be read."""
    from malenia.knowledge.site import profile_dirs

    keys = _builtin_diseases()
    if not keys:
        return keys
    return keys | {p.stem for folder in profile_dirs() if folder.is_dir() for p in folder.glob("*.json")}


@lru_cache(maxsize=1)
def _builtin_diseases() -> frozenset[str]:
    try:
        table = json.loads(KnowledgeTable.default_path().read_text(encoding="utf-8"))
        return frozenset(table["diseases"])
    except (OSError, KeyError, TypeError, ValueError):
        return frozenset()


def read_grid(path: Path, what: str, limits: UploadLimits) -> Grid:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")  # NIfTI only: no NRRD/MHA/DICOM under a .nii.gz name
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"{what}: not a readable NIfTI file ({_first_line(err)})") from None
    if reader.GetDimension() != 3:
        raise InputError(f"{what}: must be a 3D image, got {reader.GetDimension()}D")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{what}: must have one component per voxel, got {reader.GetNumberOfComponents()}")
    size = tuple(int(s) for s in reader.GetSize())
    voxels = math.prod(size)
    if voxels == 0 or voxels > limits.max_voxels:
        raise InputError(f"{what}: {size} voxels is outside 1..{limits.max_voxels}")
    try:
        check_header_spacing(path)  # ITK reads a zero spacing as 1 mm
    except InputError as err:
        raise InputError(f"{what}: {err}") from None
    spacing = tuple(float(s) for s in reader.GetSpacing())
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{what}: spacing must be positive, got {spacing}")
    return Grid(size, spacing, tuple(float(v) for v in reader.GetOrigin()),
                tuple(float(v) for v in reader.GetDirection()),
                sitk.GetPixelIDValueAsString(reader.GetPixelID()))


def check_same_grid(image: Grid, lesions: Grid, tol: GeometryTolerance) -> None:
    if image.size != lesions.size:
        raise InputError(f"lesions grid size {lesions.size} differs from image size {image.size}")
    if not np.allclose(lesions.spacing, image.spacing, rtol=tol.spacing_rtol, atol=0):
        raise InputError(f"lesions spacing {lesions.spacing} differs from image spacing {image.spacing}")
    origin_tol = tol.origin_tol_voxels * min(image.spacing)
    if np.max(np.abs(np.subtract(lesions.origin, image.origin))) > origin_tol:
        raise InputError(f"lesions origin {lesions.origin} differs from image origin {image.origin}")
    if np.max(np.abs(np.subtract(lesions.direction, image.direction))) > tol.direction_atol:
        raise InputError("lesions direction differs from image direction")


def read_labels(path: Path, limits: UploadLimits) -> dict[int, int]:
    """Voxel count per non-zero label, chunk by chunk while the file is read (never the whole map)."""
    counts = np.zeros(1, dtype=np.int64)

    def count(values: np.ndarray) -> None:
        nonlocal counts
        if values.dtype.kind == "f" and not np.all(values == np.round(values)):
            raise InputError("lesions: label values must be integers (found fractional values)")
        lo, hi = values.min(), values.max()
        if lo < 0:
            raise InputError(f"lesions: label values must be 0..K, found {lo:g}")
        if hi > limits.max_labels:
            raise InputError(f"lesions: label {hi:g} exceeds the limit of {limits.max_labels} lesions")
        c = np.bincount(values.astype(np.int64), minlength=counts.size)
        if c.size > counts.size:
            counts = np.pad(counts, (0, c.size - counts.size))
        counts += c

    stats = _scan(path, "lesions", limits, count)
    if stats.nonfinite:
        raise InputError("lesions: label values must be integers (found non-finite values)")
    return {int(k): int(counts[k]) for k in np.flatnonzero(counts) if k > 0}


def check_image_data(path: Path, limits: UploadLimits) -> None:
    """Reads the whole image once: complete, finite and in the CT Hounsfield range like `malenia segment` asks."""
    stats = _scan(path, "image", limits)
    if stats.nonfinite:
        raise InputError(f"image: {stats.nonfinite} voxel(s) are NaN or infinite")
    check_hu_range(stats.minimum, stats.maximum, stats.itemsize, "image", hint="upload the CT in Hounsfield units")


def _scan(path: Path, what: str, limits: UploadLimits, consume=None):
    stats = scan_data(path, what, consume, max_bytes=limits.max_voxels * 8)
    if stats is None:  # cannot happen for NIfTI; kept so a future format is not silently unchecked
        raise InputError(f"{what}: unsupported file encoding")
    return stats


def check_case(folder: Path, limits: UploadLimits, tol: GeometryTolerance) -> CheckedCase:
    """Validates folder/{image.nii.gz, lesions.nii.gz, report.json}; InputError on the first problem."""
    report_path = folder / REPORT_FILE
    if report_path.stat().st_size > limits.max_report_bytes:
        raise InputError(f"report: larger than {limits.max_report_bytes} bytes")
    report, report_sha = check_report(report_path.read_bytes())
    image_grid = read_grid(folder / IMAGE_FILE, "image", limits)
    lesion_grid = read_grid(folder / LESIONS_FILE, "lesions", limits)
    check_same_grid(image_grid, lesion_grid, tol)
    labels = read_labels(folder / LESIONS_FILE, limits)
    described = {lesion.label for lesion in report.lesions}
    if set(labels) != described:
        missing = sorted(described - set(labels))
        extra = sorted(set(labels) - described)
        parts = ([f"report describes labels {missing} absent from the mask"] if missing else []) + \
                ([f"mask has labels {extra} the report does not describe"] if extra else [])
        raise InputError("lesions: " + "; ".join(parts))
    check_image_data(folder / IMAGE_FILE, limits)
    free = [(aspect, d.text.strip()) for lesion in report.lesions for aspect, ds in lesion.attributes.items()
            for d in ds if d.id is None]
    return CheckedCase(report, report_sha, image_grid, dict(sorted(labels.items())), sorted(set(free)))


def _first_line(err: Exception) -> str:
    """The last line of a library's message, with the server's own paths cut to their file names."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    line = re.sub(r"(?:/[^\s/:\"']+)+/([^\s/:\"']+)", r"\1", lines[-1] if lines else type(err).__name__)
    return line[:200]
