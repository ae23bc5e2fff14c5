"""The corrections store: radiologists' reviews saved as training cases, versioned, never overwritten.

    CORRECTIONS/dataset.json                       Malenia dataset index: the latest version of each case
    CORRECTIONS/cases/<case>/v001/{image,lesions}.nii.gz, report.json
    CORRECTIONS/cases/<case>/v002/...              a later correction of the same scan
    CORRECTIONS/images/<sha256>.nii.gz             each distinct CT once; every version's image.nii.gz
                                                   is a hard link to it (a copy where the file system
                                                   has no hard links)
    CORRECTIONS/images/<sha256>.json               that file's size and sha256 as written: a later save
                                                   links to it only while it still matches (a truncated
                                                   or corrupted CT is written again, never linked)

A case is one scan: `case_name(volume name, image)` = `<readable name>_<8 hex digits of a hash of the
voxels and grid>`, so the same scan corrected twice gets v001, v002 ... while two scans that share a
name do not mix. Each version folder appears whole (malenia.atomic.atomic_dir) and is never replaced:
when parallel savers (two Slicer sessions, several processes) take the same number, exactly one
rename wins and the others take the next number. A version folder is an ordinary dataset case
(`malenia.data.dataset.read_case(root, "<case>/vNNN")` reads it), so ten versions of one scan cost
one CT plus ten small label maps and reports.

API (used by MaleniaSegment, MaleniaTrainer and tools; no Slicer import):

    store = CorrectionStore(folder)
    saved = store.save(case_name("CT chest", image), image, labels, lesions, enhancement=None, details={})
        -> SavedCorrection(case_id="<case>/v001", path, version); labels hold lesion k as value k
    store.versions(case) -> [1, 2, ...]      store.latest_report(case) -> CaseReport
    store.index() -> DatasetIndex            store.items() -> [CorrectionItem] (what the trainer offers)
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from malenia.atomic import atomic_dir, clean_stale, write_json
from malenia.data.dataset import (CASE_FILES, DATASET_FILE, IMAGE_FILE, LESIONS_FILE, REPORT_FILE, CaseReport,
                                  DatasetIndex, Description, LesionReport, read_json, read_report,
                                  write_dataset_index)
from malenia.errors import InputError, MaleniaError, OutputError
from malenia.file_hash import sha256_file
from malenia.links import link_or_copy

VERSION_RE = re.compile(r"^v(\d{3,})$")
SOURCE = "malenia-slicer-review"
MAX_TRIES = 1000  # parallel savers of one scan each take the next free number


@dataclass(frozen=True)
class SavedCorrection:
    case_id: str  # "<case>/vNNN", as listed in dataset.json and read by read_case
    path: Path
    version: int


@dataclass
class CorrectionItem:
    """One saved case folder, as offered for upload."""

    case: str  # scan name (the folder above the version)
    version: int | None  # None: an unversioned case folder copied in by hand
    path: Path
    lesions: int
    free_text: int  # descriptions typed by the radiologist (become new attribute-bank rows)
    modified: float
    latest: bool = True
    error: str | None = None  # unreadable report: listed, not selectable

    @property
    def label(self) -> str:
        return f"{self.case}/v{self.version:03d}" if self.version is not None else self.case


def case_name(volume_name: str, image: sitk.Image) -> str:
    """Stable per scan: a readable part from the volume name and a hash of voxels and grid."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", volume_name).strip("._-")[:48] or "scan"
    return f"{readable}_{image_digest(image, hashlib.sha1)[:8]}"


def image_digest(image: sitk.Image, algorithm=hashlib.sha256) -> str:
    """Hash of the voxel values, pixel type and grid (rounded as a header stores it)."""
    h = algorithm()
    h.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    for values in (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        h.update(repr(tuple(round(float(v), 5) for v in values)).encode())
    if algorithm is not hashlib.sha1:  # case_name keeps its historical hash input
        h.update(image.GetPixelIDTypeAsString().encode())
    return h.hexdigest()


class CorrectionStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- reading
    def versions(self, case: str) -> list[int]:
        folder = self.root / "cases" / case
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := VERSION_RE.match(p.name)))

    def latest_report(self, case: str) -> CaseReport:
        """The report of the latest complete version (as index() lists it: a folder named like a version but
        without a report, made by hand, does not hide the corrections before it)."""
        reports = [self.root / "cases" / case / f"v{n:03d}" / REPORT_FILE for n in self.versions(case)]
        reports = [p for p in reports if p.is_file()]
        if not reports:
            raise InputError(f"no saved correction of {case} in {self.root}")
        return read_report(reports[-1])

    def index(self) -> DatasetIndex:
        """The dataset index from what is on disk: latest complete version per case, and the history."""
        root = self.root / "cases"
        latest: list[str] = []
        history: dict[str, list[str]] = {}
        cases = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        for case_dir in cases:
            done = [f"{case_dir.name}/v{n:03d}" for n in self.versions(case_dir.name)
                    if (case_dir / f"v{n:03d}" / REPORT_FILE).is_file()]
            if done:
                history[case_dir.name] = done
                latest.append(done[-1])
        return DatasetIndex(name="corrections", cases=latest, split={},
                            description="Radiologist corrections saved from the MaleniaSegment Slicer module "
                                        "(latest version of each case; older versions are kept on disk)",
                            extra={"history": history})

    def items(self) -> list[CorrectionItem]:
        """Every complete case folder under the store (versioned or copied in by hand), latest marked."""
        return scan_case_folders(self.root)

    # -- writing
    def save(self, case: str, image: sitk.Image, labels: sitk.Image, lesions: list[LesionReport],
             enhancement: Description | None = None, details: dict[str, Any] | None = None,
             source: str = SOURCE) -> SavedCorrection:
        """Writes the next version of `case`; lesion k of `lesions` (label k) is value k in `labels`."""
        _check_labels(image, labels, len(lesions))
        lesions = [LesionReport(k, les.disease, les.attributes, les.extra) for k, les in enumerate(lesions, start=1)]
        blob = self._store_image(image)
        saved_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        case_dir = self.root / "cases" / case
        if case_dir.exists() and not case_dir.is_dir():
            raise OutputError(f"cannot save a correction of {case}: {case_dir} is a file, not a folder")
        clean_stale(case_dir)
        number = 0
        for _ in range(MAX_TRIES):
            # Past the last version folder and past a number just found taken: a stray file named like a
            # version (v021 copied in by hand) is stepped over instead of being retried for ever.
            number = max(number, (self.versions(case) or [0])[-1]) + 1
            case_id = f"{case}/v{number:03d}"
            report = CaseReport(case_id=case_id, lesions=lesions, enhancement=enhancement, source=source,
                                extra={"saved": saved_at, "version": number, **(details or {})})
            try:
                with atomic_dir(case_dir / f"v{number:03d}") as staging:
                    link_or_copy(blob, staging / IMAGE_FILE)
                    pixel = sitk.sitkUInt8 if len(lesions) < 256 else sitk.sitkUInt16
                    sitk.WriteImage(sitk.Cast(labels, pixel), str(staging / LESIONS_FILE), useCompression=True)
                    write_json(staging / REPORT_FILE, report.to_json())
            except FileExistsError:
                continue  # another saver took this number between our look and our rename
            self.write_index()
            return SavedCorrection(case_id, case_dir / f"v{number:03d}", number)
        raise MaleniaError(f"could not find a free version number for case {case} in {self.root}")

    def write_index(self) -> None:
        """dataset.json from the disk; rewritten until it matches, so parallel savers cannot leave a stale one."""
        for _ in range(20):
            index = self.index()
            write_dataset_index(self.root, index)
            try:
                if read_json(self.root / DATASET_FILE) == self.index().to_json():
                    return
            except InputError:  # replaced between write and read: look again
                pass

    def _store_image(self, image: sitk.Image) -> Path:
        """The CT once under images/<sha256>.nii.gz (written atomically; identical content is not rewritten)
        with its record images/<sha256>.json. A stored copy that no longer matches its record (truncated, corrupted,
        or from before records were kept) is replaced by a fresh one: a new version never links to a broken CT."""
        blob = self.root / "images" / f"{image_digest(image)}.nii.gz"
        record = blob.with_name(blob.name[: -len(".nii.gz")] + ".json")
        if _matches_record(blob, record):
            return blob
        blob.parent.mkdir(parents=True, exist_ok=True)
        tmp = blob.parent / f".{blob.name}.partial.{os.getpid()}-{uuid.uuid4().hex[:8]}.nii.gz"
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
            # Recorded before the file appears, so a parallel saver never finds a new blob without its record and
            # takes it for a damaged one. The writer is deterministic: parallel savers of one CT write equal records.
            write_json(record, {"bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)})
            try:
                os.link(tmp, blob)  # never replaces: parallel savers of one CT end up sharing one file
                return blob
            except FileExistsError:  # stored before, or by a parallel saver just now: checked again below
                pass
            except OSError:  # no hard links here: the last identical copy wins, as good as any
                os.replace(tmp, blob)
                return blob
            if not _matches_record(blob, record):  # damaged or unrecorded: replaced, the versions sharing it mended
                damaged = os.stat(blob)
                os.replace(tmp, blob)
                self._relink_versions(damaged, blob)
        finally:
            tmp.unlink(missing_ok=True)
        return blob

    def _relink_versions(self, damaged: os.stat_result, blob: Path) -> None:
        """Earlier versions whose image.nii.gz is the replaced file itself (a hard link to it: damaged with it) link
        to the fresh copy instead; each swap is one rename, and a version that has its own copy is not touched."""
        for image in (self.root / "cases").glob(f"*/v*/{IMAGE_FILE}"):
            fresh = image.with_name(f".{IMAGE_FILE}.partial.{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                st = image.stat()
                if (st.st_ino, st.st_dev) == (damaged.st_ino, damaged.st_dev):
                    os.link(blob, fresh)
                    os.replace(fresh, image)
            except OSError:  # gone meanwhile, or no hard links here: left as it is
                fresh.unlink(missing_ok=True)


def _matches_record(blob: Path, record: Path) -> bool:
    """Whether `blob` is the file its record describes: the size first (a truncated file fails at once), then the
    sha256 (a corrupted one). A missing or unreadable record or blob is no match."""
    try:
        expected = read_json(record)
        return (isinstance(expected, dict) and blob.is_file() and blob.stat().st_size == expected.get("bytes")
                and sha256_file(blob) == expected.get("sha256"))
    except (OSError, InputError):
        return False


def _check_labels(image: sitk.Image, labels: sitk.Image, count: int) -> None:
    if image.GetSize() != labels.GetSize():
        raise InputError(f"lesion mask grid {labels.GetSize()} != image grid {image.GetSize()}")
    present = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) - {0}
    expected = set(range(1, count + 1))
    if present != expected:
        missing = sorted(expected - present)
        if missing:
            raise InputError(f"lesion(s) {missing} have an empty mask; paint them or delete their segments first")
        raise InputError(f"mask values {sorted(present)} do not match lesions 1..{count}")


def scan_case_folders(folder: str | Path) -> list[CorrectionItem]:
    """Case folders (the three case files) under `folder`; staging (dot) folders are skipped."""
    root = Path(folder)
    if not root.is_dir():
        return []
    items: list[CorrectionItem] = []
    for report in sorted(root.rglob(REPORT_FILE)):
        case_dir = report.parent
        if not all((case_dir / f).is_file() for f in CASE_FILES):
            continue
        if any(p.name.startswith(".") for p in [case_dir, *case_dir.relative_to(root).parents]):
            continue  # a write in progress (atomic staging folder)
        m = VERSION_RE.match(case_dir.name)
        case, version = (case_dir.parent.name, int(m.group(1))) if m else (case_dir.name, None)
        try:
            rep = read_report(report)
            lesions = len(rep.lesions)
            free = sum(1 for les in rep.lesions for ds in les.attributes.values() for d in ds if d.id is None)
            error = None
        except MaleniaError as err:
            lesions, free, error = 0, 0, str(err)
        items.append(CorrectionItem(case, version, case_dir, lesions, free, report.stat().st_mtime, True, error))
    latest: dict[str, int] = {}
    for item in items:
        if item.version is not None:
            latest[item.case] = max(latest.get(item.case, 0), item.version)
    for item in items:
        item.latest = item.version is None or item.version == latest[item.case]
    return sorted(items, key=lambda i: (i.case, i.version or 0))
