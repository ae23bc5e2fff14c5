"""Validation lesions with the model's attribute scores, for the open-set rule (malenia.knowledge.openset).

Runs the model on a dataset split; every reference lesion the model detects (IoU-matched, as
`malenia evaluate` matches) becomes a ScoredLesion: its true disease and the per-aspect scores of
the predicted lesion that disease inference consumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from malenia.evaluate.metrics import DEFAULT_IOU_THRESHOLD, match_instances
from malenia.knowledge.openset import ScoredLesion


def scored_lesions(predictor, data_dir: str | Path, split: str | None = "val", max_cases: int | None = None,
                   iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                   on_case: Callable[[int, int, str], None] | None = None) -> tuple[list[ScoredLesion], dict]:
    """(detected lesions with scores, counts {"cases", "reference_lesions", "detected"})."""
    import SimpleITK as sitk

    from malenia.data.dataset import read_case, read_dataset

    case_ids = read_dataset(data_dir).split_cases(split)[: max_cases or None]
    out: list[ScoredLesion] = []
    reference = 0
    for i, case_id in enumerate(case_ids):
        if on_case:
            on_case(i, len(case_ids), case_id)
        case = read_case(data_dir, case_id)
        pred = predictor.predict(case.image)
        gt = sitk.GetArrayFromImage(case.lesions).astype(np.int32)
        match = match_instances(pred.labels, gt, iou_threshold)
        by_label = {p.label: p for p in pred.lesions}
        for les in case.report.lesions:
            reference += 1
            p = match.pred_for(les.label)
            if p is not None and p in by_label and les.disease:
                vocab = predictor.table.vocab
                matches = {a: {k: v for k, v in m.items() if k in vocab} for a, m in by_label[p].matches.items()}
                out.append(ScoredLesion(les.disease, matches))
    return out, {"cases": len(case_ids), "reference_lesions": reference, "detected": len(out)}
