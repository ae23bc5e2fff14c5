"""The "unclassified" rule fitted on a model's own attribute scores (open-set disease naming).

The table's rule (malenia.knowledge.inference) was fitted on exact annotation codes; a model's
scores are soft, so the same thresholds reject or accept differently. Here the rule is fitted on
validation lesions the model detected, each with its per-aspect scores and true disease:

- *Simulated unseen diseases.* For every disease d with lesions, d is removed from the table and
  its lesions are classified against the rest: "unclassified" is right, any name is wrong.
- *Known diseases.* With the whole table, a lesion should be named correctly.

The grid of (contradiction_fit, min_typicality) maximises the mean over diseases of
½·(unclassified rate with d removed) + ½·(correct rate with d present); ties go to the lower
thresholds (name more). Optionally the weights of chosen aspects in disease inference are fitted with
it (`weight_grid`): the table's weights were fitted on exact annotation codes, and an aspect the model
reads little better than its disease prior (its specific features, for lesion types it never saw) then
counts as much as one it reads well. Decisions are exactly infer_disease's (same likelihoods, same argmax,
same fits, the diseases the lesion's appearance rules out excluded: malenia.knowledge.appearance),
computed once per lesion and re-thresholded in numpy.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from malenia.knowledge.appearance import ruled_out_at
from malenia.knowledge.inference import aspect_likelihoods, inference_params
from malenia.knowledge.table import KnowledgeTable

CONTRADICTION_GRID = (0.0, 0.001, 0.005, 0.02, 0.05, 0.1)
TYPICALITY_QUANTILES = tuple(np.linspace(0.0, 0.95, 20))


@dataclass
class ScoredLesion:
    disease: str  # true disease key
    matches: Mapping[str, Mapping[str, float]]  # aspect -> {description id: score}: what infer_disease consumes
    appearance: Mapping[str, float] | None = None  # disease -> appearance score (malenia.knowledge.appearance)

    def ruled_out(self, cut: float) -> set[str]:
        return ruled_out_at(self.appearance or {}, cut)


@dataclass
class _Decision:
    best: int  # index into the table's diseases
    min_fit: float  # smallest weighted aspect fit to the best disease
    typicality: float


def _decide(lik: np.ndarray, peak: np.ndarray, w: np.ndarray, allowed: np.ndarray) -> _Decision:
    """infer_disease's decision restricted to the `allowed` diseases (argmax does not depend on T)."""
    score = np.where(allowed, (np.log(lik) * w).sum(axis=1), -np.inf)
    best = int(np.argmax(score))
    fit = np.minimum(lik[best] / peak[best], 1.0)
    weighted = w > 0
    if not weighted.any():
        return _Decision(best, math.inf, 0.0)
    typicality = float(math.exp((np.log(fit) * w).sum() / w.sum()))
    return _Decision(best, float(fit[weighted].min()), typicality)


def decisions(lesions: Sequence[ScoredLesion], table: KnowledgeTable,
              appearance_cut: float = 0.0) -> tuple[list[str], dict[str, list]]:
    """Per lesion its decision with the whole table ("all") and with its own disease removed ("held_out"),
    the diseases its appearance rules out at `appearance_cut` excluded (as infer_disease excludes them)."""
    params = inference_params(table)
    diseases = table.diseases
    out: dict[str, list] = {"all": [], "held_out": [], "truth": []}
    for les in lesions:
        _, aspects, lik, peak = aspect_likelihoods(les.matches, table, diseases)
        w = np.array([params["aspect_weights"].get(a, 1.0) for a in aspects])
        ruled = les.ruled_out(appearance_cut)
        out["all"].append(_decide(lik, peak, w, _allowed(diseases, ruled)))
        out["held_out"].append(_decide(lik, peak, w, _allowed(diseases, ruled, removed=les.disease)))
        out["truth"].append(les.disease)
    return diseases, out


def _allowed(diseases: list[str], ruled_out: set[str], removed: str | None = None) -> np.ndarray:
    """The diseases infer_disease may name: those in the table (all but `removed`) that the appearance does
    not rule out, or all of the table's when it rules out every one."""
    in_table = np.array([d != removed for d in diseases])
    allowed = in_table & np.array([d not in ruled_out for d in diseases])
    return allowed if allowed.any() else in_table


def rates(diseases: list[str], dec: dict[str, list], contradiction_fit: float, min_typicality: float) -> dict:
    """Per disease: held out -> unclassified / wrong name; present -> correct / unclassified / wrong."""
    def unclassified(d: _Decision) -> bool:
        return d.min_fit < contradiction_fit or d.typicality < min_typicality

    per: dict[str, dict[str, float]] = {}
    for truth in sorted(set(dec["truth"])):
        idx = [i for i, t in enumerate(dec["truth"]) if t == truth]
        held = [unclassified(dec["held_out"][i]) for i in idx]
        present = [dec["all"][i] for i in idx]
        n = len(idx)
        per[truth] = {"lesions": n, "unseen_unclassified": sum(held) / n, "unseen_named_wrongly": 1 - sum(held) / n}
        if truth in diseases:  # a disease the table lacks is only ever unseen
            correct = sum(1 for d in present if not unclassified(d) and diseases[d.best] == truth)
            rejected = sum(1 for d in present if unclassified(d))
            per[truth].update(known_correct=correct / n, known_unclassified=rejected / n,
                              known_named_wrongly=(n - correct - rejected) / n)
    mean = {}
    for k in ("unseen_unclassified", "unseen_named_wrongly", "known_correct", "known_unclassified"):
        vals = [v[k] for v in per.values() if k in v]
        mean[k] = float(np.mean(vals)) if vals else None
    return {"per_disease": per, "mean": mean}


def fit_rule(lesions: Sequence[ScoredLesion], table: KnowledgeTable, appearance_cut: float = 0.0,
             weight_grid: Mapping[str, Sequence[float]] | None = None) -> dict:
    """The rule maximising ½(unseen unclassified) + ½(known correct), averaged over diseases (with the
    appearance check at `appearance_cut` in place). `weight_grid` {aspect: weights}: those aspects' weights in
    disease inference are fitted with the rule (every combination; ties go to the larger weights, the
    table's own being 1), for an aspect the model reads too unreliably to count in full."""
    before = inference_params(table)  # the rule in force: a parent model's fitted one, or the table's
    own = (table.origin or {}).get("unclassified", {}).get("table_rule") or before  # the table's own rule
    in_force = dict(before["aspect_weights"])
    own_weights = {**in_force, **(own.get("aspect_weights") or {})}
    grid = {a: sorted({*map(float, ws), in_force.get(a, 1.0), own_weights.get(a, 1.0)})
            for a, ws in (weight_grid or {}).items()}
    best = None
    for combo in itertools.product(*grid.values()):
        weights = {**in_force, **dict(zip(grid, combo))}
        cf, mt, key = _best_rule(lesions, with_weights(table, weights), appearance_cut, (before, own))
        key = (key[0], *combo, *key[1:])
        if best is None or key > best[0]:
            best = (key, cf, mt, weights)
    _, cf, mt, weights = best
    diseases, dec = decisions(lesions, with_weights(table, weights), appearance_cut)
    out = {
        "contradiction_fit": cf,
        "min_typicality": mt,
        "objective": "mean over diseases of 1/2 unclassified (disease removed) + 1/2 correct (disease present)",
        "fitted_on": f"{len(dec['truth'])} detected validation lesions of {len(set(dec['truth']))} diseases (model scores)",
        "fitted": rates(diseases, dec, cf, mt)["mean"],
        "table_rule": _rule_rates(own, *decisions(lesions, with_weights(table, own_weights), appearance_cut)),
    }
    changed = {a: w for a, w in weights.items() if w != own_weights.get(a, 1.0)}
    if changed:
        out["aspect_weights"] = changed
        out["table_rule"]["aspect_weights"] = {a: own_weights.get(a, 1.0) for a in changed}
    if _rule_of(before) != _rule_of(own) or in_force != own_weights:  # a parent's rule was in force: its rates too
        out["rule_before"] = _rule_rates(before, *decisions(lesions, table, appearance_cut))
    return out


def with_weights(table: KnowledgeTable, weights: Mapping[str, float]) -> KnowledgeTable:
    """A shallow copy of `table` whose disease inference weighs the aspects by `weights`."""
    out = copy.copy(table)
    out.inference = {**(table.inference or {}), "aspect_weights": {**(table.inference or {}).get("aspect_weights", {}),
                                                                   **weights}}
    return out


def _best_rule(lesions, table: KnowledgeTable, appearance_cut: float, rules) -> tuple[float, float, tuple]:
    """(contradiction_fit, min_typicality, sort key) of the best rule on the grid for this table's weights;
    `rules` (the rule in force, the table's own) are candidates too."""
    diseases, dec = decisions(lesions, table, appearance_cut)
    if not dec["truth"]:
        raise ValueError("no detected validation lesions to fit the unclassified rule on")
    typ = np.array([d.typicality for d in dec["all"] + dec["held_out"]])
    grid_t = sorted({0.0, *(float(r["min_typicality"]) for r in rules),
                     *(round(float(np.quantile(typ, q)), 4) for q in TYPICALITY_QUANTILES)})
    best = None
    for cf in sorted({*CONTRADICTION_GRID, *(float(r["contradiction_fit"]) for r in rules)}):  # both rules are candidates
        for mt in grid_t:
            m = rates(diseases, dec, cf, mt)["mean"]
            objective = 0.5 * m["unseen_unclassified"] + 0.5 * (m["known_correct"] or 0.0)
            key = (round(objective, 6), -cf, -mt)
            if best is None or key > best[2]:
                best = (cf, mt, key)
    return best


def _rule_rates(params: dict, diseases, dec) -> dict:
    cf, mt = _rule_of(params)
    return {"contradiction_fit": cf, "min_typicality": mt, **rates(diseases, dec, cf, mt)["mean"]}


def _rule_of(params: dict) -> tuple[float, float]:
    return float(params["contradiction_fit"]), float(params["min_typicality"])
