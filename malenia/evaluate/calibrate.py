"""Choose a model's post-processing on a validation split: foreground threshold and minimum lesion volume.

nnU-Net decides its post-processing (keep the largest component or not) on the validation folds,
never on test data; this does the same for the two numbers that turn Malenia's foreground
probability into lesions. Each validation case is run once (`Predictor.probability`, the map
`malenia evaluate` and `malenia segment` threshold); then every pair of `THRESHOLDS` x
`MIN_VOLUMES_MM3` is scored offline on the model grid by the mean case DSC (the paper's main
metric; a case without lesions scores 1 when nothing is predicted). The best pair wins; ties go to
the higher threshold and then the larger minimum volume, i.e. to fewer false positives.

The result is stored in the model folder as `inference.json` (malenia.model.folder.InferenceDefaults),
which `segment`, `demo`, `evaluate` and the Slicer module use unless the user sets the values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Up to 524 mm³, a 10 mm sphere: RECIST 1.1's smallest measurable lesion. A voxel-weighted DSC hardly
# notices small lesions, so a larger minimum would be chosen for a few voxels of false positives while
# deleting every lesion a radiologist would measure.
MIN_VOLUMES_MM3 = (0.0, 25.0, 50.0, 100.0, 200.0, 350.0, 524.0)
CONNECTIVITY = np.ones((3, 3, 3), bool)  # 26-connectivity, as the inference pipeline


@dataclass
class CaseMaps:
    """One validation case on the model grid: foreground probability and the reference lesion mask."""

    case_id: str
    probability: np.ndarray  # float16 (z, y, x)
    truth: np.ndarray  # bool (z, y, x)


def sweep_case(maps: CaseMaps, voxel_mm3: float, thresholds: Sequence[float] = THRESHOLDS,
               min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3) -> tuple[np.ndarray, np.ndarray]:
    """(DSC, number of predicted lesions), each [len(thresholds), len(min_volumes)], of one case."""
    dsc = np.zeros((len(thresholds), len(min_volumes_mm3)))
    count = np.zeros_like(dsc)
    truth_n = int(maps.truth.sum())
    for i, t in enumerate(thresholds):
        labels, n = ndimage.label(maps.probability >= t, structure=CONNECTIVITY)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        hits = np.bincount(labels[maps.truth], minlength=n + 1)  # voxels of each component inside the truth
        for j, v in enumerate(min_volumes_mm3):
            keep = sizes[1:] * voxel_mm3 >= v
            pred_n, inter = int(sizes[1:][keep].sum()), int(hits[1:][keep].sum())
            denom = pred_n + truth_n
            dsc[i, j] = 1.0 if denom == 0 else 2.0 * inter / denom
            count[i, j] = int(keep.sum())
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


def case_maps(predictor, case) -> CaseMaps:
    """Runs the model once on a dataset case (malenia.data.dataset.Case)."""
    prepared = predictor.preprocessor.prepare(case.image)
    probability = predictor.probability(prepared.array)
    truth = prepared.to_prepared(case.lesions, is_label=True) > 0
    return CaseMaps(case.case_id, probability.astype(np.float16), truth)


def calibrate(predictor, data_dir: str | Path, split: str | None = "val",
              thresholds: Sequence[float] = THRESHOLDS, min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3,
              max_cases: int | None = None, on_case: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Runs the sweep on `split` of a dataset; returns the chosen values and the whole table (JSON-ready)."""
    from malenia.data.dataset import read_case, read_dataset
    from malenia.errors import InputError

    case_ids = read_dataset(data_dir).split_cases(split)
    if max_cases:
        case_ids = case_ids[:max_cases]
    if not case_ids:
        raise InputError(f"{data_dir}: split {split!r} has no cases to calibrate on")
    voxel_mm3 = float(np.prod(predictor.cfg.target_spacing))
    t0 = time.perf_counter()
    dscs, counts = [], []
    for k, case_id in enumerate(case_ids):
        if on_case:
            on_case(k, len(case_ids), case_id)
        d, c = sweep_case(case_maps(predictor, read_case(data_dir, case_id)), voxel_mm3, thresholds, min_volumes_mm3)
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
            "objective": "mean case DSC on the model grid",
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
