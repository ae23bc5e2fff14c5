"""Mine a model's false positives on a dataset split, through the predictor `malenia segment` runs.

Each case goes through `Segmenter.probability_map` once; the probability is thresholded and small
components dropped by the same post-processing `segment` ships (malenia.infer.postprocess). A kept
component that shares no voxel with the reference lesions is a false positive: its peak voxel on the
model grid becomes a hard-negative centre (malenia.data.hard_negatives).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from malenia.data.hard_negatives import CaseNegatives, HardNegatives


def case_false_positives(pm, truth: np.ndarray, threshold: float, min_volume_mm3: float) -> CaseNegatives:
    """The false-positive components of one case: `pm` its ProbabilityMap, `truth` its lesion mask (input grid)."""
    from malenia.infer.postprocess import kept, lesion_map

    lm = lesion_map(pm, threshold)
    inside = np.bincount(lm.labels[np.asarray(truth, bool)], minlength=lm.n + 1)[: lm.n + 1]
    centres, voxels, peaks = [], [], []
    for k in kept(lm, min_volume_mm3):
        if inside[k]:
            continue
        where = np.flatnonzero(lm.model_labels.reshape(-1) == k)
        if not len(where):
            continue
        values = pm.probability.reshape(-1)[where]
        centres.append(np.unravel_index(int(where[int(np.argmax(values))]), lm.model_labels.shape))
        voxels.append(int(lm.voxels[k]))
        peaks.append(float(values.max()))
    return CaseNegatives(tuple(int(s) for s in pm.probability.shape),  # type: ignore[arg-type]
                         np.asarray(centres, np.int64).reshape(-1, 3), voxels, peaks)


def mine(segmenter, data_dir: str | Path, split: str | None, threshold: float, min_volume_mm3: float,
         max_cases: int | None = None, on_case: Callable[[int, int, str], None] | None = None) -> HardNegatives:
    import SimpleITK as sitk

    from malenia.data.dataset import read_case, read_dataset
    from malenia.errors import InputError

    case_ids = read_dataset(data_dir).split_cases(split)[: max_cases or None]
    if not case_ids:
        raise InputError(f"{data_dir}: split {split!r} has no cases to mine")
    t0 = time.perf_counter()
    cases = {}
    for i, case_id in enumerate(case_ids):
        if on_case:
            on_case(i, len(case_ids), case_id)
        case = read_case(data_dir, case_id)
        pm, _ = segmenter.probability_map(case.image, collect=False)
        cases[case_id] = case_false_positives(pm, sitk.GetArrayViewFromImage(case.lesions) > 0, threshold,
                                              min_volume_mm3)
    meta = {"dataset": Path(data_dir).resolve().name, "split": split or "all", "threshold": float(threshold),
            "min_volume_mm3": float(min_volume_mm3), "seconds": round(time.perf_counter() - t0, 1)}
    return HardNegatives(tuple(segmenter.preprocessor.target_spacing), cases, meta)  # type: ignore[arg-type]
