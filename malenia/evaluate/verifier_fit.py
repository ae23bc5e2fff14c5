"""Fitting a model's lesion verifier (malenia.model.lesion_verifier) on its own predictions.

`collect` runs the model over a dataset split with the predictor `malenia segment` runs (its
calibrated threshold and minimum volume) and keeps, per case, every lesion the post-processing keeps:
its features, its voxels and how many of them lie inside the reference lesions. A lesion that touches
a reference lesion is real, any other a false positive. `fit_and_choose` fits the verifier on one
such collection (cases the network did not train on: its false positives there are the ones it makes
on new scans) and chooses the cut on another (the validation split), offline: one network pass each.

A verifier must judge lesion types it never saw, so `left_out_table` also measures what it would do to one:
for each candidate set of malenia.model.lesion_verifier.FEATURE_SETS and each disease with real lesions in
the fitting collection, the whole procedure runs without that disease (a verifier fitted without its lesions
and without the false lesions of a random half of the cases, its cut chosen on the validation cases without
its lesions), and the table gives the share of the left-out disease's lesions it keeps and the share of the
held-back false lesions it keeps (both halves in turn, mean over the diseases). The table is reported, not
obeyed: the set it favours did worse than every measurement on validation and on both test sets
(docs/training.md, tenth round), so the set is the user's choice (default: all).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

CUTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class CaseLesions:
    """One validation case's kept lesions, for choosing the cut offline (no second network pass)."""

    probability: np.ndarray  # [n] P(real) per kept lesion
    voxels: np.ndarray  # [n] input-grid voxels per lesion
    inside: np.ndarray  # [n] of them inside the reference lesions
    truth_voxels: int
    hit: np.ndarray | None = None  # [n] bool: the lesion detects a reference lesion (evaluate's one-to-one rule)
    truth_lesions: int = 0  # reference lesions in the case


def case_dsc(case: CaseLesions, cut: float) -> float:
    keep = case.probability >= cut
    pred, inter = int(case.voxels[keep].sum()), int(case.inside[keep].sum())
    return 1.0 if pred + case.truth_voxels == 0 else 2.0 * inter / (pred + case.truth_voxels)


def choose_cut(cases: Sequence[CaseLesions], cuts: Sequence[float] = CUTS, objective: str = "dsc_f1",
               margin: bool = True) -> tuple[float, list[dict[str, float]], float]:
    """The cut by the best score (malenia.evaluate.metrics.selection_row), the table, and the tolerance used. With
    `margin`, every cut within one lesion's worth of the best score (malenia.evaluate.metrics.one_lesion_margin,
    the tolerance) counts as tied and the highest of them wins, the one that keeps the fewest false positives: the
    rule `malenia calibrate` applies to the threshold and minimum volume. Without it (the rule up to model 2.10.1),
    exact ties go to the lower cut and the tolerance is 0. The detection counts keep each lesion's match from the
    full set: a verifier only removes lesions, and a removed one rarely held a match another would take over."""
    from malenia.evaluate.metrics import one_lesion_margin, selection_row

    if objective != "dsc" and any(k.hit is None for k in cases):
        raise ValueError(f"objective {objective!r} needs each lesion's detection (CaseLesions.hit)")
    reference = sum(k.truth_lesions for k in cases)
    table, predicted = [], []
    for c in cuts:
        keep = [k.probability >= c for k in cases]
        hits = sum(int((k.hit & m).sum()) for k, m in zip(cases, keep) if k.hit is not None)
        predicted.append(sum(int(m.sum()) for m in keep))
        mean_dsc = float(np.mean([case_dsc(k, c) for k in cases]))
        table.append({"cut": float(c), "lesions_per_case": predicted[-1] / max(len(cases), 1),
                      **selection_row(objective, mean_dsc, hits, predicted[-1], reference)})
    best = max(range(len(table)), key=lambda i: (round(table[i]["score"], 6), -table[i]["cut"]))
    if not margin:
        return table[best]["cut"], table, 0.0
    tolerance = one_lesion_margin(objective, predicted[best], reference)
    tied = [r for r in table if round(r["score"], 6) >= round(table[best]["score"], 6) - tolerance - 1e-9]
    return max(r["cut"] for r in tied), table, tolerance


@dataclass
class CaseComponents:
    rows: list[dict[str, float] | None]  # per kept lesion its features (None: too thin to measure, always kept)
    voxels: np.ndarray  # [n] input-grid voxels
    inside: np.ndarray  # [n] of them inside the reference lesions
    truth_voxels: int
    diseases: list[str | None] | None = None  # [n] the disease of the reference lesion each one overlaps most
    truth_by_disease: dict[str, int] | None = None  # reference voxels per disease
    hit: np.ndarray | None = None  # [n] bool: detects a reference lesion (evaluate's one-to-one rule)
    lesions_by_disease: dict[str | None, int] | None = None  # reference lesions per disease (None: no disease)

    def without(self, disease: str) -> "CaseComponents":
        """The case as if `disease`'s lesions were not in it: their reference voxels and the predicted lesions
        that found them removed."""
        names = self.diseases or [None] * len(self.rows)
        keep = [i for i, (d, inside) in enumerate(zip(names, self.inside)) if not (inside > 0 and d == disease)]
        by, lesions = dict(self.truth_by_disease or {}), dict(self.lesions_by_disease or {})
        lesions.pop(disease, None)
        return CaseComponents([self.rows[i] for i in keep], self.voxels[keep], self.inside[keep],
                              self.truth_voxels - by.pop(disease, 0), [names[i] for i in keep], by,
                              None if self.hit is None else self.hit[keep], lesions)

    def as_case(self, verifier):
        measured = [r for r in self.rows if r is not None]
        p = iter(verifier.probability(measured).tolist())
        prob = np.array([next(p) if r is not None else 1.0 for r in self.rows])
        return CaseLesions(prob, self.voxels, self.inside, self.truth_voxels, self.hit,
                           sum((self.lesions_by_disease or {}).values()))


def case_components(segmenter, image, lesions, diseases: Mapping[int, str] | None = None) -> CaseComponents:
    """The kept lesions of one case (`image`, reference instance labels `lesions` whose diseases are
    `diseases` by label), as `segment` keeps them."""
    import SimpleITK as sitk

    from malenia.infer.postprocess import kept, lesion_map
    from malenia.infer.lesion_features import lesion_rows

    o = segmenter.options
    pm, _ = segmenter.probability_map(sitk.Cast(image, sitk.sitkFloat32), collect=False)
    lm = lesion_map(pm, o.threshold)
    order = kept(lm, o.min_volume_mm3)
    rows = lesion_rows(pm, lm, order)
    reference = sitk.GetArrayViewFromImage(lesions)
    truth = reference > 0
    predicted, labels = lm.labels[truth].astype(np.int64), reference[truth].astype(np.int64)  # the overlap, once
    inside = np.bincount(predicted, minlength=lm.n + 1)[: lm.n + 1]
    diseases = diseases or {}
    by_disease: dict[str, int] = {}
    lesions_by_disease: dict[str | None, int] = {}
    ids, ref_voxels = np.unique(labels, return_counts=True)
    for label, n in zip(ids.tolist(), ref_voxels.tolist()):
        name = diseases.get(int(label))
        lesions_by_disease[name] = lesions_by_disease.get(name, 0) + 1
        if name is not None:
            by_disease[name] = by_disease.get(name, 0) + int(n)
    return CaseComponents([rows.get(k) for k in order], lm.voxels[order].astype(np.int64),
                          inside[order].astype(np.int64), int(truth.sum()),
                          _diseases_found(predicted, labels, order, diseases), by_disease,
                          _hits(predicted, labels, lm.voxels, order), lesions_by_disease)


def _hits(predicted: np.ndarray, labels: np.ndarray, voxels: np.ndarray, order: list[int]) -> np.ndarray:
    """Per lesion of `order`, whether it detects a reference lesion (malenia.evaluate.metrics.matched_pairs);
    `predicted`, `labels`: the predicted and reference ids of every reference voxel, `voxels` the size of every
    predicted id."""
    from malenia.evaluate.metrics import matched_pairs, overlap_counts

    hit = np.zeros(len(order), bool)
    _, ref_voxels, inter = overlap_counts(labels, predicted, len(voxels) - 1)
    for _, c, _ in matched_pairs(inter[:, order], ref_voxels, voxels[order]):
        hit[c] = True
    return hit


def _diseases_found(predicted: np.ndarray, labels: np.ndarray, order: list[int], diseases: Mapping[int, str]):
    """Per lesion of `order`, the disease of the reference lesion holding most of its overlap with the reference
    (None: a false lesion); `predicted`, `labels`: the predicted and reference ids of every reference voxel."""
    pairs, counts = np.unique(np.stack([predicted, labels]), axis=1, return_counts=True)
    best: dict[int, tuple[int, int]] = {}
    for (k, label), n in zip(pairs.T.tolist(), counts.tolist()):
        if k and n > best.get(k, (0, 0))[0]:
            best[k] = (n, label)
    return [diseases.get(best[k][1]) if k in best else None for k in order]


def collect(segmenter, data_dir: str | Path | Sequence[str | Path], split: str | None,
            on_case: Callable[[int, int, str], None] | None = None) -> list[CaseComponents]:
    """The components of every case of `split` in one dataset or several pooled (malenia.evaluate.calibrate)."""
    from malenia.data.dataset import read_case
    from malenia.evaluate.calibrate import dataset_sources, pooled_cases

    cases = pooled_cases(dataset_sources(data_dir), split)
    out = []
    for k, (source, case_id) in enumerate(cases):
        if on_case:
            on_case(k, len(cases), case_id)
        case = read_case(source, case_id)
        diseases = {les.label: les.disease for les in case.report.lesions}
        out.append(case_components(segmenter, case.image, case.lesions, diseases))
    return out


@dataclass
class Labelled:
    """The measured lesions of a collection: features, real or false, the disease of the real ones, the half of
    the collection their case is in (a fixed random halving: synthetic cases alternate between their bases)."""

    rows: list[dict[str, float]]
    real: np.ndarray  # bool [n]
    disease: np.ndarray  # object [n]: None for false lesions
    half: np.ndarray  # int [n]: 0 or 1

    @staticmethod
    def of(cases: Sequence[CaseComponents]) -> "Labelled":
        rows, real, disease, where = [], [], [], []
        for i, case in enumerate(cases):
            names = case.diseases or [None] * len(case.rows)
            for r, inside, name in zip(case.rows, case.inside, names):
                if r is not None:
                    rows.append(r)
                    real.append(bool(inside > 0))
                    disease.append(name if inside > 0 else None)
                    where.append(i)
        halves = np.random.default_rng(0).permutation(len(cases)) % 2
        return Labelled(rows, np.array(real, bool), np.array(disease, object), halves[np.array(where, int)])

    def take(self, keep: np.ndarray) -> tuple[list[dict[str, float]], np.ndarray]:
        return [self.rows[i] for i in np.flatnonzero(keep)], self.real[keep]


MIN_HELD_OUT = 3  # real lesions a disease needs to be left out


def left_out_trial(data: Labelled, val_cases: Sequence[CaseComponents], features: Sequence[str], disease: str,
                   half: int, objective: str = "dsc_f1", margin: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The whole procedure in a world where `disease` is unseen: a verifier fitted without its lesions and
    without the false lesions of the cases of `half`, its cut chosen on `val_cases` without its lesions.
    Returns (kept?, per real lesion of `disease`), (kept?, per false lesion of `half`)."""
    from malenia.model.lesion_verifier import fit

    held = data.real & (data.disease == disease)
    scored_false = ~data.real & (data.half == half)
    verifier = fit(*data.take((data.real & ~held) | (~data.real & ~scored_false)), features)
    cut, _, _ = choose_cut([c.without(disease).as_case(verifier) for c in val_cases], objective=objective, margin=margin)
    return (verifier.probability(data.take(held)[0]) >= cut,
            verifier.probability(data.take(scored_false)[0]) >= cut)


def _fits_without(data: Labelled, disease: str) -> bool:
    """Whether a verifier can be fitted with `disease` and half of the false lesions left out (malenia.model.
    lesion_verifier.fit's minimum: 20 lesions, real and false ones)."""
    others = int((data.real & (data.disease != disease)).sum())
    false = [int((~data.real & (data.half == h)).sum()) for h in (0, 1)]
    return others > 0 and min(false) > 0 and others + min(false) >= 20


def left_out_table(data: Labelled, val_cases: Sequence[CaseComponents],
                   sets: Mapping[str, Sequence[str]] | None = None, objective: str = "dsc_f1",
                   margin: bool = True) -> list[dict[str, Any]]:
    """Per feature set: the share of a left-out disease's real lesions its left-out trials keep (per disease and
    the mean) and the share of false lesions they keep. Empty with fewer than two diseases to leave out."""
    from malenia.model.lesion_verifier import FEATURE_SETS

    sets = FEATURE_SETS if sets is None else sets
    names, counts = np.unique([d for d in data.disease[data.real] if d is not None], return_counts=True)
    diseases = [str(d) for d, n in zip(names, counts) if n >= MIN_HELD_OUT and _fits_without(data, str(d))]
    if len(diseases) < 2:
        return []
    table = []
    for name, features in sets.items():
        kept, false = {}, []
        for d in diseases:
            trials = [left_out_trial(data, val_cases, features, d, half, objective, margin) for half in (0, 1)]
            kept[d] = round(float(np.mean([t[0].mean() for t in trials])), 4)
            false.append(np.concatenate([t[1] for t in trials]).mean())
        left_out, false_kept = float(np.mean(list(kept.values()))), float(np.mean(false))
        table.append({"features": name, "left_out_kept": round(left_out, 4), "false_kept": round(false_kept, 4),
                      "kept": kept})
    return table


def fit_and_choose(fit_cases: list[CaseComponents], val_cases: list[CaseComponents],
                   fitted_on: dict[str, Any], validated_on: dict[str, Any], features: str = "all",
                   objective: str = "dsc_f1", margin: bool = True):
    """The verifier on the feature set `features` fitted on `fit_cases`, its cut chosen on `val_cases` (`objective`:
    malenia.evaluate.metrics.OBJECTIVES), with the left-out trials of every candidate set (`left_out_table`) in
    its file."""
    from malenia.evaluate.metrics import OBJECTIVE_TEXT
    from malenia.model.lesion_verifier import FEATURE_SETS, fit

    data = Labelled.of(fit_cases)
    verifier = fit(data.rows, data.real, FEATURE_SETS[features], fitted_on=fitted_on)
    verifier.meta["left_out"] = {
        "set": features, "trial": "one training disease left out of the fit and of the validation cases in turn: the "
        "share of its real lesions kept at the cut chosen without it, and of the held-back false lesions (means)",
        "table": left_out_table(data, val_cases, objective=objective, margin=margin)}
    cut, table, tolerance = choose_cut([c.as_case(verifier) for c in val_cases], objective=objective, margin=margin)
    verifier.cut = cut
    chosen = next(r for r in table if r["cut"] == cut)
    verifier.meta["validation"] = {**validated_on, "cases": len(val_cases),
                                   "objective": OBJECTIVE_TEXT[objective], "objective_id": objective,
                                   "margin": round(tolerance, 4),
                                   "mean_dsc_without": round(table[0]["mean_dsc"], 4) if table[0]["cut"] == 0 else None,
                                   "mean_dsc": round(chosen["mean_dsc"], 4),
                                   "lesions_per_case": round(chosen["lesions_per_case"], 2),
                                   **{k: round(chosen[k], 4) for k in ("recall", "precision", "f1", "score")},
                                   "table": [{k: round(v, 4) for k, v in r.items()} for r in table],
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return verifier
