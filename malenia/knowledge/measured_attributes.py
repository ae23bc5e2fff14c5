"""Measured attributes: per-aspect description probabilities from a lesion's image measurements.

Not in the paper. There every attribute comes from the lesion's mask token, matched against the
description embeddings. Trained here on six lesion types, the tokens learned those types'
attribute combinations rather than the attributes: on the unseen types they call 14 % of the
locations right (liver lesions "in the gallbladder lumen") and the disease of none (docs/knowledge.md).
Several aspects are plain measurements a radiologist makes without knowing the disease (shape,
margin, density against the host, heterogeneity, position in the body), so a small classifier on
disease-agnostic measurements (malenia.infer.lesion_features), fitted on the training lesions'
reference masks and descriptions, transfers to new lesion types by construction. The contrast phase
is handled the same way already (malenia.infer.matching: enhancement from the blood pool).

At inference the token's distribution and the measured one are combined per aspect as a weighted
geometric mean (a product of experts), each aspect renormalised over its bank rows:

    p(id) ∝ token(id)^(1 - w) * measured'(id)^w,   measured' = (1 - floor) * measured + floor / n

with w the file's `weight`, or the aspect's own entry in `aspect_weights` where it has one (the location,
whose measured reading is far better than the token's, may take a larger share than the other aspects).

The floor keeps every description reachable that no training lesion showed (e.g. a gallbladder
wall location): the measurement is evidence, not a veto. Aspects the file does not cover keep the
token's distribution. Classifiers (configs as data, `ASPECT_SPECS`):
  - "knn": the k nearest training lesions vote (location: body position and host density, a
    region no linear boundary describes);
  - "logistic": multinomial logistic regression (L2, standardised features); `"balanced": true` weighs
    each class equally, so a description most training lesions share does not win by its frequency
    (the training set's mix of diseases sets that frequency, not the new lesion);
  - "organ_level": density, whose descriptions name the organ, as a k-NN organ times a level
    classifier (`fit_organ_level`), so a level no training lesion of that organ showed is reachable;
  - "one_sided": one description that no training lesion shows (a liver lesion along the vessels),
    read from one measurement (`fit_one_sided`): evidence for it where the measurement exceeds what
    all but a share of the organ's other training lesions show, no evidence (the token alone) elsewhere.

File (owned here): MODEL/measured_attributes.json
    {"format": "malenia-measured-attributes/1", "weight": w, "floor": f, "aspect_weights": {aspect: w} (optional),
     "fitted_on": {...},
     "aspects": {aspect: {"kind", "features", ...}}, "leave_one_disease_out": {aspect: accuracy},
     "leave_one_disease_out_balanced": {aspect: mean accuracy over descriptions}}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from malenia.aspects import ASPECTS, organ_of
from malenia.errors import ModelError

FORMAT = "malenia-measured-attributes/1"
FILE = "measured_attributes.json"
# The measured share, chosen on the validation split (disease named right on detected lesions; weights
# 0, 0.25, 0.5, 0.75, 1; ties go to the lower weight, which keeps more of the tokens' evidence).
WEIGHT = 0.75
FLOOR = 0.1
L2 = 1.0
ORGANLESS_LEVELS = ("calcific", "fluid")  # density descriptions that do not name the organ

# Feature sets chosen by the leave-one-disease-out accuracy on the training lesions (docs/knowledge.md,
# "Measured attributes"); location and density name the organ, so they use the body position too.
ASPECT_SPECS: dict[str, dict[str, Any]] = {
    "location": {"kind": "knn", "k": 5, "features": ["pos_z", "pos_y", "pos_x", "ring_mean"],
                 "scale": [1.0, 1.0, 1.0, 1 / 300.0]},
    "shape": {"kind": "logistic", "features": ["sphericity", "elongation", "flatness", "solidity", "log_volume"]},
    # organ x level (fit_organ_level): the organ as the location's, the level from the contrast to the host
    # (calcific and lung densities from the HU themselves); up to 2.7.0 a k-NN over whole descriptions, which
    # could only name the (organ, level) pairs of the training diseases (leave-one-disease-out level 0.59 vs 0).
    # Lung levels: HU mean and 90th percentile, chosen on the seed-6 lung tumours (right on the model's masks
    # 0.75, against 0.58 with the 10th percentile and 0.50 with the mean alone)
    "density": {"kind": "organ_level",
                "organ": {"kind": "knn", "k": 5, "features": ["pos_z", "pos_y", "pos_x", "ring_mean"],
                          "scale": [1.0, 1.0, 1.0, 1 / 300.0]},
                "level": {"kind": "logistic", "features": ["contrast", "hu_mean"], "balanced": True},
                "lung": {"kind": "logistic", "features": ["hu_mean", "hu_p90"], "balanced": True}},
    # class-balanced: two thirds of the training lesions are heterogeneous, and fitted plainly the classifier
    # called every lesion heterogeneous (balanced leave-one-disease-out accuracy 0.50, chance)
    "density_variation": {"kind": "logistic", "features": ["log_hu_std"], "balanced": True},
    "surface": {"kind": "logistic", "features": ["edge_mm", "sphericity", "solidity"]},
    # No training lesion lies along the intrahepatic vessels, so nothing can be fitted for it; enhanced
    # vessels in the host shell are what a reader sees. The cut lets one in ten of the training liver
    # lesions through, fixed beforehand as the appearance check's alpha is (docs/knowledge.md).
    "relationship": {"kind": "one_sided", "feature": "ring_vessel", "description": "relationship.vascular",
                     "organ": "liver", "quantile": 0.9},
    # No training lesion lies in the gallbladder wall (gallstones are in the lumen), so the location's k-NN can
    # only say "lumen". A stone lies in bile; a wall mass lies against the wall, the liver and fat: less bile
    # around it than all but one in ten training gallbladder lesions shows. Where it fires, the gallbladder's
    # share of the measured location goes to the wall (fifty-fourth round, docs/training.md).
    "location_wall": {"kind": "one_sided", "aspect": "location", "feature": "ring_fluid", "below": True,
                      "description": "location.gallbladder.wall", "organ": "gallbladder", "quantile": 0.1},
}


@dataclass
class Example:
    """One training lesion: its measurements and reference descriptions (first per aspect is its label)."""

    features: dict[str, float]
    attributes: dict[str, list[str]]
    disease: str | None = None


@dataclass
class AspectClassifier:
    kind: str
    features: list[str]
    classes: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, rows: list[Mapping[str, float]]) -> np.ndarray:
        """[n, len(classes)] probabilities."""
        if self.kind == "organ_level":
            return _compose_organ_level(self, rows)
        if self.kind == "one_sided":  # 1 where the measurement passes the cut; the organ gate is the caller's
            sign = -1.0 if self.params.get("below") else 1.0
            return np.array([[sign * float(r[self.params["feature"]]) > sign * float(self.params["cut"])]
                             for r in rows], float)
        x = np.array([[float(r[f]) for f in self.features] for r in rows], float).reshape(len(rows), -1)
        if self.kind == "knn":
            return self._knn(x)
        z = ((x - np.array(self.params["mean"])) / np.array(self.params["std"])) @ np.array(self.params["weights"])
        z = z + np.array(self.params["bias"])
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def _knn(self, x: np.ndarray) -> np.ndarray:
        scale = np.array(self.params["scale"])
        points, labels, k = np.array(self.params["points"]), np.array(self.params["labels"]), int(self.params["k"])
        d = (((x * scale)[:, None, :] - points[None]) ** 2).sum(-1)
        nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
        votes = np.zeros((len(x), len(self.classes)))
        for i, row in enumerate(nearest):
            np.add.at(votes[i], labels[row], 1.0)
        votes += 1.0 / len(self.classes)  # Laplace-like smoothing: k votes never make a certainty
        return votes / votes.sum(1, keepdims=True)

    def to_json(self) -> dict[str, Any]:
        params = {k: (v.to_json() if isinstance(v, AspectClassifier) else v) for k, v in self.params.items()}
        return {"kind": self.kind, "features": self.features, "classes": self.classes, **params}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> "AspectClassifier":
        params = {k: v for k, v in obj.items() if k not in ("kind", "features", "classes")}
        clf = AspectClassifier(str(obj["kind"]), list(obj["features"]), list(obj["classes"]), params)
        need = {"knn": ("points", "labels", "k", "scale"), "logistic": ("mean", "std", "weights", "bias"),
                "organ_level": ("organ", "level", "lung"), "one_sided": ("feature", "organ", "cut")}.get(clf.kind)
        if need is None or any(k not in params for k in need):
            raise ValueError(f"classifier of kind {clf.kind!r} lacks {need}")
        if clf.kind == "organ_level":  # parts parsed once, so a damaged part fails here, not at inference
            clf.params = {**params, **{k: params[k] and AspectClassifier.from_json(params[k])
                                       for k in ("organ", "level", "lung")}}
        return clf


def fit_aspect(spec: Mapping[str, Any], examples: list[Example], aspect: str) -> AspectClassifier | None:
    if spec["kind"] == "organ_level":
        return fit_organ_level(spec, examples, aspect)
    if spec["kind"] == "one_sided":
        return fit_one_sided(spec, examples, str(spec.get("aspect", aspect)))
    labelled = [e for e in examples if e.attributes.get(aspect)]
    classes = sorted({e.attributes[aspect][0] for e in labelled})
    if len(classes) < 2:
        return None  # nothing to tell apart
    feats = list(spec["features"])
    x = np.array([[e.features[f] for f in feats] for e in labelled], float)
    y = np.array([classes.index(e.attributes[aspect][0]) for e in labelled])
    if spec["kind"] == "knn":
        scale = list(spec["scale"])
        params = {"k": int(spec["k"]), "scale": scale, "points": (x * np.array(scale)).round(5).tolist(),
                  "labels": y.tolist()}
        return AspectClassifier("knn", feats, classes, params)
    mean, std = x.mean(0), x.std(0) + 1e-6
    counts = np.bincount(y, minlength=len(classes))
    sample_weight = len(y) / (len(classes) * counts[y]) if spec.get("balanced") else None
    weights, bias = logistic_regression((x - mean) / std, y, len(classes), L2, sample_weight)
    params = {"mean": mean.tolist(), "std": std.tolist(), "weights": weights.tolist(), "bias": bias.tolist()}
    return AspectClassifier("logistic", feats, classes, params)


def fit_one_sided(spec: Mapping[str, Any], examples: list[Example], aspect: str) -> AspectClassifier | None:
    """The cut for one description on one measurement: the `quantile` of that measurement over the organ's
    training lesions that do not show the description (so 1 - quantile of them would pass it; with `below`,
    it fires under the cut, and `quantile` of them pass). `aspect` (the spec's own "aspect" where it names
    one): the aspect the description belongs to. None without such lesions."""
    others = [e for e in examples if _organ_of(e) == spec["organ"] and e.attributes.get(aspect)
              and spec["description"] not in e.attributes[aspect]]
    if not others:
        return None
    feature = str(spec["feature"])
    cut = float(np.quantile([e.features[feature] for e in others], float(spec["quantile"])))
    params = {"feature": feature, "organ": str(spec["organ"]), "quantile": float(spec["quantile"]),
              "cut": cut, "lesions": len(others), **({"aspect": aspect} if spec.get("aspect") else {}),
              **({"below": True} if spec.get("below") else {})}
    return AspectClassifier("one_sided", [feature], [str(spec["description"])], params)


def density_parts(description: str) -> tuple[str, str | None]:
    """A density id as (level, organ): "density.hypodense.kidney" -> ("hypodense", "kidney"),
    "density.lung.ground_glass" -> ("lung.ground_glass", "lung"), "density.calcific" -> ("calcific", None)."""
    parts = description.split(".")
    if len(parts) == 3 and parts[1] == "lung":
        return f"lung.{parts[2]}", "lung"
    return parts[1], (parts[2] if len(parts) == 3 else None)


def _organ_of(example: Example) -> str | None:
    loc = example.attributes.get("location") or [None]
    return organ_of(loc[0])


def _relabelled(examples: list[Example], labels: list[str]) -> list[Example]:
    return [Example(e.features, {"part": [y]}, e.disease) for e, y in zip(examples, labels)]


def fit_organ_level(spec: Mapping[str, Any], examples: list[Example], aspect: str) -> AspectClassifier | None:
    """Density as organ x level. Its descriptions name the organ ("hyperdense.kidney"), so a classifier
    over whole descriptions can only name the (organ, level) pairs the training diseases showed: a
    hyperdense kidney tumour is never called hyperdense, since every training kidney lesion was a
    hypodense cyst. The level (against the host, or lung density) is a measurement that transfers
    across organs; the organ comes from the body position, as the location's does. Both are fitted
    apart and multiplied back into descriptions."""
    labelled = [e for e in examples if e.attributes.get(aspect) and _organ_of(e)]
    parts = [density_parts(e.attributes[aspect][0]) for e in labelled]
    organ = fit_aspect(spec["organ"], _relabelled(labelled, [_organ_of(e) for e in labelled]), "part")
    body = [(e, lvl) for e, (lvl, org) in zip(labelled, parts) if org != "lung"]
    lung = [(e, lvl) for e, (lvl, org) in zip(labelled, parts) if org == "lung"]
    level = fit_aspect(spec["level"], _relabelled([e for e, _ in body], [v for _, v in body]), "part")
    lung_clf = fit_aspect(spec["lung"], _relabelled([e for e, _ in lung], [v for _, v in lung]), "part")
    if organ is None or level is None:
        return None  # one organ or one level only: nothing to compose
    lung_levels = lung_clf.classes if lung_clf else sorted({v for _, v in lung})
    classes = _composed_ids(organ.classes, level.classes, lung_levels)
    feats = sorted(set(organ.features) | set(level.features) | set(lung_clf.features if lung_clf else []))
    params = {"organ": organ, "level": level, "lung": lung_clf, "lung_levels": lung_levels}
    return AspectClassifier("organ_level", feats, classes, params)


def _density_id(organ: str, level: str) -> str:
    lung_or_organless = organ == "lung" or level in ORGANLESS_LEVELS
    return f"density.{level}" if lung_or_organless else f"density.{level}.{organ}"


def _composed_ids(organs: list[str], levels: list[str], lung_levels: list[str]) -> list[str]:
    ids = [_density_id(o, lvl) for o in organs for lvl in (lung_levels if o == "lung" else levels)]
    return list(dict.fromkeys(ids))  # calcific / fluid once, whatever the organ


def _compose_organ_level(clf: AspectClassifier, rows: list[Mapping[str, float]]) -> np.ndarray:
    """p(level, organ) = p(organ | position) * p(level | organ's kind): lung levels inside the lung."""
    organ, level, lung = clf.params["organ"], clf.params["level"], clf.params["lung"]
    lung_levels = list(clf.params["lung_levels"])
    p_org, p_lvl = organ.predict(rows), level.predict(rows)
    p_lung = lung.predict(rows) if lung else np.full((len(rows), len(lung_levels)), 1.0 / max(len(lung_levels), 1))
    out = np.zeros((len(rows), len(clf.classes)))
    for o, org in enumerate(organ.classes):
        names, p = (lung_levels, p_lung) if org == "lung" else (level.classes, p_lvl)
        for j, lvl in enumerate(names):
            out[:, clf.classes.index(_density_id(org, lvl))] += p_org[:, o] * p[:, j]
    return out / np.maximum(out.sum(1, keepdims=True), 1e-12)


def logistic_regression(x: np.ndarray, y: np.ndarray, k: int, l2: float,
                        sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by L-BFGS; the L2 penalty spares the bias. `sample_weight` (mean 1)
    reweighs the examples' log-likelihood terms."""
    from scipy.optimize import minimize

    n, d = x.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    onehot = np.eye(k)[y] * sw[:, None]
    xb = np.hstack([x, np.ones((n, 1))])

    def loss(w):
        wm = w.reshape(d + 1, k)
        z = xb @ wm
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        value = -(onehot * np.log(p + 1e-12)).sum() / n + l2 * (wm[:-1] ** 2).sum() / n
        grad = xb.T @ (p * sw[:, None] - onehot) / n
        grad[:-1] += 2 * l2 * wm[:-1] / n
        return value, grad.ravel()

    w = minimize(loss, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B").x.reshape(d + 1, k)
    return w[:-1], w[-1]


@dataclass
class MeasuredAttributes:
    aspects: dict[str, AspectClassifier]
    weight: float = WEIGHT
    floor: float = FLOOR
    meta: dict[str, Any] = field(default_factory=dict)  # fitted_on, leave_one_disease_out
    aspect_weights: dict[str, float] = field(default_factory=dict)  # an aspect's own measured share

    def weight_of(self, aspect: str) -> float:
        return float(self.aspect_weights.get(aspect, self.weight))

    def distributions(self, features: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """aspect -> {description id: probability} for one lesion; a one-sided reading only where it fires
        (elsewhere the measurement is no evidence): its aspect's whole measured mass, or, where that aspect has
        a measured reading already (the location's wall), the mass that reading gives the organ."""
        out = {a: dict(zip(c.classes, c.predict([features])[0].tolist()))
               for a, c in self.aspects.items() if c.kind != "one_sided"}
        fired = [(c.params.get("aspect", a), c) for a, c in self.aspects.items()  # files before 2.11.3: key = aspect
                 if c.kind == "one_sided" and c.predict([features])[0, 0] > 0 and self._in_organ(out, c.params["organ"])]
        for aspect, c in fired:
            organ = c.params["organ"]
            before = out.get(aspect)
            if before is None:
                out[aspect] = {c.classes[0]: 1.0}
                continue
            moved = {i: p for i, p in before.items() if organ_of(i) != organ}
            out[aspect] = {**moved, c.classes[0]: sum(p for i, p in before.items() if organ_of(i) == organ)}
        return out

    @staticmethod
    def _in_organ(measured: Mapping[str, Mapping[str, float]], organ: str) -> bool:
        """The measured location puts the lesion in `organ` more likely than not (no location: assumed)."""
        location = measured.get("location")
        return location is None or sum(p for i, p in location.items() if organ_of(i) == organ) > 0.5

    def blend(self, distribution: np.ndarray, rows: Mapping[str, np.ndarray], ids: list[str],
              features: Mapping[str, float]) -> np.ndarray:
        """The token `distribution` over the bank rows with the measured evidence folded in, per aspect."""
        out = np.array(distribution, np.float64, copy=True)
        for aspect, measured in self.distributions(features).items():
            r = rows.get(aspect)
            if r is None or not len(r):
                continue
            token = out[r] / out[r].sum() if out[r].sum() > 0 else np.full(len(r), 1.0 / len(r))
            m = np.array([measured.get(ids[i], 0.0) for i in r])
            m = (1 - self.floor) * (m / m.sum() if m.sum() > 0 else m) + self.floor / len(r)
            w = self.weight_of(aspect)
            mixed = np.exp((1 - w) * np.log(np.maximum(token, 1e-12)) + w * np.log(m))
            out[r] = mixed / mixed.sum()
        return out.astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "weight": self.weight, "floor": self.floor, **self.meta,
                **({"aspect_weights": dict(self.aspect_weights)} if self.aspect_weights else {}),
                "aspects": {a: c.to_json() for a, c in self.aspects.items()}}

    @staticmethod
    def from_json(obj: Any, where: str = FILE) -> "MeasuredAttributes":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ModelError(f"{where}: not a {FORMAT} file")
        try:
            aspects = {str(a): AspectClassifier.from_json(c) for a, c in obj["aspects"].items()}
            weight, floor = float(obj["weight"]), float(obj["floor"])
            own = {str(a): float(w) for a, w in (obj.get("aspect_weights") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"{where}: damaged measured-attributes file ({err})") from None
        if not (all(0.0 <= w <= 1.0 for w in (weight, *own.values())) and 0.0 < floor <= 1.0):
            raise ModelError(f"{where}: weights must be in [0, 1] and floor in (0, 1]")
        if unknown := sorted(set(own) - set(ASPECTS)):
            raise ModelError(f"{where}: aspect_weights names unknown aspects {unknown}")
        meta = {k: v for k, v in obj.items() if k not in ("format", "weight", "floor", "aspects", "aspect_weights")}
        return MeasuredAttributes(aspects, weight, floor, meta, own)


def fit(examples: list[Example], specs: Mapping[str, Mapping[str, Any]] = ASPECT_SPECS,
        fitted_on: Mapping[str, Any] | None = None) -> MeasuredAttributes:
    """Classifiers for every aspect of `specs`, and their leave-one-disease-out accuracy."""
    from malenia.errors import InputError

    if len(examples) < 10:
        raise InputError(f"{len(examples)} lesions are too few to fit measured attributes (need at least 10)")
    aspects = {a: c for a, spec in specs.items() if (c := fit_aspect(spec, examples, a)) is not None}
    meta = {"fitted_on": {**(fitted_on or {}), "lesions": len(examples),
                          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "leave_one_disease_out": leave_one_disease_out(examples, specs),
            "leave_one_disease_out_balanced": leave_one_disease_out(examples, specs, balanced=True)}
    return MeasuredAttributes(aspects, meta=meta)


def _transfers(clf: AspectClassifier, predicted: str, truth: list[str]) -> bool:
    """Right for leave-one-disease-out: the description, or for an organ x level classifier its level (the
    organ of a left-out disease is often one no other disease has, and comes from position as the location)."""
    if clf.kind == "organ_level":
        return density_parts(predicted)[0] in {density_parts(t)[0] for t in truth}
    return predicted in truth


def leave_one_disease_out(examples: list[Example], specs: Mapping[str, Mapping[str, Any]],
                          balanced: bool = False) -> dict[str, float | None]:
    """Per aspect, the share of each disease's lesions whose first description is the top class of a
    classifier fitted without that disease: how well the measurement transfers to a lesion type it never
    saw. `balanced`: the mean over descriptions of that share (a classifier that always names the most
    common description scores chance, 1 / descriptions, however common it is). Aspects whose descriptions
    name the organ (location, density) cannot transfer to a new organ this way; their numbers say so."""
    diseases = sorted({e.disease for e in examples if e.disease})
    out: dict[str, float | None] = {}
    for aspect, spec in specs.items():
        if spec["kind"] == "one_sided":  # its description is absent from the training lesions by design
            continue
        hits: dict[str, list[bool]] = {}
        for d in diseases:
            clf = fit_aspect(spec, [e for e in examples if e.disease != d], aspect)
            held = [e for e in examples if e.disease == d and e.attributes.get(aspect)]
            if clf is None or not held:
                continue
            p = clf.predict([e.features for e in held])
            for i, e in zip(p.argmax(1), held):
                hits.setdefault(e.attributes[aspect][0], []).append(_transfers(clf, clf.classes[int(i)], e.attributes[aspect]))
        if not hits:
            out[aspect] = None
            continue
        shares = [np.mean(v) for v in hits.values()] if balanced else [x for v in hits.values() for x in v]
        out[aspect] = round(float(np.mean(shares)), 4)
    return out
