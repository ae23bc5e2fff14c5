"""Atomic file and folder writes: readers see the old content or the new, never a half-written one."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; renamed onto `target` on success.

    The temporary name keeps the target's suffixes so writers that choose a format by
    extension (SimpleITK, nibabel, pynrrd) behave the same.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.partial.{os.getpid()}-", suffix="".join(target.suffixes) or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp makes it private; the file follows the umask as open() would
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False, replaces: str | None = None) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; it becomes `target` only on success.

    Without overwrite, the final rename refuses an existing target (FileExistsError) even when another
    process created it while this one was writing: of parallel writers exactly one wins, the others learn
    it and can pick another name. With overwrite, an existing target is replaced after the new one is
    complete. `replaces` names the file that marks a folder of the kind being written (dataset.json,
    manifest.json): overwrite then replaces only such a folder or an empty one, never a file or a user's own
    folder that a mistyped path points at (OutputError, before anything is written). Staging names carry
    the writer's process id so `clean_stale` can tell abandoned ones.
    """
    target = Path(target)
    # folders above the target made here go again if the writing fails (Ctrl-C included): nothing half-made is left
    with no_empty_folder_left(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        yield from _staged(target, overwrite, replaces)


def _staged(target: Path, overwrite: bool, replaces: str | None) -> Iterator[Path]:
    if target.exists() and not overwrite:
        raise FileExistsError(str(target))
    if overwrite and replaces is not None:
        check_replaceable(target, replaces)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial.{os.getpid()}-", dir=target.parent))
    os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes it private; the folder follows the umask as mkdir would
    try:
        yield staging
        if not overwrite:
            rename_no_replace(staging, target)
        elif target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.{os.getpid()}-", dir=target.parent))
            try:
                os.replace(target, old / "x")
                os.replace(staging, target)
            except BaseException:  # e.g. Ctrl-C between the two renames: the old folder goes back, not lost
                if not os.path.lexists(target) and os.path.lexists(old / "x"):
                    os.replace(old / "x", target)
                raise
            finally:
                if os.path.lexists(target):  # never the only copy
                    shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def umask() -> int:
    """The process's file-creation mask: from /proc where Linux has it; elsewhere as it was at import. Not read by
    setting it: for that instant another thread (the server's) would create its files unmasked."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def _read_umask_by_setting() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _read_umask_by_setting()  # at import, before the caller starts threads


def check_replaceable(target: str | os.PathLike, marker: str) -> None:
    """OutputError unless `target` is absent, an empty folder, or a folder holding `marker`."""
    from malenia.errors import OutputError

    target = Path(target)
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"{target} exists and is not a folder; it is not replaced (remove it or choose another path)")
    if not (target / marker).is_file() and any(target.iterdir()):
        raise OutputError(f"{target} is not a folder this command writes (it has no {marker}); it is not replaced "
                          "(remove it or choose another path)")


def check_creatable(target: str | os.PathLike, failure: str) -> None:
    """OutputError `failure: why` unless the nearest existing folder above `target` is a writable folder, so that
    `target` (a file or folder, new or replaced by a rename) can be written there; checked before a command's work,
    which would otherwise be lost at its end."""
    from malenia.errors import OutputError

    parent = next((p for p in Path(target).parents if os.path.lexists(p)), None)
    if parent is None or not parent.is_dir():
        raise OutputError(f"{failure}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{failure}: {parent} is not writable")


def check_output_folder(folder: str | os.PathLike, label: str) -> None:
    """OutputError unless `folder` (named `label` in the message, e.g. "--out") is a writable folder or can be made:
    checked before a command's work, which would otherwise be lost when its first result is saved."""
    from malenia.errors import OutputError

    folder = Path(folder)
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{label} {folder}: the folder is not writable")
    elif os.path.lexists(folder):
        raise OutputError(f"{label} {folder} is a file, not a folder")
    else:
        check_creatable(folder, f"cannot create {label} {folder}")


@contextlib.contextmanager
def no_empty_folder_left(folder: str | os.PathLike) -> Iterator[None]:
    """On an exception in the block (Ctrl-C included), removes `folder` and the folders above it that did not exist
    before the block, as long as they are empty: an interrupted command leaves no empty folder of its own behind
    (a later run would find its output path taken). A folder holding anything stays."""
    folder = Path(folder)
    absent = []
    for p in (folder, *folder.parents):
        if os.path.lexists(p):
            break
        absent.append(p)  # deepest first
    try:
        yield
    except BaseException:
        for p in absent:
            try:
                p.rmdir()  # refuses a folder that is not empty
            except OSError:
                break
        raise


def rename_no_replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Renames `src` to `dst` atomically, FileExistsError if `dst` exists (file or folder, empty or not).

    POSIX rename() silently replaces an empty folder or a file; Linux's renameat2(RENAME_NOREPLACE)
    does not. Elsewhere (macOS, Windows) an existing non-empty folder makes rename fail, and on Windows
    any existing target does; the exists() check narrows the remaining window.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists", dst)
        if err not in (errno.EINVAL, errno.ENOSYS):  # not supported by this file system: fall back
            raise OSError(err, os.strerror(err), src, None, dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "target exists", dst)
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY) or isinstance(err, FileExistsError):
            raise FileExistsError(errno.EEXIST, "target exists", dst) from None
        raise


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_renameat2 = _load_renameat2()

_STAGING_RE = re.compile(r"^\.(?:.+\.(?:partial|old)\.(\d+)-[^/]*|malenia-partial-.*)$")


_STARTED = time.time()  # (about) when this process started: it imports this module before staging anything


def clean_stale(folder: str | os.PathLike, min_age_s: float = 600.0) -> list[str]:
    """Removes staging folders and files left in `folder` by writers that were killed (kill -9, power cut).

    A staging name with a process id (atomic_dir, atomic_path) is stale when that process is gone
    and the entry is older than a minute; one without (segment's `.malenia-partial-*`) when it is
    older than `min_age_s` (a live writer keeps one for seconds). Returns the names removed.
    """
    folder = Path(folder)
    removed: list[str] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _STAGING_RE.match(entry.name)
        if not m:
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        pid = int(m.group(1)) if m.group(1) else None
        stale = (age > 60 and not _alive(pid, now - age)) if pid is not None else age > min_age_s
        if stale:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def _alive(pid: int, modified: float) -> bool:
    """Whether the writer of a staging entry last modified at `modified` may still be at work."""
    if pid == os.getpid():
        # This process, or a killed predecessor that had the same id (a container's PID 1 after a restart): an
        # entry older than this process is the predecessor's.
        return modified >= _STARTED
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows; keep it (age rule only)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: a process of another user holds that id
        return True
    return True
