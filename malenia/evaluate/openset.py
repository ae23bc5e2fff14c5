"""Validation lesions with the model's attribute scores, for the open-set rule (malenia.knowledge.openset).

Runs the model on a dataset split as `malenia segment` runs it (malenia.infer.pipeline.Segmenter); every
reference lesion the model detects (IoU-matched, as `malenia evaluate` matches) becomes a ScoredLesion:
its true disease and the per-aspect scores of the predicted lesion that disease inference consumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from malenia.evaluate.metrics import DEFAULT_IOU_THRESHOLD, match_instances
from malenia.knowledge.openset import ScoredLesion


def scored_lesions(segmenter, data_dir: str | Path, split: str | None = "val", max_cases: int | None = None,
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
        result = segmenter.segment(case.image, case_id)
        gt = sitk.GetArrayFromImage(case.lesions).astype(np.int32)
        match = match_instances(sitk.GetArrayFromImage(result.labels).astype(np.int32), gt, iou_threshold)
        by_label = {p.label: p for p in result.lesions}
        for les in case.report.lesions:
            reference += 1
            p = match.pred_for(les.label)
            if p is not None and p in by_label and les.disease and by_label[p].scores:
                look = by_label[p].appearance
                out.append(ScoredLesion(les.disease, by_label[p].scores, look["scores"] if look else None))
    return out, {"cases": len(case_ids), "reference_lesions": reference, "detected": len(out)}
