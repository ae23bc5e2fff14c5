"""The knowledge table in force for a model folder on disk, without loading its network.

`malenia knowledge list|show|add|edit|remove` and MaleniaSegment's profile editor need the table a
segmentation would use (the model's table, its disease calibration and the site profiles) but not the
weights: only the manifest, the table and inference.json are read, each checked by sha256
(malenia.model.folder, the model folder's only owner), so no torch and no network.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable

from malenia.knowledge.site import table_in_force
from malenia.knowledge.table import KnowledgeTable
from malenia.model.folder import KNOWLEDGE, verify_model_folder
from malenia.paths import builtin_model_dir


def table_in_force_at(model_dir: str | os.PathLike | None = None,
                      knowledge: Iterable[str | os.PathLike] | str | os.PathLike | None = None) -> KnowledgeTable:
    """malenia.knowledge.site.table_in_force for a model folder path (default: the built-in model)."""
    folder = Path(model_dir) if model_dir is not None else builtin_model_dir()
    manifest = verify_model_folder(folder)
    model = SimpleNamespace(path=folder, manifest=manifest, name=str(manifest.get("name", "")),
                            version=str(manifest.get("version", "")), knowledge_table_path=folder / KNOWLEDGE)
    return table_in_force(model, knowledge)
