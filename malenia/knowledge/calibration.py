"""Leave-one-out evaluation and calibration of disease inference on the real workbook lesions.

Each annotated lesion is scored against a table whose own disease was re-estimated without it
(the other diseases keep their full profiles; the five expert profiles never saw the workbook).
The temperature minimises the leave-one-out negative log-likelihood of the true disease; the
typicality threshold keeps `KEEP_FRACTION` of the real lesions classified.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from malenia.knowledge.estimate import DISEASE_NAMES, count_records, workbook_profile
from malenia.knowledge.inference import UNCLASSIFIED, aspect_likelihoods, infer_disease, inference_params, one_hot_matches
from malenia.knowledge.table import KnowledgeTable
from malenia.knowledge.workbook import SHEETS, LesionRecord

KEEP_FRACTION = 0.99


@dataclass
class LooCase:
    record: LesionRecord
    table: KnowledgeTable  # the table with the record's disease re-estimated without it


def loo_cases(records: list[LesionRecord], table: KnowledgeTable) -> list[LooCase]:
    counts = count_records(records)
    sheet_of = {spec.disease: (name, spec.source) for name, spec in SHEETS.items()}
    out = []
    for rec in records:
        c = copy.deepcopy(counts[rec.disease])
        c.add(rec, sign=-1)
        sheet, source = sheet_of[rec.disease]
        diseases = {k: table.disease(k) for k in table.diseases}
        diseases[rec.disease] = workbook_profile(rec.disease, c, table.vocab, sheet, source)
        out.append(LooCase(rec, KnowledgeTable(diseases, table.vocab, table.inference, table.meta)))
    return out


def _weighted_scores(cases: list[LooCase]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per case the summed weighted log-likelihood of every disease, and the true disease index."""
    diseases = cases[0].table.diseases
    scores, truth = [], []
    for case in cases:
        params = inference_params(case.table)
        _, aspects, lik, _ = aspect_likelihoods(one_hot_matches(case.record.attributes), case.table, diseases)
        w = np.array([params["aspect_weights"].get(a, 1.0) for a in aspects])
        scores.append((np.log(lik) * w).sum(axis=1))
        truth.append(diseases.index(case.record.disease))
    return np.array(scores), np.array(truth), diseases


def fit_temperature(cases: list[LooCase]) -> float:
    scores, truth, _ = _weighted_scores(cases)

    def nll(log_t: float) -> float:
        z = scores / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(truth)), truth].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(50.0)), method="bounded")
    return float(np.exp(res.x))


def fit_min_typicality(cases: list[LooCase]) -> float:
    """Threshold below which only (1 - KEEP_FRACTION) of real lesions fall (never above 0.5)."""
    typ = []
    for case in cases:
        relaxed = copy.copy(case.table)
        relaxed.inference = {**case.table.inference, "min_typicality": 0.0}
        typ.append(infer_disease(one_hot_matches(case.record.attributes), relaxed).typicality)
    return float(min(np.quantile(typ, 1.0 - KEEP_FRACTION), 0.5))


def calibrate(records: list[LesionRecord], table: KnowledgeTable) -> dict:
    """Fits temperature and typicality threshold; returns the table's new "inference" block."""
    params = inference_params(table)
    table.inference = {**params, "min_typicality": 0.0}
    cases = loo_cases(records, table)
    params["temperature"] = round(fit_temperature(cases), 4)
    for case in cases:
        case.table.inference = {**params, "min_typicality": 0.0}
    params["min_typicality"] = round(fit_min_typicality(cases), 4)
    params["fitted_on"] = f"{len(records)} real workbook lesions, leave-one-out"
    return params


def loo_report(records: list[LesionRecord], table: KnowledgeTable) -> dict:
    """Leave-one-out accuracy (unclassified counts as wrong), per disease, with confusions and NLL."""
    per = defaultdict(Counter)
    confusion: dict[str, Counter] = defaultdict(Counter)
    nll = []
    for case in loo_cases(records, table):
        post = infer_disease(one_hot_matches(case.record.attributes), case.table)
        d = case.record.disease
        per[d]["n"] += 1
        per[d]["correct"] += int(post.name == d)
        per[d]["unclassified"] += int(post.unclassified)
        confusion[d][post.name] += 1
        probs = dict([(post.name, post.probability)] + post.alternatives) if not post.unclassified else dict(post.alternatives)
        nll.append(-np.log(max(probs.get(d, 0.0), 1e-12)))
    n = sum(c["n"] for c in per.values())
    correct = sum(c["correct"] for c in per.values())
    majority = max(c["n"] for c in per.values())
    return {
        "lesions": n,
        "accuracy": correct / n,
        "majority_class_rate": majority / n,
        "mean_nll": float(np.mean(nll)),
        "unclassified": sum(c["unclassified"] for c in per.values()),
        "per_disease": {
            d: {"name": DISEASE_NAMES.get(d, d), "n": c["n"], "accuracy": c["correct"] / c["n"],
                "unclassified": c["unclassified"],
                "predicted": dict(confusion[d].most_common())}
            for d, c in per.items()
        },
        "temperature": inference_params(table)["temperature"],
        "unclassified_name": UNCLASSIFIED,
    }
