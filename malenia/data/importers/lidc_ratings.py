"""LIDC-IDRI radiologists' ratings -> the project's attribute vocabulary (docs/data.md, "LIDC nodules").

The ratings are the majority vote of up to four radiologists, as LIDC codes (nodules.csv `*_value`):
  Sphericity 1 linear .. 3 ovoid .. 5 round;  Lobulation / Spiculation 1 none .. 5 marked;
  Margin 1 poorly defined .. 5 sharp;  Texture 1 non-solid (ground-glass), 2 non-solid/mixed,
  3 part-solid/mixed, 4 solid/mixed, 5 solid;  Calcification 1 popcorn, 2 laminated, 3 solid,
  4 non-central, 5 central, 6 absent;  InternalStructure 1 soft tissue, 2 fluid, 3 fat, 4 air.

Rules (every id is a vocabulary id; an aspect the ratings do not speak to stays empty):
  shape    lobulation >= 4 -> lobulated; lobulation 3 with sphericity <= 3 -> irregular (bulging but
           neither round nor a smooth oval); sphericity >= 4 -> round; otherwise -> oval.
  surface  spiculation >= 3 -> spiculated; else margin >= 4 -> well-defined; else (margin <= 3,
           "medium" is not sharp) -> ill-defined.
  density  calcification 3 (solid: the whole nodule calcified) -> dense; texture 1 -> ground-glass;
           texture 2-3 -> mixed (ground-glass with a solid part); texture 4-5 -> soft tissue.
  density_variation  texture 2-3 (mixed) or a focal calcification (1, 2, 4, 5) -> heterogeneous;
           otherwise not rated (empty): LIDC has no homogeneity rating.
  specific_features  calcification 1-5 -> calcification; lobulation >= 3 -> lobulation; internal
           structure air -> cavitation, fluid -> cystic change; fat is not a lung finding in the
           vocabulary and is dropped (noted); none of these -> "no specific features".
           Spiculation has no specific-feature id: it is carried by surface.spiculated.
  location, enhancement, relationship: not in the ratings (the planting step measures location).
Malignancy (1-5) and Diagnosis stay metadata: the knowledge table has no benign-nodule disease, so
every nodule is a `lung_tumor` lesion and its malignancy rides in extra.
"""

from __future__ import annotations

from typing import Mapping

from malenia.errors import InputError

RATING_RANGES = {
    "Sphericity": (1, 5), "Lobulation": (1, 5), "Spiculation": (1, 5), "Margin": (1, 5),
    "Texture": (1, 5), "Calcification": (1, 6), "InternalStructure": (1, 4), "Malignancy": (1, 5),
    "Subtlety": (1, 5),
}
CALCIFICATION_ABSENT = 6
CALCIFICATION_SOLID = 3
STRUCTURE_FINDING = {2: "specific_features.cystic_change", 4: "specific_features.cavitation"}
STRUCTURE_FAT = 3


def rating(row: Mapping[str, str], name: str) -> int:
    """The integer LIDC code of one rating (`<name>_value`), range-checked."""
    raw = str(row.get(f"{name}_value", "")).strip()
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(f"rating {name} is not a number: {raw!r}") from None
    lo, hi = RATING_RANGES[name]
    if not lo <= value <= hi:
        raise InputError(f"rating {name}={value} is outside the LIDC range {lo}-{hi}")
    return value


def shape_id(sphericity: int, lobulation: int) -> str:
    if lobulation >= 4:
        return "shape.lobulated"
    if lobulation == 3 and sphericity <= 3:
        return "shape.irregular"
    return "shape.round" if sphericity >= 4 else "shape.oval"


def surface_id(margin: int, spiculation: int) -> str:
    if spiculation >= 3:
        return "surface.spiculated"
    return "surface.well_defined" if margin >= 4 else "surface.ill_defined"


def density_id(texture: int, calcification: int) -> str:
    if calcification == CALCIFICATION_SOLID:
        return "density.lung.dense"
    if texture == 1:
        return "density.lung.ground_glass"
    return "density.lung.mixed" if texture in (2, 3) else "density.lung.soft_tissue"


def specific_feature_ids(calcification: int, lobulation: int, structure: int, notes: list[str]) -> list[str]:
    out = []
    if calcification != CALCIFICATION_ABSENT:
        out.append("specific_features.calcification")
    if lobulation >= 3:
        out.append("specific_features.lobulation")
    if structure in STRUCTURE_FINDING:
        out.append(STRUCTURE_FINDING[structure])
    elif structure == STRUCTURE_FAT:
        notes.append("internal structure 'fat' has no lung finding in the vocabulary; dropped")
    return out or ["specific_features.none"]


def map_ratings(row: Mapping[str, str]) -> tuple[dict[str, list[str]], list[str]]:
    """Vocabulary ids per aspect for one nodules.csv row, and notes on what could not be mapped."""
    r = {name: rating(row, name) for name in
         ("Sphericity", "Lobulation", "Spiculation", "Margin", "Texture", "Calcification", "InternalStructure")}
    notes: list[str] = []
    focal_calcification = r["Calcification"] not in (CALCIFICATION_ABSENT, CALCIFICATION_SOLID)
    attrs = {
        "shape": [shape_id(r["Sphericity"], r["Lobulation"])],
        "surface": [surface_id(r["Margin"], r["Spiculation"])],
        "density": [density_id(r["Texture"], r["Calcification"])],
        "density_variation": ["density_variation.heterogeneous"] if r["Texture"] in (2, 3) or focal_calcification else [],
        "specific_features": specific_feature_ids(r["Calcification"], r["Lobulation"], r["InternalStructure"], notes),
    }
    return attrs, notes


def ratings_metadata(row: Mapping[str, str]) -> dict[str, object]:
    """The raw ratings (code and text) kept in a lesion's extra, malignancy included."""
    out: dict[str, object] = {}
    for name in RATING_RANGES:
        if f"{name}_value" in row:
            out[name] = {"value": rating(row, name), "text": str(row.get(name, "")).strip()}
    if "Diagnosis" in row:
        out["Diagnosis"] = str(row["Diagnosis"]).strip()
    return out
