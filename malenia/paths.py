"""Where the project's data files live.

`Resources/` sits at the repository root (the Slicer extension ships it beside the modules).
MALENIA_RESOURCES overrides it, e.g. for an installed wheel or a site-specific knowledge table.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    override = os.environ.get("MALENIA_RESOURCES")
    return Path(override) if override else REPO_ROOT / "Resources"


def knowledge_dir() -> Path:
    return resources_dir() / "knowledge"


def builtin_model_dir() -> Path:
    return resources_dir() / "model"


def shared_data_dir() -> Path:
    """The real public data kept beside the checkout (never committed into the project)."""
    override = os.environ.get("MALENIA_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    override = os.environ.get("MALENIA_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "malenia"
