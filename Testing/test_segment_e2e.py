"""`malenia segment` end to end (the real command) on the shared real CTs: a DICOM series and the lung CT.

Each input gets a planted bright sphere first (segment_helpers.plant_sphere; grid, headers and DICOM
UIDs unchanged) so that the test model, which knows only such spheres, has a lesion to find.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from segment_helpers import THRESHOLD, dice, malenia, planted_dicom_copy, planted_image_copy, tiny_trained_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_trained_model(tmp_path_factory)


@pytest.fixture(scope="module")
def dicom_run(model, shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicom")
    ball, _ = planted_dicom_copy(shared_data / "ct" / "totalseg-example" / "example_ct_dicom", tmp / "series")
    out = tmp / "out"
    r = malenia("segment", tmp / "series", "--out", out, "--model", model, "--progress", "none", "--threshold", THRESHOLD)
    assert r.returncode == 0, r.stderr
    return tmp / "series", out, r, ball


@pytest.fixture(scope="module")
def lung_run(model, shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lung")
    image = tmp / "lung1_planted.nrrd"
    ball = planted_image_copy(shared_data / "ct" / "pyradiomics-lung1" / "lung1_image.nrrd", image)
    out = tmp / "out"
    r = malenia("segment", image, "--out", out, "--model", model, "--progress", "none", "--device", "cpu", "--threshold", THRESHOLD)
    assert r.returncode == 0, r.stderr
    return image, out, r, ball


def _series_files(folder):
    reader = sitk.ImageSeriesReader
    sid = reader.GetGDCMSeriesIDs(str(folder))[0]
    return list(reader.GetGDCMSeriesFileNames(str(folder), sid))


def test_dicom_series_gives_all_outputs_and_a_dicom_seg_aligned_with_the_series(dicom_run):
    import highdicom as hd
    import pydicom

    series, out, r, ball = dicom_run
    assert sorted(p.name for p in out.iterdir()) == ["lesions.dcm", "lesions.nii.gz", "lesions.seg.nrrd", "report.html", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["scan"]["was_dicom"] and report["files"]["dicom_seg"] == "lesions.dcm"
    n = len(report["lesions"])
    labels = sitk.ReadImage(str(out / "lesions.nii.gz"))
    lab = sitk.GetArrayFromImage(labels)
    found = np.bincount(lab[ball])
    assert n >= 1 and len(found) > 1 and dice(lab == int(np.argmax(found[1:]) + 1), ball) > 0.3, "the planted sphere is found"
    files = _series_files(series)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert report["scan"]["dicom"]["files"] == len(files)
    # this anonymised series has no Study/Series UIDs: the report names the ones derived for the SEG
    series_uid = getattr(sources[0], "SeriesInstanceUID", None) or report["scan"]["dicom"]["series_instance_uid"]
    study_uid = getattr(sources[0], "StudyInstanceUID", None) or report["scan"]["dicom"]["study_instance_uid"]

    seg = hd.seg.segread(str(out / "lesions.dcm"))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == study_uid and report["scan"]["dicom"]["series_instance_uid"] == series_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert list(seg.get_segment_numbers()) == list(range(1, n + 1))
    names = [seg.get_segment_description(k).SegmentLabel for k in range(1, n + 1)]
    assert names == [les["segment"]["name"] for les in report["lesions"]]
    # every source slice: the SEG's frames (found through the source-image references) equal the label map there
    uids = [str(getattr(ds, "SOPInstanceUID", None) or ds.file_meta.MediaStorageSOPInstanceUID) for ds in sources]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=list(range(1, n + 1)), ignore_spatial_locations=False,
                                               assert_missing_frames_are_empty=True)
    assert pixels.shape == (len(files), sources[0].Rows, sources[0].Columns, n)
    for i, ds in enumerate(sources):
        # the slice of the label map at this source image's position
        k = labels.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
        for s in range(n):
            assert np.array_equal(pixels[i, :, :, s] > 0, lab[k] == s + 1), (i, s)
    assert sum(int((pixels[..., s] > 0).sum()) for s in range(n)) == int((lab > 0).sum())


def test_lung_ct_label_map_is_on_the_input_grid(lung_run, shared_data):
    image, out, r, ball = lung_run
    ref = sitk.ReadImage(str(shared_data / "ct" / "pyradiomics-lung1" / "lung1_image.nrrd"))  # the planted copy's grid
    planted = sitk.ReadImage(str(image))
    assert (planted.GetSize(), planted.GetSpacing(), planted.GetOrigin(), planted.GetDirection()) == \
        (ref.GetSize(), ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection())
    labels = sitk.ReadImage(str(out / "lesions.nii.gz"))
    assert labels.GetSize() == ref.GetSize() == (512, 512, 48)
    assert labels.GetPixelID() in (sitk.sitkUInt8, sitk.sitkUInt16)
    # NIfTI keeps geometry as float32; the .seg.nrrd keeps it exactly (docs/outputs.md)
    np.testing.assert_allclose(labels.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(labels.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labels.GetDirection(), ref.GetDirection(), atol=1e-6)
    seg = sitk.ReadImage(str(out / "lesions.seg.nrrd"))
    assert seg.GetSpacing() == ref.GetSpacing() and seg.GetOrigin() == ref.GetOrigin() and seg.GetDirection() == ref.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(labels))


def test_lung_ct_report_validates_against_the_schema(lung_run):
    import jsonschema

    from malenia.paths import resources_dir

    image, out, r, ball = lung_run
    report = json.loads((out / "report.json").read_text())
    schema = json.loads((resources_dir() / "report.schema.json").read_text())
    jsonschema.validate(report, schema, cls=jsonschema.validators.validator_for(schema))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesions.nii.gz")))
    assert [les["label"] for les in report["lesions"]] == list(range(1, len(report["lesions"]) + 1))
    counts = np.bincount(lab.ravel(), minlength=len(report["lesions"]) + 1)
    assert [les["measurements"]["voxel_count"] for les in report["lesions"]] == counts[1:].tolist()
    assert counts[1:].tolist() == sorted(counts[1:].tolist(), reverse=True)  # lesion 1 is the largest
    assert report["scan"]["source"] == str(image) and not report["scan"]["was_dicom"]
    found = np.bincount(lab[ball])
    assert len(found) > 1 and dice(lab == int(np.argmax(found[1:]) + 1), ball) > 0.3, "the planted sphere is found"
    assert report["scan"]["enhancement"]["method"] in ("hu", "model")
    assert report["extra"]["windows"]["run"] >= 1
    assert f"{len(report['lesions'])} lesion(s)" in r.stdout


def test_lung_ct_segmentation_opens_in_slicerio_with_names_colours_terminology(lung_run):
    import slicerio

    image, out, r, ball = lung_run
    report = json.loads((out / "report.json").read_text())
    seg = slicerio.read_segmentation(str(out / "lesions.seg.nrrd"))
    segments = seg["segments"]
    assert len(segments) == len(report["lesions"]) >= 1
    for s, les in zip(segments, report["lesions"]):
        assert s["labelValue"] == les["label"] and s["name"] == les["segment"]["name"]
        assert s["name"].startswith(les["disease"]["display_name"])
        assert np.allclose(np.array(s["color"]) * 255, les["segment"]["color_rgb"], atol=1)
        term = s["terminology"]
        assert term["category"][:2] == ["SCT", "49755003"]
        assert term["type"][0] == "SCT" and term["type"][1] == les["segment"]["codes"]["type"]["value"]
        assert s["tags"]["Malenia.disease"] == (les["disease"]["name"] or "")
        assert s["tags"]["Malenia.attrId.location"] == (les["attributes"]["location"]["id"] or "")
    voxels = seg["voxels"]
    assert voxels.shape == (512, 512, 48)
