"""Slicer terminology files and SNOMED CT codes of the lesion kinds and organs; result dataclasses."""

from __future__ import annotations

import json

import pytest
from pydicom.sr.codedict import codes

from malenia.aspects import ALL_DISEASES, ASPECTS
from malenia.infer.results import AspectMatch, DiseaseCall, LesionResult, SegmentationResult
from malenia.infer.terminology import ANATOMIC_TERM_FILE, SEGMENTATION_TERM_FILE, Terminology, laterality_of, organ_of
from malenia.paths import resources_dir

FOLDER = resources_dir() / "terminology"


def test_term_files_follow_slicer_format():
    seg = json.loads((FOLDER / SEGMENTATION_TERM_FILE).read_text(encoding="utf-8"))
    anat = json.loads((FOLDER / ANATOMIC_TERM_FILE).read_text(encoding="utf-8"))
    assert seg["SegmentationCategoryTypeContextName"] and anat["AnatomicContextName"]
    assert seg["@schema"].endswith("segment-context-schema.json#")
    assert anat["@schema"].endswith("anatomic-context-schema.json#")
    for category in seg["SegmentationCodes"]["Category"]:
        assert category["showAnatomy"] is True  # lesion kinds take an anatomic region
        for entry in [category, *category["Type"]]:
            assert set(entry) >= {"CodingSchemeDesignator", "CodeValue", "CodeMeaning"}
        for t in category["Type"]:
            assert len(t["recommendedDisplayRGBValue"]) == 3
    for region in anat["AnatomicCodes"]["AnatomicRegion"]:
        assert set(region) >= {"CodingSchemeDesignator", "CodeValue", "CodeMeaning"}


# Independent reference: pydicom's SNOMED CT dictionary (DICOM PS3.16). Calculus (56381008) is not
# in it; it is the morphology SNOMED CT itself uses for gallstone and kidney stone.
EXPECTED = {
    "colon_tumor": (codes.SCT.Neoplasm, codes.SCT.Colon),
    "lung_tumor": (codes.SCT.Neoplasm, codes.SCT.Lung),
    "liver_tumor": (codes.SCT.Neoplasm, codes.SCT.Liver),
    "pancreas_tumor": (codes.SCT.Neoplasm, codes.SCT.Pancreas),
    "kidney_cyst": (codes.SCT.Cyst, codes.SCT.Kidney),
    "gallstone": ("56381008", codes.SCT.Gallbladder),
    "hepatic_vessel_tumor": (codes.SCT.Neoplasm, codes.SCT.Liver),
    "pancreas_cyst": (codes.SCT.Cyst, codes.SCT.Pancreas),
    "kidney_tumor": (codes.SCT.Neoplasm, codes.SCT.Kidney),
    "liver_cyst": (codes.SCT.Cyst, codes.SCT.Liver),
    "gallbladder_tumor": (codes.SCT.Neoplasm, codes.SCT.Gallbladder),
    "kidney_stone": ("56381008", codes.SCT.Kidney),
}


@pytest.mark.parametrize("disease", ALL_DISEASES)
def test_every_disease_has_snomed_codes(disease):
    term = Terminology.load().for_lesion(disease)
    kind, region = EXPECTED[disease]
    assert term.category.value == codes.SCT.MorphologicallyAbnormalStructure.value
    assert term.type.value == (kind if isinstance(kind, str) else kind.value)
    assert term.anatomic_region.value == region.value
    assert term.type.scheme == term.anatomic_region.scheme == "SCT"
    s = term.slicer_string()
    assert s.count("~") == 6 and s.split("~")[0] == Terminology.load().segmentation_context
    assert s.split("~")[2] == "^".join(term.type.slicer())


def test_colours_and_names_are_distinct():
    from malenia.knowledge.table import KnowledgeTable

    t = Terminology.load()
    # every disease of the installation's table (the twelve, and its own site profiles) has its codes
    assert set(t.diseases) == set(KnowledgeTable.load().diseases) >= set(ALL_DISEASES)
    colours = [t.for_lesion(d).color for d in t.diseases]
    names = [t.display_name(d) for d in t.diseases]
    assert len(set(colours)) == len(colours) and len(set(names)) == len(names)


def test_laterality_only_for_paired_organs_and_unknown_diseases():
    t = Terminology.load()
    assert t.for_lesion("kidney_tumor", location_id="location.kidney.bilateral").anatomic_region_modifier.value == "51440002"
    assert t.for_lesion("lung_tumor", location_id="location.lung.right_middle").anatomic_region_modifier.meaning == "Right"
    assert t.for_lesion("liver_tumor", location_id="location.liver.left_lobe").anatomic_region_modifier is None
    # A location in another organ than the disease's says nothing about the disease organ's side.
    assert t.for_lesion("lung_tumor", location_id="location.kidney.left").anatomic_region_modifier is None
    # A user-defined disease: generic lesion kind, organ from the knowledge table or the location.
    generic = t.for_lesion("adrenal_adenoma", organ=None, location_id="location.kidney.left")
    assert generic.type.value == "52988006" and generic.anatomic_region.value == "64033007"
    assert generic.display_name == "Adrenal adenoma"
    assert t.for_lesion(None).anatomic_region is None
    assert laterality_of("location.lung.left_upper") == "Left" and organ_of("location.lung.left_upper") == "lung"
    assert laterality_of("location.pancreas.head") is None


def _attrs():
    return {a: AspectMatch(f"{a}.x", f"{a} text", 0.5) for a in ASPECTS}


def test_lesion_result_requires_all_aspects():
    with pytest.raises(ValueError, match="missing"):
        LesionResult(1, DiseaseCall("liver_cyst", "Liver cyst", 0.5), {a: v for a, v in _attrs().items() if a != "surface"})
    with pytest.raises(ValueError, match="positive"):
        LesionResult(0, DiseaseCall("liver_cyst", "Liver cyst", 0.5), _attrs())
    lesion = LesionResult(2, DiseaseCall("liver_cyst", "Liver cyst", 0.5, [("kidney_cyst", 0.3)]), _attrs())
    assert LesionResult.from_json(json.loads(json.dumps(lesion.to_json()))) == lesion


def test_report_version_is_checked():
    with pytest.raises(ValueError, match="not readable"):
        SegmentationResult.from_json({"format": "malenia-segment-report", "schema_version": "2.0.0"})
    schema = json.loads((resources_dir() / "report.schema.json").read_text(encoding="utf-8"))
    assert schema["$id"].endswith(":1.2.0") and schema["properties"]["schema_version"]["enum"] == ["1.0.0", "1.1.0", "1.2.0"]


def test_slicer_terminology_logic_reads_the_files():
    """3D Slicer's Terminologies logic (slicer-core) loads both contexts and finds every disease's codes."""
    import slicer
    import vtk

    t = Terminology.load()
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert logic.LoadContextFromFile(str(FOLDER / SEGMENTATION_TERM_FILE))
    assert logic.LoadContextFromFile(str(FOLDER / ANATOMIC_TERM_FILE))
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    assert t.segmentation_context in [names.GetValue(i) for i in range(names.GetNumberOfValues())]
    category = slicer.vtkSlicerTerminologyCategory()
    assert logic.GetNumberOfCategoriesInTerminology(t.segmentation_context) == 1
    logic.GetNthCategoryInTerminology(t.segmentation_context, 0, category)
    assert category.GetCodeValue() == t.category.value and category.GetShowAnatomy()
    types, regions = set(), {}
    for i in range(logic.GetNumberOfTypesInTerminologyCategory(t.segmentation_context, category)):
        typ = slicer.vtkSlicerTerminologyType()
        logic.GetNthTypeInTerminologyCategory(t.segmentation_context, category, i, typ)
        types.add(typ.GetCodeValue())
    for i in range(logic.GetNumberOfRegionsInRegionContext(t.anatomic_context)):
        region = slicer.vtkSlicerTerminologyType()
        logic.GetNthRegionInRegionContext(t.anatomic_context, i, region)
        regions[region.GetCodeValue()] = logic.GetNumberOfRegionModifierInRegion(t.anatomic_context, region)
    for disease in ALL_DISEASES:
        term = t.for_lesion(disease, location_id="location.kidney.right")
        assert term.type.value in types and term.anatomic_region.value in regions
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(term.slicer_string(), entry)
        assert entry.GetTypeObject().GetCodeValue() == term.type.value
        assert entry.GetRegionObject().GetCodeValue() == term.anatomic_region.value
    assert regions["64033007"] == 3 and regions["10200004"] == 0  # kidney: left/right/bilateral; liver: none
