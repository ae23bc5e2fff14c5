"""The disease knowledge table: per disease and aspect, a probability over vocabulary descriptions.

`Resources/knowledge/knowledge_table.json` holds the built-in twelve lesion types (a model folder
carries its own copy); a site adds or overrides a disease with a profile file `<key>.json` (one
disease object, same fields) in a profile folder (malenia.knowledge.site) - no retraining. Per disease:

    {"name", "organ", "seen", "source", "profile": {aspect: {id: prob}}, "rationale": {aspect: str},
     "finding_count": {"1": p, "2": p, "3": p}}   # optional: findings per lesion when not "none"

Each aspect's probabilities sum to 1; every id exists in the vocabulary under that aspect and,
when organ-specific, belongs to the disease's organ. The file's "inference" block holds the
calibration of disease inference (malenia.knowledge.inference).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malenia.aspects import ALL_DISEASES, ASPECTS, SEEN_DISEASES
from malenia.errors import InputError
from malenia.knowledge.vocabulary import Vocabulary
from malenia.paths import knowledge_dir

TABLE_FORMAT = "malenia-knowledge-table/1"
NONE_FINDING = "specific_features.none"
DEFAULT_FINDING_COUNT = {1: 0.7, 2: 0.25, 3: 0.05}
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# A key names its profile file, and atomic writes stage `.<key>.json.partial.<pid>-<random>.json` beside it: 100
# characters keep both under the file systems' 255-byte name limit (a longer key failed with an OSError).
MAX_KEY_LENGTH = 100
_SUM_TOLERANCE = 1e-3


# malenia.knowledge.inference.UNCLASSIFIED: the call for a lesion no disease fits. A disease of that key was named
# "unclassified" with `unclassified: false`, and counted with the unclassified lesions (evaluate, profile editor).
RESERVED_KEYS = frozenset({"unclassified"})


def key_problem(key: str) -> str | None:
    """Why `key` cannot name a disease (None: it can): lower_snake_case, short enough to name its profile file,
    not a reserved name."""
    if not _KEY.match(key) or len(key) > MAX_KEY_LENGTH:
        return f"must be lower_snake_case (e.g. hepatic_haemangioma), at most {MAX_KEY_LENGTH} characters"
    if key in RESERVED_KEYS:
        return "is reserved: it is the call for a lesion no disease fits"
    return None


def one_line(text: str) -> bool:
    """Whether `text` is one line of printable text: a display name is a row of `knowledge list`, a segment name
    and a report heading, which a line break or control character would split or garble."""
    return not any(ord(c) < 32 or ord(c) == 127 or c in "\u2028\u2029\x85" for c in text)


@dataclass
class DiseaseProfile:
    key: str
    name: str
    organ: str
    seen: bool
    source: str
    profile: dict[str, dict[str, float]]
    rationale: dict[str, str] = field(default_factory=dict)
    finding_count: dict[int, float] = field(default_factory=lambda: dict(DEFAULT_FINDING_COUNT))
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. number of cases it was estimated from

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "organ": self.organ,
            "seen": self.seen,
            "source": self.source,
            "profile": {a: dict(self.profile[a]) for a in ASPECTS},  # full precision: load/save round-trips exactly
            "rationale": self.rationale,
            "finding_count": {str(k): v for k, v in self.finding_count.items()},
            **self.extra,
        }

    @staticmethod
    def from_json(key: str, obj: Any, vocab: Vocabulary, where: str) -> "DiseaseProfile":
        problem = key_problem(key)
        if problem:
            raise InputError(f"{where}: disease key {key!r} {problem}")
        if not isinstance(obj, dict):
            raise InputError(f"{where}: disease {key!r} must be an object")
        for name in ("name", "organ", "profile"):
            if name not in obj:
                raise InputError(f"{where}: disease {key!r} lacks {name!r}")
        _check_fields(key, obj, where)
        organ = str(obj["organ"])
        if organ not in vocab.organs():
            raise InputError(f"{where}: disease {key!r}: organ {organ!r} has no location descriptions "
                             f"(vocabulary organs: {vocab.organs()})")
        raw = obj["profile"]
        if not isinstance(raw, dict) or set(raw) != set(ASPECTS):
            raise InputError(f"{where}: disease {key!r}: profile must give all 8 aspects {list(ASPECTS)}")
        profile: dict[str, dict[str, float]] = {}
        for aspect in ASPECTS:
            dist = raw[aspect]
            if not isinstance(dist, dict) or not dist:
                raise InputError(f"{where}: {key}.{aspect}: must map description ids to probabilities")
            for desc_id, p in dist.items():
                if desc_id not in vocab:
                    raise InputError(f"{where}: {key}.{aspect}: unknown description id {desc_id!r}")
                if vocab.aspect_of(desc_id) != aspect:
                    raise InputError(f"{where}: {key}.{aspect}: {desc_id!r} belongs to aspect {vocab.aspect_of(desc_id)!r}")
                own = vocab.organ_of(desc_id)
                if own is not None and own != organ:
                    raise InputError(f"{where}: {key}.{aspect}: {desc_id!r} describes the {own}, not the {organ}")
                if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                    raise InputError(f"{where}: {key}.{aspect}.{desc_id}: probability must be in [0, 1], got {p!r}")
            total = float(sum(dist.values()))
            if abs(total - 1.0) > _SUM_TOLERANCE:
                raise InputError(f"{where}: {key}.{aspect}: probabilities sum to {total:.4f}, not 1")
            scale = 1.0 if abs(total - 1.0) < 1e-9 else total  # exact files load unchanged
            profile[aspect] = {i: float(p) / scale for i, p in dist.items() if p > 0}
        counts = obj.get("finding_count") or DEFAULT_FINDING_COUNT
        try:
            finding_count = {int(k): float(v) for k, v in counts.items()}
        except (TypeError, ValueError, AttributeError):
            raise InputError(f"{where}: {key}.finding_count must map counts to probabilities") from None
        fc_total = sum(finding_count.values())
        if not 0 < fc_total < math.inf or any(k < 1 or not v >= 0 for k, v in finding_count.items()):
            raise InputError(f"{where}: {key}.finding_count must have positive counts and probabilities")
        known = {"name", "organ", "seen", "source", "profile", "rationale", "finding_count"}
        return DiseaseProfile(
            key=key,
            name=str(obj["name"]),
            organ=organ,
            seen=bool(obj.get("seen", key in SEEN_DISEASES)),
            source=str(obj.get("source", "user")),
            profile=profile,
            rationale={str(k): str(v) for k, v in (obj.get("rationale") or {}).items()},
            finding_count={k: v / fc_total for k, v in sorted(finding_count.items())},
            extra={k: v for k, v in obj.items() if k not in known},
        )


def _check_fields(key: str, obj: dict[str, Any], where: str) -> None:
    """The fields besides the profile, by type: a hand-edited file must stop the run with one line naming it, not
    load a name of None, crash on a rationale that is a list, or fail the next edit on a version of "abc"."""
    name = obj["name"]
    if not isinstance(name, str) or not name.strip() or not one_line(name):
        raise InputError(f"{where}: disease {key!r}: name must be one line of text, got {name!r}")
    if not isinstance(obj.get("rationale") or {}, dict):
        raise InputError(f"{where}: {key}.rationale must map aspects to text")
    version = obj.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"{where}: {key}.version must be a whole number from 1, got {version!r}")
    if not isinstance(obj.get("seen", False), bool):
        raise InputError(f"{where}: {key}.seen must be true or false, got {obj['seen']!r}")


class KnowledgeTable:
    def __init__(self, diseases: dict[str, DiseaseProfile], vocab: Vocabulary, inference: dict[str, Any] | None = None,
                 meta: dict[str, Any] | None = None, origin: dict[str, Any] | None = None):
        self._diseases = dict(diseases)
        self.vocab = vocab
        self.inference = dict(inference or {})
        self.meta = dict(meta or {})
        # Which files made this table: {"table": {name, version, sha256, path}, "profiles": [...]}
        # (malenia.knowledge.site; report.json's "knowledge" block).
        self.origin = dict(origin or {})

    @staticmethod
    def default_path() -> Path:
        return knowledge_dir() / "knowledge_table.json"

    @staticmethod
    def default_user_dir() -> Path:
        return knowledge_dir() / "diseases"

    @classmethod
    def load(cls, path: str | Path | None = None, vocab: Vocabulary | None = None,
             user_dir: str | Path | None = None, site_dirs: list[str | Path] | tuple = (),
             name: str | None = None, version: str | None = None) -> "KnowledgeTable":
        """A table file plus site profiles (`DIR/<key>.json`, each adding or overriding a disease).

        Profile folders, later ones overriding earlier ones: `user_dir` (default: the built-in
        `Resources/knowledge/diseases/` when `path` is the built-in table), then `site_dirs`.
        `origin` records the table (name, version, sha256) and every profile used."""
        path = Path(path) if path else cls.default_path()
        vocab = vocab or Vocabulary.load()
        raw = _read_bytes(path)
        obj = _parse_json(raw, path)
        if not isinstance(obj, dict) or obj.get("format") != TABLE_FORMAT or not isinstance(obj.get("diseases"), dict):
            raise InputError(f"{path}: not a Malenia knowledge table (format must be {TABLE_FORMAT!r} with 'diseases')")
        diseases = {k: DiseaseProfile.from_json(k, v, vocab, str(path)) for k, v in obj["diseases"].items()}
        builtin = set(diseases)
        user_dir = Path(user_dir) if user_dir else (cls.default_user_dir() if path == cls.default_path() else None)
        profiles = []
        for folder in ([user_dir] if user_dir else []) + [Path(d) for d in site_dirs]:
            for f, data in _profile_files(folder):
                disease = DiseaseProfile.from_json(f.stem, _parse_json(data, f), vocab, str(f))
                profiles = [p for p in profiles if p["key"] != f.stem]  # a later folder overrides
                # the path absolute: report.json records it, and is read from another working folder
                profiles.append({"key": f.stem, "name": disease.name, "version": str(disease.extra.get("version", 1)),
                                 "sha256": hashlib.sha256(data).hexdigest(), "path": os.path.abspath(f),
                                 "overrides": f.stem in builtin})
                diseases[f.stem] = disease
        meta = {k: v for k, v in obj.items() if k not in ("diseases", "inference")}
        origin = {"table": {"name": name or str(meta.get("name", path.stem)),
                            "version": version or str(meta.get("version", meta.get("vocabulary_hash", ""))),
                            "sha256": hashlib.sha256(raw).hexdigest(), "path": str(path)},
                  "profiles": profiles}
        return cls(diseases, vocab, obj.get("inference"), meta, origin)

    def to_json(self) -> dict[str, Any]:
        builtin_order = [d for d in ALL_DISEASES if d in self._diseases] + sorted(set(self._diseases) - set(ALL_DISEASES))
        return {
            "format": TABLE_FORMAT,
            **{k: v for k, v in self.meta.items() if k != "format"},
            "inference": self.inference,
            "diseases": {k: self._diseases[k].to_json() for k in builtin_order},
        }

    # -- queries -----------------------------------------------------------------------------
    @property
    def diseases(self) -> list[str]:
        return list(self._diseases)

    def disease(self, key: str) -> DiseaseProfile:
        try:
            return self._diseases[key]
        except KeyError:
            raise InputError(f"unknown disease {key!r}; the knowledge table has {self.diseases}") from None

    def profile(self, key: str) -> dict[str, dict[str, float]]:
        return self.disease(key).profile

    def name(self, key: str) -> str:
        return self.disease(key).name

    def organ(self, key: str) -> str:
        return self.disease(key).organ

    def most_probable(self, key: str) -> dict[str, str]:
        """The single most probable description per aspect (the disease's typical lesion)."""
        return {a: max(dist, key=dist.get) for a, dist in self.profile(key).items()}

    def sample_attributes(self, key: str, rng: np.random.Generator) -> dict[str, list[str]]:
        """Draws one lesion's descriptions: one id per aspect; specific features may hold several
        findings (count drawn from `finding_count`) or just ["specific_features.none"]."""
        d = self.disease(key)
        out: dict[str, list[str]] = {}
        for aspect in ASPECTS:
            ids = list(d.profile[aspect])
            probs = np.array([d.profile[aspect][i] for i in ids], dtype=float)
            first = ids[int(rng.choice(len(ids), p=probs / probs.sum()))]
            out[aspect] = [first]
            if aspect != "specific_features" or first == NONE_FINDING:
                continue
            counts = list(d.finding_count)
            cp = np.array([d.finding_count[c] for c in counts], dtype=float)
            n = counts[int(rng.choice(len(counts), p=cp / cp.sum()))]
            pool = [(i, p) for i, p in zip(ids, probs) if i not in (first, NONE_FINDING) and p > 0]
            n_more = min(n - 1, len(pool))
            if n_more > 0:
                w = np.array([p for _, p in pool])
                picks = rng.choice(len(pool), size=n_more, replace=False, p=w / w.sum())
                out[aspect] += [pool[int(j)][0] for j in sorted(picks)]
        return out


def _profile_files(folder: Path) -> list[tuple[Path, bytes]]:
    """The profile files of a folder (none when it does not exist) with their bytes, in key order.

    Hidden files are skipped: atomic writes stage `.<key>.json.partial.<pid>-<random>.json` beside the profile (a
    killed writer leaves one), and a reader that took it for a profile stopped on its half-written JSON. A profile
    removed between the listing and the reading is skipped as if listed a moment later."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"site profile folder {folder} is not a folder")
    out = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if f.name.startswith("."):
            continue
        try:
            out.append((f, _read_bytes(f)))
        except InputError:
            if os.path.lexists(f):  # still there (a dangling link to an unmounted share is an error, not skipped)
                raise
    return out


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"knowledge file not found: {path}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None


def _parse_json(data: bytes, path: Path) -> Any:
    try:
        # utf-8-sig: a profile saved by a Windows editor starts with a byte-order mark, which json refuses
        return json.loads(data.decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
