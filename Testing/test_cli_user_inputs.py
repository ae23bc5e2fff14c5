"""Inputs a new user hands the command line (session 66's probe with real CTs), on small synthetic images.

`evaluate --image CT --label MAP`: the reference map is placed on the CT by physical position, as `segment --mask`
places an outline; it used to be checked by size only, so a map of the same size on a flipped grid was scored
mirrored (DSC 0, no warning).
"""

import re

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.errors import InputError
from malenia.evaluate.evaluate import dataset_from_labelled_scan
from malenia.data.dataset import read_case

SIZE = (24, 20, 16)  # x, y, z
SPACING = (1.5, 1.5, 2.5)
ORIGIN = (-10.0, 20.0, 30.0)


def _ct() -> sitk.Image:
    """Air around a water-dense body: a CT Hounsfield range read_ct accepts."""
    hu = np.full(SIZE[::-1], -1000, np.int16)
    hu[2:-2, 3:-3, 3:-3] = 40
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    return image


def _lesion() -> np.ndarray:
    """A lesion off every mirror plane of the grid, so a flip by index moves it."""
    lab = np.zeros(SIZE[::-1], np.uint8)
    lab[3:6, 4:8, 5:9] = 1
    return lab


def _on_grid(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    return image


def _case_labels(tmp_path, ct_path, label_path) -> np.ndarray:
    ds = dataset_from_labelled_scan(ct_path, label_path, "lung_tumor", tmp_path / "ds")
    case_id = ct_path.name.split(".")[0]
    return sitk.GetArrayFromImage(read_case(ds, case_id).lesions)


@pytest.fixture()
def ct_path(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ct(), str(path))
    return path


@pytest.mark.parametrize("flip", [(True, False, False), (False, False, True), (True, True, True)])
def test_label_on_a_flipped_grid_is_placed_by_position(tmp_path, ct_path, flip):
    reference = _on_grid(_lesion(), _ct())
    flipped = sitk.Flip(reference, list(flip))  # same voxels in space, index order reversed
    assert flipped.GetSize() == reference.GetSize()
    assert not np.array_equal(sitk.GetArrayFromImage(flipped), _lesion())  # by index it would land elsewhere
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(flipped, str(path))
    np.testing.assert_array_equal(_case_labels(tmp_path, ct_path, path) > 0, _lesion() > 0)


def test_label_on_a_permuted_grid_is_placed_by_position(tmp_path, ct_path):
    reference = _on_grid(_lesion(), _ct())
    permuted = sitk.PermuteAxes(reference, [2, 0, 1])
    path = tmp_path / "label.nrrd"
    sitk.WriteImage(permuted, str(path))
    np.testing.assert_array_equal(_case_labels(tmp_path, ct_path, path) > 0, _lesion() > 0)


def test_label_on_a_finer_grid_is_read_onto_the_ct(tmp_path, ct_path):
    fine = sitk.Image([2 * s for s in SIZE], sitk.sitkUInt8)
    fine.SetSpacing([s / 2 for s in SPACING])
    fine.SetOrigin([o - s / 4 for o, s in zip(ORIGIN, SPACING)])  # the CT's voxels, each split in 8
    fine = sitk.Resample(_on_grid(_lesion(), _ct()), fine, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(fine, str(path))
    np.testing.assert_array_equal(_case_labels(tmp_path, ct_path, path) > 0, _lesion() > 0)


def test_label_off_the_ct_is_refused(tmp_path, ct_path):
    away = _on_grid(_lesion(), _ct())
    away.SetOrigin((500.0, 500.0, 500.0))
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(away, str(path))
    with pytest.raises(InputError, match=r"--label .*none of its lesions lies inside the CT"):
        dataset_from_labelled_scan(ct_path, path, "lung_tumor", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("values, message", [(0.5, "fractions"), (-1, "negative label values")])
def test_label_that_is_no_label_map_is_refused(tmp_path, ct_path, values, message):
    lab = _lesion().astype(np.float32) * values
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(_on_grid(lab, _ct()), str(path))
    with pytest.raises(InputError, match=message):
        dataset_from_labelled_scan(ct_path, path, "lung_tumor", tmp_path / "ds")


def test_label_that_is_a_vector_image_is_refused(tmp_path, ct_path):
    one = _on_grid(_lesion(), _ct())
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(sitk.Compose(one, one), str(path))
    with pytest.raises(InputError, match="one 3-D channel"):
        dataset_from_labelled_scan(ct_path, path, "lung_tumor", tmp_path / "ds")


def test_empty_label_on_another_grid_is_an_empty_reference(tmp_path, ct_path):
    """No lesion is a reference an evaluation can score (false positives only), on any grid."""
    empty = sitk.Image([8, 8, 8], sitk.sitkUInt8)
    empty.SetOrigin((500.0, 500.0, 500.0))
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(empty, str(path))
    assert not _case_labels(tmp_path, ct_path, path).any()


@pytest.mark.parametrize("name", ["slice.dcm", "CT.1.2.3.4"])
def test_one_dicom_file_is_told_to_give_its_folder(tmp_path, name):
    """A user who picks one slice of a series (with or without .dcm) is told what to give instead."""
    from malenia.data.ct_io import read_ct

    one = sitk.Cast(_ct()[:, :, 3], sitk.sitkInt16)
    one.SetMetaData("0008|0060", "CT")
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.SetFileName(str(tmp_path / name))
    writer.Execute(one)
    with pytest.raises(InputError, match=rf"^{re.escape(name)}: one DICOM file; give the folder holding the whole "
                                         rf"series \({re.escape(str(tmp_path))}\)$"):
        read_ct(tmp_path / name)


def test_a_file_of_another_kind_is_still_an_unsupported_format(tmp_path):
    from malenia.data.ct_io import read_ct

    (tmp_path / "notes.dcm").write_bytes(b"\0" * 128 + b"DICX" + b"\0" * 64)
    with pytest.raises(InputError, match=r"notes.dcm: unsupported format \(expected .nii"):
        read_ct(tmp_path / "notes.dcm")


def _dicom_label_file(path):
    one = sitk.Cast(_on_grid(_lesion(), _ct()), sitk.sitkUInt8)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.SetFileName(str(path))
    writer.Execute(one)
    return path


def test_a_dicom_seg_given_as_mask_is_refused_not_misread(tmp_path, ct_path, capsys):
    """ITK reads a DICOM file as a stack of frames with the first frame's geometry; as --mask (a lesions.dcm of an
    earlier run) it came back as one bogus lesion. Refused before any work, naming what to give instead."""
    from malenia.cli import main

    mask = _dicom_label_file(tmp_path / "lesions.dcm")
    code = main(["segment", str(ct_path), "--mask", str(mask), "--out", str(tmp_path / "out"), "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1
    assert "a DICOM file (a DICOM SEG?); give a label map (NIfTI, NRRD, MetaImage)" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, message", [("lesions.dcm", "a DICOM file"), ("outline.png", "unsupported format")])
def test_evaluate_label_of_another_format_is_refused(tmp_path, ct_path, name, message):
    if name.endswith(".dcm"):
        _dicom_label_file(tmp_path / name)
    else:
        sitk.WriteImage(sitk.Cast(_on_grid(_lesion(), _ct())[:, :, 5], sitk.sitkUInt8), str(tmp_path / name))
    with pytest.raises(InputError, match=rf"^--label .*{name}: {message}"):
        dataset_from_labelled_scan(ct_path, tmp_path / name, "lung_tumor", tmp_path / "ds")


def test_a_lesion_under_a_tenth_of_a_ml_is_not_shown_as_empty():
    """The default minimum volume keeps lesions of 25 mm3 and up; the summary line showed them as '0.0 ml'."""
    from dataclasses import replace

    from malenia.commands.segment import summary
    from malenia.infer.measurements import measure_lesions
    from malenia.infer.results import ScanInfo, SegmentationResult
    from test_outputs_write import MODEL, _lesion

    image = _ct()
    lab = np.zeros(SIZE[::-1], np.uint8)
    lab[5:7, 8:10, 8:10] = 1  # 8 voxels of 5.625 mm3: 45 mm3
    lab[3:8, 4:9, 14:20] = 2  # 150 voxels: 0.84 ml
    labels = _on_grid(lab, image)
    measured = measure_lesions(labels, image, [1, 2])
    lesions = [replace(_lesion(k, "liver_tumor", "location.liver.right_lobe"), measurements=measured[k]) for k in (1, 2)]
    result = SegmentationResult(labels=labels, image=image, scan=ScanInfo.from_image(image, "ct.nii.gz"), model=MODEL,
                                lesions=lesions)
    lines = summary(result).splitlines()
    assert "  0.045 ml, " in lines[1] and "  0.8 ml, " in lines[2]


def test_a_folder_without_a_series_says_what_to_give(tmp_path):
    """A folder holding a NIfTI, or the top of a PACS export, is not a series folder: the error names the file or the
    folder below that is."""
    from malenia.data.ct_io import read_ct

    (tmp_path / "scans").mkdir()
    sitk.WriteImage(_ct(), str(tmp_path / "scans" / "ct.nii.gz"))
    with pytest.raises(InputError, match=r"scans: no DICOM series found in this folder; it holds ct.nii.gz: give the "
                                         r"file itself$"):
        read_ct(tmp_path / "scans")
    series = tmp_path / "export" / "DICOM" / "PAT1" / "ST1" / "SE2"
    series.mkdir(parents=True)
    _dicom_label_file(series / "IM0001")
    (tmp_path / "export" / "DICOM" / "PAT1" / "notes").mkdir()
    with pytest.raises(InputError, match=r"export: no DICOM series found in this folder; DICOM files are in "
                                         r"DICOM/PAT1/ST1/SE2 below it: give that folder$"):
        read_ct(tmp_path / "export")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no DICOM series found in this folder$"):
        read_ct(tmp_path / "empty")


@pytest.mark.parametrize("extra, message", [
    (["--data", "DS", "--image", "CT"], "--image (one labelled CT) and --data (a dataset) are two evaluations"),
    (["--data", "DS", "--label", "L"], "--label go with --image"),
    (["--data", "DS", "--label", "L", "--disease", "lung_tumor"], "--label and --disease go with --image"),
])
def test_evaluate_options_of_two_evaluations_are_refused(tmp_path, capsys, extra, message):
    """Given both, --image replaced --data and a stray --label was dropped, silently scoring another evaluation."""
    from malenia.cli import main

    args = [str(tmp_path / a) if a in ("DS", "CT", "L") else a for a in extra]
    code = main(["evaluate", *args, "--out", str(tmp_path / "out"), "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("written, named, kind, suffix", [
    ("ct.nii.gz", "ct.nrrd", "a gzip-compressed NIfTI", ".nii.gz"),
    ("ct.nii.gz", "ct.nii", "a gzip-compressed NIfTI", ".nii.gz"),
    ("ct.nii", "ct.nii.gz", "an uncompressed NIfTI", ".nii"),
    ("ct.nii", "ct", "an uncompressed NIfTI", ".nii"),
    ("ct.nrrd", "ct.mha", "a NRRD file", ".nrrd or .nhdr"),
    ("ct.mha", "ct.nii.gz", "a MetaImage file", ".mha or .mhd"),
])
def test_a_file_named_as_another_format_is_told_its_format(tmp_path, written, named, kind, suffix):
    """Readers pick their parser by the name: a NIfTI named .nrrd failed as 'not a valid NRRD file'."""
    from malenia.data.ct_io import read_ct

    sitk.WriteImage(_ct(), str(tmp_path / written))
    (tmp_path / written).rename(tmp_path / named)
    with pytest.raises(InputError, match=rf"^{re.escape(named)}: the file is {kind}, which its name does not say; "
                                         rf"rename it to end in {re.escape(suffix)}$"):
        read_ct(tmp_path / named)
    (tmp_path / named).rename(tmp_path / written)
    assert read_ct(tmp_path / written).GetSize() == SIZE  # rightly named, it reads


@pytest.mark.parametrize("flip", [(False, False, False), (False, False, True), (True, True, True)])
def test_report_html_numbers_slices_as_report_json(tmp_path, flip):
    """report.html named its key slices by the LPS-reoriented image's numbers: for a CT stored head first its 'axial
    slice 12' was report.json's slice 3, and of two slices tied for the largest cross-section each file showed another."""
    import json

    from malenia.infer import outputs
    from malenia.infer.results import ScanInfo, SegmentationResult
    from test_outputs_write import MODEL, _lesion

    image = sitk.Flip(_ct(), list(flip))
    lab = np.zeros(SIZE[::-1], np.uint8)
    lab[3:5, 6:12, 8:14] = 1  # two slices of equal area: a tie
    lab[9, 6:11, 6:11] = 2  # lesion 2: its largest cross-section (25 pixels) ...
    lab[10, 7:10, 7:10] = 2
    lab[11, 8, 2:22] = 2  # ... and its longest diameter (30 mm, 20 pixels) on two slices
    labels = sitk.Flip(_on_grid(lab, _ct()), list(flip))
    result = SegmentationResult(labels=labels, image=image, scan=ScanInfo.from_image(image, "ct.nii.gz"), model=MODEL,
                                lesions=[_lesion(1, "liver_tumor", "location.liver.right_lobe"),
                                         _lesion(2, "liver_tumor", "location.liver.right_lobe")])
    files = outputs.write_outputs(result, tmp_path / "out")
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    page = files["html"].read_text(encoding="utf-8")
    shown = [int(n) for n in re.findall(r"Largest cross-section, axial slice (\d+)", page)]
    assert shown == [les["measurements"]["max_area_slice"] for les in report["lesions"]]
    recist = [int(n) for n in re.findall(r"Longest diameter, axial slice (\d+)", page)]
    assert recist and recist[0] == report["lesions"][1]["measurements"]["recist_slice"]
