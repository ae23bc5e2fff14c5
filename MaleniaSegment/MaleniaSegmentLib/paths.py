"""Where the `malenia` package and its Resources are, seen from the Slicer module.

In a checkout the module sits in `<repo>/MaleniaSegment/` beside `<repo>/malenia/`; in the
built extension `malenia/`, `Resources/` and `pyproject.toml` are installed beside the
scripted module (qt-scripted-modules/). Both layouts put them in a parent folder of this package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LIB_DIR = Path(__file__).resolve().parent


def malenia_root() -> Path | None:
    """The folder that holds the `malenia` package (and Resources/), or None."""
    for candidate in (LIB_DIR.parent, LIB_DIR.parent.parent):
        if (candidate / "malenia" / "__init__.py").is_file():
            return candidate
    return None


def ensure_malenia_importable() -> Path | None:
    """Puts the package's folder on sys.path (Slicer does not install it with pip)."""
    root = malenia_root()
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def subprocess_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `python -m malenia.cli`: finds the package and its Resources, streams output."""
    env = dict(os.environ if base is None else base)
    root = malenia_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        if (root / "Resources").is_dir() and "MALENIA_RESOURCES" not in env:
            env["MALENIA_RESOURCES"] = str(root / "Resources")
    env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive as they are printed
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


MODEL_FOLDER_SETTING = "Malenia/ModelFolder"  # written by MaleniaTrainer ("Use this model"), read here


def configured_model_folder(value) -> str | None:
    """The model folder a setting names, if it is one (holds a manifest.json); else None (built-in model)."""
    if not value:
        return None
    folder = Path(str(value)).expanduser()
    return str(folder) if (folder / "manifest.json").is_file() else None
