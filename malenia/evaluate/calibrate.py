"""Choose a model's post-processing on a validation split: foreground threshold and minimum lesion volume.

nnU-Net decides its post-processing (keep the largest component or not) on the validation folds,
never on test data; this does the same for the two numbers that turn Malenia's foreground
probability into lesions. Each validation case goes through the network once
(`Segmenter.probability_map`, exactly as `malenia segment` runs it); then every pair of
`THRESHOLDS` x `MIN_VOLUMES_MM3` is applied offline by the same post-processing step that
`segment` ships (malenia.infer.postprocess: lesion_map, kept) and scored by the mean case DSC on
each case's own grid (the paper's main metric, as `malenia evaluate` computes it; a case without
lesions scores 1 when nothing is predicted). The best pair wins; ties go to the higher threshold and
then the larger minimum volume, i.e. to fewer false positives.

The result is stored in the model folder as `inference.json` (malenia.model.folder.InferenceDefaults),
which `segment`, `demo`, `evaluate` and the Slicer module use unless the user sets the values.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Up to 524 mm³, a 10 mm sphere: RECIST 1.1's smallest measurable lesion. A voxel-weighted DSC hardly
# notices small lesions, so a larger minimum would be chosen for a few voxels of false positives while
# deleting every lesion a radiologist would measure.
MIN_VOLUMES_MM3 = (0.0, 25.0, 50.0, 100.0, 200.0, 350.0, 524.0)
OBJECTIVE = "mean case DSC on each case's own grid (malenia segment's post-processing)"


def sweep_case(pm, truth: np.ndarray, thresholds: Sequence[float] = THRESHOLDS,
               min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3) -> tuple[np.ndarray, np.ndarray]:
    """(DSC, number of lesions), each [len(thresholds), len(min_volumes)], of one case: `pm` its
    malenia.infer.postprocess.ProbabilityMap, `truth` its reference lesion mask (z, y, x) on its own grid."""
    from malenia.infer.postprocess import kept, lesion_map

    dsc = np.zeros((len(thresholds), len(min_volumes_mm3)))
    count = np.zeros_like(dsc)
    truth = np.asarray(truth, bool)
    truth_n = int(truth.sum())
    for i, t in enumerate(thresholds):
        lm = lesion_map(pm, t)
        inside = np.bincount(lm.labels[truth], minlength=lm.n + 1)[: lm.n + 1]  # voxels of each lesion in the truth
        for j, v in enumerate(min_volumes_mm3):
            order = kept(lm, v)
            pred_n, inter = int(lm.voxels[order].sum()), int(inside[order].sum())
            denom = pred_n + truth_n
            dsc[i, j] = 1.0 if denom == 0 else 2.0 * inter / denom
            count[i, j] = len(order)
    return dsc, count


def choose(mean_dsc: np.ndarray, thresholds: Sequence[float], min_volumes_mm3: Sequence[float]) -> tuple[int, int]:
    """Index pair of the best mean DSC; ties: higher threshold, then larger minimum volume."""
    best = None
    for i in range(len(thresholds)):
        for j in range(len(min_volumes_mm3)):
            key = (round(float(mean_dsc[i, j]), 6), thresholds[i], min_volumes_mm3[j])
            if best is None or key > best[0]:
                best = (key, (i, j))
    assert best is not None
    return best[1]


def calibrate(segmenter, data_dir: str | Path, split: str | None = "val",
              thresholds: Sequence[float] = THRESHOLDS, min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3,
              max_cases: int | None = None, on_case: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Runs the sweep on `split` of a dataset; returns the chosen values and the whole table (JSON-ready)."""
    import SimpleITK as sitk

    from malenia.data.dataset import read_case, read_dataset
    from malenia.errors import InputError

    case_ids = read_dataset(data_dir).split_cases(split)
    if max_cases:
        case_ids = case_ids[:max_cases]
    if not case_ids:
        raise InputError(f"{data_dir}: split {split!r} has no cases to calibrate on")
    t0 = time.perf_counter()
    dscs, counts = [], []
    for k, case_id in enumerate(case_ids):
        if on_case:
            on_case(k, len(case_ids), case_id)
        case = read_case(data_dir, case_id)
        pm, _ = segmenter.probability_map(case.image, collect=False)
        d, c = sweep_case(pm, sitk.GetArrayViewFromImage(case.lesions) > 0, thresholds, min_volumes_mm3)
        dscs.append(d)
        counts.append(c)
    mean_dsc, mean_count = np.mean(dscs, axis=0), np.mean(counts, axis=0)
    i, j = choose(mean_dsc, thresholds, min_volumes_mm3)
    table = [{"threshold": t, "min_volume_mm3": v, "mean_dsc": round(float(mean_dsc[a, b]), 4),
              "lesions_per_case": round(float(mean_count[a, b]), 2)}
             for a, t in enumerate(thresholds) for b, v in enumerate(min_volumes_mm3)]
    return {
        "threshold": float(thresholds[i]),
        "min_volume_mm3": float(min_volumes_mm3[j]),
        "calibration": {
            "objective": OBJECTIVE,
            "dataset": str(Path(data_dir).resolve().name),
            "split": split or "all",
            "cases": len(case_ids),
            "mean_dsc": round(float(mean_dsc[i, j]), 4),
            "lesions_per_case": round(float(mean_count[i, j]), 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 1),
            "table": table,
        },
    }
