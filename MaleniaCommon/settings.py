"""The application settings both Malenia modules read and write (one key per value, one owner: here).

MaleniaSegment saves corrections under CORRECTIONS_FOLDER and MaleniaTrainer uploads from it;
MaleniaTrainer's "use this model" writes MODEL_FOLDER and MaleniaSegment defaults to it.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS_FOLDER = "Malenia/ResultsFolder"
CORRECTIONS_FOLDER = "Malenia/CorrectionsFolder"
MODEL_FOLDER = "Malenia/ModelFolder"
KNOWLEDGE_FOLDER = "Malenia/KnowledgeFolder"  # site disease profiles (docs/knowledge.md), passed as --knowledge
OLD_TRAINER_CORRECTIONS = "MaleniaTrainer/CorrectionsDir"  # read once if the shared key is unset (before 1.3)


def home() -> Path:
    """Default root of results, corrections, models and local training (MALENIA_SLICER_HOME or ~/Malenia)."""
    return Path(os.environ.get("MALENIA_SLICER_HOME", Path.home() / "Malenia"))


def folder(settings, key: str, default_name: str) -> Path:
    """A folder setting (QSettings-like `value`), or its default under home()."""
    value = settings.value(key, "") or ""
    if not value and key == CORRECTIONS_FOLDER:
        value = settings.value(OLD_TRAINER_CORRECTIONS, "") or ""
    return Path(str(value)) if value else home() / default_name
