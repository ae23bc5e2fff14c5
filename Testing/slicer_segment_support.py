"""Real `malenia segment` output folders for the MaleniaSegment tests (no trained model needed).

The CT is real (TotalSegmentator example, its organ masks; the DICOM example series). Lesions
are spheres placed inside real organs. Each lesion's attribute matches are what a model that
agrees with the knowledge table would give: per aspect the disease's profile probabilities
over the organ's descriptions (location: the side the lesion really lies on). The disease call
comes from the real knowledge-table inference, and the folder is written by the real writer
(malenia.infer.outputs.write_outputs), so the module imports exactly what the command produces.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
for _folder in (REPO / "MaleniaSegment", REPO):  # the module's Lib, and MaleniaCommon beside it
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

TOTALSEG = REPO.parent / "shared" / "data" / "ct" / "totalseg-example"


@dataclass(frozen=True)
class PlannedLesion:
    disease: str
    organ_label: str  # TotalSegmentator class name the lesion is placed in
    radius_mm: float


PLANNED = (
    PlannedLesion("kidney_tumor", "kidney_right", 11.0),
    PlannedLesion("liver_cyst", "liver", 13.0),
    PlannedLesion("kidney_cyst", "kidney_left", 7.0),
)


def _sphere_in(mask: np.ndarray, image: sitk.Image, radius_mm: float) -> np.ndarray:
    """A sphere around the organ voxel nearest the organ's centroid, clipped to the organ."""
    idx = np.argwhere(mask)
    centre = idx[np.argmin(((idx - idx.mean(axis=0)) ** 2).sum(axis=1))]
    sz, sy, sx = image.GetSpacing()[::-1]
    zz, yy, xx = np.indices(mask.shape)
    d2 = ((zz - centre[0]) * sz) ** 2 + ((yy - centre[1]) * sy) ** 2 + ((xx - centre[2]) * sx) ** 2
    return (d2 <= radius_mm ** 2) & mask


def _attribute_matches(disease: str, side: str | None, table, vocab) -> dict[str, dict[str, float]]:
    from malenia.aspects import ASPECTS

    organ = table.organ(disease)
    matches: dict[str, dict[str, float]] = {}
    for aspect in ASPECTS:
        profile = {i: p for i, p in table.profile(disease)[aspect].items() if i in vocab}
        if aspect == "location" and side is not None:
            true_id = f"location.{organ}.{side}"
            rest = {i: p for i, p in profile.items() if i != true_id}
            total = sum(rest.values()) or 1.0
            profile = {true_id: 0.82, **{i: 0.18 * p / total for i, p in rest.items()}}
        if aspect == "enhancement":  # the example scan is non-contrast (aorta about 42 HU)
            profile = {"enhancement.non_contrast": 0.93, "enhancement.contrast": 0.07}
        total = sum(profile.values())
        matches[aspect] = {i: p / total for i, p in profile.items()}
    return matches


def _lesion_result(label: int, disease: str, side: str | None, table, vocab, terminology, ruled_out=(),
                   unclassified: bool = False):
    """`ruled_out`: trained diseases its appearance check excludes (report field `appearance`); `unclassified`: the
    call is "unclassified" whatever the posterior says (its closest disease named as malenia.infer.matching does)."""
    from malenia.aspects import ASPECTS
    from malenia.infer.results import AspectMatch, AttributeMatch, DiseaseCall, LesionResult
    from malenia.knowledge.inference import infer_disease

    matches = _attribute_matches(disease, side, table, vocab)
    posterior = infer_disease(matches, table, ruled_out)
    attributes = {}
    for aspect in ASPECTS:
        ranked = sorted(matches[aspect].items(), key=lambda kv: -kv[1])
        (best, score), rest = ranked[0], ranked[1:5]
        attributes[aspect] = AspectMatch(best, vocab.text(best), score,
                                         [AttributeMatch(i, vocab.text(i), s) for i, s in rest])
    if posterior.unclassified or unclassified:  # the closest disease, as malenia.infer.matching.disease_call gives it
        ranked = list(posterior.alternatives) if posterior.unclassified else \
            [(posterior.name, posterior.probability)] + list(posterior.alternatives)
        (name, p), rest = ranked[0], ranked[1:]
        call = DiseaseCall(name, terminology.display_name(name), p, rest, True, None)
    else:
        call = DiseaseCall(name=posterior.name, display_name=terminology.display_name(posterior.name),
                           probability=posterior.probability, alternatives=list(posterior.alternatives),
                           unclassified=False, organ=table.organ(posterior.name))
    look = {"scores": {d: 0.01 for d in ruled_out}, "cut": 0.2, "ruled_out": list(ruled_out)} if ruled_out else None
    return LesionResult(label=label, disease=call, attributes=attributes, appearance=look)


def make_output(out_dir: Path, dicom: bool = False, unclassified: tuple[int, ...] = ()) -> Path:
    """Writes a `malenia segment` output folder for the NIfTI example (or the DICOM series); the lesions labelled
    in `unclassified` are called unclassified."""
    from malenia.infer.outputs import write_outputs
    from malenia.infer.results import Enhancement, ModelInfo, ScanInfo, SegmentationResult
    from malenia.infer.terminology import Terminology
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary

    table, vocab, terminology = KnowledgeTable.load(), Vocabulary.load(), Terminology.load()
    enhancement = Enhancement("enhancement.non_contrast", vocab.text("enhancement.non_contrast"), 0.9, "hu")
    if dicom:
        image, files = read_dicom_example()
        arr = sitk.GetArrayFromImage(image)
        body = (arr > 0) & (arr < 80)
        lab = np.zeros(arr.shape, np.uint8)
        lab[_sphere_in(body, image, 9.0)] = 1
        lesions = [_lesion_result(1, "liver_tumor", None, table, vocab, terminology)]
        scan = ScanInfo.from_image(image, str(TOTALSEG / "example_ct_dicom"), enhancement, dicom_files=files)
    else:
        image = sitk.ReadImage(str(TOTALSEG / "example_ct_sm.nii.gz"))
        organs = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_seg.nii.gz")))
        classes = {v: int(k) for k, v in json.loads((TOTALSEG / "example_seg_classes.json").read_text()).items()}
        lab = np.zeros(organs.shape, np.uint8)
        lesions = []
        for k, plan in enumerate(PLANNED, start=1):
            lab[_sphere_in(organs == classes[plan.organ_label], image, plan.radius_mm) & (lab == 0)] = k
            side = plan.organ_label.split("_")[1] if "_" in plan.organ_label else None
            ruled_out = ("kidney_cyst",) if plan.disease == "kidney_tumor" else ()  # solid: no cyst, by its CT values
            lesions.append(_lesion_result(k, plan.disease, side, table, vocab, terminology, ruled_out,
                                          unclassified=k in unclassified))
        scan = ScanInfo.from_image(image, str(TOTALSEG / "example_ct_sm.nii.gz"), enhancement)
    labels = sitk.GetImageFromArray(lab)
    labels.CopyInformation(image)
    result = SegmentationResult(labels=labels, image=image, scan=scan,
                                model=ModelInfo("malenia-compact", "0.1.0", "0" * 64), lesions=lesions)
    write_outputs(result, out_dir)
    return out_dir


def read_dicom_example() -> tuple[sitk.Image, list[str]]:
    reader = sitk.ImageSeriesReader()
    files = list(reader.GetGDCMSeriesFileNames(str(TOTALSEG / "example_ct_dicom")))
    reader.SetFileNames(files)
    return reader.Execute(), files


def new_scene():
    import slicer

    from MaleniaSegmentLib import mrml_io

    mrml_io.ensure_segmentation_converters()
    return slicer.vtkMRMLScene()
