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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from malenia.errors import InputError

MIXED_ASPECTS = ("shape", "density_variation", "surface")
MIN_SHARE = 0.05  # a description below this share of every disease's profile is too rare to count as shown


@dataclass(frozen=True)
class AttributeMix:
    probability: float
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # aspect -> descriptions to draw from

    @staticmethod
    def of(table, diseases: Sequence[str], probability: float) -> "AttributeMix":
        """The mix over the descriptions `diseases` show (share ≥ MIN_SHARE) for each mixed aspect."""
        if not 0.0 <= probability <= 1.0:
            raise InputError(f"--mix-attributes must be in [0, 1], got {probability}")
        choices = {}
        for aspect in MIXED_ASPECTS:
            shown = {i for d in diseases for i, p in table.profile(d)[aspect].items() if p >= MIN_SHARE}
            if len(shown) > 1:
                choices[aspect] = tuple(sorted(shown))
        return AttributeMix(float(probability), choices)

    @property
    def active(self) -> bool:
        return self.probability > 0 and bool(self.choices)

    def apply(self, attrs: dict[str, list[str]], rng: np.random.Generator) -> list[str]:
        """Re-draws the mixed aspects of `attrs` in place with probability `probability`; returns the
        aspects re-drawn. Draws nothing from `rng` when inactive, so a dataset without mixing is the
        same as before mixing existed."""
        if not self.active or rng.random() >= self.probability:
            return []
        for aspect, ids in self.choices.items():
            attrs[aspect] = [ids[int(rng.integers(len(ids)))]]
        return list(self.choices)

    def to_json(self) -> dict[str, Any]:
        return {"probability": self.probability, "aspects": {a: list(v) for a, v in self.choices.items()}}
