"""Segmentation, detection and attribute-matching metrics (the rules are stated here and in docs/training.md).

- DSC: MONAI `compute_dice` on binary masks; both masks empty counts as 1.0 (nothing to find, nothing found).
- NSD: MONAI `compute_surface_dice` (normalised surface distance, Nikolov et al.) at a tolerance in mm on the
  voxel spacing of the grid the masks live on; both empty -> 1.0, exactly one empty -> 0.0.
- Lesion detection: ground-truth and predicted instances are matched one-to-one by the Hungarian algorithm on
  their IoU; a pair counts as a hit when IoU >= `iou_threshold` (default 0.1, a loose "found the lesion" rule
  that tolerates the under/over-segmentation DSC already measures). Recall = hits / GT lesions,
  precision = hits / predicted lesions.
- Attribute matching (paper App. D / Table 8): over detected lesions (matched pairs), each aspect is a
  classification of the predicted description against the lesion's reported description(s). Per aspect,
  precision and recall are macro-averaged over description classes (precision over the classes the model
  predicted, recall over the classes present in the reports); `accuracy` is the micro figure (share of
  matched lesions whose predicted description is among the reported ones).
- Disease accuracy: over detected lesions, share whose inferred disease equals the reported disease.
- Detection by size: recall per band of the reference lesion's equivalent-sphere diameter (the diameter of a
  ball of the lesion's volume): under 10 mm, 10-20 mm, 20 mm and over. A test set's mean hides that most
  missed lesions are small; this says for which lesion sizes the recall holds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from malenia.aspects import ASPECTS

DEFAULT_NSD_TOLERANCE_MM = 2.0
DEFAULT_IOU_THRESHOLD = 0.1
SIZE_BAND_EDGES_MM = (10.0, 20.0)  # equivalent-sphere diameter, mm: radiology's small / medium / large lesion
# |core mean - host shell median|, HU: under 20 a lesion differs from its host about as much as scan noise
# (13-20 HU on the synthetic and real bases) and is seen by texture or shape if at all; 60 and over stands out
# in any abdominal window (fluid in enhancing parenchyma, calcium, a nodule in aerated lung).
CONTRAST_BAND_EDGES_HU = (20.0, 60.0)
# The same 20 HU, signed: a network trained on lesions darker than their host can stay silent on brighter ones
# of the same contrast (docs/training.md, forty-ninth round), which |contrast| bands do not show.
POLARITY_BANDS = ("darker", "similar", "brighter")


def _as_bool(a) -> np.ndarray:
    return np.asarray(a).astype(bool)


def dice_score(pred, gt) -> float:
    """Dice similarity coefficient of two binary masks (MONAI); 1.0 when both are empty."""
    import torch
    from monai.metrics import compute_dice

    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    if not p.any() and not g.any():
        return 1.0
    tp = torch.from_numpy(p)[None, None].float()
    tg = torch.from_numpy(g)[None, None].float()
    return float(compute_dice(tp, tg, include_background=True, ignore_empty=False)[0, 0])


def surface_dice(pred, gt, spacing: Sequence[float], tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> float:
    """Normalised surface dice at `tolerance_mm` (MONAI); `spacing` in the arrays' axis order, in mm."""
    import warnings

    import torch
    from monai.metrics import compute_surface_dice

    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    if not p.any() and not g.any():
        return 1.0
    if not p.any() or not g.any():
        return 0.0
    onehot = lambda m: torch.from_numpy(np.stack([~m, m]))[None].float()  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notice about an internal argument
        value = compute_surface_dice(onehot(p), onehot(g), [float(tolerance_mm)], include_background=False,
                                     spacing=[float(s) for s in spacing])
    return float(value[0, 0])


@dataclass
class InstanceMatch:
    """One-to-one matching of ground-truth lesion labels to predicted lesion labels."""

    gt_labels: list[int]
    pred_labels: list[int]
    pairs: list[tuple[int, int, float]]  # (gt label, predicted label, IoU), IoU >= threshold
    gt_voxels: dict[int, int] = field(default_factory=dict)  # voxels of each ground-truth lesion
    pred_voxels: dict[int, int] = field(default_factory=dict)  # voxels of each predicted lesion

    @property
    def hits(self) -> int:
        return len(self.pairs)

    def pred_for(self, gt_label: int) -> int | None:
        for g, p, _ in self.pairs:
            if g == gt_label:
                return p
        return None


def match_instances(pred_labels, gt_labels, iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> InstanceMatch:
    """Hungarian matching of instance label maps (0 = background) on IoU; see the module doc for the rule."""
    pl, gl = np.asarray(pred_labels), np.asarray(gt_labels)
    if pl.shape != gl.shape:
        raise ValueError(f"label map shapes differ: {pl.shape} vs {gl.shape}")
    g_values, g_counts = np.unique(gl, return_counts=True)  # the sizes come with the ids, for lesion records
    g_voxels = {int(v): int(n) for v, n in zip(g_values, g_counts) if v != 0}
    g_ids = list(g_voxels)
    p_values, p_counts = np.unique(pl, return_counts=True)
    p_voxels = {int(v): int(n) for v, n in zip(p_values, p_counts) if v != 0}
    p_ids = list(p_voxels)
    if not g_ids or not p_ids:
        return InstanceMatch(g_ids, p_ids, [], g_voxels, p_voxels)
    # Joint histogram of (gt, pred) labels gives every intersection in one pass.
    g_index = {v: i + 1 for i, v in enumerate(g_ids)}
    p_index = {v: i + 1 for i, v in enumerate(p_ids)}
    g_map = np.zeros(int(gl.max()) + 1, dtype=np.int64)
    p_map = np.zeros(int(pl.max()) + 1, dtype=np.int64)
    for v, i in g_index.items():
        g_map[v] = i
    for v, i in p_index.items():
        p_map[v] = i
    gi, pi = g_map[gl.ravel()], p_map[pl.ravel()]
    joint = np.bincount(gi * (len(p_ids) + 1) + pi, minlength=(len(g_ids) + 1) * (len(p_ids) + 1))
    joint = joint.reshape(len(g_ids) + 1, len(p_ids) + 1)
    pairs = matched_pairs(joint[1:, 1:], joint[1:, :].sum(1), joint[:, 1:].sum(0), iou_threshold)
    return InstanceMatch(g_ids, p_ids, sorted((g_ids[r], p_ids[c], iou) for r, c, iou in pairs), g_voxels, p_voxels)


def matched_pairs(inter: np.ndarray, gt_voxels: np.ndarray, pred_voxels: np.ndarray,
                  iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> list[tuple[int, int, float]]:
    """The detection rule on counts: (row, column, IoU) of the one-to-one Hungarian matching on IoU with
    IoU >= `iou_threshold`, from the intersections `inter` [G, P] of G reference and P predicted lesions
    and their sizes. Callers that sweep post-processing settings count once and match many times."""
    from scipy.optimize import linear_sum_assignment

    inter = np.asarray(inter, np.float64)
    if not inter.size:
        return []
    g, p = np.asarray(gt_voxels, np.float64)[:, None], np.asarray(pred_voxels, np.float64)[None, :]
    iou = inter / np.maximum(g + p - inter, 1)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= iou_threshold]


def lesion_f1(hits: int, predicted: int, reference: int) -> float:
    """Detection F1 = 2 hits / (predicted + reference lesions); 1 when there is nothing to find and nothing found."""
    return 1.0 if predicted + reference == 0 else 2.0 * hits / (predicted + reference)


# How post-processing settings are chosen on validation cases (malenia calibrate, the verifier's cut).
# "dsc": the mean case DSC alone, the paper's main metric; it counts voxels, so it barely notices a small lesion
# found or missed and a minimum volume that deletes every lesion under 1 cm³ costs it almost nothing.
# "dsc_f1": the mean of the mean case DSC and the lesion-detection F1 over the split: masks and lesions both count.
OBJECTIVES = ("dsc_f1", "dsc")
OBJECTIVE_TEXT = {"dsc": "mean case DSC on each case's own grid",
                  "dsc_f1": "1/2 mean case DSC on each case's own grid + 1/2 lesion-detection F1 over the split "
                            f"(IoU >= {DEFAULT_IOU_THRESHOLD}, one-to-one)"}


def selection_row(objective: str, mean_dsc: float, hits: int, predicted: int, reference: int) -> dict[str, float]:
    """One post-processing setting on a validation split: its mean case DSC, lesion-detection recall, precision and
    F1 (pooled over the split's lesions) and the score `objective` maximises."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown selection objective {objective!r} (one of {', '.join(OBJECTIVES)})")
    f1 = lesion_f1(hits, predicted, reference)
    return {"mean_dsc": float(mean_dsc), "recall": hits / reference if reference else 0.0,
            "precision": hits / predicted if predicted else 1.0, "f1": f1,
            "score": float(mean_dsc) if objective == "dsc" else 0.5 * float(mean_dsc) + 0.5 * f1}


def one_lesion_margin(objective: str, predicted: int, reference: int) -> float:
    """How much one detected lesion more or fewer moves `objective`'s score at `predicted` and `reference` lesions:
    1/2 of F1's step 2/(P+R) for dsc_f1; 0 for dsc, whose voxel count has no lesion step. A difference smaller than
    this between two post-processing settings is within what one lesion decides, i.e. noise on a validation split."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown selection objective {objective!r} (one of {', '.join(OBJECTIVES)})")
    if objective == "dsc" or predicted + reference == 0:
        return 0.0
    return 1.0 / (predicted + reference)


def overlap_counts(reference: np.ndarray, predicted: np.ndarray, n_predicted: int):
    """From the reference and predicted lesion ids of every reference voxel (predicted 0 = none, ids up to
    `n_predicted`): the reference ids, their sizes in voxels and `inter` [G, n_predicted + 1], the voxels of
    reference lesion g inside predicted lesion k (column 0: outside every predicted lesion)."""
    ids, index = np.unique(np.asarray(reference), return_inverse=True)
    flat = index.reshape(-1) * (n_predicted + 1) + np.asarray(predicted, np.int64).reshape(-1)
    inter = np.bincount(flat, minlength=len(ids) * (n_predicted + 1)).reshape(len(ids), n_predicted + 1)
    return ids, inter.sum(1), inter


def sphere_diameter_mm(volume_mm3: float) -> float:
    """The diameter of a ball of `volume_mm3`."""
    return float((6.0 * max(float(volume_mm3), 0.0) / np.pi) ** (1.0 / 3.0))


def size_band(diameter_mm: float, edges: Sequence[float] = SIZE_BAND_EDGES_MM) -> str:
    """The band name of a diameter: "<10 mm", "10-20 mm", ">=20 mm" for the default edges."""
    return _band_name(diameter_mm, edges, "mm")


def _band_name(value: float, edges: Sequence[float], unit: str) -> str:
    for i, edge in enumerate(edges):
        if value < edge:
            return f"<{edge:g} {unit}" if i == 0 else f"{edges[i - 1]:g}-{edge:g} {unit}"
    return f">={edges[-1]:g} {unit}"


def recall_by_size(lesions: Iterable[tuple[float, bool]], edges: Sequence[float] = SIZE_BAND_EDGES_MM) -> list[dict]:
    """Per size band (smallest first): reference lesions, detected ones and recall, from (diameter mm, detected)
    pairs; bands without lesions are listed with recall None so that tables line up across test sets."""
    return _recall_by_band(lesions, lambda d: size_band(d, edges), [size_band(d, edges) for d in (0.0, *edges)])


# A detected lesion outlined at under half its volume, or over twice it: the mask says little about its shape,
# margin and spread, which the measured attributes read from it (docs/training.md, "Evaluation": outlines).
OUTLINE_UNDER, OUTLINE_OVER = 0.5, 2.0


def outline_summary(lesions: Iterable[tuple[str, float, float]]) -> dict[str, dict]:
    """Per lesion type, from (type, IoU, predicted / reference volume) of detected lesions: how many, the median
    IoU, the volume ratio's quartiles and the shares outlined at under OUTLINE_UNDER and over OUTLINE_OVER of
    their volume. Types in sorted order; a type without detected lesions is absent."""
    by_type: dict[str, list[tuple[float, float]]] = {}
    for kind, iou, ratio in lesions:
        by_type.setdefault(kind, []).append((iou, ratio))
    out = {}
    for kind in sorted(by_type):
        iou, ratio = np.array(by_type[kind], float).T
        q25, q50, q75 = np.percentile(ratio, [25, 50, 75])
        out[kind] = {"detected": len(ratio), "iou_median": round(float(np.median(iou)), 3),
                     "volume_ratio_median": round(float(q50), 3), "volume_ratio_q25": round(float(q25), 3),
                     "volume_ratio_q75": round(float(q75), 3),
                     "under_outlined": round(float(np.mean(ratio < OUTLINE_UNDER)), 3),
                     "over_outlined": round(float(np.mean(ratio > OUTLINE_OVER)), 3)}
    return out


def contrast_band(contrast_hu: float, edges: Sequence[float] = CONTRAST_BAND_EDGES_HU) -> str:
    """The band of a lesion's contrast to its host by its absolute value: "<20 HU", "20-60 HU", ">=60 HU"."""
    return _band_name(abs(contrast_hu), edges, "HU")


def recall_by_contrast(lesions: Iterable[tuple[float, bool]], edges: Sequence[float] = CONTRAST_BAND_EDGES_HU) -> list[dict]:
    """As recall_by_size, per band of |contrast| from (contrast HU, detected) pairs."""
    return _recall_by_band(lesions, lambda c: contrast_band(c, edges), [contrast_band(c, edges) for c in (0.0, *edges)])


def polarity_band(contrast_hu: float, edge: float = CONTRAST_BAND_EDGES_HU[0]) -> str:
    """ "darker" (contrast <= -edge), "brighter" (>= edge) or "similar" than the lesion's host."""
    return "darker" if contrast_hu <= -edge else "brighter" if contrast_hu >= edge else "similar"


def recall_by_polarity(lesions: Iterable[tuple[float, bool]], edge: float = CONTRAST_BAND_EDGES_HU[0]) -> list[dict]:
    """As recall_by_contrast, per POLARITY_BANDS of the signed contrast."""
    return _recall_by_band(lesions, lambda c: polarity_band(c, edge), list(POLARITY_BANDS))


def _recall_by_band(lesions: Iterable[tuple[float, bool]], band_of, names: list[str]) -> list[dict]:
    counts = {n: [0, 0] for n in names}
    for value, detected in lesions:
        c = counts[band_of(value)]
        c[0] += 1
        c[1] += int(bool(detected))
    return [{"band": n, "lesions": c[0], "detected": c[1], "recall": c[1] / c[0] if c[0] else None}
            for n, c in counts.items()]


@dataclass
class DetectionCounts:
    hits: int = 0
    gt: int = 0
    pred: int = 0

    def add(self, match: InstanceMatch) -> None:
        self.hits += match.hits
        self.gt += len(match.gt_labels)
        self.pred += len(match.pred_labels)

    @property
    def recall(self) -> float | None:
        return self.hits / self.gt if self.gt else None

    @property
    def precision(self) -> float | None:
        return self.hits / self.pred if self.pred else None


def _key(desc) -> str:
    """A description's identity: its vocabulary id, else its text (free text typed by a radiologist)."""
    if isinstance(desc, str):
        return desc
    return desc.id if getattr(desc, "id", None) else f"text:{desc.text.strip().lower()}"


@dataclass
class AttributeCounts:
    """Per-aspect per-class counts over matched lesions; precision/recall macro-averaged over classes."""

    tp: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    predicted: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    reported: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    correct: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lesions: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, predicted: Mapping[str, Iterable], reported: Mapping[str, Iterable]) -> None:
        """One matched lesion: `predicted[aspect]` and `reported[aspect]` are descriptions (ids or Description)."""
        for aspect in ASPECTS:
            gt = {_key(d) for d in reported.get(aspect, [])}
            if not gt:
                continue  # the report says nothing for this aspect: not scored
            pr = {_key(d) for d in predicted.get(aspect, [])}
            self.lesions[aspect] += 1
            self.correct[aspect] += int(bool(pr & gt))
            for c in pr:
                self.predicted[aspect][c] += 1
                if c in gt:
                    self.tp[aspect][c] += 1
            for c in gt:
                self.reported[aspect][c] += 1

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        for aspect in ASPECTS:
            n = self.lesions.get(aspect, 0)
            pred, rep, tp = self.predicted.get(aspect, {}), self.reported.get(aspect, {}), self.tp.get(aspect, {})
            precision = [tp.get(c, 0) / k for c, k in pred.items() if k] if n else []
            recall = [tp.get(c, 0) / k for c, k in rep.items() if k] if n else []
            out[aspect] = {
                "lesions": n,
                "precision": float(np.mean(precision)) if precision else None,
                "recall": float(np.mean(recall)) if recall else None,
                "accuracy": self.correct.get(aspect, 0) / n if n else None,
            }
        return out


def mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(vals)) if vals else None
