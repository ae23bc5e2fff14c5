"""Disease inference: a calibrated posterior over the knowledge table from per-aspect matches.

Input `matches[aspect]` maps description ids to normalised scores m(id) (e.g. a softmax of the
lesion's similarities over that aspect's descriptions). For each disease d and aspect a the
expected likelihood is

    L_a(d) = sum_id m(id) * max(P_d(id), floor)

(ids unknown to the vocabulary, e.g. free text, are dropped and the rest renormalised; an aspect
without matches is no evidence). The posterior is a naive-Bayes combination with a temperature

    log p(d | matches) = log prior(d) + (1/T) * sum_a w_a log L_a(d) + const

with a uniform prior (the workbook's sheet sizes reflect which datasets were annotated, not how
common the diseases are) and w_enhancement = 0: the scan phase is chosen by the protocol, not by
the lesion. T > 1 undoes the overconfidence of treating the aspects as independent; it is fitted
on the real workbook lesions by leave-one-out negative log-likelihood (`malenia knowledge table`).

"Unclassified lesion" (document in docs/knowledge.md): with the fit of aspect a to the best
disease f_a = L_a(d*) / max_id P_d*(id) (1 = its most typical description), a lesion is
unclassified when
  1. some aspect contradicts d* (f_a < contradiction_fit: a description d* essentially never
     shows, such as a location in another organ), or
  2. its overall typicality, the weighted geometric mean of f_a, is below min_typicality,
     set so that 99% of the real annotated lesions (leave-one-out) pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping

import numpy as np

from malenia.aspects import ASPECTS
from malenia.knowledge.table import KnowledgeTable

UNCLASSIFIED = "unclassified"

DEFAULT_INFERENCE = {
    "prior": "uniform",
    "likelihood_floor": 1e-4,
    "aspect_weights": {a: (0.0 if a == "enhancement" else 1.0) for a in ASPECTS},
    "temperature": 1.0,
    "contradiction_fit": 0.005,
    "min_typicality": 0.0,
}


@dataclass
class DiseasePosterior:
    name: str  # disease key, or "unclassified"
    probability: float  # posterior of `name` (of the closest disease when unclassified)
    alternatives: list[tuple[str, float]]  # other diseases, most probable first (all of them when unclassified)
    unclassified: bool
    typicality: float = 1.0  # weighted geometric mean of the aspect fits to the best disease
    reason: str = ""  # why unclassified
    aspect_fit: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "probability": round(self.probability, 4),
            "alternatives": [{"name": n, "probability": round(p, 4)} for n, p in self.alternatives],
            "unclassified": self.unclassified,
            "typicality": round(self.typicality, 4),
            **({"reason": self.reason} if self.reason else {}),
        }


def inference_params(table: KnowledgeTable) -> dict:
    params = {**DEFAULT_INFERENCE, **(table.inference or {})}
    params["aspect_weights"] = {**DEFAULT_INFERENCE["aspect_weights"], **params.get("aspect_weights", {})}
    return params


def _normalised(scores: Mapping[str, float], table: KnowledgeTable) -> dict[str, float]:
    kept = {i: max(float(s), 0.0) for i, s in scores.items() if i in table.vocab}
    total = sum(kept.values())
    return {i: s / total for i, s in kept.items()} if total > 0 else {}


def aspect_likelihoods(matches: Mapping[str, Mapping[str, float]], table: KnowledgeTable,
                       diseases: list[str] | None = None, floor: float | None = None):
    """Returns (diseases, aspects used, L [n_diseases, n_aspects], best-description prob [same])."""
    diseases = diseases or table.diseases
    floor = inference_params(table)["likelihood_floor"] if floor is None else floor
    used = [(a, m) for a in ASPECTS if (m := _normalised(matches.get(a) or {}, table))]
    lik = np.ones((len(diseases), len(used)))
    peak = np.ones((len(diseases), len(used)))
    for j, (aspect, m) in enumerate(used):
        for i, d in enumerate(diseases):
            dist = table.profile(d)[aspect]
            lik[i, j] = sum(s * max(dist.get(k, 0.0), floor) for k, s in m.items())
            peak[i, j] = max(dist.values())
    return diseases, [a for a, _ in used], lik, peak


def infer_disease(matches: Mapping[str, Mapping[str, float]], table: KnowledgeTable,
                  ruled_out: Collection[str] = ()) -> DiseasePosterior:
    """`ruled_out`: diseases the lesion's appearance excludes (malenia.knowledge.appearance); they get
    posterior 0 and are listed last, unless every disease is ruled out (then the rule is ignored)."""
    params = inference_params(table)
    diseases, aspects, lik, peak = aspect_likelihoods(matches, table)
    if not aspects:
        return DiseasePosterior(UNCLASSIFIED, 0.0, [], True, 0.0, "no attribute matches")
    w = np.array([params["aspect_weights"].get(a, 1.0) for a in aspects])
    score = (np.log(lik) * w).sum(axis=1) / float(params["temperature"])
    excluded = np.array([d in ruled_out for d in diseases])
    if excluded.any() and not excluded.all():
        score = np.where(excluded, -np.inf, score)
    post = np.exp(score - score.max())
    post /= post.sum()
    order = np.argsort(-post, kind="stable")
    best = int(order[0])
    fit = np.minimum(lik[best] / peak[best], 1.0)
    weighted = w > 0
    typicality = float(math.exp((np.log(fit) * w).sum() / w.sum())) if weighted.any() else 0.0
    ranked = [(diseases[i], float(post[i])) for i in order]
    reason = ""
    worst = int(np.argmin(np.where(weighted, fit, np.inf))) if weighted.any() else -1
    if weighted.any() and fit[worst] < params["contradiction_fit"]:
        reason = f"{aspects[worst]} contradicts {diseases[best]} (fit {fit[worst]:.3g})"
    elif typicality < params["min_typicality"]:
        reason = f"atypical for every disease (typicality {typicality:.3g} < {params['min_typicality']:.3g})"
    aspect_fit = {a: float(f) for a, f in zip(aspects, fit)}
    if reason:
        return DiseasePosterior(UNCLASSIFIED, ranked[0][1], ranked, True, typicality, reason, aspect_fit)
    return DiseasePosterior(ranked[0][0], ranked[0][1], ranked[1:], False, typicality, "", aspect_fit)


def one_hot_matches(attributes: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    """Matches of an annotated lesion: its descriptions share each aspect's mass equally."""
    return {a: {i: 1.0 / len(ids) for i in ids} for a, ids in attributes.items() if ids}
