"""The knowledge table in force for a model: its table, its disease calibration and the site profiles.

malenia.knowledge.site merges the profiles; this module reads what comes from the model folder (a
layer above the knowledge layer): the "disease" block of its inference.json (`model_disease_rule`).
`table_for_model` serves a loaded model (the predictor); `table_in_force_at` a model folder on disk
without loading its network (`malenia knowledge`, MaleniaSegment's profile editor): only the manifest,
the table and inference.json are read, each checked by sha256 (malenia.model.folder), no torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from malenia.knowledge.site import RULE_KEYS, table_in_force
from malenia.knowledge.table import KnowledgeTable
from malenia.model.folder import INFERENCE, KNOWLEDGE, verify_model_folder
from malenia.paths import builtin_model_dir

Folders = Iterable[str | os.PathLike] | str | os.PathLike | None


def model_disease_rule(model) -> dict[str, Any] | None:
    """The "disease" block of a model folder's inference.json (None when it has none)."""
    files = getattr(model, "manifest", {}).get("files", {})
    path = Path(model.path) / INFERENCE
    if INFERENCE not in files or not path.is_file():
        return None
    try:
        block = json.loads(path.read_text(encoding="utf-8")).get("disease")
    except (OSError, ValueError, AttributeError):
        return None  # the model loader reports an unreadable inference.json
    return block if isinstance(block, dict) and all(k in block for k in RULE_KEYS) else None


def table_for_model(model, knowledge: Folders = None) -> KnowledgeTable:
    """The table in force for `model` (a LoadedModel, or anything with path, manifest, name, version and
    knowledge_table_path)."""
    return table_in_force(model, knowledge, model_disease_rule(model))


def table_in_force_at(model_dir: str | os.PathLike | None = None, knowledge: Folders = None) -> KnowledgeTable:
    """table_for_model for a model folder path (default: the built-in model)."""
    folder = Path(model_dir) if model_dir is not None else builtin_model_dir()
    manifest = verify_model_folder(folder)
    model = SimpleNamespace(path=folder, manifest=manifest, name=str(manifest.get("name", "")),
                            version=str(manifest.get("version", "")), knowledge_table_path=folder / KNOWLEDGE)
    return table_for_model(model, knowledge)
