"""Fitting a model's lesion verifier (malenia.model.lesion_verifier) on its own predictions.

`collect` runs the model over a dataset split with the predictor `malenia segment` runs (its
calibrated threshold and minimum volume) and keeps, per case, every lesion the post-processing keeps:
its features, its voxels and how many of them lie inside the reference lesions. A lesion that touches
a reference lesion is real, any other a false positive. `fit_and_choose` fits the verifier on one
such collection (cases the network did not train on: its false positives there are the ones it makes
on new scans) and chooses the cut on another (the validation split), offline: one network pass each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass
class CaseComponents:
    rows: list[dict[str, float] | None]  # per kept lesion its features (None: too thin to measure, always kept)
    voxels: np.ndarray  # [n] input-grid voxels
    inside: np.ndarray  # [n] of them inside the reference lesions
    truth_voxels: int

    def as_case(self, verifier):
        from malenia.model.lesion_verifier import CaseLesions

        measured = [r for r in self.rows if r is not None]
        p = iter(verifier.probability(measured).tolist())
        prob = np.array([next(p) if r is not None else 1.0 for r in self.rows])
        return CaseLesions(prob, self.voxels, self.inside, self.truth_voxels)


def case_components(segmenter, image, lesions) -> CaseComponents:
    """The kept lesions of one case (`image`, reference instance labels `lesions`), as `segment` keeps them."""
    import SimpleITK as sitk

    from malenia.infer.postprocess import kept, lesion_map
    from malenia.infer.lesion_features import lesion_rows

    o = segmenter.options
    pm, _ = segmenter.probability_map(sitk.Cast(image, sitk.sitkFloat32), collect=False)
    lm = lesion_map(pm, o.threshold)
    order = kept(lm, o.min_volume_mm3)
    rows = lesion_rows(pm, lm, order)
    truth = sitk.GetArrayViewFromImage(lesions) > 0
    inside = np.bincount(lm.labels[truth], minlength=lm.n + 1)[: lm.n + 1]
    return CaseComponents([rows.get(k) for k in order], lm.voxels[order].astype(np.int64),
                          inside[order].astype(np.int64), int(truth.sum()))


def collect(segmenter, data_dir: str | Path, split: str | None,
            on_case: Callable[[int, int, str], None] | None = None) -> list[CaseComponents]:
    from malenia.data.dataset import read_case, read_dataset
    from malenia.errors import InputError

    case_ids = read_dataset(data_dir).split_cases(split)
    if not case_ids:
        raise InputError(f"{data_dir}: split {split!r} has no cases")
    out = []
    for k, case_id in enumerate(case_ids):
        if on_case:
            on_case(k, len(case_ids), case_id)
        case = read_case(data_dir, case_id)
        out.append(case_components(segmenter, case.image, case.lesions))
    return out


def fit_and_choose(fit_cases: list[CaseComponents], val_cases: list[CaseComponents],
                   fitted_on: dict[str, Any], validated_on: dict[str, Any]):
    """The verifier fitted on `fit_cases`, its cut chosen on `val_cases` (mean case DSC)."""
    from malenia.model.lesion_verifier import choose_cut, fit

    rows, real = [], []
    for case in fit_cases:
        for r, inside in zip(case.rows, case.inside):
            if r is not None:
                rows.append(r)
                real.append(bool(inside > 0))
    verifier = fit(rows, real, fitted_on=fitted_on)
    cut, table = choose_cut([c.as_case(verifier) for c in val_cases])
    verifier.cut = cut
    chosen = next(r for r in table if r["cut"] == cut)
    verifier.meta["validation"] = {**validated_on, "cases": len(val_cases),
                                   "objective": "mean case DSC on each case's own grid",
                                   "mean_dsc_without": round(table[0]["mean_dsc"], 4) if table[0]["cut"] == 0 else None,
                                   "mean_dsc": round(chosen["mean_dsc"], 4),
                                   "lesions_per_case": round(chosen["lesions_per_case"], 2),
                                   "table": [{k: round(v, 4) for k, v in r.items()} for r in table],
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return verifier
