"""Re-ranking a saved result's lesions, without re-segmenting: against another knowledge table, or with the
descriptions a reviewer chose.

A report (schema 1.1) keeps each lesion's per-aspect scores, the input of disease inference; the
same call `malenia segment` makes (malenia.infer.matching.disease_call) names the lesion again
with the table in force now (a site profile added, edited or removed), keeping the diseases its
appearance ruled out (an image fact, not the table's). Lesions of older reports (no scores) are left
as they are. `reviewed_call` names one lesion with some aspects read as the reviewer described them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from malenia.infer.matching import disease_call
from malenia.infer.results import DiseaseCall, SegmentationResult


@dataclass
class Reranked:
    label: int
    before: DiseaseCall
    after: DiseaseCall

    @property
    def changed(self) -> bool:
        return (self.before.name, self.before.unclassified) != (self.after.name, self.after.unclassified)


def rerank(result: SegmentationResult, table, terminology=None, top: int = 3) -> list[Reranked]:
    """Names every lesion with scores again (in place) and records the table's origin in the result."""
    from malenia.infer.terminology import Terminology
    from malenia.knowledge.site import origin_json

    terminology = terminology or Terminology.load()
    out = []
    for lesion in result.lesions:
        if lesion.scores is None:
            continue
        call = disease_call(lesion.scores, table, terminology, top,
                            lesion.appearance["ruled_out"] if lesion.appearance else ())
        out.append(Reranked(lesion.label, lesion.disease, call))
        lesion.disease = call
    result.knowledge = origin_json(table)
    return out


def with_descriptions(scores: Mapping[str, Mapping[str, float]], chosen: Mapping[str, str], vocab) -> dict:
    """A lesion's per-aspect scores with each aspect in `chosen` ({aspect: description id}) read as that
    description, its whole mass, as an annotation is (malenia.knowledge.inference.one_hot_matches); ids the
    vocabulary lacks (typed text) leave their aspect as read."""
    from malenia.knowledge.inference import one_hot_matches

    return {**scores, **one_hot_matches({a: [i] for a, i in chosen.items() if i in vocab})}


def reviewed_call(scores: Mapping[str, Mapping[str, float]], chosen: Mapping[str, str], table, terminology,
                  ruled_out=(), top: int = 3) -> DiseaseCall:
    """The disease `malenia segment` would have named had it read the `chosen` aspects as the reviewer did."""
    return disease_call(with_descriptions(scores, chosen, table.vocab), table, terminology, top, ruled_out)
