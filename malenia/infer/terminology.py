"""Standard codes (SNOMED CT) for the lesions Malenia reports, in Slicer's terminology format.

Data lives in `Resources/terminology/`:
    SegmentationCategoryTypeModifier-Malenia.term.json   lesion kinds (category/type), Slicer format
    AnatomicRegionAndModifier-Malenia.term.json          organs (anatomic region + laterality), Slicer format
    malenia-lesions.json                                 disease key -> kind, organ, display name, colour

Slicer loads the two .term.json files as terminology contexts; a segment refers to them with
its terminology string `context~category~type~typeModifier~anatomicContext~region~regionModifier`,
each code written `scheme^value^meaning`. The same codes go into DICOM SEG segment descriptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from malenia.aspects import organ_of
from malenia.paths import resources_dir

if TYPE_CHECKING:
    from malenia.infer.results import LesionResult

SEGMENTATION_TERM_FILE = "SegmentationCategoryTypeModifier-Malenia.term.json"
ANATOMIC_TERM_FILE = "AnatomicRegionAndModifier-Malenia.term.json"
LESION_MAP_FILE = "malenia-lesions.json"

# Laterality words in location description ids (e.g. `location.kidney.left`, `location.lung.right_upper`).
_LATERALITY_WORDS = {"left": "Left", "right": "Right", "bilateral": "Bilateral"}


@dataclass(frozen=True)
class Code:
    scheme: str  # coding scheme designator, e.g. "SCT"
    value: str
    meaning: str

    def slicer(self) -> list[str]:
        return [self.scheme, self.value, self.meaning]

    def to_json(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}

    def to_pydicom(self):
        from pydicom.sr.coding import Code as PydicomCode

        return PydicomCode(self.value, self.scheme, self.meaning)

    @staticmethod
    def from_term(entry: dict[str, Any]) -> "Code":
        return Code(entry["CodingSchemeDesignator"], str(entry["CodeValue"]), entry["CodeMeaning"])


@dataclass(frozen=True)
class LesionTerm:
    """How one lesion is named, coloured and coded."""

    disease: str | None  # disease key, None for the generic "lesion"
    display_name: str
    color: tuple[int, int, int]  # 0-255 RGB
    organ: str | None
    segmentation_context: str
    category: Code
    type: Code
    anatomic_context: str
    anatomic_region: Code | None = None
    anatomic_region_modifier: Code | None = None

    @property
    def color_float(self) -> tuple[float, float, float]:
        return tuple(round(c / 255.0, 6) for c in self.color)  # type: ignore[return-value]

    def slicer_terminology(self) -> dict[str, Any]:
        """The terminology dict that slicerio reads and writes."""
        term: dict[str, Any] = {
            "contextName": self.segmentation_context,
            "category": self.category.slicer(),
            "type": self.type.slicer(),
            "anatomicContextName": self.anatomic_context,
        }
        if self.anatomic_region is not None:
            term["anatomicRegion"] = self.anatomic_region.slicer()
            if self.anatomic_region_modifier is not None:
                term["anatomicRegionModifier"] = self.anatomic_region_modifier.slicer()
        return term

    def slicer_string(self) -> str:
        """`contextName~category~type~typeModifier~anatomicContextName~anatomicRegion~anatomicRegionModifier`."""
        empty = "^^"
        parts = [
            self.segmentation_context,
            "^".join(self.category.slicer()),
            "^".join(self.type.slicer()),
            empty,
            self.anatomic_context,
            "^".join(self.anatomic_region.slicer()) if self.anatomic_region else empty,
            "^".join(self.anatomic_region_modifier.slicer()) if self.anatomic_region and self.anatomic_region_modifier else empty,
        ]
        return "~".join(parts)

    def codes_json(self) -> dict[str, Any]:
        return {
            "category": self.category.to_json(),
            "type": self.type.to_json(),
            "anatomic_region": self.anatomic_region.to_json() if self.anatomic_region else None,
            "anatomic_region_modifier": self.anatomic_region_modifier.to_json() if self.anatomic_region_modifier else None,
        }


def laterality_of(location_id: str | None) -> str | None:
    """'Left', 'Right' or 'Bilateral' from a location description id, else None."""
    if not location_id:
        return None
    last = location_id.split(".")[-1]
    for word in last.split("_"):
        if word in _LATERALITY_WORDS:
            return _LATERALITY_WORDS[word]
    return None


class Terminology:
    """The Malenia lesion terminology: loads and cross-checks the files in Resources/terminology/."""

    def __init__(self, folder: Path, seg_doc: dict[str, Any], anat_doc: dict[str, Any], lesion_map: dict[str, Any]):
        self.folder = folder
        self.segmentation_context: str = seg_doc["SegmentationCategoryTypeContextName"]
        self.anatomic_context: str = anat_doc["AnatomicContextName"]
        if lesion_map.get("segmentation_context") != self.segmentation_context:
            raise ValueError(f"{LESION_MAP_FILE}: segmentation_context does not name {SEGMENTATION_TERM_FILE}'s context")
        if lesion_map.get("anatomic_context") != self.anatomic_context:
            raise ValueError(f"{LESION_MAP_FILE}: anatomic_context does not name {ANATOMIC_TERM_FILE}'s context")

        categories = {str(c["CodeValue"]): c for c in seg_doc["SegmentationCodes"]["Category"]}
        cat = categories.get(str(lesion_map["category"]))
        if cat is None:
            raise ValueError(f"{LESION_MAP_FILE}: category {lesion_map['category']} is not in {SEGMENTATION_TERM_FILE}")
        self.category = Code.from_term(cat)
        self._types = {str(t["CodeValue"]): Code.from_term(t) for t in cat.get("Type", [])}
        self._regions: dict[str, Code] = {}
        self._modifiers: dict[str, dict[str, Code]] = {}
        for region in anat_doc["AnatomicCodes"]["AnatomicRegion"]:
            code = Code.from_term(region)
            self._regions[code.value] = code
            self._modifiers[code.value] = {m["CodeMeaning"]: Code.from_term(m) for m in region.get("Modifier", [])}
        self._organs: dict[str, str] = dict(lesion_map["organs"])
        for organ, value in self._organs.items():
            if str(value) not in self._regions:
                raise ValueError(f"{LESION_MAP_FILE}: organ {organ!r} code {value} is not in {ANATOMIC_TERM_FILE}")
        self._diseases: dict[str, dict[str, Any]] = dict(lesion_map["diseases"])
        self._generic: dict[str, Any] = dict(lesion_map["generic"])
        for key, entry in list(self._diseases.items()) + [("generic", self._generic)]:
            if str(entry["type"]) not in self._types:
                raise ValueError(f"{LESION_MAP_FILE}: {key} type {entry['type']} is not in {SEGMENTATION_TERM_FILE}")
            if "organ" in entry and entry["organ"] not in self._organs:
                raise ValueError(f"{LESION_MAP_FILE}: {key} organ {entry['organ']!r} has no code")
            if len(entry["color"]) != 3 or not all(0 <= int(c) <= 255 for c in entry["color"]):
                raise ValueError(f"{LESION_MAP_FILE}: {key} colour must be three 0-255 values")

    @staticmethod
    def load(folder: str | Path | None = None) -> "Terminology":
        folder = Path(folder) if folder is not None else resources_dir() / "terminology"
        return _load_cached(str(folder))

    @property
    def diseases(self) -> tuple[str, ...]:
        return tuple(self._diseases)

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(self._organs)

    def display_name(self, disease: str | None) -> str:
        entry = self._diseases.get(disease or "")
        if entry is not None:
            return entry["display_name"]
        return disease.replace("_", " ").capitalize() if disease else self._generic["display_name"]

    def for_lesion(self, disease: str | None, organ: str | None = None, location_id: str | None = None) -> LesionTerm:
        """Codes for a lesion of `disease` (None or unknown: the generic 'lesion' kind).

        The organ comes from the disease entry, else `organ`, else the location description id.
        Laterality (left/right/bilateral) comes from the location id, where the organ allows it.
        """
        entry = self._diseases.get(disease or "")
        if entry is None:
            entry = self._generic
            organ = organ or organ_of(location_id)
        else:
            organ = entry.get("organ", organ)
        region = self._regions[str(self._organs[organ])] if organ in self._organs else None
        modifier = None
        if region is not None:
            side = laterality_of(location_id)
            if side is not None and organ_of(location_id) in (None, organ):
                modifier = self._modifiers[region.value].get(side)
        return LesionTerm(
            disease=disease if disease in self._diseases else None,
            display_name=entry["display_name"] if entry is not self._generic else self.display_name(disease),
            color=tuple(int(c) for c in entry["color"]),  # type: ignore[arg-type]
            organ=organ,
            segmentation_context=self.segmentation_context,
            category=self.category,
            type=self._types[str(entry["type"])],
            anatomic_context=self.anatomic_context,
            anatomic_region=region,
            anatomic_region_modifier=modifier,
        )


@lru_cache(maxsize=4)
def _load_cached(folder: str) -> Terminology:
    path = Path(folder)

    def read(name: str) -> dict[str, Any]:
        with open(path / name, encoding="utf-8") as f:
            return json.load(f)

    return Terminology(path, read(SEGMENTATION_TERM_FILE), read(ANATOMIC_TERM_FILE), read(LESION_MAP_FILE))


@dataclass(frozen=True)
class SegmentSpec:
    """Name, colour and codes of one lesion's segment, shared by the .seg.nrrd, DICOM SEG and HTML writers."""

    label: int
    name: str
    term: LesionTerm


def lesion_segment(lesion: "LesionResult", terminology: Terminology) -> tuple[LesionTerm, str]:
    """One lesion's terminology entry and segment name (before numbering): its disease's, or for a lesion called
    unclassified the generic lesion of its organ or location, marked so (its closest disease is not its name)."""
    location = lesion.attributes["location"].id if "location" in lesion.attributes else None
    disease = None if lesion.disease.unclassified else lesion.disease.name
    term = terminology.for_lesion(disease, organ=lesion.disease.organ, location_id=location)
    if lesion.disease.unclassified:
        return term, f"{term.display_name} (unclassified)"
    return term, lesion.disease.display_name or term.display_name


def segment_specs(lesions: "list[LesionResult]", terminology: Terminology | None = None) -> list[SegmentSpec]:
    """One spec per lesion, in lesion order: named by disease (+ ' 1', ' 2', ... when a name repeats)."""
    terminology = terminology or Terminology.load()
    names, terms = [], []
    for lesion in lesions:
        term, name = lesion_segment(lesion, terminology)
        names.append(name)
        terms.append(term)
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    specs = []
    for lesion, name, term in zip(lesions, names, terms):
        if counts[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name} {seen[name]}"
        specs.append(SegmentSpec(int(lesion.label), name, term))
    return specs
