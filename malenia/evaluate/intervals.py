"""How far an evaluation's group means could move with other cases: percentile bootstrap over cases.

A test set of a few dozen cases holds a few lesions per type, so a mean over types such as the zero-shot DSC
moves by several hundredths when one case is swapped; two models 0.005 apart on it are not told apart by it
(docs/training.md, twenty-eighth and twenty-ninth rounds). The cases are the independent units (a case's
lesions share its CT, its model run and its post-processing), so they are resampled whole, with replacement,
and each group statistic is recomputed exactly as `malenia evaluate` computes it (malenia.evaluate.evaluate:
per type the mean case DSC, detection recall Σ hits / Σ reference lesions, precision Σ hits / Σ predicted
lesions and disease accuracy over detected lesions; then the unweighted mean over the group's types that have
a value). The interval is the 2.5th to 97.5th percentile of those resampled means (Efron & Tibshirani, 1993).
It reads only an evaluation result's per-case entries, so it applies to every `evaluation.json` written since
those entries exist, without running a model again.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from malenia.aspects import right_name

GROUPS = ("unseen", "seen", "novel")  # evaluation.json's lesion-type groups that get intervals and comparisons
STATISTICS = ("dsc", "detection_recall", "detection_precision", "disease_accuracy")
RESAMPLES = 2000
LEVEL = 0.95
MIN_CASES = 10  # below this a resample mostly repeats the same few cases: no interval is given


def case_arrays(cases: Sequence[dict[str, Any]], types: Sequence[str]) -> dict[str, np.ndarray]:
    """Per case and type [C, T]: the type's case DSC (NaN where the case holds none of it), reference lesions,
    predicted lesions, hits, and detected lesions with their disease named right."""
    shape = (len(cases), len(types))
    out = {k: np.zeros(shape) for k in ("gt", "pred", "hits", "named", "detected")}
    out["dsc"] = np.full(shape, np.nan)
    col = {t: j for j, t in enumerate(types)}
    for i, case in enumerate(cases):
        for t, vals in case.get("types", {}).items():
            if t in col:
                j = col[t]
                out["dsc"][i, j] = vals["dsc"]
                out["gt"][i, j], out["pred"][i, j], out["hits"][i, j] = vals["gt"], vals["pred"], vals["hits"]
        for les in case.get("lesions", []):
            if les.get("detected") and les.get("disease") in col:
                j = col[les["disease"]]
                out["detected"][i, j] += 1
                out["named"][i, j] += les.get("pred_disease") == right_name(les["disease"])
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean over `axis` ignoring NaN; NaN where every value is NaN (without numpy's warning)."""
    n = (~np.isnan(x)).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(x, axis) / np.maximum(n, 1), np.nan)


def group_means(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The group statistics of the case samples `index` [S, C] (rows of case indices) → each [S]."""
    take = {k: v[index] for k, v in arrays.items()}  # [S, C, T]
    per_type = {
        "dsc": _nanmean(take["dsc"], 1),
        "detection_recall": _ratio(take["hits"].sum(1), take["gt"].sum(1)),
        "detection_precision": _ratio(take["hits"].sum(1), take["pred"].sum(1)),
        "disease_accuracy": _ratio(take["named"].sum(1), take["detected"].sum(1)),
    }
    return {k: _nanmean(v, 1) for k, v in per_type.items()}  # over types: [S]


def group_intervals(cases: Sequence[dict[str, Any]], types: Sequence[str], resamples: int = RESAMPLES,
                    level: float = LEVEL, seed: int = 0) -> dict[str, list[float] | None]:
    """Percentile-bootstrap interval of each of `STATISTICS` for the mean over `types`, resampling `cases`
    (evaluation.json's entries) whole; None for a statistic no resample defines. Seeded: the same result gives the
    same intervals. None throughout under MIN_CASES cases."""
    if len(cases) < MIN_CASES or not types:
        return {k: None for k in STATISTICS}
    means = group_means(case_arrays(cases, types), _resamples(len(cases), resamples, seed))
    return {k: _percentile_interval(means[k], level) for k in STATISTICS}


def _resamples(cases: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, cases] case indices drawn with replacement, seeded."""
    return np.random.default_rng(seed).integers(0, cases, size=(resamples, cases))


def _percentile_interval(values: np.ndarray, level: float) -> list[float] | None:
    """The central `level` percentile interval of the defined (non-NaN) values; None when there are none."""
    v = values[~np.isnan(values)]
    if not len(v):
        return None
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]


def result_intervals(result: dict[str, Any], resamples: int = RESAMPLES) -> dict[str, dict[str, list[float] | None]]:
    """Intervals for each of an evaluation result's type groups (GROUPS), from its per-case entries."""
    out = {}
    for name in GROUPS:
        group = (result.get("groups") or {}).get(name)
        if group and result.get("cases"):
            out[name] = group_intervals(result["cases"], group["types"], resamples)
    return out


def _by_case(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["case"]: c for c in result.get("cases") or []}


def paired_difference(a: dict[str, Any], b: dict[str, Any], group: str, resamples: int = RESAMPLES,
                      level: float = LEVEL, seed: int = 0) -> dict[str, dict[str, Any]] | None:
    """Two evaluations of the same cases (say two models): per statistic of `group` (one of GROUPS) A's value, B's,
    B - A and the percentile-bootstrap interval of B - A, each resample drawing the same cases for both (paired,
    so what the cases share cancels). None when either result lacks the group. InputError when the two results do
    not hold the same cases, or hold fewer than MIN_CASES."""
    from malenia.errors import InputError

    ga, gb = (r.get("groups", {}).get(group) for r in (a, b))
    if not ga or not gb:
        return None
    ca, cb = _by_case(a), _by_case(b)
    if set(ca) != set(cb):
        only = sorted(set(ca) ^ set(cb))
        raise InputError(f"the two evaluations hold different cases ({len(only)} in one only, e.g. {only[:3]}): "
                         "a paired comparison needs the same dataset and split")
    if len(ca) < MIN_CASES:
        raise InputError(f"{len(ca)} cases: a paired interval needs at least {MIN_CASES}")
    order = sorted(ca)
    types = sorted(set(ga["types"]) | set(gb["types"]))
    arrays = [case_arrays([c[k] for k in order], types) for c in (ca, cb)]
    index = _resamples(len(order), resamples, seed)
    point_a, point_b = (group_means(x, np.arange(len(order))[None]) for x in arrays)
    drawn_a, drawn_b = (group_means(x, index) for x in arrays)  # the same resamples for both
    out = {}
    for k in STATISTICS:
        va, vb = float(point_a[k][0]), float(point_b[k][0])
        out[k] = {"a": None if np.isnan(va) else va, "b": None if np.isnan(vb) else vb,
                  "difference": None if np.isnan(va) or np.isnan(vb) else vb - va,
                  "interval": _percentile_interval(drawn_b[k] - drawn_a[k], level)}
    return out


def paired_comparison(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """`paired_difference` for every lesion-type group both results hold; InputError when they share none."""
    from malenia.errors import InputError

    out = {g: d for g in GROUPS if (d := paired_difference(a, b, g)) is not None}
    if not out:
        raise InputError(f"the two evaluations have no lesion-type group ({', '.join(GROUPS)}) in common")
    return out


def _verdict(interval: list[float] | None) -> str:
    if interval is None:
        return "–"
    return "B higher" if interval[0] > 0 else "B lower" if interval[1] < 0 else "not told apart"


def comparison_markdown(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """Both evaluations' group means side by side with the paired 95 % interval of the difference."""
    lines = [f"Paired comparison on {len(_by_case(a))} cases (percentile bootstrap over whole cases, {RESAMPLES} "
             f"resamples; A = {names[0]}, B = {names[1]}). \"Not told apart\": the interval holds 0.", "",
             "| group | statistic | A | B | B - A | 95 % interval | verdict |", "|---|---|---|---|---|---|---|"]

    def fmt(v: float | None, sign: str = "") -> str:
        return "–" if v is None else f"{v:{sign}.4f}"

    for group, rows in paired_comparison(a, b).items():
        for k, r in rows.items():
            iv = r["interval"]
            cell = "–" if iv is None else f"{fmt(iv[0], '+')} to {fmt(iv[1], '+')}"
            lines.append(f"| {group} | {k} | {fmt(r['a'])} | {fmt(r['b'])} | {fmt(r['difference'], '+')} | {cell} | "
                         f"{_verdict(iv)} |")
    return "\n".join(lines) + "\n"
