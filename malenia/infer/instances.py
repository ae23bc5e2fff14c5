"""Lesion instances on the model grid from the blended probability and the token candidates.

1. Instances are the connected components (26-connectivity) of probability >= threshold;
   components smaller than the minimum lesion volume are removed.
2. De-duplication across tokens and windows: overlapping windows, and several tokens within a
   window, describe the same lesion. A candidate (malenia.infer.windows.TokenCandidate) describes
   a component when their overlap is at least `min_overlap` of the smaller of the two (a good part
   of the token lies in the lesion, or the token covers a good part of it); a component's
   description is the weighted mean of its candidates' per-aspect distributions, weight = voxels
   inside x lesion score x centrality (a token near a window border sees the lesion cut off, so
   it counts less). A component with no such candidate takes every candidate touching it.
Touching lesions that form one component stay one instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from malenia.infer.windows import TokenCandidate

CONNECTIVITY = np.ones((3, 3, 3), bool)


@dataclass
class Instance:
    label: int  # value in the model-grid label map
    voxels: int  # on the model grid
    mean_probability: float
    candidates: list[tuple[TokenCandidate, float]] = field(default_factory=list)  # (candidate, weight)
    distribution: np.ndarray | None = None  # float32 [R] aggregated per-aspect match probabilities

    @property
    def lesion_score(self) -> float:
        """Weighted mean lesion score of its tokens (how sure the model is that this is a lesion)."""
        total = sum(w for _, w in self.candidates)
        return float(sum(c.lesion_score * w for c, w in self.candidates) / total) if total > 0 else 0.0

    @property
    def windows(self) -> int:
        return len({c.window for c, _ in self.candidates})


def components(probability: np.ndarray, threshold: float, min_voxels: int) -> tuple[np.ndarray, int]:
    """int32 labels 1..K (in scan order) of the components of probability >= threshold with >= min_voxels."""
    labels, n = ndimage.label(probability >= threshold, structure=CONNECTIVITY)
    if n == 0:
        return labels.astype(np.int32), 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = np.zeros(n + 1, np.int32)
    big = np.flatnonzero(sizes[1:] >= max(1, int(min_voxels))) + 1
    keep[big] = np.arange(1, len(big) + 1, dtype=np.int32)
    return keep[labels], int(len(big))


def assign(labels: np.ndarray, n: int, candidates: list[TokenCandidate], probability: np.ndarray,
           min_overlap: float = 0.25) -> list[Instance]:
    """One Instance per component with the candidates it absorbs and their aggregated distribution."""
    instances = [Instance(k, 0, 0.0) for k in range(1, n + 1)]
    if n == 0:
        return instances
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sums = ndimage.sum_labels(probability, labels, index=np.arange(1, n + 1))
    for inst in instances:
        inst.voxels = int(sizes[inst.label])
        inst.mean_probability = float(sums[inst.label - 1] / max(inst.voxels, 1))
    partial: list[list[tuple[TokenCandidate, float]]] = [[] for _ in instances]
    for cand in candidates:
        hit = labels[cand.slices][cand.mask()]
        counts = np.bincount(hit, minlength=n + 1)
        counts[0] = 0
        weight = cand.lesion_score * max(cand.centrality, 1e-3)
        for k in np.flatnonzero(counts):
            entry = (cand, float(counts[k]) * weight)
            # it describes the lesion when a good part of it lies there, or it covers a good part of the lesion
            if counts[k] >= min_overlap * min(cand.voxels, instances[k - 1].voxels):
                instances[k - 1].candidates.append(entry)
            else:
                partial[k - 1].append(entry)
    for inst, extra in zip(instances, partial):
        if not inst.candidates:  # only strays touch it: better than nothing
            inst.candidates = extra
        inst.distribution = aggregate(inst.candidates)
    return instances


def aggregate(weighted: list[tuple[TokenCandidate, float]]) -> np.ndarray | None:
    if not weighted:
        return None
    w = np.array([x for _, x in weighted], np.float64)
    d = np.stack([c.distribution for c, _ in weighted]).astype(np.float64)
    return (w[:, None] * d).sum(0).astype(np.float32) / np.float32(w.sum())
