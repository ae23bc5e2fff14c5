"""Writes the outputs of `malenia segment` (the contract in docs/outputs.md and Resources/report.schema.json).

    DIR/lesions.nii.gz     integer label map on the input's grid (0 background, k = lesion k)
    DIR/lesions.seg.nrrd   Slicer segmentation: one named, coloured, coded and tagged segment per lesion
    DIR/report.json        everything, validated against Resources/report.schema.json before writing
    DIR/report.html        the same for people, with key-slice images
    DIR/lesions.dcm        DICOM SEG referencing the source series (DICOM input with lesions only)

All files are written into a staging folder first and appear together: a new DIR is renamed into
place in one step; into an existing folder (empty or not) the files are renamed in one quick pass
that is undone if anything fails, so a failure or Ctrl-C leaves the folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import SimpleITK as sitk
from scipy import ndimage

from malenia import __version__
from malenia.atomic import atomic_dir, check_output_folder
from malenia.data.dataset import LESIONS_FILE, REPORT_FILE
from malenia.errors import OutputError
from malenia.infer.measurements import measure_lesions
from malenia.infer.results import SegmentationResult, validate_report
from malenia.infer.terminology import SegmentSpec, Terminology, segment_specs

# The label map and report carry a dataset case's names: an output folder with its input image is a
# case (the Slicer modules store corrections so).
FILE_NAMES: dict[str, str] = {
    "nifti": LESIONS_FILE,
    "seg": "lesions.seg.nrrd",
    "json": REPORT_FILE,
    "html": "report.html",
    "dicom": "lesions.dcm",
}
FORMATS: tuple[str, ...] = tuple(FILE_NAMES)


def write_outputs(result: SegmentationResult, out_dir: str | os.PathLike, overwrite: bool = False,
                  formats: Iterable[str] | None = None, terminology: Terminology | None = None) -> dict[str, Path]:
    """Writes the requested outputs (default: all; the DICOM SEG only for DICOM input) into `out_dir`.

    Returns {format: path} of the files written. Raises OutputError (one line) when the folder is
    not writable or outputs exist without `overwrite`; nothing is left behind on any failure.
    """
    formats = _resolve_formats(result, formats)
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    check_result(result)
    terminology = terminology or Terminology.load()
    if any(lesion.measurements is None for lesion in result.lesions):
        measured = measure_lesions(result.labels, result.image, [x.label for x in result.lesions])
        for lesion in result.lesions:
            lesion.measurements = lesion.measurements or measured[lesion.label]
    specs = segment_specs(result.lesions, terminology)
    warnings: list[str] = []
    if "dicom" in formats:
        from malenia.infer.dicom_seg import unsupported_reason

        reason = "no lesions (a DICOM SEG needs at least one segment)" if not result.lesions else \
            unsupported_reason(result.scan.dicom_files)
        if reason:
            formats = [f for f in formats if f != "dicom"]
            warnings.append(f"no DICOM SEG written: {reason}")

    names = {f: FILE_NAMES[f] for f in formats}
    try:
        with _publish(out_dir, names.values(), overwrite) as staging:
            _write_all(staging, result, specs, terminology, formats, names, warnings)
    except OSError as err:
        raise OutputError(f"cannot write outputs to {out_dir}: {err.strerror or err}") from None
    return {f: out_dir / n for f, n in names.items()}


def _resolve_formats(result: SegmentationResult, formats: Iterable[str] | None) -> list[str]:
    if formats is None:
        return [f for f in FORMATS if f != "dicom" or result.scan.was_dicom]
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FILE_NAMES]
    if unknown:
        raise OutputError(f"unknown output format(s) {unknown}; choose from {list(FORMATS)}")
    if "dicom" in formats and not result.scan.was_dicom:
        raise OutputError("a DICOM SEG output needs a DICOM series as input")
    return formats


def check_result(result: SegmentationResult) -> None:
    """The label map must be integer, on the scan's grid, and hold exactly the lesions' labels."""
    labels = result.labels
    if labels is None or labels.GetDimension() != 3:
        raise ValueError("result.labels must be a 3-D SimpleITK image")
    if sitk.GetArrayViewFromImage(labels).dtype.kind not in "iu":
        raise ValueError(f"label map must be integer, got {labels.GetPixelIDTypeAsString()}")
    if not result.scan.matches(labels):
        raise ValueError("label map is not on the input scan's grid (size, spacing, origin, direction)")
    if result.image is not None and not result.scan.matches(result.image):
        raise ValueError("CT image is not on the input scan's grid")
    arr = sitk.GetArrayViewFromImage(labels)
    if arr.size and arr.min() < 0:
        raise ValueError("label map has negative values")
    present = {i + 1 for i, box in enumerate(ndimage.find_objects(arr)) if box is not None}  # one pass, no sort
    wanted = [lesion.label for lesion in result.lesions]
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"lesion labels repeat: {wanted}")
    if present != set(wanted):
        raise ValueError(f"label map values {sorted(present)} != lesion labels {sorted(wanted)}")


def build_report(result: SegmentationResult, specs: list[SegmentSpec], terminology: Terminology,
                 files: dict[str, str], warnings: list[str] | None = None) -> dict[str, Any]:
    """report.json: the result plus file names, terminology contexts, per-lesion segment codes and warnings."""
    report = result.to_json()
    report["scan"]["warnings"] = [*report["scan"]["warnings"], *(warnings or [])]
    report = {
        "schema_version": report.pop("schema_version"),
        "format": report.pop("format"),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": {"name": "malenia", "version": __version__},
        **report,
    }
    report["files"] = {
        "labels": files.get("nifti"),
        "segmentation": files.get("seg"),
        "report_html": files.get("html"),
        "dicom_seg": files.get("dicom"),
    }
    report["terminology"] = {"segmentation_context": terminology.segmentation_context,
                             "anatomic_context": terminology.anatomic_context}
    for entry, spec in zip(report["lesions"], specs):
        entry["segment"] = {
            "name": spec.name,
            "color_rgb": list(spec.term.color),
            "terminology": spec.term.slicer_string(),
            "codes": spec.term.codes_json(),
        }
    return report


def _write_all(staging: Path, result: SegmentationResult, specs: list[SegmentSpec], terminology: Terminology,
               formats: list[str], names: dict[str, str], warnings: list[str]) -> None:
    if "nifti" in formats:
        max_label = max((s.label for s in specs), default=0)
        pixel = sitk.sitkUInt8 if max_label < 256 else sitk.sitkUInt16 if max_label < 65536 else sitk.sitkUInt32
        sitk.WriteImage(sitk.Cast(result.labels, pixel), str(staging / names["nifti"]), useCompression=True)
    if "seg" in formats:
        from malenia.infer.seg_nrrd import write_seg_nrrd

        write_seg_nrrd(staging / names["seg"], result.labels, result.lesions, specs)
    if "dicom" in formats:
        _write_dicom_seg(staging, result, specs, names, warnings)
    if "html" in formats:
        from malenia.infer.report_html import write_report_html

        write_report_html(staging / names["html"], result, specs,
                          {d: terminology.display_name(d) for d in terminology.diseases}, warnings)
    if "json" in formats:
        report = build_report(result, specs, terminology, names, warnings)
        validate_report(report)
        text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        (staging / names["json"]).write_text(text, encoding="utf-8")


def _write_dicom_seg(staging: Path, result: SegmentationResult, specs: list[SegmentSpec], names: dict[str, str],
                     warnings: list[str]) -> None:
    """The DICOM SEG, or a warning where the series' headers and the label map do not line up (a slice whose
    orientation differs from the first by more than the SEG allows): the other outputs are sound, and losing
    them to a traceback after the whole run helped nobody. Dropping the name from `names` drops the file from
    what is published (and an earlier run's SEG goes as stale)."""
    from malenia.infer.dicom_seg import DicomSegError, write_dicom_seg

    try:
        write_dicom_seg(staging / names["dicom"], result, specs)
    except DicomSegError as err:
        (staging / names.pop("dicom")).unlink(missing_ok=True)
        warnings.append(f"no DICOM SEG written: {err}")


def _check_target(out_dir: Path, overwrite: bool) -> None:
    check_output_folder(out_dir, "output folder")
    existing = sorted(n for n in FILE_NAMES.values() if (out_dir / n).exists()) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise OutputError(f"outputs already exist in {out_dir} ({', '.join(existing)}); use --overwrite to replace them")


class _publish:
    """Context manager: yields a staging folder; on success its files become `out_dir`'s outputs."""

    def __init__(self, out_dir: Path, names: Iterable[str], overwrite: bool):
        # `names` is read when the files move into place: _write_dicom_seg may drop one on the way
        self.out_dir, self.names, self.overwrite = out_dir, names, overwrite
        self._new_dir = None

    def __enter__(self) -> Path:
        if not self.out_dir.exists():
            self._new_dir = atomic_dir(self.out_dir)  # the whole folder appears at once
            return self._new_dir.__enter__()  # a new folder follows the umask (malenia.atomic)
        self._staging = Path(tempfile.mkdtemp(prefix=".malenia-partial-", dir=self.out_dir))
        return self._staging

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._new_dir is not None:
            return bool(self._new_dir.__exit__(exc_type, exc, tb))
        try:
            if exc_type is None:
                self._move_into_place()
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
        return False

    def _move_into_place(self) -> None:
        # Every known output not rewritten now is stale (e.g. a DICOM SEG of an earlier DICOM input).
        names = list(self.names)
        targets = [(self._staging / n, self.out_dir / n) for n in names]
        stale = [self.out_dir / n for n in FILE_NAMES.values() if n not in names and (self.out_dir / n).exists()]
        backup = self._staging / ".previous"
        backup.mkdir()
        done: list[tuple[Path, Path | None]] = []  # (target, its backup or None)
        try:
            for target in stale:
                saved = backup / target.name
                os.replace(target, saved)
                done.append((target, saved))
            for src, target in targets:
                saved = None
                if target.exists():
                    saved = backup / target.name
                    try:
                        os.link(target, saved)  # the old file stays in place until replaced
                    except OSError:
                        shutil.copy2(target, saved)
                os.replace(src, target)
                done.append((target, saved))
        except BaseException:
            for target, saved in reversed(done):
                if saved is not None:
                    os.replace(saved, target)
                else:
                    target.unlink(missing_ok=True)
            raise
