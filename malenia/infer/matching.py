"""From a lesion's per-aspect match distribution over the attribute bank to its report entries.

- Attributes: per aspect the best bank row (description, normalised score within the aspect's
  rows) and the runners-up, best first; an aspect whose descriptions are tied to organs (a density
  "lower than the renal parenchyma", a specific feature plausible only in some organs, "layering")
  reports its best row that fits the location's organ (`BankMatcher.host_row`), so a report never
  reads "in the colon, hypodense compared to the kidney" or "in the liver, layering".
- Enhancement is a property of the scan, not of the lesion: when the contrast phase found from
  the blood pool HU (malenia.data.contrast) is confident it is used for the scan and every
  lesion (Enhancement.method "hu"); otherwise the model's match is (method "model").
- Disease: the knowledge table's posterior from the per-aspect matches (malenia.knowledge.inference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from malenia.aspects import ASPECTS
from malenia.infer.results import AspectMatch, AttributeMatch, DiseaseCall, Enhancement

# Blood-pool HU distance from the 80 HU threshold at which the phase is called confidently:
# confidence = logistic(margin / scale); 0.9 is reached at ~22 HU with a vessel search or masks,
# at ~55 HU when no spine was found and the whole body section was searched.
PHASE_SCALE_HU = {"aorta_ivc_masks": 10.0, "blood_pool_search": 10.0, "body_search": 25.0}
PHASE_CONFIDENT = 0.9


@dataclass
class PhaseCall:
    id: str | None  # enhancement.* vocabulary id, None when undetermined
    confidence: float  # 0..1
    method: str  # contrast.PhaseEstimate.method
    blood_hu: float | None

    @property
    def confident(self) -> bool:
        return self.id is not None and self.confidence >= PHASE_CONFIDENT


def phase_call(estimate) -> PhaseCall:
    """Confidence of a malenia.data.contrast.PhaseEstimate from its margin to the HU threshold."""
    from malenia.data.contrast import NON_CONTRAST_MAX_HU

    hu = estimate.aorta_hu if estimate.aorta_hu is not None else estimate.ivc_hu
    if estimate.phase is None or hu is None:
        return PhaseCall(None, 0.0, estimate.method, None)
    if estimate.method == "aorta_ivc_masks":  # the phase follows the brighter vessel
        hu = max(v for v in (estimate.aorta_hu, estimate.ivc_hu) if v is not None)
    margin = abs(float(hu) - NON_CONTRAST_MAX_HU)
    scale = PHASE_SCALE_HU.get(estimate.method, 25.0)
    return PhaseCall(estimate.vocabulary_id, 1.0 / (1.0 + math.exp(-margin / scale)), estimate.method, float(hu))


class BankMatcher:
    """Turns distributions over the bank rows into AspectMatch entries and disease calls."""

    def __init__(self, bank, table, alternatives: int = 3, terminology=None):
        from malenia.infer.terminology import Terminology

        self.bank, self.table = bank, table
        self.terminology = terminology or Terminology.load()
        self.vocab = table.vocab
        self.alternatives = int(alternatives)
        aspect_of = bank.aspect_indices()
        self.rows = {a: np.flatnonzero(aspect_of == i) for i, a in enumerate(ASPECTS)}
        # The location rows' organs (None: free text), and for every aspect whose vocabulary ties descriptions
        # to organs, which of its rows fit each organ it names: host_row keeps reports from pairing a location
        # with a description of another organ
        self.location_organs = [self._organ(bank.ids[r]) for r in self.rows["location"]]
        fits = {a: self._fitting_rows(a) for a in ASPECTS if a != "location"}
        self.fits = {a: f for a, f in fits.items() if f}

    def _organ(self, desc_id: str) -> str | None:
        return self.vocab.organ_of(desc_id) if desc_id in self.vocab else None

    def _fitting_rows(self, aspect: str) -> dict[str, np.ndarray]:
        """organ -> mask over the aspect's rows of those that can describe a lesion of it, for every organ a
        row of the aspect names (`organ`, e.g. a density's host; `organs`, where a specific feature is
        plausible). Rows that name none, and free-text rows, fit every organ."""
        entries = [self.vocab.entry(self.bank.ids[r]) if self.bank.ids[r] in self.vocab else None
                   for r in self.rows[aspect]]
        named = {o for e in entries if e is not None for o in ((e.organ,) if e.organ else e.organs or ())}
        return {o: np.array([e is None or e.applies_to(o) for e in entries]) for o in sorted(named)}

    def _entry(self, row: int, score: float) -> AttributeMatch:
        desc_id = self.bank.ids[row]
        return AttributeMatch(desc_id if desc_id in self.vocab else None, self.bank.texts[row], float(score))

    def attributes(self, distribution: np.ndarray, phase: PhaseCall | None = None) -> dict[str, AspectMatch]:
        scores = {a: self._scores(distribution, a) for a in ASPECTS}
        best = {a: int(np.argmax(s)) for a, s in scores.items() if len(s)}
        for aspect in self.fits:
            if "location" in best and aspect in best:
                best[aspect] = self.host_row(aspect, best["location"], scores[aspect])
        out: dict[str, AspectMatch] = {}
        for aspect in ASPECTS:
            if aspect == "enhancement" and phase is not None and phase.confident:
                out[aspect] = self.phase_match(phase)
            elif aspect not in best:  # the bank has no description of this aspect
                out[aspect] = AspectMatch(None, "not described", 0.0)
            else:
                out[aspect] = self._match(self.rows[aspect], scores[aspect], best[aspect])
        return out

    def _scores(self, distribution: np.ndarray, aspect: str) -> np.ndarray:
        """The aspect's rows' scores normalised within the aspect (uniform where it has no mass)."""
        scores = distribution[self.rows[aspect]].astype(np.float64)
        total = scores.sum()
        return scores / total if total > 0 else np.full(len(scores), 1.0 / max(len(scores), 1))

    def _match(self, rows: np.ndarray, scores: np.ndarray, best: int) -> AspectMatch:
        """Row `best` (an index into `rows`) as the aspect's description, the others by score as runners-up."""
        order = [i for i in np.argsort(-scores, kind="stable") if i != best]
        top = self._entry(int(rows[best]), scores[best])
        alts = [self._entry(int(rows[i]), scores[i]) for i in order[: self.alternatives]]
        return AspectMatch(top.id, top.description, top.score, alts)

    def host_row(self, aspect: str, location: int, scores: np.ndarray) -> int:
        """The row of `aspect` (index into its rows) to report for a lesion at location row `location`, from
        the aspect's normalised scores: the best one that fits the location's organ.

        Some descriptions only make sense in some organs: a density is read against the host organ ("lower
        density than the renal parenchyma"), and the vocabulary lists where a specific feature is plausible
        ("layering": gallbladder, kidney). Each aspect is read apart from the location (the location from the
        body-position vote alone: malenia.knowledge.measured_attributes), so their best rows could name two
        organs, "in the colon, hypodense compared to the kidney", or "layering" in the liver, which no reader can
        use. The location keeps its reading: where the density disagreed on 6
        of 150 detected validation lesions (seen_verify, unseen_u50), the location's organ was right 5 times and
        the density's once; restricting the specific feature to the location's organ took it from 73 to 78 right
        of those 150 (docs/knowledge.md, "Location and density agree"). Rows that name no organ go with any
        location; every row goes with a location whose organ the aspect does not name (free text)."""
        fits = self.fits.get(aspect, {}).get(self.location_organs[location])
        if fits is None:
            return int(np.argmax(scores))
        return int(np.argmax(np.where(fits, scores, -1.0)))  # first best row, as reading the aspect alone

    def phase_match(self, phase: PhaseCall) -> AspectMatch:
        ids = self.vocab.ids("enhancement")
        others = [AttributeMatch(i, self.vocab.text(i), (1.0 - phase.confidence) / max(len(ids) - 1, 1))
                  for i in ids if i != phase.id]
        return AspectMatch(phase.id, self.vocab.text(phase.id), phase.confidence, others[: self.alternatives])

    def full_matches(self, distribution: np.ndarray, attributes: dict[str, AspectMatch]) -> dict[str, dict[str, float]]:
        """aspect -> {description id: score} over every vocabulary row of the aspect: the input of
        disease inference (enhancement as decided in `attributes`, free-text rows left out)."""
        out = {a: {self.bank.ids[r]: float(distribution[r]) for r in self.rows[a] if self.bank.ids[r] in self.vocab}
               for a in ASPECTS}
        enh = attributes["enhancement"]
        out["enhancement"] = {e.id: float(e.score) for e in (enh, *enh.alternatives) if e.id is not None}
        return out

    def disease(self, matches: dict[str, dict[str, float]], top: int = 3, ruled_out=()) -> DiseaseCall:
        return disease_call(matches, self.table, self.terminology, top, ruled_out)


def disease_call(matches: dict[str, dict[str, float]], table, terminology, top: int = 3, ruled_out=()) -> DiseaseCall:
    """The report's disease entry from per-aspect scores (segmenting, and re-ranking a saved report);
    `ruled_out`: diseases the lesion's appearance excludes (malenia.knowledge.appearance)."""
    from malenia.knowledge.inference import infer_disease

    def display(key: str | None) -> str:  # a site profile's own name where the terminology has none
        known = key is None or key in terminology.diseases or key not in table.diseases
        return terminology.display_name(key) if known else table.name(key)

    post = infer_disease(matches, table, ruled_out)
    if not post.alternatives and post.unclassified:  # no usable matches at all
        return DiseaseCall(None, display(None), 0.0, [], True, None)
    if post.unclassified:
        (name, p), rest = post.alternatives[0], post.alternatives[1:]
        return DiseaseCall(name, display(name), float(p), [(n, float(q)) for n, q in rest[:top]], True, None)
    return DiseaseCall(post.name, display(post.name), float(post.probability),
                       [(n, float(q)) for n, q in post.alternatives[:top]], False, table.organ(post.name))


def scan_enhancement(phase: PhaseCall, lesion_enhancements: list[tuple[AspectMatch, float]], vocab) -> Enhancement | None:
    """The scan's phase: the HU estimate when confident, else the model's (lesion-weighted) match,
    else the unconfident HU estimate, else None."""
    if phase.confident:
        return Enhancement(phase.id, vocab.text(phase.id), phase.confidence, "hu")
    votes: dict[str, float] = {}
    total = 0.0
    for match, weight in lesion_enhancements:
        for e in (match, *match.alternatives):
            if e.id is not None:
                votes[e.id] = votes.get(e.id, 0.0) + weight * e.score
        total += weight
    if votes and total > 0:
        best = max(votes, key=votes.get)
        return Enhancement(best, vocab.text(best), min(1.0, votes[best] / total), "model")
    if phase.id is not None:
        return Enhancement(phase.id, vocab.text(phase.id), phase.confidence, "hu")
    return None
