"""The corrections MaleniaSegment saved, as a list to choose from before uploading.

MaleniaSegment writes CORRECTIONS/cases/<case>/vNNN/{image.nii.gz, lesions.nii.gz, report.json}
through malenia.data.corrections.CorrectionStore (the one corrections store); every version is a
complete training case. The list offers each version, with the latest of each scan pre-selected;
any other folder holding the three files is listed too (cases copied in by hand).
"""

from __future__ import annotations

from pathlib import Path

from malenia.data.corrections import CorrectionItem, scan_case_folders

__all__ = ["CorrectionItem", "scan_corrections"]


def scan_corrections(folder: str | Path) -> list[CorrectionItem]:
    return scan_case_folders(folder)
