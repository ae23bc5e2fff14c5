"""Training lesions for the measured attributes (malenia.knowledge.measured_attributes): measurements + descriptions.

`examples_from_dataset`: every reference lesion, measured on its reference mask (no model needed).

`examples_from_predictions` (`malenia fit-attributes --masks predicted`) runs the model over the training split with the predictor
`malenia segment` runs, pairs each predicted lesion with a reference lesion one-to-one (Hungarian on
IoU, the detection rule of `malenia evaluate`), and measures the *predicted* mask. The classifiers then
learn from the masks they will be applied to (a predicted mask swallows part of the host, its edge is
smoother), as the post-processing is calibrated on the shipped predictor's output. Reference lesions the
model misses contribute nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from malenia.evaluate.metrics import DEFAULT_IOU_THRESHOLD, match_instances
from malenia.knowledge.measured_attributes import Example


def examples_from_predictions(segmenter, data_dir: str | Path, split: str | None,
                              on_case: Callable[[int, int, str], None] | None = None,
                              iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> Iterator[Example]:
    import SimpleITK as sitk

    from malenia.data.dataset import read_case, read_dataset
    from malenia.infer.lesion_features import FeatureImage, features_of_labels, oriented_labels

    case_ids = read_dataset(data_dir).split_cases(split)
    for k, case_id in enumerate(case_ids):
        if on_case:
            on_case(k, len(case_ids), case_id)
        case = read_case(data_dir, case_id)
        result = segmenter.segment(case.image, case_id)
        pairs = match_instances(sitk.GetArrayViewFromImage(result.labels).astype(np.int32),
                                sitk.GetArrayViewFromImage(case.lesions).astype(np.int32), iou_threshold).pairs
        if not pairs:
            continue
        feats = features_of_labels(FeatureImage.of(case.image), oriented_labels(result.labels), [p for _, p, _ in pairs])
        for gt_label, pred_label, _ in pairs:
            ref = case.report.lesion(gt_label)
            yield Example(feats[pred_label], {a: [d.id for d in v if d.id] for a, v in ref.attributes.items()},
                          ref.disease)


def examples_from_dataset(data_dir, split: str | None, on_case=None) -> Iterable[Example]:
    """Every reference lesion of a dataset split with its measurements (reference masks, not predictions)."""
    from malenia.data.dataset import read_case, read_dataset
    from malenia.infer.lesion_features import FeatureImage, features_of_labels, oriented_labels

    case_ids = read_dataset(data_dir).split_cases(split)
    for k, case_id in enumerate(case_ids):
        if on_case:
            on_case(k, len(case_ids), case_id)
        case = read_case(data_dir, case_id)
        fimg = FeatureImage.of(case.image)
        feats = features_of_labels(fimg, oriented_labels(case.lesions), [les.label for les in case.report.lesions])
        for les in case.report.lesions:
            if les.label in feats:
                yield Example(feats[les.label], {a: [d.id for d in v if d.id] for a, v in les.attributes.items()},
                              les.disease)
