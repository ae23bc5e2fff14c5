"""Saving a radiologist's review as a training case, versioned and never overwritten.

    CORRECTIONS/dataset.json                      Malenia dataset index: the latest version of each case
    CORRECTIONS/cases/<case>/v001/{image,lesions}.nii.gz, report.json
    CORRECTIONS/cases/<case>/v002/...             a later correction of the same scan

A case is one scan: `<volume name>_<8 hex digits of the voxels' and grid's SHA-1>`, so the same
scan corrected twice gets versions v001, v002 ... while two scans that share a name do not mix.
Each version is written with malenia.data.dataset.write_case (atomic: all files appear together)
and is never replaced: when a version folder exists, the next number is taken. The index lists
case ids `<case>/vNNN` (read them back with malenia.data.dataset.read_case) and keeps the
history of every case in `extra.history`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from MaleniaCommon.corrections_layout import VERSION_RE
from malenia.aspects import ASPECTS
from malenia.data.dataset import (Case, CaseReport, DatasetIndex, Description, LesionReport, read_report,
                                  write_case, write_dataset_index)

from .review import LesionReview

SOURCE = "malenia-slicer-review"


@dataclass(frozen=True)
class SavedCorrection:
    case_id: str  # "<case>/vNNN", as listed in dataset.json and read by read_case
    path: Path
    version: int


def case_name(volume_name: str, image: sitk.Image) -> str:
    """Stable per scan: a readable part from the volume name and a content hash."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    for values in (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        h.update(repr(tuple(round(float(v), 5) for v in values)).encode())
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", volume_name).strip("._-")[:48] or "scan"
    return f"{readable}_{h.hexdigest()[:8]}"


def versions(corrections_dir: str | Path, case: str) -> list[int]:
    folder = Path(corrections_dir) / "cases" / case
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := VERSION_RE.match(p.name)))


def lesion_report(lesion: LesionReview, label: int) -> LesionReport:
    attributes: dict[str, list[Description]] = {}
    for aspect in ASPECTS:
        current = lesion.aspects[aspect].current
        attributes[aspect] = [Description(current.text, current.id)] if current is not None and current.text else []
    disease = lesion.current_disease
    key = disease.dataset_key
    extra: dict[str, Any] = {
        "review": {
            "model_label": lesion.label if lesion.from_model else None,
            "added_by_reviewer": not lesion.from_model,
            "model_disease": lesion.disease.key if lesion.from_model else None,
            "disease_corrected": lesion.corrected_disease is not None,
            "corrected_aspects": [a for a in ASPECTS if lesion.aspects[a].is_corrected],
        }
    }
    if disease.key is None:
        extra["disease_text"] = disease.name  # typed by the reviewer, not a knowledge-table key
    return LesionReport(label=label, disease=key, attributes=attributes, extra=extra)


def save_correction(corrections_dir: str | Path, case: str, image: sitk.Image, labels: sitk.Image,
                    lesions: list[LesionReview], enhancement: Description | None = None,
                    details: dict[str, Any] | None = None, max_tries: int = 50) -> SavedCorrection:
    """Writes the next version of `case`. `labels` holds lesion k (k = 1..K, in `lesions` order) as value k."""
    corrections_dir = Path(corrections_dir)
    if image.GetSize() != labels.GetSize():
        raise ValueError(f"lesion mask grid {labels.GetSize()} != image grid {image.GetSize()}")
    present = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) - {0}
    expected = set(range(1, len(lesions) + 1))
    if present != expected:
        missing = sorted(expected - present)
        if missing:
            raise ValueError(f"lesion(s) {missing} have an empty mask; paint them or delete their segments first")
        raise ValueError(f"mask values {sorted(present)} do not match lesions 1..{len(lesions)}")
    reports = [lesion_report(lesion, k) for k, lesion in enumerate(lesions, start=1)]
    saved_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for _ in range(max_tries):
        number = (versions(corrections_dir, case) or [0])[-1] + 1
        case_id = f"{case}/v{number:03d}"
        report = CaseReport(case_id=case_id, lesions=reports, enhancement=enhancement, source=SOURCE,
                            extra={"saved": saved_at, "version": number, **(details or {})})
        try:
            path = write_case(corrections_dir, Case(case_id, image, labels, report))
        except (FileExistsError, OSError) as err:
            # Another save took this number between our look and our rename: take the next one.
            if isinstance(err, FileExistsError) or (corrections_dir / "cases" / case_id).exists():
                continue
            raise
        write_dataset_index(corrections_dir, build_index(corrections_dir))
        return SavedCorrection(case_id, path, number)
    raise OSError(f"could not find a free version number for case {case} in {corrections_dir}")


def build_index(corrections_dir: str | Path) -> DatasetIndex:
    """The dataset index from what is on disk: latest complete version per case, and the history."""
    root = Path(corrections_dir) / "cases"
    latest: list[str] = []
    history: dict[str, list[str]] = {}
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []:
        done = [f"{case_dir.name}/v{n:03d}" for n in versions(corrections_dir, case_dir.name)
                if (case_dir / f"v{n:03d}" / "report.json").is_file()]
        if done:
            history[case_dir.name] = done
            latest.append(done[-1])
    return DatasetIndex(name="corrections", cases=latest, split={},
                        description="Radiologist corrections saved from the MaleniaSegment Slicer module "
                                    "(latest version of each case; older versions are kept on disk)",
                        extra={"history": history})


def read_latest(corrections_dir: str | Path, case: str) -> CaseReport:
    number = versions(corrections_dir, case)[-1]
    return read_report(Path(corrections_dir) / "cases" / case / f"v{number:03d}" / "report.json")

