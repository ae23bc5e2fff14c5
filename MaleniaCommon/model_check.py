"""A model folder's sha256 check, done once per content of the folder.

Choosing a model (MaleniaTrainer's "use this version", MaleniaSegment taking up the model setting) happens on the
GUI thread, and `malenia.model.folder.verify_model_folder` hashes every file, tens of MB of weights: Slicer froze
each time. A folder whose manifest and listed files have the same file status as when they were last verified
(size, mtime_ns, ctime_ns, inode: a write or a replacing rename changes one of them, and ctime cannot be set back
as mtime can) is not hashed again. A failed check is never remembered, so a broken folder is checked (and refused)
every time. The background download verifies through here too, so that the GUI thread then only reads file status.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

_MAX_FOLDERS = 16  # a session chooses a handful of models; the oldest is forgotten beyond this
_verified: dict[str, tuple] = {}
_lock = threading.Lock()  # the download's worker thread and the GUI thread both check


def verify_model_folder_cached(folder: str | Path) -> dict[str, Any]:
    """`verify_model_folder(folder)` (its manifest; ModelError with one line), without re-hashing files unchanged
    since this process last verified them."""
    from malenia.model.folder import read_manifest, verify_model_folder

    folder = Path(folder)
    key = os.path.abspath(folder)
    manifest = read_manifest(folder)  # small: the listed files, whose status is compared
    before = _status(folder, manifest)
    with _lock:
        if before is not None and _verified.get(key) == before:
            return manifest
    manifest = verify_model_folder(folder)
    # remembered only if nothing changed while hashing (else the digests may not be of these files)
    if before is not None and _status(folder, manifest) == before:
        with _lock:
            _verified.pop(key, None)
            _verified[key] = before
            while len(_verified) > _MAX_FOLDERS:
                _verified.pop(next(iter(_verified)))
    return manifest


def forget() -> None:
    """Drops every remembered check (tests)."""
    with _lock:
        _verified.clear()


def _status(folder: Path, manifest: dict[str, Any]) -> tuple | None:
    """The file status of the manifest and every file it lists; None when one cannot be read (the full check then
    says which)."""
    from malenia.model.folder import MANIFEST

    out = []
    for rel in (MANIFEST, *sorted(manifest["files"])):
        try:
            st = os.lstat(folder / rel)
        except OSError:
            return None
        out.append((rel, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return tuple(out)
