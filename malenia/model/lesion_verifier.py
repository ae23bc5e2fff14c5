"""Lesion verifier: a second look at each predicted lesion, to remove likely false positives.

Not in the paper. The built-in model predicts about six lesions per case where two are real
(docs/training.md), and those false positives have probability peaks as high as the true lesions:
no threshold or minimum volume separates them. Detection pipelines answer this with a
false-positive-reduction stage that re-scores each candidate (the LUNA16 challenge's second
stage). Here it is a logistic regression on what `segment` already knows of a lesion: its
probability on the model grid (peak, mean) and its image measurements (malenia.infer.lesion_features.lesion_rows:
density against the host, heterogeneity, shape, margin, size, position in the body). It is fitted
on the model's own lesions in cases it never trained on, each labelled real when it touches a
reference lesion, and a lesion is kept when its probability of being real reaches `cut`; the cut is
chosen on a validation split by the objective `malenia calibrate` chooses the threshold with (mean case DSC
and lesion-detection F1; malenia.evaluate.verifier_fit.choose_cut).
Disease-agnostic measurements only; even so, a measurement that separates the training types from false
positives (where a liver tumour sits, how round a cyst is) can reject a lesion type the model never saw, so
`malenia fit-verifier` also measures what it does to a training disease left out of its fit and cut.

File (owned here): MODEL/lesion_verifier.json
    {"format": "malenia-lesion-verifier/1", "features": [...], "mean": [...], "std": [...],
     "weights": [...], "bias": b, "cut": c, "fitted_on": {...}, "validation": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from malenia.errors import ModelError
from malenia.model.verifier_features import FEATURE_SETS, FEATURES  # noqa: F401 (re-exported)

FORMAT = "malenia-lesion-verifier/1"
FILE = "lesion_verifier.json"
L2 = 1.0


@dataclass
class LesionVerifier:
    features: list[str]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray  # [d]: log-odds of a real lesion per standardised feature
    bias: float
    cut: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)  # fitted_on, validation

    def probability(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """P(real lesion) of each row (a lesion's features)."""
        if not len(rows):
            return np.zeros(0)
        x = np.array([[float(r[f]) for f in self.features] for r in rows])
        z = ((x - self.mean) / self.std) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "features": list(self.features), "mean": self.mean.tolist(),
                "std": self.std.tolist(), "weights": self.weights.tolist(), "bias": float(self.bias),
                "cut": float(self.cut), **self.meta}

    @staticmethod
    def from_json(obj: Any, where: str = FILE) -> "LesionVerifier":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ModelError(f"{where}: not a {FORMAT} file")
        try:
            feats = [str(f) for f in obj["features"]]
            arrays = [np.asarray(obj[k], float) for k in ("mean", "std", "weights")]
            bias, cut = float(obj["bias"]), float(obj["cut"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{where}: damaged lesion-verifier file ({err})") from None
        if any(a.shape != (len(feats),) for a in arrays) or not 0.0 <= cut < 1.0 or (arrays[1] <= 0).any():
            raise ModelError(f"{where}: damaged lesion-verifier file (shapes, std or cut out of range)")
        unknown = sorted(set(feats) - set(FEATURES))
        if unknown:
            raise ModelError(f"{where}: unknown verifier features {unknown}")
        meta = {k: v for k, v in obj.items() if k not in ("format", "features", "mean", "std", "weights", "bias", "cut")}
        return LesionVerifier(feats, *arrays, bias=bias, cut=cut, meta=meta)


def fit(rows: Sequence[Mapping[str, float]], real: Sequence[bool], features: Sequence[str] = FEATURES,
        fitted_on: Mapping[str, Any] | None = None) -> LesionVerifier:
    """Logistic regression (L2, standardised features) of `real` on the rows' `features`."""
    from malenia.errors import InputError
    from malenia.knowledge.measured_attributes import logistic_regression

    y = np.asarray(real, bool)
    if len(y) < 20 or y.all() or not y.any():
        raise InputError(f"{len(y)} lesions ({int(y.sum())} real) are too few to fit a lesion verifier: "
                         "need at least 20, with real and false ones")
    x = np.array([[float(r[f]) for f in features] for r in rows])
    mean, std = x.mean(0), x.std(0) + 1e-6
    w, b = logistic_regression((x - mean) / std, y.astype(int), 2, L2)
    meta = {"fitted_on": {**(fitted_on or {}), "lesions": int(len(y)), "real": int(y.sum())}}
    # two-class softmax = sigmoid of the difference of the class scores
    return LesionVerifier(list(features), mean, std, w[:, 1] - w[:, 0], float(b[1] - b[0]), meta=meta)
