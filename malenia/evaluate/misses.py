"""Where a missed reference lesion was lost on its way through `malenia segment`.

A mean DSC or a recall says how many lesions were missed, not why; each round of model work needed the
answer, and it differs by cause: a network that never marks the lesion needs other training, a lesion
removed by a post-processing step needs that step refitted. From the predictor's own trace
(malenia.infer.pipeline.StageTrace) each reference lesion gets the network's peak foreground probability
inside it and, when it was not detected, the first step that lost it:

- `silent`: no voxel of the lesion reaches the threshold: the network does not mark it;
- `outline`: components touch it, but none overlaps it enough to count (IoU below the detection IoU):
  a marked part of a larger lesion, a spill into a neighbour, or two lesions merged into one;
- `min_volume`: a component overlapping it enough was removed as smaller than the minimum volume;
- `verifier`: such a component reached the minimum volume and the lesion verifier removed it;
- `matching`: such a component was reported, yet the one-to-one matching paired it with another lesion
  (or `--refine` re-drew it below the detection IoU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

STAGES = ("silent", "outline", "min_volume", "verifier", "matching")
STAGE_TITLES = {
    "silent": "not marked (peak under the threshold)",
    "outline": "marked, IoU too low",
    "min_volume": "removed: minimum volume",
    "verifier": "removed: lesion verifier",
    "matching": "reported, paired elsewhere",
}


def overlaps(gt_labels: np.ndarray, components: np.ndarray, ids) -> dict[int, dict[int, int]]:
    """Per reference lesion id of `ids`, {component id: voxels in common} (counted over the lesions' voxels only)."""
    inside = (gt_labels != 0) & (components != 0)
    pairs = np.stack([gt_labels[inside].astype(np.int64), components[inside].astype(np.int64)])
    out: dict[int, dict[int, int]] = {int(g): {} for g in ids}
    if pairs.size:
        (g_ids, c_ids), counts = np.unique(pairs, axis=1, return_counts=True)
        for g, c, n in zip(g_ids.tolist(), c_ids.tolist(), counts.tolist()):
            out[g][c] = n
    return out


def peaks(gt_labels: np.ndarray, probability: np.ndarray, ids) -> dict[int, float]:
    """The highest foreground probability inside each reference lesion of `ids`."""
    from scipy import ndimage

    ids = [int(g) for g in ids]
    values = ndimage.maximum(probability, gt_labels, ids) if ids else []
    return {g: float(v) for g, v in zip(ids, np.atleast_1d(values))}


def where_lost(gt_labels: np.ndarray, trace, detected: set[int], iou_threshold: float,
               gt_voxels: dict[int, int] | None = None) -> dict[int, dict[str, Any]]:
    """Per reference lesion id: {"peak", "best_iou" (of any component before the removals), "lost_at"
    (None when detected, else one of STAGES)}. `trace`: the StageTrace of the segmentation that was scored;
    `gt_voxels`: each lesion's voxel count when the caller has it (InstanceMatch.gt_voxels), else counted here
    (a sort of the whole volume: seconds on a 512 x 512 x 200 grid)."""
    if gt_voxels is None:
        gt_voxels = {int(g): int(n) for g, n in zip(*np.unique(gt_labels, return_counts=True)) if g != 0}
    lm = trace.lesions
    common = overlaps(gt_labels, lm.labels, gt_voxels)
    peak = peaks(gt_labels, trace.probability(), gt_voxels)
    sized, verified = set(trace.sized), set(trace.verified)
    out = {}
    for g, n in gt_voxels.items():
        iou = {c: k / (n + int(lm.voxels[c]) - k) for c, k in common[g].items()}
        best = max(iou.values(), default=0.0)
        enough = {c for c, v in iou.items() if v >= iou_threshold}
        if g in detected:
            stage = None
        elif not iou:
            stage = "silent"
        elif not enough:
            stage = "outline"
        elif not enough & sized:
            stage = "min_volume"
        elif not enough & verified:
            stage = "verifier"
        else:
            stage = "matching"
        out[g] = {"peak": round(peak.get(g, 0.0), 4), "best_iou": round(best, 4), "lost_at": stage}
    return out


def summarise(lesions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Counts of missed lesions per stage, overall and per lesion type, from evaluation lesion records that
    carry `lost_at` (None when no record does: results written before it existed)."""
    traced = [les for les in lesions if "lost_at" in les]
    if not traced:
        return None

    def counts(rows):
        missed = [r for r in rows if r["lost_at"]]
        return {"lesions": len(rows), "missed": len(missed)} | {s: sum(r["lost_at"] == s for r in missed) for s in STAGES}

    types = sorted({les["disease"] or "unknown" for les in traced})
    return {"all": counts(traced),
            "per_type": {t: counts([r for r in traced if (r["disease"] or "unknown") == t]) for t in types}}


def markdown(summary: dict[str, Any] | None) -> list[str]:
    """The summary as a Markdown table (no lines when there is none)."""
    if not summary:
        return []
    lines = ["", "Missed lesions by where `segment` lost them (malenia.evaluate.misses):", "",
             "| lesion type | lesions | missed | " + " | ".join(STAGE_TITLES[s] for s in STAGES) + " |",
             "|---|---|---|" + "---|" * len(STAGES)]
    rows = list(summary["per_type"].items()) + [("**all**", summary["all"])]
    for name, c in rows:
        lines.append(f"| {name} | {c['lesions']} | {c['missed']} | " + " | ".join(str(c[s]) for s in STAGES) + " |")
    return lines
