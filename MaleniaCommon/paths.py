"""Where the `malenia` package and its Resources are, and which Python runs it, seen from Slicer.

In a checkout this package sits in `<repo>/MaleniaCommon/` beside `<repo>/malenia/`; in the
built extension `malenia/`, `Resources/` and `pyproject.toml` are installed beside the
scripted modules (qt-scripted-modules/). Both layouts put them in the parent folder of this package.
"""

from __future__ import annotations

import os
import shutil
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


class PythonNotFound(RuntimeError):
    """Inside Slicer without its PythonSlicer launcher: no Python to run `malenia` in."""


def inside_slicer() -> bool:
    """True in the Slicer application (its `slicer` module has `app`; slicer-core's has not)."""
    slicer = sys.modules.get("slicer")
    return slicer is not None and getattr(slicer, "app", None) is not None


def python_executable() -> str:
    """The Python that runs `python -m malenia.cli ...` in a subprocess.

    Inside Slicer `sys.executable` is the Slicer application, not a Python: use its PythonSlicer
    launcher (it sets up Slicer's Python environment), found on PATH or beside the application.
    Without it, a clear error; starting `sys.executable` there would open a second Slicer.
    Outside Slicer: this Python.
    """
    if not inside_slicer():
        return sys.executable
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    beside = Path(sys.executable).resolve().parent / name
    found = shutil.which("PythonSlicer") or (str(beside) if beside.is_file() else None)
    if not found:
        raise PythonNotFound("PythonSlicer was not found (on PATH or beside the Slicer application); "
                             "Malenia needs it to run segmentation and training. Reinstall Slicer.")
    return found


def configured_model_folder(value) -> str | None:
    """The model folder a setting names, if it is a verified Malenia model folder; else None (built-in model).

    Verified by the core's `malenia.model.folder.verify_model_folder` (manifest, required files, sha256), through
    `model_check` (called on the GUI thread: files unchanged since their last check are not hashed again).
    """
    if not value:
        return None
    from malenia.errors import MaleniaError

    from .model_check import verify_model_folder_cached

    folder = Path(str(value)).expanduser()
    try:
        verify_model_folder_cached(folder)
    except (MaleniaError, OSError):
        return None
    return str(folder)
