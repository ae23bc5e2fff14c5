"""Saving a radiologist's review as a training case, versioned and never overwritten.

A thin Slicer-side user of malenia.data.corrections.CorrectionStore (the one corrections store,
layout and versioning described there): this module turns the review's lesions into reports and
keeps the functions MaleniaSegment and its tests call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SimpleITK as sitk

from malenia.aspects import ASPECTS
from malenia.data.corrections import CorrectionStore, SavedCorrection, case_name
from malenia.data.dataset import CaseReport, DatasetIndex, Description, LesionReport
from malenia.errors import InputError, MaleniaError

from .review import LesionReview

__all__ = ["SavedCorrection", "build_index", "case_name", "lesion_report", "read_latest", "save_correction",
           "versions"]


def versions(corrections_dir: str | Path, case: str) -> list[int]:
    return CorrectionStore(corrections_dir).versions(case)


def lesion_report(lesion: LesionReview, label: int) -> LesionReport:
    attributes: dict[str, list[Description]] = {}
    for aspect in ASPECTS:
        current = lesion.aspects[aspect].current
        attributes[aspect] = [Description(current.text, current.id)] if current is not None and current.text else []
    disease = lesion.current_disease
    # a lesion the model left unclassified and the reviewer did not name has no disease: its closest one is
    # not a reviewed label, and training on it would teach the model its own guess
    key = None if disease.unclassified else disease.dataset_key
    extra: dict[str, Any] = {"review": lesion.review_record()}
    if disease.key is None:
        extra["disease_text"] = disease.name  # typed by the reviewer, not a knowledge-table key
    return LesionReport(label=label, disease=key, attributes=attributes, extra=extra)


def save_correction(corrections_dir: str | Path, case: str, image: sitk.Image, labels: sitk.Image,
                    lesions: list[LesionReview], enhancement: Description | None = None,
                    details: dict[str, Any] | None = None) -> SavedCorrection:
    """Writes the next version of `case`. `labels` holds lesion k (k = 1..K, in `lesions` order) as value k.

    Raises ValueError for a mask that does not match the lesions, OSError when no version could be written.
    """
    reports = [lesion_report(lesion, k) for k, lesion in enumerate(lesions, start=1)]
    try:
        return CorrectionStore(corrections_dir).save(case, image, labels, reports, enhancement, details)
    except InputError as err:
        raise ValueError(str(err)) from err
    except MaleniaError as err:
        raise OSError(str(err)) from err


def build_index(corrections_dir: str | Path) -> DatasetIndex:
    """The dataset index from what is on disk: latest complete version per case, and the history."""
    return CorrectionStore(corrections_dir).index()


def read_latest(corrections_dir: str | Path, case: str) -> CaseReport:
    return CorrectionStore(corrections_dir).latest_report(case)
