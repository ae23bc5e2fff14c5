"""The DICOM SEG of a series as research pipelines write them (SimpleITK: no Slice Thickness), on small synthetic
series. highdicom needs Slice Thickness for the SEG's pixel measures; `segment` ran the whole CT, then failed with an
AttributeError (exit 1, nothing written)."""

import json

import numpy as np
import pydicom
import SimpleITK as sitk

from malenia.data.ct_io import read_ct
from malenia.infer import outputs
from test_dicom_tilt import STEP_MM, _write_series


def _result_on(folder):
    from malenia.infer.results import ScanInfo, SegmentationResult
    from test_outputs_write import MODEL, _lesion

    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = read_ct(folder)
    arr = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    arr[4:8, 6:12, 8:14] = 1
    labels = sitk.GetImageFromArray(arr)
    labels.CopyInformation(image)
    return SegmentationResult(labels=labels, image=image, scan=ScanInfo.from_image(image, str(folder), None, dicom_files=files),
                              model=MODEL, lesions=[_lesion(1, "liver_tumor", "location.liver.right_lobe")])


def test_a_series_without_slice_thickness_gets_its_seg(tmp_path):
    folder = _write_series(tmp_path / "ct")
    assert "SliceThickness" not in pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    files = outputs.write_outputs(_result_on(folder), tmp_path / "out")
    seg = pydicom.dcmread(files["dicom"])
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == STEP_MM
    frames = sum(1 for _ in seg.PerFrameFunctionalGroupsSequence)
    assert frames == 4  # the lesion's four slices
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert report["files"]["dicom_seg"] == "lesions.dcm"
    assert f"12 DICOM files lack SliceThickness; the slice spacing, {STEP_MM:g} mm, stands in" in report["scan"]["warnings"]


def test_a_series_with_its_slice_thickness_keeps_it(tmp_path):
    folder = _write_series(tmp_path / "ct")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.SliceThickness = 5.0  # thicker than the step: overlapping reconstructions
        ds.save_as(f)
    files = outputs.write_outputs(_result_on(folder), tmp_path / "out")
    measures = pydicom.dcmread(files["dicom"]).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == 5.0
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert not [w for w in report["scan"]["warnings"] if "SliceThickness" in w]


def test_a_dicom_seg_that_cannot_be_built_costs_only_the_seg(tmp_path):
    """A slice's orientation a little off the first's: read (within the reader's tolerance), but no SEG frame
    lines up. The other outputs are written, the report says why there is no SEG, an earlier SEG goes as stale."""
    folder = _write_series(tmp_path / "ct")
    first = outputs.write_outputs(_result_on(folder), tmp_path / "out")
    assert "dicom" in first and (tmp_path / "out" / "lesions.dcm").is_file()
    sixth = sorted(folder.iterdir())[5]
    ds = pydicom.dcmread(sixth)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9999999, 0.0005]
    ds.save_as(sixth)
    files = outputs.write_outputs(_result_on(folder), tmp_path / "out", overwrite=True)
    assert sorted(files) == ["html", "json", "nifti", "seg"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lesions.nii.gz", "lesions.seg.nrrd", "report.html",
                                                                     "report.json"]
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert report["files"]["dicom_seg"] is None
    assert [w for w in report["scan"]["warnings"] if w.startswith("no DICOM SEG written: slice 5: DICOM orientation")]
    assert "no DICOM SEG written: slice 5" in files["html"].read_text(encoding="utf-8")


def test_a_dicom_seg_refused_into_a_new_folder_leaves_no_partial_file(tmp_path):
    folder = _write_series(tmp_path / "ct")
    sixth = sorted(folder.iterdir())[5]
    ds = pydicom.dcmread(sixth)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9999999, 0.0005]
    ds.save_as(sixth)
    outputs.write_outputs(_result_on(folder), tmp_path / "new" / "out")
    assert sorted(p.name for p in (tmp_path / "new" / "out").iterdir()) == ["lesions.nii.gz", "lesions.seg.nrrd",
                                                                           "report.html", "report.json"]


def test_segment_prints_the_reports_warnings(tmp_path, capsys):
    """On the terminal as in report.json: a DICOM SEG left out (and why) or a header repaired is said, one line each."""
    from malenia.cli import main

    folder = _write_series(tmp_path / "ct")  # no Slice Thickness: one repair or one SEG left out, whatever is found
    code = main(["segment", str(folder), "--out", str(tmp_path / "out"), "--progress", "none", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0
    warnings = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["scan"]["warnings"]
    assert warnings
    assert captured.err.strip().splitlines() == [f"malenia segment: warning: {w}" for w in warnings]
    assert "warning" not in captured.out
