"""Mine a model's false positives and missed lesions on a dataset split, through the predictor `malenia segment` runs.

Each case goes through `Segmenter.probability_map` once; the probability is thresholded and small
components dropped by the same post-processing `segment` ships (malenia.infer.postprocess). A kept
component that shares no voxel with the reference lesions is a false positive: its peak voxel on the
model grid becomes a hard-negative centre (malenia.data.hard_negatives). A reference lesion that no kept
component touches is missed: its label is recorded for the sampler to draw more often. How many lesions of
each disease and contrast polarity were found is recorded beside them (`by_polarity`, as in `evaluate`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from malenia.data.hard_negatives import CaseNegatives, HardNegatives


def case_mistakes(pm, truth: np.ndarray, threshold: float, min_volume_mm3: float) -> CaseNegatives:
    """One case's false-positive components and missed lesions: `pm` its ProbabilityMap, `truth` its lesion
    labels (input grid, 0 background)."""
    from malenia.evaluate.metrics import overlap_counts
    from malenia.infer.postprocess import kept, lesion_map

    truth = np.asarray(truth)
    lm = lesion_map(pm, threshold)
    order = kept(lm, min_volume_mm3)
    in_truth = truth > 0
    ids, _, inter = overlap_counts(truth[in_truth], lm.labels[in_truth], lm.n)  # one count for both sides
    inside = inter.sum(0)  # per component: its voxels inside some reference lesion
    missed = [int(v) for v in ids[inter[:, order].sum(1) == 0]]
    centres, voxels, peaks = [], [], []
    for k in order:
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
                         np.asarray(centres, np.int64).reshape(-1, 3), voxels, peaks, missed)


def lesion_rows(case, truth: np.ndarray, missed: list[int]) -> list[dict]:
    """One case's reference lesions as `evaluate` records them for its contrast tables (disease, contrast to the
    host, detected = not missed), so `detection_by_contrast` sums them the same way."""
    import SimpleITK as sitk

    from malenia.infer.lesion_features import lesion_contrasts

    spacing = tuple(float(s) for s in case.image.GetSpacing()[::-1])
    labels = [les.label for les in case.report.lesions]
    contrast = lesion_contrasts(sitk.GetArrayViewFromImage(case.image), truth, spacing, labels)
    return [{"disease": les.disease, "contrast_hu": contrast.get(les.label), "detected": les.label not in missed}
            for les in case.report.lesions]


def mine(segmenter, data_dir: str | Path, split: str | None, threshold: float, min_volume_mm3: float,
         max_cases: int | None = None, on_case: Callable[[int, int, str], None] | None = None) -> HardNegatives:
    import SimpleITK as sitk

    from malenia.data.dataset import read_case, read_dataset
    from malenia.errors import InputError
    from malenia.evaluate.evaluate import detection_by_contrast
    from malenia.evaluate.metrics import recall_by_polarity

    case_ids = read_dataset(data_dir).split_cases(split)[: max_cases or None]
    if not case_ids:
        raise InputError(f"{data_dir}: split {split!r} has no cases to mine")
    t0 = time.perf_counter()
    cases, rows = {}, []
    for i, case_id in enumerate(case_ids):
        if on_case:
            on_case(i, len(case_ids), case_id)
        case = read_case(data_dir, case_id)
        pm, _ = segmenter.probability_map(case.image, collect=False)
        truth = sitk.GetArrayFromImage(case.lesions).astype(np.int32)
        cases[case_id] = case_mistakes(pm, truth, threshold, min_volume_mm3)
        rows += lesion_rows(case, truth, cases[case_id].missed)
    meta = {"dataset": Path(data_dir).resolve().name, "split": split or "all", "threshold": float(threshold),
            "min_volume_mm3": float(min_volume_mm3), "seconds": round(time.perf_counter() - t0, 1),
            # which looks the model misses, which a --missed-fraction dose will draw: evaluate's polarity table
            "by_polarity": detection_by_contrast([{"lesions": rows}], recall_by_polarity)}
    return HardNegatives(tuple(segmenter.preprocessor.target_spacing), cases, meta)  # type: ignore[arg-type]
