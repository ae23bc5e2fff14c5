"""Outputs of `malenia segment` on real CTs: label map, Slicer segmentation, report.json, report.html, DICOM SEG."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.aspects import ASPECTS
from malenia.data.ct_io import read_ct
from malenia.errors import OutputError
from malenia.infer import outputs
from malenia.infer.results import SCHEMA_VERSION
from malenia.infer.results import (
    AspectMatch,
    AttributeMatch,
    DiseaseCall,
    Enhancement,
    LesionResult,
    ModelInfo,
    ScanInfo,
    SegmentationResult,
    validate_report,
)
from malenia.infer.terminology import Terminology
from malenia.paths import resources_dir

VOCAB = json.loads((resources_dir() / "knowledge" / "vocabulary.json").read_text(encoding="utf-8"))["aspects"]
MODEL = ModelInfo("malenia-test", "0.0.1", hashlib.sha256(b"test weights").hexdigest())


def _attributes(location_id: str, seed: int) -> dict[str, AspectMatch]:
    """Real vocabulary descriptions with made-up normalised scores (a best match and two runners-up)."""
    rng = np.random.default_rng(seed)
    out = {}
    for aspect in ASPECTS:
        entries = VOCAB[aspect]
        best = next((e for e in entries if e["id"] == location_id), None) if aspect == "location" else None
        best = best or entries[int(rng.integers(len(entries)))]
        others = [e for e in entries if e is not best][:2]
        scores = np.sort(rng.dirichlet(np.ones(len(others) + 1)))[::-1]
        out[aspect] = AspectMatch(best["id"], best["text"], float(scores[0]),
                                  [AttributeMatch(e["id"], e["text"], float(s)) for e, s in zip(others, scores[1:])])
    return out


def _lesion(label: int, disease: str | None, location_id: str, prob: float = 0.8, unclassified: bool = False) -> LesionResult:
    term = Terminology.load()
    return LesionResult(
        label=label,
        disease=DiseaseCall(disease, term.display_name(disease), prob, [("liver_cyst", 0.1), ("kidney_tumor", 0.05)],
                            unclassified=unclassified),
        attributes=_attributes(location_id, label),
    )


def _sphere(shape_zyx, centre_zyx, radius_vox) -> np.ndarray:
    z, y, x = np.ogrid[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    r = [np.asarray(radius_vox, dtype=float)] * 3 if np.isscalar(radius_vox) else radius_vox
    return ((z - centre_zyx[0]) / r[0]) ** 2 + ((y - centre_zyx[1]) / r[1]) ** 2 + ((x - centre_zyx[2]) / r[2]) ** 2 <= 1


@pytest.fixture(scope="module")
def lung_result(shared_data) -> SegmentationResult:
    folder = shared_data / "ct" / "pyradiomics-lung1"
    image = sitk.ReadImage(str(folder / "lung1_image.nrrd"))
    labels = sitk.ReadImage(str(folder / "lung1_label.nrrd"))  # the real tumour as the "prediction" (int16)
    arr = sitk.GetArrayFromImage(labels)
    arr[_sphere(arr.shape, (20, 250, 150), (2, 14, 14))] = 2  # two constructed lesions of the same kind
    arr[_sphere(arr.shape, (10, 260, 380), (1.5, 10, 10))] = 3
    pred = sitk.GetImageFromArray(arr)
    pred.CopyInformation(labels)
    return SegmentationResult(
        labels=pred, image=image,
        scan=ScanInfo.from_image(image, str(folder / "lung1_image.nrrd"), Enhancement("enhancement.non_contrast", "non-contrast CT scan", 0.9, "model")),
        model=MODEL,
        lesions=[
            _lesion(1, "lung_tumor", "location.lung.right_upper", 0.72),
            _lesion(2, "kidney_cyst", "location.kidney.left", 0.61),
            _lesion(3, "kidney_cyst", "location.kidney.right", 0.55),
        ],
    )


@pytest.fixture(scope="module")
def lung_out(lung_result, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("lung") / "out"
    return out, outputs.write_outputs(lung_result, out)


def test_lung_label_map_has_input_geometry(lung_out, lung_result, shared_data):
    out, files = lung_out
    assert sorted(p.name for p in out.iterdir()) == ["lesions.nii.gz", "lesions.seg.nrrd", "report.html", "report.json"]
    source = sitk.ReadImage(str(shared_data / "ct" / "pyradiomics-lung1" / "lung1_image.nrrd"))
    lab = sitk.ReadImage(str(files["nifti"]))
    assert lab.GetSize() == source.GetSize()
    # NIfTI stores the geometry as float32: equal to ~1e-12 here, and SimpleITK treats them as one grid.
    np.testing.assert_allclose(lab.GetSpacing(), source.GetSpacing(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(lab.GetOrigin(), source.GetOrigin(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(lab.GetDirection(), source.GetDirection(), rtol=0, atol=1e-9)
    sitk.Mask(source, sitk.Cast(lab, sitk.sitkUInt8))  # raises if the two grids differ for ITK
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(lung_result.labels))
    assert lab.GetPixelID() == sitk.sitkUInt8


def test_lung_report_json(lung_out, lung_result):
    out, files = lung_out
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    validate_report(report)  # also validated before writing; a reader checks the file on disk
    assert report["schema_version"] == SCHEMA_VERSION == "1.2.0"
    assert report["model"] == MODEL.to_json()
    assert report["scan"]["enhancement"]["id"] == "enhancement.non_contrast"
    assert report["scan"]["size"] == [512, 512, 48] and report["scan"]["was_dicom"] is False
    assert report["files"] == {"labels": "lesions.nii.gz", "segmentation": "lesions.seg.nrrd",
                               "report_html": "report.html", "dicom_seg": None}
    assert [x["label"] for x in report["lesions"]] == [1, 2, 3]
    names = [x["segment"]["name"] for x in report["lesions"]]
    assert names == ["Lung tumor", "Kidney cyst 1", "Kidney cyst 2"]
    first = report["lesions"][0]
    assert set(first["attributes"]) == set(ASPECTS)
    assert first["attributes"]["location"]["id"] == "location.lung.right_upper"
    assert first["disease"]["name"] == "lung_tumor" and first["disease"]["probability"] == pytest.approx(0.72)
    m = first["measurements"]
    arr = sitk.GetArrayViewFromImage(lung_result.labels)
    assert m["voxel_count"] == int((arr == 1).sum()) == 837
    assert m["volume_ml"] == pytest.approx(837 * 0.5703125 ** 2 * 5 / 1000)
    assert 5 < m["short_axis_mm"] <= m["long_axis_mm"] < 30
    # Laterality from the location attribute; the lung's anatomic region code.
    assert first["segment"]["codes"]["anatomic_region"]["value"] == "39607008"
    assert first["segment"]["codes"]["anatomic_region_modifier"]["meaning"] == "Right"
    assert report["lesions"][1]["segment"]["codes"]["anatomic_region_modifier"]["meaning"] == "Left"
    # Round trip through the dataclasses.
    back = SegmentationResult.from_json(report)
    assert [x.to_json() for x in back.lesions] == [x.to_json() for x in lung_result.lesions]


def test_lung_report_schema_rejects_broken_reports(lung_out):
    report = json.loads(lung_out[1]["json"].read_text(encoding="utf-8"))
    bad = json.loads(json.dumps(report))
    del bad["lesions"][0]["attributes"]["shape"]
    with pytest.raises(ValueError, match="lesions/0/attributes"):
        validate_report(bad)
    bad = json.loads(json.dumps(report))
    bad["lesions"][1]["disease"]["probability"] = 1.5
    with pytest.raises(ValueError, match="probability"):
        validate_report(bad)


def test_lung_seg_nrrd_reads_back_in_slicerio(lung_out, lung_result):
    import slicerio

    out, files = lung_out
    seg = slicerio.read_segmentation(str(files["seg"]))
    term = Terminology.load()
    assert [s["name"] for s in seg["segments"]] == ["Lung tumor", "Kidney cyst 1", "Kidney cyst 2"]
    assert [s["labelValue"] for s in seg["segments"]] == [1, 2, 3]
    tumour, cyst1, cyst2 = seg["segments"]
    assert tumour["color"] == pytest.approx([c / 255 for c in term.for_lesion("lung_tumor").color], abs=1e-5)
    assert cyst1["color"] == cyst2["color"] != tumour["color"]  # colour per disease
    t = tumour["terminology"]
    assert t["contextName"] == term.segmentation_context
    assert t["category"][:2] == ["SCT", "49755003"]
    assert t["type"][:2] == ["SCT", "108369006"]
    assert t["anatomicRegion"][:2] == ["SCT", "39607008"]
    assert t["anatomicRegionModifier"][:2] == ["SCT", "24028007"]  # right
    assert cyst1["terminology"]["type"][:2] == ["SCT", "367643001"]
    assert cyst1["terminology"]["anatomicRegion"][:2] == ["SCT", "64033007"]
    lesion = lung_result.lesion(1)
    tags = tumour["tags"]
    assert tags["Malenia.disease"] == "lung_tumor"
    assert float(tags["Malenia.probability"]) == pytest.approx(0.72)
    for aspect in ASPECTS:
        assert tags[f"Malenia.attr.{aspect}"] == lesion.attributes[aspect].description
        assert tags[f"Malenia.attrId.{aspect}"] == lesion.attributes[aspect].id
        assert float(tags[f"Malenia.score.{aspect}"]) == pytest.approx(lesion.attributes[aspect].score, rel=1e-3)
    # Voxels and geometry: the label map itself, in LPS.
    voxels = seg["voxels"]
    np.testing.assert_array_equal(voxels.transpose(2, 1, 0), sitk.GetArrayViewFromImage(lung_result.labels))
    ijk = np.asarray(seg["ijkToLPS"])
    np.testing.assert_allclose(ijk[:3, 3], lung_result.labels.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(np.diag(ijk)[:3], lung_result.labels.GetSpacing(), atol=1e-9)
    # Extent is the lesion's bounding box (i0 i1 j0 j1 k0 k1).
    idx = np.argwhere(voxels == 1)
    assert tumour["extent"] == [v for a in range(3) for v in (idx[:, a].min(), idx[:, a].max())]


def test_lung_report_html_is_self_contained(lung_out, lung_result):
    from PIL import Image

    html = lung_out[1]["html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//|file:)""", html)
    term = Terminology.load()
    for lesion in lung_result.lesions:
        m = lesion.measurements
        section = html.split(f"id='lesion-{lesion.label}'")[1].split("<h2")[0]
        pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", section)
        # Key slice (+ the RECIST slice when the longest diameter lies on another slice) + overview.
        assert len(pngs) == (2 if m.recist_slice == m.max_area_slice else 3)
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(pngs[0]))).convert("RGB"))
        assert crop.shape[1] == 320
        assert (crop == term.for_lesion(lesion.disease.name).color).all(axis=-1).sum() > 20  # contour in the disease colour
        axes = np.asarray(Image.open(io.BytesIO(base64.b64decode(pngs[-2]))).convert("RGB"))
        assert (axes == (0, 220, 255)).all(axis=-1).sum() > 10  # the RECIST short axis is drawn
    for name in ("Lung tumor", "Kidney cyst 1", "Kidney cyst 2", "Enhancement status", "Specific features",
                 lung_result.lesion(1).attributes["shape"].description):
        assert name in html


def test_existing_outputs_are_refused_unless_overwrite(lung_result, tmp_path):
    out = tmp_path / "user folder"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    outputs.write_outputs(lung_result, out, formats=["nifti", "json"])  # an existing (user-made) folder is fine
    assert sorted(p.name for p in out.iterdir()) == ["lesions.nii.gz", "notes.txt", "report.json"]
    before = (out / "report.json").read_bytes()
    with pytest.raises(OutputError, match="already exist.*--overwrite"):
        outputs.write_outputs(lung_result, out, formats=["json"])
    assert (out / "report.json").read_bytes() == before
    # With overwrite the outputs are replaced and stale ones (not written this time) removed.
    outputs.write_outputs(lung_result, out, overwrite=True, formats=["json"])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.json"]
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("existing", [False, True])
def test_failure_while_writing_leaves_nothing(lung_result, tmp_path, monkeypatch, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    calls = []

    def boom(*args, **kwargs):
        calls.append(args[0])
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the label map and .seg.nrrd were written

    monkeypatch.setattr("malenia.infer.report_html.write_report_html", boom)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_outputs(lung_result, out)
    assert calls  # the failure happened mid-way
    if existing:
        assert list(out.iterdir()) == []  # no outputs and no staging folder
    else:
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if existing else [])


def test_failure_while_replacing_restores_previous_outputs(lung_result, tmp_path, monkeypatch):
    out = tmp_path / "out"
    outputs.write_outputs(lung_result, out, formats=["nifti", "json"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = outputs.os.replace
    moved = []

    def flaky_replace(src, dst):
        if Path(dst).name == "report.json" and ".malenia-partial-" in str(src) and ".previous" not in str(src):
            raise OSError(28, "No space left on device")
        moved.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", flaky_replace)
    with pytest.raises(OutputError, match="No space left"):
        outputs.write_outputs(lung_result, out, overwrite=True, formats=["nifti", "json"])
    assert moved  # lesions.nii.gz had already been replaced, then was restored
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_unwritable_output_folder_is_a_one_line_error(lung_result, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as err:
        outputs.write_outputs(lung_result, blocker / "out")
    assert "\n" not in str(err.value) and "a file" in str(err.value)
    with pytest.raises(OutputError, match="is a file"):
        outputs.write_outputs(lung_result, blocker)


def test_zero_lesions_is_a_valid_result(lung_result, tmp_path):
    import slicerio

    empty = sitk.Image(lung_result.labels.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(lung_result.labels)
    result = SegmentationResult(empty, lung_result.image, lung_result.scan, MODEL, [])
    files = outputs.write_outputs(result, tmp_path / "out")
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert report["lesions"] == []
    assert slicerio.read_segmentation(str(files["seg"]))["segments"] == []
    assert int(sitk.GetArrayViewFromImage(sitk.ReadImage(str(files["nifti"]))).max()) == 0
    assert "No lesions were found" in files["html"].read_text(encoding="utf-8")


def test_inconsistent_results_are_refused_before_writing(lung_result, tmp_path):
    result = SegmentationResult(lung_result.labels, lung_result.image, lung_result.scan, MODEL, lung_result.lesions[:2])
    with pytest.raises(ValueError, match="label map values"):
        outputs.write_outputs(result, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(OutputError, match="DICOM series"):
        outputs.write_outputs(lung_result, tmp_path / "out", formats=["dicom"])


# ---------------------------------------------------------------------------------------- DICOM input

@pytest.fixture(scope="module")
def dicom_case(shared_data, tmp_path_factory):
    folder = shared_data / "ct" / "totalseg-example" / "example_ct_dicom"
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))  # sorted by position
    image = read_ct(folder)  # the project's reader: float32 HU
    arr = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)  # [20, 512, 512]
    arr[_sphere(arr.shape, (8, 300, 200), (3.5, 30, 40))] = 1  # slices 5..11
    arr[_sphere(arr.shape, (15, 200, 330), (1.2, 12, 12))] = 2  # slices 14..16
    labels = sitk.GetImageFromArray(arr)
    labels.CopyInformation(image)
    result = SegmentationResult(
        labels=labels, image=image,
        scan=ScanInfo.from_image(image, str(folder), None, dicom_files=files),
        model=MODEL,
        lesions=[_lesion(1, "liver_tumor", "location.liver.right_lobe", 0.66),
                 _lesion(2, None, "location.kidney.left", 0.3, unclassified=True)],
    )
    out = tmp_path_factory.mktemp("dicom") / "out"
    return result, out, outputs.write_outputs(result, out)


def test_dicom_input_writes_all_outputs(dicom_case):
    result, out, files = dicom_case
    assert sorted(p.name for p in out.iterdir()) == ["lesions.dcm", "lesions.nii.gz", "lesions.seg.nrrd", "report.html", "report.json"]
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert report["scan"]["was_dicom"] is True and report["scan"]["dicom"]["files"] == 20
    assert report["files"]["dicom_seg"] == "lesions.dcm"
    assert [x["segment"]["name"] for x in report["lesions"]] == ["Liver tumor", "Lesion (unclassified)"]
    generic = report["lesions"][1]["segment"]["codes"]
    assert generic["type"]["value"] == "52988006" and generic["anatomic_region"]["value"] == "64033007"


def test_an_unclassified_lesion_is_never_shown_under_its_closest_disease(dicom_case):
    from dataclasses import replace

    from malenia.commands.segment import summary
    from malenia.infer.report_html import build_html
    from malenia.infer.terminology import segment_specs

    result, out, files = dicom_case
    html_text = files["html"].read_text(encoding="utf-8")
    assert "<b>Unclassified</b>" in html_text  # no guess at all: no closest disease either
    closest = replace(result.lesions[1], disease=DiseaseCall("kidney_cyst", "Kidney cyst", 0.41, [("kidney_tumor", 0.3)],
                                                              unclassified=True))
    named = replace(result, lesions=[result.lesions[0], closest])
    lines = summary(named).splitlines()
    assert "Liver tumor 0.66" in lines[1] and "Unclassified (closest: Kidney cyst) 0.41" in lines[2]
    specs = segment_specs(named.lesions)
    assert specs[1].name.endswith("(unclassified)") and "Kidney cyst" not in specs[1].name
    page = build_html(named, specs, {}, {})
    assert page.count("Unclassified (closest: Kidney cyst)") == 2  # the summary table and the lesion's card
    assert "<td>Kidney cyst</td>" not in page


def test_dicom_seg_aligns_with_the_series(dicom_case):
    import highdicom as hd
    import pydicom

    result, out, files = dicom_case
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in result.scan.dicom_files]
    # This anonymised series has blank SOP Instance, Study and Series UIDs: the instances are named by
    # their file meta information, study and series by UIDs derived from those (and reported).
    assert all(ds.SOPInstanceUID == "" for ds in sources)
    uids = [str(ds.file_meta.MediaStorageSOPInstanceUID) for ds in sources]
    by_uid = dict(zip(uids, sources))
    assert any("SeriesInstanceUID" in w for w in report["scan"]["warnings"])
    seg = hd.seg.segread(str(files["dicom"]))
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == report["scan"]["dicom"]["study_instance_uid"]
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == report["scan"]["dicom"]["series_instance_uid"]
    assert {x.ReferencedSOPInstanceUID for x in ref.ReferencedInstanceSequence} == set(uids)

    term = Terminology.load()
    liver = term.for_lesion("liver_tumor")
    d1, d2 = seg.SegmentSequence
    assert d1.SegmentLabel == "Liver tumor" and d2.SegmentLabel == "Lesion (unclassified)"
    assert d1.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert d1.SegmentedPropertyTypeCodeSequence[0].CodeValue == liver.type.value == "108369006"
    assert d1.AnatomicRegionSequence[0].CodeValue == liver.anatomic_region.value == "10200004"
    assert d2.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert d2.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeMeaning == "Left"

    _check_frames(seg, result.labels, by_uid)


def _check_frames(seg, labels: sitk.Image, sources_by_uid: dict) -> None:
    """Every frame sits on its source image and holds that slice's lesion pixels; no frame is missing."""
    arr = sitk.GetArrayViewFromImage(labels)
    frames = seg.pixel_array  # [frames, rows, columns]
    seen = set()
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        uid = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = sources_by_uid[uid]
        pos = [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]
        assert pos == pytest.approx([float(v) for v in src.ImagePositionPatient])
        k = int(round(labels.TransformPhysicalPointToContinuousIndex(pos)[2]))
        assert labels.TransformIndexToPhysicalPoint((0, 0, k)) == pytest.approx(pos)
        np.testing.assert_array_equal(frames[i] > 0, arr[k] == number)
        seen.add((number, k))
    numbers = range(1, len(seg.SegmentSequence) + 1)
    expected = {(n, k) for n in numbers for k in np.flatnonzero((arr == n).any(axis=(1, 2)))}
    assert seen == expected  # one frame per lesion slice, none for empty slices


def test_dicom_seg_matches_slices_by_position_not_file_order(dicom_case, tmp_path):
    import highdicom as hd
    import pydicom

    result = dicom_case[0]
    shuffled = list(result.scan.dicom_files)
    np.random.default_rng(0).shuffle(shuffled)
    scan = ScanInfo.from_image(result.image, result.scan.source, None, dicom_files=shuffled)
    files = outputs.write_outputs(SegmentationResult(result.labels, result.image, scan, MODEL, result.lesions),
                                  tmp_path / "out", formats=["dicom"])
    sources = {str(ds.file_meta.MediaStorageSOPInstanceUID): ds
               for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in shuffled)}
    _check_frames(hd.seg.segread(str(files["dicom"])), result.labels, sources)


def test_dicom_seg_refuses_a_label_map_off_the_series(dicom_case, tmp_path):
    """No SEG whose frames would reference the wrong images; the other outputs stand, and the report says why
    (until session 66 the whole write failed with the DicomSegError, after the whole run)."""
    result = dicom_case[0]
    moved = sitk.Image(result.labels)
    moved.SetOrigin([o + d for o, d in zip(moved.GetOrigin(), (0.0, 0.0, 1.0))])  # 1 mm off the slices
    image = sitk.Image(result.image)
    image.CopyInformation(moved)
    scan = ScanInfo.from_image(image, result.scan.source, None, dicom_files=result.scan.dicom_files)
    files = outputs.write_outputs(SegmentationResult(moved, image, scan, MODEL, result.lesions), tmp_path / "out")
    assert "dicom" not in files and not (tmp_path / "out" / "lesions.dcm").exists()
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert [w for w in report["scan"]["warnings"] if "no DICOM SEG written" in w and "no DICOM image at that position" in w]


def test_lung_seg_nrrd_loads_in_slicer_mrml(lung_out, lung_result):
    """3D Slicer's own reader (slicer-core): names, colours, label values, terminology and tags."""
    import slicer
    import vtk

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(lung_out[1]["seg"]))
    assert storage.ReadData(node)
    seg = node.GetSegmentation()
    assert seg.GetNumberOfSegments() == 3
    report = json.loads(lung_out[1]["json"].read_text(encoding="utf-8"))
    for i, entry in enumerate(report["lesions"]):
        segment = seg.GetNthSegment(i)
        assert segment.GetName() == entry["segment"]["name"]
        assert segment.GetLabelValue() == entry["label"]
        assert list(segment.GetColor()) == pytest.approx([c / 255 for c in entry["segment"]["color_rgb"]], abs=1e-5)
        term, disease = vtk.reference(""), vtk.reference("")
        assert segment.GetTag("TerminologyEntry", term) and str(term) == entry["segment"]["terminology"]
        assert segment.GetTag("Malenia.disease", disease) and str(disease) == entry["disease"]["name"]


def test_without_the_ct_there_are_no_hu_and_no_images(lung_result, tmp_path):
    lesions = [LesionResult(x.label, x.disease, x.attributes) for x in lung_result.lesions]  # not measured yet
    result = SegmentationResult(lung_result.labels, None, lung_result.scan, MODEL, lesions)
    files = outputs.write_outputs(result, tmp_path / "out", formats=["json", "html"])
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    m = report["lesions"][0]["measurements"]
    assert m["hu_mean"] is None and m["hu_std"] is None and m["voxel_count"] == 837
    assert report["files"] == {"labels": None, "segmentation": None, "report_html": "report.html", "dicom_seg": None}
    assert "data:image/png" not in files["html"].read_text(encoding="utf-8")


def test_dicom_input_without_lesions_has_no_seg_and_says_why(dicom_case, tmp_path):
    result = dicom_case[0]
    empty = sitk.Image(result.labels.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(result.labels)
    files = outputs.write_outputs(SegmentationResult(empty, result.image, result.scan, MODEL, []), tmp_path / "out")
    assert "dicom" not in files and not (tmp_path / "out" / "lesions.dcm").exists()
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert report["files"]["dicom_seg"] is None
    assert any(w.startswith("no DICOM SEG written: no lesions") for w in report["scan"]["warnings"])
    assert "no DICOM SEG written" in files["html"].read_text(encoding="utf-8")
