"""One-click exports of the reviewed result: label map, .seg.nrrd, DICOM SEG, report JSON/HTML.

Every export is the result as the radiologist left it (current masks, corrected diseases and
descriptions, fresh measurements; see ReviewSession.reviewed_result), written by the same
writers as `malenia segment` (malenia.infer.outputs), so the files follow the output contract
and re-read like the command's own. Files appear whole (written beside the target, then renamed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from malenia.infer.outputs import FILE_NAMES, write_outputs
from malenia.infer.results import SegmentationResult

from .session import ReviewSession

# export kind -> (writer format, file name suffix offered in the save dialog)
EXPORTS = {
    "nifti": ("nifti", ".nii.gz"),
    "seg": ("seg", ".seg.nrrd"),
    "dicom": ("dicom", ".dcm"),
    "json": ("json", ".json"),
    "html": ("html", ".html"),
}


class ExportError(ValueError):
    """An export that cannot be made; one line for the user."""


def default_file_name(session: ReviewSession, kind: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in session.volume_node.GetName()) or "scan"
    base = "report" if kind in ("json", "html") else "lesions"
    return f"{stem}_{base}{EXPORTS[kind][1]}"


def export(session: ReviewSession, kind: str, path: str | os.PathLike,
           result: SegmentationResult | None = None) -> Path:
    """Writes one export to `path` (replacing a file there) and returns the path."""
    if kind not in EXPORTS:
        raise ExportError(f"unknown export {kind!r}; choose from {sorted(EXPORTS)}")
    fmt = EXPORTS[kind][0]
    if fmt == "dicom" and not session.result.scan.was_dicom:
        raise ExportError("DICOM SEG export needs a volume loaded from DICOM")
    if fmt == "dicom" and not session.dicom_files:
        raise ExportError("the source DICOM files of this volume are not known; load the series from the DICOM database")
    result = result or session.reviewed_result()
    if fmt == "dicom":
        result.scan.dicom_files = list(session.dicom_files)
    if not result.lesions and fmt == "dicom":
        raise ExportError("there are no lesions to export as DICOM SEG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        written = write_outputs(result, staging / "out", formats=[fmt], terminology=session.terminology)
        os.replace(written[fmt], path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def export_all(session: ReviewSession, folder: str | os.PathLike) -> dict[str, Path]:
    """Every applicable export into `folder` with the standard output names."""
    result = session.reviewed_result()
    if session.dicom_files:
        result.scan.dicom_files = list(session.dicom_files)
    kinds = [k for k in EXPORTS if k != "dicom" or (session.result.scan.was_dicom and session.dicom_files and result.lesions)]
    return {k: export(session, k, Path(folder) / FILE_NAMES[EXPORTS[k][0]], result) for k in kinds}
