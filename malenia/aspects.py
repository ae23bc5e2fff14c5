"""The eight elemental visual attribute aspects every lesion is described by (paper Sec. 3.1).

The order is fixed: it is the order of positives per lesion, of CMKI's concatenation and of
report columns. Keys are stable identifiers used in data files; names are for people.
"""

from __future__ import annotations

ASPECTS: tuple[str, ...] = (
    "location",
    "shape",
    "density",
    "density_variation",
    "surface",
    "enhancement",
    "relationship",
    "specific_features",
)

ASPECT_NAMES: dict[str, str] = {
    "location": "Location",
    "shape": "Shape",
    "density": "Density",
    "density_variation": "Density variations",
    "surface": "Surface characteristics",
    "enhancement": "Enhancement status",
    "relationship": "Relationship with surrounding organs",
    "specific_features": "Specific features",
}

# Seen (training) and unseen (zero-shot test only) lesion types of the paper's protocol (Sec. 4.1).
SEEN_DISEASES: tuple[str, ...] = (
    "colon_tumor",
    "lung_tumor",
    "liver_tumor",
    "pancreas_tumor",
    "kidney_cyst",
    "gallstone",
)
UNSEEN_DISEASES: tuple[str, ...] = (
    "hepatic_vessel_tumor",
    "pancreas_cyst",
    "kidney_tumor",
    "liver_cyst",
    "gallbladder_tumor",
    "kidney_stone",
)
ALL_DISEASES: tuple[str, ...] = SEEN_DISEASES + UNSEEN_DISEASES

# Not in the paper: validation-only lesion types, for choosing models by zero-shot detection without
# touching the unseen test types. Each is a training disease's look drawn in an organ where no training
# disease shows it (malenia.data.synthesis.novel), as every unseen type is, but in combinations that no
# unseen type is. Never trained on, never in the knowledge table: the right name for one is "unclassified".
NOVEL_TYPES: tuple[str, ...] = (
    "liver_calcification",
    "pancreas_calcification",
    "lung_cyst",
)


# Not in the paper: training-only lesion types, an augmentation of look against organ. Each is a training
# disease's look drawn in an organ that no seen, unseen or novel type uses, so that the network meets that look
# outside the organ it trained it in without any test or validation question being answered in training
# (malenia.data.synthesis.novel). The vocabulary has no location there: the report gives it as free text.
TRANSPLANT_TYPES: tuple[str, ...] = (
    "spleen_calcification",
    "stomach_mass",
)


def right_name(disease: str | None) -> str | None:
    """The disease name a report should give a lesion of type `disease`: itself, or None ("unclassified") for a
    novel or transplanted type, which no knowledge table profiles."""
    return None if disease in NOVEL_TYPES or disease in TRANSPLANT_TYPES else disease


def organ_of(location_id: str | None) -> str | None:
    """The organ part of a location id (`location.<organ>.<where>`), else None."""
    if not location_id:
        return None
    parts = location_id.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "location" else None
