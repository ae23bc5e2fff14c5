"""Known-disease appearance: does a lesion look like the lesions a trained disease showed?

Not in the paper. There a lesion is named from its attribute descriptions alone, and an unseen disease
is told apart from a seen one only through them. Our compact model's descriptions of an unseen lesion
tend to be those of the seen disease of the same organ (docs/knowledge.md, "Where unseen diseases are
lost"): a kidney tumour is described, and named, as a kidney cyst although its CT values are those of
enhancing solid tissue, not of fluid. A radiologist who has seen many kidney cysts rules that out at a
glance. This module does the same for the diseases the model was trained on, and only for them: for
each such disease a Gaussian over a few measurements of its training lesions (CT value of the core, its
spread, the contrast to the host; malenia.infer.lesion_features, log-spread as the measured attributes
use it). A lesion's appearance score for disease d is the chi-squared tail probability of its
Mahalanobis distance to d's Gaussian: about uniform in [0, 1] over d's own lesions, near 0 for lesions
that look like none of them.

A disease is *ruled out* for a lesion when its score is below `cut`, calibrated conformally on
validation lesions the model detected (its own masks, as it ships): `cut` is the `alpha`-quantile of
the scores of the validation lesions under their own disease, so about a share `alpha` of the known
diseases' own lesions lose their right name through the rule (alpha is a design choice, stated in the
file, not fitted on any unseen disease). Disease inference then names the best disease that is not
ruled out (malenia.knowledge.inference); a disease without training lesions (an unseen type, a site
profile) has no appearance model and is never ruled out.

File (owned here): MODEL/appearance.json
    {"format": "malenia-appearance/1", "features": [...], "shrinkage": s,
     "diseases": {key: {"lesions": n, "mean": [...], "scale": [...], "precision": [[...]]}},
     "cut": c, "alpha": a, "fitted_on": {...}, "calibrated_on": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from malenia.errors import InputError, ModelError

FORMAT = "malenia-appearance/1"
FILE = "appearance.json"
FEATURES = ("hu_mean", "log_hu_std", "contrast")
SHRINKAGE = 0.2  # covariance pulled toward its diagonal: a few dozen lesions per disease
MIN_LESIONS = 10  # fewer training lesions: no model (the disease is never ruled out)
ALPHA = 0.1


@dataclass
class DiseaseLook:
    """One disease's Gaussian over standardised features."""

    lesions: int
    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray

    def score(self, x: np.ndarray) -> float:
        """Chi-squared tail probability of the Mahalanobis distance of `x` (raw feature values)."""
        from scipy.stats import chi2

        z = (x - self.mean) / self.scale
        return float(chi2.sf(float(z @ self.precision @ z), df=len(z)))

    @staticmethod
    def fit(x: np.ndarray, shrinkage: float) -> "DiseaseLook":
        mean, scale = x.mean(0), np.maximum(x.std(0), 1e-3)
        z = (x - mean) / scale
        cov = np.cov(z.T).reshape(len(mean), len(mean))
        cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))
        return DiseaseLook(len(x), mean, scale, np.linalg.inv(cov + 1e-6 * np.eye(len(mean))))


@dataclass
class Appearance:
    looks: dict[str, DiseaseLook]
    features: tuple[str, ...] = FEATURES
    cut: float = 0.0  # no disease ruled out until calibrated
    alpha: float = ALPHA
    shrinkage: float = SHRINKAGE
    meta: dict[str, Any] = field(default_factory=dict)

    def scores(self, measurements: Mapping[str, float]) -> dict[str, float]:
        """{disease: appearance score} for every disease with a model; {} when a measurement is missing."""
        if any(f not in measurements for f in self.features):
            return {}
        x = np.array([float(measurements[f]) for f in self.features])
        return {d: round(look.score(x), 6) for d, look in self.looks.items()}

    def ruled_out(self, scores: Mapping[str, float]) -> set[str]:
        return ruled_out_at(scores, self.cut)

    def verdict(self, measurements: Mapping[str, float]) -> dict[str, Any] | None:
        """The report's per-lesion entry: {"scores", "cut", "ruled_out"}; None when unmeasurable."""
        scores = self.scores(measurements)
        if not scores:
            return None
        return {"scores": scores, "cut": round(self.cut, 6), "ruled_out": sorted(self.ruled_out(scores))}

    def calibrate(self, own_scores: Iterable[float], where: Mapping[str, Any]) -> None:
        """`cut` = the alpha-quantile of validation lesions' scores under their own disease."""
        s = np.asarray(list(own_scores), float)
        if len(s) < 10:
            raise InputError(f"{len(s)} detected lesions of diseases with an appearance model: too few (10) to calibrate its cut")
        self.cut = float(np.quantile(s, self.alpha))
        self.meta["calibrated_on"] = {**where, "lesions": int(len(s))}

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "features": list(self.features), "shrinkage": self.shrinkage,
                "cut": round(self.cut, 6), "alpha": self.alpha, **self.meta,
                "diseases": {d: {"lesions": k.lesions, "mean": k.mean.tolist(), "scale": k.scale.tolist(),
                                 "precision": k.precision.tolist()} for d, k in self.looks.items()}}

    @staticmethod
    def from_json(obj: Any, where: str = FILE) -> "Appearance":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ModelError(f"{where}: not a {FORMAT} file")
        try:
            features = tuple(str(f) for f in obj["features"])
            looks = {str(d): DiseaseLook(int(v["lesions"]), np.array(v["mean"], float), np.array(v["scale"], float),
                                         np.array(v["precision"], float)) for d, v in obj["diseases"].items()}
            cut, alpha, shrinkage = float(obj["cut"]), float(obj["alpha"]), float(obj["shrinkage"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"{where}: damaged appearance file ({err})") from None
        k = len(features)
        if any(v.mean.shape != (k,) or v.scale.shape != (k,) or v.precision.shape != (k, k) for v in looks.values()):
            raise ModelError(f"{where}: every disease needs a mean and scale of {k} values and a {k}x{k} precision")
        if not 0.0 <= cut <= 1.0:
            raise ModelError(f"{where}: cut must be in [0, 1], got {cut}")
        meta = {m: obj[m] for m in ("fitted_on", "calibrated_on") if m in obj}
        return Appearance(looks, features, cut, alpha, shrinkage, meta)


def ruled_out_at(scores: Mapping[str, float], cut: float) -> set[str]:
    """The diseases whose appearance score is below `cut` (segmenting, and the open-set fit's re-cuts)."""
    return {d for d, s in scores.items() if s < cut}


def fit_appearance(rows: Iterable[tuple[str, Mapping[str, float]]], features: tuple[str, ...] = FEATURES,
                   shrinkage: float = SHRINKAGE, fitted_on: Mapping[str, Any] | None = None) -> Appearance:
    """One Gaussian per disease with at least MIN_LESIONS (disease, measurements) rows."""
    by: dict[str, list[list[float]]] = {}
    for disease, m in rows:
        if disease and all(f in m for f in features):
            by.setdefault(disease, []).append([float(m[f]) for f in features])
    looks = {d: DiseaseLook.fit(np.array(x), shrinkage) for d, x in sorted(by.items()) if len(x) >= MIN_LESIONS}
    if not looks:
        raise ValueError(f"no disease has {MIN_LESIONS} or more measured training lesions")
    return Appearance(looks, tuple(features), shrinkage=shrinkage,
                      meta={"fitted_on": dict(fitted_on or {}) | {"lesions": {d: k.lesions for d, k in looks.items()}}})
