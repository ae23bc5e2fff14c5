"""Per-disease render settings: what kind of lesion it is and how big it is drawn.

The knowledge table decides *which* attributes a lesion has; these settings decide the things
the vocabulary does not describe: the size distribution (diameter, log-uniform within the range,
from typical sizes reported in the source datasets: KiTS23, MSD Task03/06/07/08/10) and the
rendering kind:

    mass   a solid or cystic lesion inside an organ's parenchyma (may abut, invade, be exophytic)
    stone  a small calcified body in a lumen or collecting system
    wall   a mass of a hollow organ's wall (colon: wall thickening narrowing the lumen)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from malenia.aspects import ALL_DISEASES, NOVEL_TYPES, TRANSPLANT_TYPES


@dataclass(frozen=True)
class RenderProfile:
    disease: str
    organ: str  # vocabulary organ
    kind: str  # "mass" | "stone" | "wall"
    diameter_mm: tuple[float, float]
    expansile: bool  # pushes the surrounding tissue aside (mass effect)
    cystic: bool = False  # fluid content: no texture beyond noise

    def sample_radius(self, rng: np.random.Generator, diameter_mm: tuple[float, float] | None = None) -> float:
        """Half a diameter drawn log-uniformly from `diameter_mm` (`synth --diameter`), else the profile's range."""
        lo, hi = diameter_mm or self.diameter_mm
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))) / 2.0)


PROFILES: dict[str, RenderProfile] = {p.disease: p for p in (
    RenderProfile("liver_tumor", "liver", "mass", (15.0, 70.0), True),
    RenderProfile("liver_cyst", "liver", "mass", (8.0, 45.0), True, cystic=True),
    RenderProfile("hepatic_vessel_tumor", "liver", "mass", (12.0, 50.0), True),
    RenderProfile("pancreas_tumor", "pancreas", "mass", (15.0, 40.0), True),
    RenderProfile("pancreas_cyst", "pancreas", "mass", (8.0, 35.0), True, cystic=True),
    RenderProfile("kidney_tumor", "kidney", "mass", (15.0, 70.0), True),
    RenderProfile("kidney_cyst", "kidney", "mass", (8.0, 45.0), True, cystic=True),
    RenderProfile("kidney_stone", "kidney", "stone", (3.0, 12.0), False),
    RenderProfile("gallstone", "gallbladder", "stone", (4.0, 20.0), False),
    RenderProfile("gallbladder_tumor", "gallbladder", "mass", (10.0, 30.0), False),
    RenderProfile("colon_tumor", "colon", "wall", (20.0, 60.0), False),
    RenderProfile("lung_tumor", "lung", "mass", (8.0, 45.0), False),
    # Validation-only types (malenia.data.synthesis.novel): a gallstone's calcific body in parenchyma
    # (calcified granulomas; chronic pancreatitis), drawn as a non-expansile mass since a stone's placement
    # means a lumen or a renal sinus; a kidney cyst's fluid in a lung (a bronchogenic cyst).
    RenderProfile("liver_calcification", "liver", "mass", (5.0, 15.0), False),
    RenderProfile("pancreas_calcification", "pancreas", "mass", (5.0, 12.0), False),
    RenderProfile("lung_cyst", "lung", "mass", (8.0, 40.0), True, cystic=True),
    # Training-only (malenia.aspects.TRANSPLANT_TYPES): a calcified splenic granuloma, sized as the
    # validation calcifications are so that it teaches the look, not a size.
    RenderProfile("spleen_calcification", "spleen", "mass", (4.0, 15.0), False),
    # A soft-tissue mass on the stomach wall growing into the gastric fluid (a polypoid gastric tumour), sized as
    # a wall mass of a small hollow organ is: the look of a solid mass in a fluid-filled lumen.
    RenderProfile("stomach_mass", "stomach", "mass", (10.0, 30.0), False),
)}

assert set(PROFILES) == set(ALL_DISEASES) | set(NOVEL_TYPES) | set(TRANSPLANT_TYPES), "every lesion type needs a render profile"
