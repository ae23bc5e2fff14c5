"""Choose a model's post-processing on a validation split: foreground threshold and minimum lesion volume.

nnU-Net decides its post-processing (keep the largest component or not) on the validation folds,
never on test data; this does the same for the two numbers that turn Malenia's foreground
probability into lesions. Each validation case goes through the network once
(`Segmenter.probability_map`, exactly as `malenia segment` runs it); then every pair of
`THRESHOLDS` x `MIN_VOLUMES_MM3` is applied offline by the same post-processing step that
`segment` ships (malenia.infer.postprocess: lesion_map, kept) and scored by an objective
(malenia.evaluate.metrics.OBJECTIVES). The default, "dsc_f1", is the mean of two numbers: the mean case DSC
on each case's own grid (the paper's main metric, as `malenia evaluate` computes it; a case without lesions
scores 1 when nothing is predicted) and the lesion-detection F1 over the split (`evaluate`'s matching rule).
DSC alone ("dsc", the rule up to built-in model 2.6.0) counts voxels: a small lesion found or missed
barely moves it, so it cannot tell a post-processing that keeps small lesions from one that deletes them.
The best pair wins, up to one lesion: among the pairs whose score is within what one detected lesion more or
fewer moves it (malenia.evaluate.metrics.one_lesion_margin; 0.007 on 87 validation lesions), the higher threshold
and then the larger minimum volume wins, i.e. the one with fewer false positives. Without that margin, 2.10.0's
calibration chose 25 mm³ over 50 mm³ for a score 0.0002 higher, one validation lesion for three more predictions;
half its false positives on the unseen-type test set were then under 100 mm³ (docs/training.md, twenty-eighth and
twenty-ninth rounds). `margin=False` takes the best score exactly (the rule up to 2.10.0).
A model with a lesion verifier (malenia.model.lesion_verifier) is calibrated with it in place, as `segment`
runs it: its false positives do not count against a threshold the verifier cleans up after (run `malenia
calibrate` again after `malenia fit-verifier`).

The result is stored in the model folder as `inference.json` (malenia.model.folder.InferenceDefaults),
which `segment`, `demo`, `evaluate` and the Slicer module use unless the user sets the values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Up to 524 mm³, a 10 mm sphere: RECIST 1.1's smallest measurable lesion. A voxel-weighted DSC hardly
# notices small lesions, so a larger minimum would be chosen for a few voxels of false positives while
# deleting every lesion a radiologist would measure.
MIN_VOLUMES_MM3 = (0.0, 25.0, 50.0, 100.0, 200.0, 350.0, 524.0)
COLUMNS = ("mean_dsc", "lesions_per_case", "recall", "precision", "f1", "score")


Gate = Callable[[Any, Any, list], list]


@dataclass
class CaseSweep:
    """One case over the grid, each array [len(thresholds), len(min_volumes)]."""

    dsc: np.ndarray  # case DSC
    count: np.ndarray  # predicted lesions
    hits: np.ndarray  # reference lesions detected (malenia.evaluate.metrics' rule)
    lesions: int  # reference lesions


def sweep_case(pm, truth: np.ndarray, thresholds: Sequence[float] = THRESHOLDS,
               min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3, gate: Gate | None = None) -> CaseSweep:
    """One case over the grid: `pm` its malenia.infer.postprocess.ProbabilityMap, `truth` its reference lesion
    instance labels (z, y, x; 0 = background) on its own grid. `gate(pm, lm, order)`: the lesions of `order` that
    `segment` keeps after the post-processing (its lesion verifier; None: all)."""
    from malenia.evaluate.metrics import matched_pairs, overlap_counts
    from malenia.infer.postprocess import kept, lesion_map

    shape = (len(thresholds), len(min_volumes_mm3))
    dsc, count, hits = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    inside_truth = np.asarray(truth) > 0
    reference = np.asarray(truth)[inside_truth]
    truth_n = int(inside_truth.sum())
    for i, t in enumerate(thresholds):
        lm = lesion_map(pm, t)
        _, ref_voxels, inter = overlap_counts(reference, lm.labels[inside_truth], lm.n)
        inside = inter.sum(0)
        passed = None if gate is None else set(gate(pm, lm, kept(lm, min(min_volumes_mm3))))
        for j, v in enumerate(min_volumes_mm3):
            order = [k for k in kept(lm, v) if passed is None or k in passed]
            pred_n, overlap = int(lm.voxels[order].sum()), int(inside[order].sum())
            denom = pred_n + truth_n
            dsc[i, j] = 1.0 if denom == 0 else 2.0 * overlap / denom
            count[i, j] = len(order)
            hits[i, j] = len(matched_pairs(inter[:, order], ref_voxels, lm.voxels[order]))
    return CaseSweep(dsc, count, hits, len(np.unique(reference)))


def choose(score: np.ndarray, thresholds: Sequence[float], min_volumes_mm3: Sequence[float],
           margin: float = 0.0) -> tuple[int, int]:
    """Index pair of the best score, or of any score within `margin` of it: the higher threshold, then the larger
    minimum volume (margin 0: those break exact ties only)."""
    best = float(np.max(np.round(score, 6)))
    within = [(thresholds[i], min_volumes_mm3[j], (i, j)) for i, j in np.ndindex(score.shape)
              if round(float(score[i, j]), 6) >= best - margin - 1e-9]
    return max(within)[2]


def scores(sweeps: Sequence[CaseSweep], objective: str) -> dict[str, np.ndarray]:
    """Per grid cell over the cases: mean DSC, lesions per case, detection recall, precision and F1, the score."""
    from malenia.evaluate.metrics import selection_row

    mean_dsc = np.mean([s.dsc for s in sweeps], axis=0)
    hits, pred = np.sum([s.hits for s in sweeps], axis=0), np.sum([s.count for s in sweeps], axis=0)
    ref = sum(s.lesions for s in sweeps)
    out = {k: np.zeros_like(mean_dsc) for k in COLUMNS}
    for c in np.ndindex(mean_dsc.shape):
        row = selection_row(objective, float(mean_dsc[c]), int(hits[c]), int(pred[c]), ref)
        for k, v in row.items():
            out[k][c] = v
    out["lesions_per_case"] = pred / len(sweeps)
    return out


def verifier_gate(segmenter) -> Gate | None:
    """The lesions `segment` keeps after its post-processing: the model's lesion verifier (None without one). The
    threshold and minimum volume are chosen as they ship, with the false positives the verifier removes gone."""
    if segmenter.verifier is None:
        return None
    from malenia.infer.lesion_features import lesion_rows

    return lambda pm, lm, order: segmenter.verify(order, lesion_rows(pm, lm, order), lm)[0]


def dataset_sources(data_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """One dataset folder or several, as a list of paths (the commands' repeatable --data)."""
    return [Path(data_dir)] if isinstance(data_dir, (str, Path)) else [Path(d) for d in data_dir]


def pooled_cases(sources: Sequence[Path], split: str | None) -> list[tuple[Path, str]]:
    """(dataset folder, case id) of `split` in each source, in order; InputError when a source has none there or
    two sources hold the same case folder (linked datasets may: it would count its lesions twice)."""
    from malenia.data.dataset import case_dir, read_dataset
    from malenia.errors import InputError

    out: list[tuple[Path, str]] = []
    for src in sources:
        ids = read_dataset(src).split_cases(split)
        if not ids:
            raise InputError(f"{src}: split {split or 'all'!r} has no cases")
        out += [(src, c) for c in ids]
    seen: set[Path] = set()
    for src, c in out:
        folder = case_dir(src, c).resolve()
        if folder in seen:
            raise InputError(f"{src}: case {c!r} ({folder}) is also in another of the datasets named")
        seen.add(folder)
    return out


def calibrate(segmenter, data_dir: str | Path | Sequence[str | Path], split: str | None = "val",
              thresholds: Sequence[float] = THRESHOLDS, min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3,
              max_cases: int | None = None, on_case: Callable[[int, int, str], None] | None = None,
              objective: str = "dsc_f1", margin: bool = True) -> dict[str, Any]:
    """Runs the sweep on `split` of a dataset, or of several datasets pooled (a list: their cases in order, e.g.
    synthetic validation cases and real nodules, so the choice also sees the small lesions one set lacks);
    returns the chosen values and the whole table (JSON-ready). `margin`: choose within one lesion of the best
    score (module docstring); False: the best score exactly."""
    import SimpleITK as sitk

    from malenia.data.dataset import read_case
    from malenia.evaluate.metrics import OBJECTIVE_TEXT, one_lesion_margin

    sources = dataset_sources(data_dir)
    cases = pooled_cases(sources, split)[: max_cases or None]
    t0 = time.perf_counter()
    gate = verifier_gate(segmenter)
    sweeps = []
    for k, (source, case_id) in enumerate(cases):
        if on_case:
            on_case(k, len(cases), case_id)
        case = read_case(source, case_id)
        pm, _ = segmenter.probability_map(case.image, collect=False)
        sweeps.append(sweep_case(pm, sitk.GetArrayViewFromImage(case.lesions), thresholds, min_volumes_mm3, gate))
    grid = scores(sweeps, objective)
    best = choose(grid["score"], thresholds, min_volumes_mm3)
    tolerance = one_lesion_margin(objective, round(float(grid["lesions_per_case"][best]) * len(sweeps)),
                                  sum(s.lesions for s in sweeps)) if margin else 0.0
    i, j = choose(grid["score"], thresholds, min_volumes_mm3, tolerance)
    table = [{"threshold": t, "min_volume_mm3": v, **{k: round(float(grid[k][a, b]), 4) for k in COLUMNS}}
             for a, t in enumerate(thresholds) for b, v in enumerate(min_volumes_mm3)]
    return {
        "threshold": float(thresholds[i]),
        "min_volume_mm3": float(min_volumes_mm3[j]),
        "calibration": {
            "objective": OBJECTIVE_TEXT[objective] + " (malenia segment's post-processing)",
            "objective_id": objective,
            "dataset": " + ".join(src.resolve().name for src in sources),
            "split": split or "all",
            "cases": len(cases),
            **({"datasets": [{"dataset": src.resolve().name, "cases": sum(1 for c in cases if c[0] == src)}
                             for src in sources]} if len(sources) > 1 else {}),
            "reference_lesions": sum(s.lesions for s in sweeps),
            "verifier_cut": None if gate is None else segmenter.verifier.cut,
            **{k: round(float(grid[k][i, j]), 4) for k in COLUMNS},
            "margin": round(tolerance, 6),
            "best": {"threshold": float(thresholds[best[0]]), "min_volume_mm3": float(min_volumes_mm3[best[1]]),
                     "score": round(float(grid["score"][best]), 4)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 1),
            "table": table,
        },
    }
