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
    (a removal does not, so that it leaves no folder behind)."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(folder / LOCK_FILE)
    except OSError as err:
        raise OutputError(f"site profile folder {folder}: cannot {'create or ' if create else ''}lock it "
                          f"({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_lock(path: Path) -> int:
    """The lock file, for writing where allowed (flock over NFS needs it), else for reading: a lock file another
    user created (mode 644) still locks, and a read-only folder that has one gets as far as the write, which then
    says why it failed."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError as err:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            raise err from None  # no lock file, and none can be made: the first reason is the one to tell


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
