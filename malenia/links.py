"""Second names for files and folders without copying data, where the platform allows it.

`link_or_copy(src, dst)`: a hard link, or a copy on file systems without them (FAT, some network shares).
`link_folder(src, dst)`: a view of a folder (the server's per-job dataset views of stored cases): a
symbolic link, or, where symbolic links need a privilege (Windows without developer mode: the trainer's
local mode inside Slicer), a real folder of hard links (copies where those fail) that appears whole.
Standard library only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from malenia.atomic import atomic_dir


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_folder(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`dst` shows the files of `src` (its top level; a case folder has no subfolders)."""
    src, dst = Path(src), Path(dst)
    try:
        os.symlink(src.resolve(), dst, target_is_directory=True)
        return
    except (OSError, NotImplementedError):  # no symlink privilege: a folder of links instead
        pass
    with atomic_dir(dst) as staging:
        for f in src.iterdir():
            if f.is_file():
                link_or_copy(f, staging / f.name)
