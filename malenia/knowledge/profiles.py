"""Site disease profiles: build one from descriptions and weights, validate, write, remove.

Used by `malenia knowledge add|edit|remove|list` and the Slicer profile editor. A profile file
`DIR/<key>.json` is one disease object of the knowledge table (malenia.knowledge.table) plus
"version" (1, then +1 per edit). Descriptions are vocabulary ids (or their exact texts); an
unknown one is refused naming the closest valid ones. Per aspect the weights are normalised to
probabilities; an aspect given no description gets every description valid for the organ,
equally (no knowledge). Files are written atomically under a folder lock, so concurrent editors
never leave a half-written profile and never lose each other's files.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import math
import os
from pathlib import Path
from typing import Iterator, Mapping

from malenia.aspects import ASPECTS
from malenia.atomic import write_json
from malenia.errors import InputError, OutputError
from malenia.knowledge.table import DiseaseProfile, key_problem
from malenia.knowledge.vocabulary import Vocabulary

LOCK_FILE = ".malenia-knowledge.lock"


def resolve_description(token: str, vocab: Vocabulary, organ: str | None = None) -> str:
    """A vocabulary id from an id or its exact text (case-insensitive); InputError with the closest
    valid descriptions otherwise."""
    token = token.strip()
    if token in vocab:
        return token
    by_text = {e.text.lower(): e.id for e in vocab.entries}
    if token.lower() in by_text:
        return by_text[token.lower()]
    pool = [e for e in vocab.entries if organ is None or e.applies_to(organ)]
    candidates = {e.id: e.id for e in pool} | {e.text.lower(): e.id for e in pool}
    close = difflib.get_close_matches(token.lower(), list(candidates), n=6, cutoff=0.4)
    named = list(dict.fromkeys(candidates[c] for c in close))[:3]
    hint = f"; closest: {', '.join(named)}" if named else "; `malenia knowledge list --descriptions` lists them"
    raise InputError(f"unknown description {token!r}" + (f" for the {organ}" if organ else "") + hint)


def parse_weighted(items: list[str], vocab: Vocabulary, organ: str) -> dict[str, dict[str, float]]:
    """`ID[=WEIGHT]` items -> aspect -> {id: weight} (weight 1 when omitted)."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        token, _, weight = item.partition("=")
        desc_id = resolve_description(token, vocab, organ)
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise InputError(f"{item!r}: the weight after '=' must be a number") from None
        if not 0 < w < math.inf:  # inf (or 1e400) would turn the aspect's probabilities into nan
            raise InputError(f"{item!r}: a weight must be a positive, finite number (leave a description out instead)")
        entry = vocab.entry(desc_id)
        if not entry.applies_to(organ):
            where = entry.organ or ", ".join(entry.organs or ())
            raise InputError(f"{desc_id!r} describes the {where}, not the {organ}")
        if desc_id in out.get(entry.aspect, {}):  # `-d shape.round=1 round=5`: which weight was meant?
            raise InputError(f"{desc_id!r} is given twice; give each description once")
        out.setdefault(entry.aspect, {})[desc_id] = w
    return out


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
    # scaled by the largest first: two weights of 1e308 would sum to inf and normalise to zeros
    top = max(float(v) for v in weights.values())
    scaled = {k: float(v) / top for k, v in weights.items()}
    total = sum(scaled.values())
    return {k: v / total for k, v in scaled.items()}


def build_profile(key: str, name: str, organ: str, weights: Mapping[str, Mapping[str, float]], vocab: Vocabulary,
                  base: DiseaseProfile | None = None, rationale: Mapping[str, str] | None = None) -> DiseaseProfile:
    """A validated profile: `weights` (aspect -> {id: weight}) replace those aspects of `base`; other
    aspects keep `base`'s, or (no base) every organ description equally."""
    check_key(key)
    if organ not in vocab.organs():
        close = difflib.get_close_matches(organ, vocab.organs(), n=3, cutoff=0.3)
        raise InputError(f"unknown organ {organ!r}; organs: {', '.join(vocab.organs())}"
                         + (f" (closest: {', '.join(close)})" if close else ""))
    profile: dict[str, dict[str, float]] = {}
    for aspect in ASPECTS:
        if weights.get(aspect):
            profile[aspect] = normalised(weights[aspect])
        elif base is not None and base.organ == organ:
            profile[aspect] = dict(base.profile[aspect])
        else:
            profile[aspect] = normalised({i: 1.0 for i in vocab.ids_for_organ(aspect, organ)})
    version = int((base.extra.get("version", 0) if base is not None else 0) or 0) + 1
    obj = {"name": name, "organ": organ, "seen": False, "source": "site profile", "profile": profile,
           "rationale": {**_kept_rationale(base, profile), **dict(rationale or {})}, "version": version}
    if base is not None:
        obj["finding_count"] = {str(k): v for k, v in base.finding_count.items()}
        # fields of the base's own (where it was estimated from, a site's notes) are kept, as its unchanged aspects
        obj = {**{k: v for k, v in base.extra.items() if k != "version"}, **obj}
    return DiseaseProfile.from_json(key, obj, vocab, "profile")  # the table's own validation


def _kept_rationale(base: DiseaseProfile | None, profile: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """The base's rationale of the aspects an edit leaves as they were (within 0.001, what the profile editor's
    three decimals round to). A rationale given for one aspect used to replace all eight, and an aspect's
    reason stayed beside values it no longer explains."""
    if base is None:
        return {}
    def unchanged(aspect: str, dist: Mapping[str, float]) -> bool:
        old = base.profile.get(aspect, {})
        return set(dist) == set(old) and all(abs(p - old[i]) <= 1e-3 for i, p in dist.items())

    return {a: text for a, text in base.rationale.items() if a in profile and unchanged(a, profile[a])}


def check_key(key: str) -> None:
    """InputError unless `key` can name a disease (and so its profile file)."""
    problem = key_problem(key)
    if problem:
        raise InputError(f"disease key {key!r} {problem}")


@contextlib.contextmanager
def folder_lock(folder: Path, create: bool = True) -> Iterator[None]:
    """Serialises read-modify-write of one profile folder across processes; `create`: make the folder first
    (a removal does not, so that it leaves no folder behind).

    A block that fails (a refused add, Ctrl-C) leaves nothing this call made: the lock file if it made it, then
    the folders it made, if empty. A folder that existed before, or that another writer made, is never removed,
    and one holding anything stays. Unlinking a lock file is safe only because every locker checks, once it holds
    the lock, that its file is still the one at the path, and starts again if not (a waiter on the unlinked file
    would otherwise hold a lock nobody else sees)."""
    made: dict[Path, None] = {}  # folders this call made, across retries
    try:
        fd, made_lock = _lock(folder, create, made)
    except BaseException:  # e.g. the folder's own name refused after its parents were made, or Ctrl-C while waiting
        _remove_made(folder, False, made)
        raise
    try:
        yield
    except BaseException:
        _remove_made(folder, made_lock, made)  # still under the lock: no writer can be adding to the folder
        raise
    finally:
        os.close(fd)  # closing releases the lock


def _lock(folder: Path, create: bool, made: dict[Path, None]) -> tuple[int, bool]:
    """(fd of the locked lock file, whether this call created it); folders it creates are added to `made`."""
    lock = folder / LOCK_FILE
    for _ in range(100):  # each retry means another writer removed the folder it made; it cannot go on for long
        try:
            if create:
                _make_folders(folder, made)
            fd, made_lock = _open_lock(lock)
        except FileNotFoundError:
            if create or folder.is_dir():  # the folder or lock file went meanwhile (a failed writer's): again
                continue
            raise OutputError(f"site profile folder {folder}: cannot lock it (No such file or directory)") from None
        except OSError as err:
            raise OutputError(f"site profile folder {folder}: cannot {'create or ' if create else ''}lock it "
                              f"({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:  # Ctrl-C while another writer holds it: its lock file stays (unlocked, not ours to go)
            os.close(fd)
            raise
        if _still_at(fd, lock):
            return fd, made_lock
        os.close(fd)  # the file was unlinked while this call waited: lock the one at the path now
    raise OutputError(f"site profile folder {folder}: cannot lock it (its lock file keeps being replaced)")


def _make_folders(folder: Path, made: dict[Path, None]) -> None:
    """Makes `folder` and the folders above it that are missing, adding to `made` each one this call made, as it
    goes (one that another process makes meanwhile is not counted)."""
    missing = []
    for p in (folder, *folder.parents):
        if p.is_dir():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:
            if not p.is_dir():
                raise
            continue
        made[p] = None


def _still_at(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def _remove_made(folder: Path, made_lock: bool, made: dict[Path, None]) -> None:
    if made_lock:
        with contextlib.suppress(OSError):
            (folder / LOCK_FILE).unlink()
    for p in sorted(made, key=lambda q: len(q.parts), reverse=True):
        try:
            p.rmdir()  # refuses a folder that holds anything
        except OSError:
            break


def _open_lock(path: Path) -> tuple[int, bool]:
    """The lock file, for writing where allowed (flock over NFS needs it), else for reading: a lock file another
    user created (mode 644) still locks, and a read-only folder that has one gets as far as the write, which then
    says why it failed. Also whether this call created it (O_EXCL tells)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
        pass
    except PermissionError as err:
        try:
            return os.open(path, os.O_RDONLY), False
        except OSError:
            raise err from None  # no lock file, and none can be made: the first reason is the one to tell
    try:
        return os.open(path, os.O_RDWR), False
    except PermissionError:
        return os.open(path, os.O_RDONLY), False


def profile_path(folder: str | os.PathLike, key: str) -> Path:
    return Path(folder) / f"{key}.json"


def write_profile(folder: str | os.PathLike, profile: DiseaseProfile) -> Path:
    """Writes DIR/<key>.json atomically (readers see the old file or the new one)."""
    path = profile_path(folder, profile.key)
    try:
        write_json(path, profile.to_json())
        os.chmod(path, 0o644)  # a site folder is read by every user of the installation
    except OSError as err:  # e.g. a read-only folder: one line, and atomic_path left no staging file
        raise OutputError(f"cannot write {path} ({err.strerror})") from None
    return path


def remove_profile(folder: str | os.PathLike, key: str) -> Path:
    path = profile_path(folder, key)
    if not path.is_file():
        raise InputError(f"no site profile {key!r} in {folder}")
    try:
        path.unlink()
    except OSError as err:
        raise OutputError(f"cannot remove {path} ({err.strerror})") from None
    return path
