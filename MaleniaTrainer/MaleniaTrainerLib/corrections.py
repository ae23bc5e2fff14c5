"""The corrections MaleniaSegment saved, as a list to choose from before uploading.

MaleniaSegment writes CORRECTIONS/cases/<case>/vNNN/{image.nii.gz, lesions.nii.gz, report.json}
(MaleniaSegmentLib.corrections); every version is a complete training case. The list offers each
version, with the latest of each scan pre-selected; any other folder holding the three files is
listed too (cases copied in by hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from MaleniaCommon.corrections_layout import CASE_FILES, VERSION_RE


@dataclass
class CorrectionItem:
    case: str  # scan name (the folder above the version)
    version: int | None  # None: an unversioned case folder
    path: Path
    lesions: int
    free_text: int  # descriptions typed by the radiologist (become new attribute-bank rows)
    modified: float
    latest: bool = True
    error: str | None = None  # unreadable report: listed, not selectable

    @property
    def label(self) -> str:
        return f"{self.case}/v{self.version:03d}" if self.version is not None else self.case


def scan_corrections(folder: str | Path) -> list[CorrectionItem]:
    from malenia.data.dataset import read_report
    from malenia.errors import MaleniaError

    root = Path(folder)
    if not root.is_dir():
        return []
    items: list[CorrectionItem] = []
    for report in sorted(root.rglob("report.json")):
        case_dir = report.parent
        if not all((case_dir / f).is_file() for f in CASE_FILES) or any(p.name.startswith(".") for p in case_dir.parents):
            continue
        if case_dir.name.startswith("."):  # a write in progress (atomic staging folder)
            continue
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
