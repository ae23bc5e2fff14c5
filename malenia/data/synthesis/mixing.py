"""Attribute mixing: training lesions whose organ-agnostic attributes do not follow their disease.

Not in the paper; a property of synthetic training data it does not have to face. Sampled from their
profiles, the six training types tie each organ to one look: every pancreatic lesion is an irregular,
heterogeneous, ill-defined tumour, nearly every kidney lesion a round, homogeneous, well-defined cyst.
A network trained on them learns "pancreas, so heterogeneous" instead of reading the texture, and a
pancreatic cyst, never seen, is then described as a tumour and named one (docs/knowledge.md, "Where
unseen diseases are lost"). Mixing breaks that tie in the data: with probability `probability` a
lesion's shape, density variation and margin are drawn uniformly from the descriptions the dataset's
own diseases show for that aspect, whatever its disease, and the renderer draws what was drawn.

Only aspects a reader judges without knowing the organ are mixed, and only among descriptions the
training diseases already have (so no description of an unseen type enters training through this):
location, density (named per organ), enhancement (the scan's phase), relationship and specific
features (organ-bound findings) keep their profile draw. The lesion keeps its disease label; its
report lists the mixed aspects (`extra.synthesis.mixed`).

Density levels (`density_probability`, off by default). Density is named per organ ("lower density than
the renal parenchyma"), but its level against the host, lower / similar / higher, is a reader's judgement
like the margin. The training diseases tie each organ to one level too: 97 % of kidney cysts and 88 % of
liver tumours are hypodense, so a network trained on them finds a darker blob in liver or kidney and
stays silent on a brighter one (unseen kidney tumours are 71 % iso- or hyperdense, docs/training.md,
forty-ninth round). With this probability a lesion whose density is a level of its organ gets a level
drawn uniformly from those the training diseases show in any organ (share >= MIN_SHARE), named for its
own organ; calcific, fluid and lung densities keep their draw. The organ's id for that level is in the
vocabulary and, for every organ of the six training types, in a training disease's own profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from malenia.errors import InputError

MIXED_ASPECTS = ("shape", "density_variation", "surface")
MIN_SHARE = 0.05  # a description below this share of every disease's profile is too rare to count as shown
LEVELS = ("hypodense", "isodense", "hyperdense")  # density.<level>.<organ>: the levels a lesion is read at against its host


@dataclass(frozen=True)
class AttributeMix:
    probability: float
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # aspect -> descriptions to draw from
    density_probability: float = 0.0
    levels: tuple[str, ...] = ()  # density levels to draw from (LEVELS the diseases show)

    @staticmethod
    def of(table, diseases: Sequence[str], probability: float, density_probability: float = 0.0) -> "AttributeMix":
        """The mix over the descriptions `diseases` show (share ≥ MIN_SHARE) for each mixed aspect, and over
        the density levels they show in any organ."""
        for name, p in (("--mix-attributes", probability), ("--mix-density", density_probability)):
            if not 0.0 <= p <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {p}")
        choices = {}
        for aspect in MIXED_ASPECTS:
            shown = {i for d in diseases for i, p in table.profile(d)[aspect].items() if p >= MIN_SHARE}
            if len(shown) > 1:
                choices[aspect] = tuple(sorted(shown))
        shown_levels = {_level(i) for d in diseases for i, p in table.profile(d)["density"].items() if p >= MIN_SHARE}
        levels = tuple(lv for lv in LEVELS if lv in shown_levels)
        return AttributeMix(float(probability), choices, float(density_probability), levels if len(levels) > 1 else ())

    @property
    def active(self) -> bool:
        return self.probability > 0 and bool(self.choices)

    @property
    def density_active(self) -> bool:
        return self.density_probability > 0 and bool(self.levels)

    def apply(self, attrs: dict[str, list[str]], rng: np.random.Generator) -> list[str]:
        """Re-draws the mixed aspects of `attrs` in place with probability `probability`, then the density
        level with `density_probability`; returns the aspects re-drawn. Draws nothing from `rng` for a part
        that is inactive, so a dataset without mixing is the same as before mixing existed."""
        mixed: list[str] = []
        if self.active and rng.random() < self.probability:
            for aspect, ids in self.choices.items():
                attrs[aspect] = [ids[int(rng.integers(len(ids)))]]
            mixed = list(self.choices)
        if self.density_active and rng.random() < self.density_probability:
            density = (attrs.get("density") or [""])[0]
            if _level(density) is not None:
                organ = density.rsplit(".", 1)[1]
                attrs["density"] = [f"density.{self.levels[int(rng.integers(len(self.levels)))]}.{organ}"]
                mixed.append("density")
        return mixed

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"probability": self.probability, "aspects": {a: list(v) for a, v in self.choices.items()}}
        if self.density_active:
            out["density"] = {"probability": self.density_probability, "levels": list(self.levels)}
        return out


def _level(density_id: str) -> str | None:
    """'hyperdense' of 'density.hyperdense.kidney'; None for calcific, fluid, lung and other densities."""
    parts = density_id.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "density" and parts[1] in LEVELS else None
