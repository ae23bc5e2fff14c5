"""The attribute vocabulary: canonical English descriptions for each of the 8 aspects.

Data lives in `Resources/knowledge/vocabulary.json`. Ids (`aspect.value[.organ]`) are stable
contracts used by the knowledge table, lesion synthesis and reports; texts may be reworded
(the attribute bank is keyed by `Vocabulary.hash`, which covers ids, aspects and texts).

An entry may carry `"organ"` (an organ-specific description, e.g. density relative to the renal
parenchyma) or, for specific features, `"organs"` (the organs where the finding is plausible;
absent = any organ).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from malenia.aspects import ASPECTS
from malenia.errors import InputError
from malenia.paths import knowledge_dir

VOCABULARY_FORMAT = "malenia-vocabulary/1"


@dataclass(frozen=True)
class VocabEntry:
    id: str
    text: str
    aspect: str
    organ: str | None = None  # organ-specific description
    organs: tuple[str, ...] | None = None  # findings: organs where plausible (None = any)

    def applies_to(self, organ: str) -> bool:
        """Whether this description can describe a lesion of `organ`."""
        if self.organ is not None:
            return self.organ == organ
        return self.organs is None or organ in self.organs


class Vocabulary:
    def __init__(self, entries: list[VocabEntry], version: str = "", path: Path | None = None):
        self.entries = list(entries)
        self.version = version
        self.path = path
        self._by_id = {e.id: e for e in self.entries}
        if len(self._by_id) != len(self.entries):
            seen: set[str] = set()
            dup = [e.id for e in self.entries if e.id in seen or seen.add(e.id)]
            raise InputError(f"vocabulary: duplicate description id(s) {dup[:5]}")
        canon = json.dumps([[e.aspect, e.id, e.text] for e in self.entries], ensure_ascii=False, separators=(",", ":"))
        self.hash = hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    @staticmethod
    def default_path() -> Path:
        return knowledge_dir() / "vocabulary.json"

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Vocabulary":
        path = Path(path) if path else cls.default_path()
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"vocabulary file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: not valid JSON ({err})") from None
        return cls.from_json(obj, path)

    @classmethod
    def from_json(cls, obj: dict, path: Path | None = None) -> "Vocabulary":
        where = path or "vocabulary"
        if not isinstance(obj, dict) or obj.get("format") != VOCABULARY_FORMAT:
            raise InputError(f"{where}: not a Malenia vocabulary (format must be {VOCABULARY_FORMAT!r})")
        aspects = obj.get("aspects")
        if not isinstance(aspects, dict) or set(aspects) != set(ASPECTS):
            raise InputError(f"{where}: 'aspects' must map exactly the 8 aspects {list(ASPECTS)}")
        entries: list[VocabEntry] = []
        for aspect in ASPECTS:  # fixed aspect order, then file order: the bank's row order
            for item in aspects[aspect]:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not isinstance(item.get("text"), str):
                    raise InputError(f"{where}: each {aspect} entry needs string 'id' and 'text', got {item!r}")
                if not item["id"].startswith(aspect + "."):
                    raise InputError(f"{where}: id {item['id']!r} listed under {aspect!r} must start with '{aspect}.'")
                organs = item.get("organs")
                entries.append(VocabEntry(item["id"], item["text"].strip(), aspect, item.get("organ"),
                                          tuple(organs) if organs else None))
            if not aspects[aspect]:
                raise InputError(f"{where}: aspect {aspect!r} has no descriptions")
        return cls(entries, str(obj.get("version", "")), Path(path) if path else None)

    # -- queries -----------------------------------------------------------------------------
    def __contains__(self, desc_id: str) -> bool:
        return desc_id in self._by_id

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, desc_id: str) -> VocabEntry:
        try:
            return self._by_id[desc_id]
        except KeyError:
            raise InputError(f"unknown attribute description id {desc_id!r}") from None

    def ids(self, aspect: str | None = None) -> list[str]:
        if aspect is not None and aspect not in ASPECTS:
            raise InputError(f"unknown aspect {aspect!r}; expected one of {list(ASPECTS)}")
        return [e.id for e in self.entries if aspect is None or e.aspect == aspect]

    def text(self, desc_id: str) -> str:
        return self.entry(desc_id).text

    def aspect_of(self, desc_id: str) -> str:
        return self.entry(desc_id).aspect

    def organ_of(self, desc_id: str) -> str | None:
        return self.entry(desc_id).organ

    def ids_for_organ(self, aspect: str, organ: str) -> list[str]:
        """Descriptions of `aspect` that can describe a lesion of `organ`."""
        return [e.id for e in self.entries if e.aspect == aspect and e.applies_to(organ)]

    def organs(self) -> list[str]:
        """Organs with location descriptions (the organs the vocabulary can place a lesion in)."""
        return sorted({e.organ for e in self.entries if e.aspect == "location" and e.organ})
