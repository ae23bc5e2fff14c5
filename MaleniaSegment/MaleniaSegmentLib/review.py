"""What the radiologist reviews: per lesion the disease and the 8 aspects, with corrections.

Built from a `malenia segment` report.json; no Qt and no MRML here, so the same model
drives the panels in Slicer, on PySide6 in tests, and the correction writer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from malenia.aspects import ASPECT_NAMES, ASPECTS
from malenia.infer.results import shown_disease

if TYPE_CHECKING:
    from malenia.infer.results import LesionResult


@dataclass(frozen=True)
class Choice:
    """One attribute description: matched, an alternative, or typed by the radiologist (id None)."""

    text: str
    id: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class DiseaseChoice:
    key: str | None  # knowledge-table key such as "kidney_tumor"; None for a typed name
    name: str
    probability: float | None = None
    # the model's call was "unclassified": key, name and probability are then its closest disease's, which the
    # panels show as such ("Unclassified (closest: ...)"), not as the lesion's disease
    unclassified: bool = False

    @staticmethod
    def of_call(call) -> "DiseaseChoice":
        """The model's call (malenia.infer.results.DiseaseCall) as the review's disease."""
        return DiseaseChoice(call.name, call.display_name, call.probability, bool(call.unclassified))

    @property
    def shown(self) -> str:
        return shown_disease(self.name, self.unclassified, self.key is not None)

    @property
    def dataset_key(self) -> str:
        """The key written to reports: the knowledge-table key, or the typed name as a key."""
        if self.key is not None:
            return self.key
        ascii_name = unicodedata.normalize("NFKD", self.name).encode("ascii", "ignore").decode("ascii")
        return re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_") or "lesion"


@dataclass
class AspectReview:
    aspect: str
    matched: Choice | None
    alternatives: list[Choice] = field(default_factory=list)
    corrected: Choice | None = None

    @property
    def name(self) -> str:
        return ASPECT_NAMES[self.aspect]

    @property
    def current(self) -> Choice | None:
        return self.corrected if self.corrected is not None else self.matched

    @property
    def is_corrected(self) -> bool:
        return self.corrected is not None and self.corrected != self.matched

    def options(self) -> list[Choice]:
        """Matched description first, then the alternatives (by score), each text once."""
        seen: set[str] = set()
        out: list[Choice] = []
        for c in ([self.matched] if self.matched else []) + sorted(self.alternatives, key=lambda c: -(c.score or 0.0)):
            if c.text not in seen:
                seen.add(c.text)
                out.append(c)
        return out

    def choose(self, text: str) -> Choice:
        """Selects an offered description by its text, or records typed free text (id None)."""
        text = text.strip()
        if not text:
            raise ValueError(f"{self.name}: the description is empty")
        for c in self.options():
            if c.text == text:
                self.corrected = None if c == self.matched else c
                return c
        self.corrected = Choice(text, None, None)
        return self.corrected


@dataclass
class LesionReview:
    label: int
    disease: DiseaseChoice
    disease_alternatives: list[DiseaseChoice]
    aspects: dict[str, AspectReview]
    voxel_count: int = 0
    volume_ml: float = 0.0
    centroid_ras: tuple[float, float, float] | None = None
    longest_mm: float | None = None
    short_axis_mm: float | None = None
    corrected_disease: DiseaseChoice | None = None
    segment_id: str | None = None
    color: tuple[int, int, int] = (255, 255, 0)  # 0-255 RGB, the segment's colour
    from_model: bool = True  # False for a lesion the radiologist added in the Segment Editor
    described: bool = False  # described by the model from its outline (segment --mask): drawn, or re-outlined
    # its mask is no longer the one the model's calls were made on (edited in the Segment Editor): set by
    # ReviewSession.remeasure, cleared when the model describes the new outline
    outline_changed: bool = False
    # display names of the diseases the model's appearance check ruled out (malenia.knowledge.appearance)
    ruled_out: list[str] = field(default_factory=list)

    @property
    def current_disease(self) -> DiseaseChoice:
        return self.corrected_disease if self.corrected_disease is not None else self.disease

    @property
    def is_corrected(self) -> bool:
        named = self.corrected_disease is not None and (self.corrected_disease.name != self.disease.name
                                                        or self.disease.unclassified)
        return named or any(a.is_corrected for a in self.aspects.values())

    def keep_model_disease(self) -> DiseaseChoice:
        """Back to the model's own call (for an unclassified lesion: unclassified again)."""
        self.corrected_disease = None
        return self.current_disease

    def set_disease(self, name_or_key: str, known: dict[str, str]) -> DiseaseChoice:
        """`known` maps disease keys to display names; anything else is kept as typed text."""
        name_or_key = name_or_key.strip()
        if not name_or_key:
            raise ValueError("the disease is empty")
        for key, name in known.items():
            if name_or_key.lower() in (key.lower(), name.lower()):
                choice = DiseaseChoice(key, name)
                break
        else:
            choice = DiseaseChoice(None, name_or_key)
        # A disease the model ranked keeps the model's probability for it.
        ranked = {c.key: c for c in [self.disease] + self.disease_alternatives if c.key is not None}
        if choice.key in ranked:
            choice = DiseaseChoice(choice.key, choice.name, ranked[choice.key].probability)
        # naming the closest disease of a lesion the model left unclassified is a correction too
        same = choice.name == self.disease.name and not self.disease.unclassified
        self.corrected_disease = None if same else choice
        return self.current_disease

    def reset(self) -> None:
        self.corrected_disease = None
        for a in self.aspects.values():
            a.corrected = None

    @property
    def model_called(self) -> bool:
        """Its disease and descriptions are the model's own calls (found by it, or described from the outline)."""
        return self.from_model or self.described

    @property
    def needs_description(self) -> bool:
        """Its outline has no model description of it: drawn by hand and not described, or re-outlined since."""
        return not self.model_called or self.outline_changed

    def review_record(self) -> dict:
        """What the review did to this lesion, for the reviewed report and the saved correction (`extra.review`):
        who found and described it, the model's call, what the reviewer changed, and whether the model's calls were
        made on the outline saved with them (False after a mask edit not yet described)."""
        return {
            "model_label": self.label if self.from_model else None,
            "added_by_reviewer": not self.from_model,
            "described_by_model": self.described,
            "model_disease": self.disease.key if self.model_called else None,
            "model_unclassified": bool(self.model_called and self.disease.unclassified),
            "model_calls_on_this_outline": self.model_called and not self.outline_changed,
            "disease_corrected": self.corrected_disease is not None,
            "corrected_aspects": [a for a in ASPECTS if self.aspects[a].is_corrected],
        }

    def take_description(self, described: "LesionReview") -> None:
        """The model's description of this lesion's outline as it is now (`described`, lesion_from_result of
        `segment --mask`; the lesion drawn by hand or re-outlined): its calls become the model's; what the reviewer
        chose stays as their correction: a chosen disease (a drawn segment named by a known disease counts, before
        its first description) and every corrected aspect."""
        chosen = self.corrected_disease
        if chosen is None and not self.model_called and self.disease.key is not None:
            chosen = self.disease
        self.disease, self.disease_alternatives = described.disease, described.disease_alternatives
        self.ruled_out = described.ruled_out
        for aspect, review in self.aspects.items():
            review.matched, review.alternatives = described.aspects[aspect].matched, described.aspects[aspect].alternatives
            if review.corrected == review.matched:
                review.corrected = None
        same = chosen is not None and chosen.name == self.disease.name and not self.disease.unclassified
        self.corrected_disease = None if chosen is None or same else chosen
        self.described, self.outline_changed = True, False


def drawn_aspects(vocabulary=None) -> dict[str, AspectReview]:
    """The aspects of a lesion drawn by hand, before the model describes it: nothing matched, and with the
    `vocabulary` every description of each aspect offered, unscored, so that a reader who describes it first
    picks descriptions with ids (the knowledge table and training read ids; typed text they cannot weigh)."""
    def offered(aspect: str) -> list[Choice]:
        return [Choice(vocabulary.text(i), i) for i in vocabulary.ids(aspect)] if vocabulary is not None else []

    return {aspect: AspectReview(aspect, None, offered(aspect)) for aspect in ASPECTS}


def lesion_from_result(lesion: "LesionResult", display_name: Callable[[str | None], str], vocabulary=None) -> LesionReview:
    """The review of one lesion of a `malenia segment` report (malenia.infer.results.LesionResult). With the
    `vocabulary` (malenia.knowledge.vocabulary.Vocabulary), every description the report scored for an aspect is
    offered beyond its runners-up, so that a reviewer's choice of any of them keeps its id (the knowledge table
    and training read ids; typed text they cannot weigh)."""
    call = lesion.disease
    disease = DiseaseChoice.of_call(call)
    alternatives = [DiseaseChoice(key, display_name(key), p) for key, p in call.alternatives if key != call.name]
    aspects = {}
    for aspect in ASPECTS:
        match = lesion.attributes[aspect]
        matched = Choice(match.description, match.id, match.score)
        alts = [Choice(a.description, a.id, a.score) for a in match.alternatives if a.description != match.description]
        if vocabulary is not None and lesion.scores:
            offered = {match.id, *(a.id for a in alts)}
            alts += [Choice(vocabulary.text(i), i, float(p)) for i, p in lesion.scores.get(aspect, {}).items()
                     if i not in offered and i in vocabulary]
        aspects[aspect] = AspectReview(aspect, matched, alts)
    m = lesion.measurements
    return LesionReview(
        label=int(lesion.label),
        disease=disease,
        disease_alternatives=alternatives,
        aspects=aspects,
        voxel_count=m.voxel_count if m else 0,
        volume_ml=m.volume_ml if m else 0.0,
        centroid_ras=m.centroid_ras_mm if m else None,
        longest_mm=m.long_axis_mm if m else None,
        short_axis_mm=m.short_axis_mm if m else None,
        ruled_out=[display_name(key) for key in (lesion.appearance or {}).get("ruled_out", [])],
    )
