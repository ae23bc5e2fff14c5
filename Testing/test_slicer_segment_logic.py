"""MaleniaSegment module logic against real Slicer MRML (PyPI slicer-core) and real output folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_segment_support import TOTALSEG, make_output, new_scene, read_dicom_example

from malenia.aspects import ASPECTS
from malenia.data.dataset import read_case, read_dataset
from malenia.infer.seg_nrrd import ascii_text

from MaleniaSegmentLib import mrml_io
from MaleniaSegmentLib.corrections import build_index, versions
from MaleniaSegmentLib.export import ExportError
from MaleniaSegmentLib.logic import MaleniaLogic, Settings
from MaleniaSegmentLib.session import LABEL_TAG, ResultsError, get_tag


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory, shared_data) -> Path:
    return make_output(tmp_path_factory.mktemp("malenia") / "out")


@pytest.fixture(scope="module")
def report(output_dir) -> dict:
    return json.loads((output_dir / "report.json").read_text())


def _load(output_dir, tmp_path):
    scene = new_scene()
    volume = mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen")
    logic = MaleniaLogic(scene, Settings(results_dir=tmp_path / "results", corrections_dir=tmp_path / "corrections"))
    session = logic.loadResults(output_dir, volume)
    return scene, volume, logic, session


def _segment_by_label(session, label):
    return session.segmentation.GetSegment(session.segment_ids_by_label()[label])


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_import_gives_one_named_coloured_coded_segment_per_lesion(output_dir, report, tmp_path):
    scene, volume, _, session = _load(output_dir, tmp_path)
    seg = session.segmentation_node
    assert seg.GetSegmentation().GetNumberOfSegments() == len(report["lesions"]) == 3
    # references the input volume
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is volume
    # the output folder is not the node's storage (scene saves must not write into it)
    assert seg.GetStorageNode() is None
    for entry in report["lesions"]:
        segment = _segment_by_label(session, entry["label"])
        assert segment.GetName() == entry["segment"]["name"]
        assert np.allclose(segment.GetColor(), np.array(entry["segment"]["color_rgb"]) / 255.0, atol=1e-3)
        assert get_tag(segment, segment.GetTerminologyEntryTagName()).rstrip("|") == ascii_text(entry["segment"]["terminology"])
        assert get_tag(segment, "Malenia.disease") == entry["disease"]["name"]
        for aspect in ASPECTS:
            assert get_tag(segment, f"Malenia.attr.{aspect}") == ascii_text(entry["attributes"][aspect]["description"])
            assert get_tag(segment, f"Malenia.attrId.{aspect}") == (entry["attributes"][aspect]["id"] or "")
    # names follow the diseases; the two kidney lesions are told apart by their terminology's side
    names = [e["segment"]["name"] for e in report["lesions"]]
    assert names == ["Kidney tumor", "Liver cyst", "Kidney cyst"]
    assert "Right" in report["lesions"][0]["segment"]["terminology"] and "Left" in report["lesions"][2]["segment"]["terminology"]
    # masks are the label map voxel for voxel
    nifti = sitk.ReadImage(str(output_dir / "lesions.nii.gz"))
    mine = session.labels_image()
    assert mrml_io.same_grid(mine, nifti)
    assert np.array_equal(sitk.GetArrayViewFromImage(mine), sitk.GetArrayViewFromImage(nifti))


def test_lesion_rows_match_the_report(output_dir, report, tmp_path):
    _, _, _, session = _load(output_dir, tmp_path)
    rows = {lesion.label: lesion for lesion in session.lesions}
    assert sorted(rows) == [e["label"] for e in report["lesions"]]
    for entry in report["lesions"]:
        lesion, m = rows[entry["label"]], entry["measurements"]
        assert lesion.disease.key == entry["disease"]["name"]
        assert lesion.disease.name == entry["disease"]["display_name"]
        assert lesion.disease.probability == pytest.approx(entry["disease"]["probability"])
        assert lesion.volume_ml == pytest.approx(m["volume_ml"])
        assert lesion.longest_mm == pytest.approx(m["long_axis_mm"]) and lesion.short_axis_mm == pytest.approx(m["short_axis_mm"])
        assert lesion.longest_mm >= lesion.short_axis_mm > 0
        assert lesion.color == tuple(entry["segment"]["color_rgb"])
        for aspect in ASPECTS:
            a = lesion.aspects[aspect]
            assert a.matched.text == entry["attributes"][aspect]["description"]
            assert [c.text for c in a.alternatives] == [x["description"] for x in entry["attributes"][aspect]["alternatives"]]


def test_centre_of_a_lesion_lies_in_its_mask(output_dir, tmp_path):
    _, volume, _, session = _load(output_dir, tmp_path)
    labels = session.labels_image()
    arr = sitk.GetArrayViewFromImage(labels)
    for lesion in session.lesions:
        r, a, s = session.center_ras(lesion.label)
        i, j, k = labels.TransformPhysicalPointToIndex((-r, -a, s))
        assert arr[k, j, i] == lesion.label


def test_import_refuses_another_volume_and_incomplete_folders(output_dir, tmp_path, shared_data):
    scene = new_scene()
    other = mrml_io.load_volume(scene, shared_data / "ct" / "pyradiomics-lung1" / "lung1_image.nrrd")
    logic = MaleniaLogic(scene, Settings(tmp_path / "r", tmp_path / "c"))
    with pytest.raises(ResultsError, match="another image grid"):
        logic.loadResults(output_dir, other)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "report.json").write_text((output_dir / "report.json").read_text())
    with pytest.raises(ResultsError, match="lesions.nii.gz is missing"):
        logic.loadResults(partial, other)


def _replace_mask(scene, session, segment_id, mask_zyx: np.ndarray):
    """What the Segment Editor does: replace a segment's binary labelmap."""
    import slicer

    ref = mrml_io.volume_to_sitk(session.volume_node)
    img = sitk.GetImageFromArray(mask_zyx.astype(np.uint8))
    img.CopyInformation(ref)
    node = mrml_io.add_volume_from_sitk(scene, img, "edit", labelmap=True)
    logic = mrml_io.segmentations_logic(scene)
    oriented = logic.CreateOrientedImageDataFromVolumeNode(node)
    assert logic.SetBinaryLabelmapToSegment(oriented, session.segmentation_node, segment_id,
                                            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    scene.RemoveNode(node)


def _add_segment(scene, session, mask_zyx: np.ndarray, name: str) -> str:
    ref = mrml_io.volume_to_sitk(session.volume_node)
    img = sitk.GetImageFromArray(mask_zyx.astype(np.uint8))
    img.CopyInformation(ref)
    node = mrml_io.add_volume_from_sitk(scene, img, name, labelmap=True)
    before = set(session.segment_ids())
    assert mrml_io.segmentations_logic(scene).ImportLabelmapToSegmentationNode(node, session.segmentation_node)
    scene.RemoveNode(node)
    (new_id,) = set(session.segment_ids()) - before
    session.segmentation.GetSegment(new_id).SetName(name)
    return new_id


def test_correction_round_trips_into_the_dataset_format(output_dir, report, tmp_path):
    scene, volume, logic, session = _load(output_dir, tmp_path)
    kidney, liver, small = (session.lesion(k) for k in (1, 2, 3))
    # per aspect: another offered description, and typed free text; the disease of another lesion
    density_alt = kidney.aspects["density"].options()[1]
    kidney.aspects["density"].choose(density_alt.text)
    small.aspects["specific_features"].choose("thin peripheral rim calcification")
    liver.set_disease("Hepatic vessel tumor", {"hepatic_vessel_tumor": "Hepatic vessel tumor"})
    session.apply_to_segment(liver)
    # the Segment Editor: half of the kidney tumour erased, a missed lesion painted
    labels = sitk.GetArrayFromImage(session.labels_image())
    kidney_mask = labels == 1
    zs = np.nonzero(kidney_mask.any(axis=(1, 2)))[0]
    kidney_mask[: zs[len(zs) // 2]] = False
    _replace_mask(scene, session, kidney.segment_id, kidney_mask)
    added = np.zeros_like(kidney_mask)
    added[20:23, 40:44, 60:64] = True
    added &= labels == 0
    _add_segment(scene, session, added, "Liver cyst")

    saved = logic.saveCorrection()
    assert saved.version == 1 and saved.case_id.endswith("/v001") and saved.path.is_dir()
    case = read_case(tmp_path / "corrections", saved.case_id)
    image = mrml_io.volume_to_sitk(volume)
    assert np.array_equal(sitk.GetArrayViewFromImage(case.image), sitk.GetArrayViewFromImage(image))
    assert mrml_io.same_grid(case.lesions, image)
    got = sitk.GetArrayFromImage(case.lesions)
    assert sorted(np.unique(got).tolist()) == [0, 1, 2, 3, 4]
    assert np.array_equal(got == 1, kidney_mask) and np.array_equal(got == 4, added)
    assert np.array_equal(got == 2, labels == 2) and np.array_equal(got == 3, labels == 3)
    lesions = {x.label: x for x in case.report.lesions}
    assert [lesions[k].disease for k in (1, 2, 3, 4)] == ["kidney_tumor", "hepatic_vessel_tumor", "kidney_cyst", "liver_cyst"]
    d = lesions[1].attributes["density"][0]
    assert (d.text, d.id) == (density_alt.text, density_alt.id)
    sf = lesions[3].attributes["specific_features"][0]
    assert (sf.text, sf.id) == ("thin peripheral rim calcification", None)
    model_loc = report["lesions"][0]["attributes"]["location"]
    assert (lesions[1].attributes["location"][0].text, lesions[1].attributes["location"][0].id) == \
        (model_loc["description"], model_loc["id"])
    assert lesions[1].extra["review"]["corrected_aspects"] == ["density"]
    assert lesions[2].extra["review"]["disease_corrected"] is True
    assert lesions[4].extra["review"]["added_by_reviewer"] is True and all(not v for v in lesions[4].attributes.values())
    # the kidney tumour's calls were made on the outline before half of it was erased; the others' on theirs
    assert [lesions[k].extra["review"]["model_calls_on_this_outline"] for k in (1, 2, 3, 4)] == [False, True, True, False]
    assert case.report.enhancement.id == "enhancement.non_contrast"
    assert case.report.extra["masks_edited"] is True
    # the index lists the case; a second save is a new version and leaves the first untouched
    before = _tree_digest(saved.path)
    assert read_dataset(tmp_path / "corrections").cases == [saved.case_id]
    again = logic.saveCorrection()
    assert again.version == 2 and again.case_id.split("/")[0] == saved.case_id.split("/")[0]
    assert _tree_digest(saved.path) == before
    index = read_dataset(tmp_path / "corrections")
    assert index.cases == [again.case_id]
    assert index.extra["history"][again.case_id.split("/")[0]] == [saved.case_id, again.case_id]


def test_a_saved_correction_gives_an_unnamed_unclassified_lesion_no_disease(tmp_path, shared_data):
    out = make_output(tmp_path / "out", unclassified=(2, 3))
    scene, volume, logic, session = _load(out, tmp_path)
    kidney, liver, small = (session.lesion(k) for k in (1, 2, 3))
    assert liver.disease.unclassified and liver.disease.key == "liver_cyst"  # its closest disease
    small.set_disease(small.disease.name, {small.disease.key: small.disease.name})  # the reviewer names this one
    kidney.aspects["density"].choose(kidney.aspects["density"].options()[1].text)
    case = read_case(tmp_path / "corrections", logic.saveCorrection().case_id)
    lesions = {x.label: x for x in case.report.lesions}
    assert [lesions[k].disease for k in (1, 2, 3)] == ["kidney_tumor", None, small.disease.key]
    assert lesions[2].extra["review"]["model_unclassified"] is True and lesions[2].extra["review"]["model_disease"] == "liver_cyst"
    assert lesions[3].extra["review"]["disease_corrected"] is True and lesions[1].extra["review"]["model_unclassified"] is False


def test_a_taken_version_number_is_skipped_not_overwritten(output_dir, tmp_path, monkeypatch):
    _, _, logic, session = _load(output_dir, tmp_path)
    first = logic.saveCorrection()
    case = first.case_id.split("/")[0]
    # Another Slicer saved v002 after we looked for the next number: our save must take v003.
    from malenia.data.corrections import CorrectionStore

    real = CorrectionStore.versions
    other = first.path.parent / "v002"
    other.mkdir()
    (other / "marker").write_text("someone else's correction")
    calls = {"n": 0}

    def stale(store, name):
        calls["n"] += 1
        return [1] if calls["n"] == 1 else real(store, name)

    monkeypatch.setattr(CorrectionStore, "versions", stale)
    saved = logic.saveCorrection()
    assert saved.version == 3 and (other / "marker").read_text() == "someone else's correction"
    assert versions(tmp_path / "corrections", case) == [1, 2, 3]
    # v002 has no report.json: the index skips it
    assert build_index(tmp_path / "corrections").extra["history"][case] == [f"{case}/v001", f"{case}/v003"]


def test_disease_change_recodes_the_segment(output_dir, tmp_path):
    _, _, _, session = _load(output_dir, tmp_path)
    lesion = session.lesion(3)
    lesion.set_disease("kidney_stone", {"kidney_stone": "Kidney stone"})
    session.apply_to_segment(lesion)
    segment = _segment_by_label(session, 3)
    term = session.terminology.for_lesion("kidney_stone", location_id=lesion.aspects["location"].current.id)
    assert segment.GetName() == "Kidney stone"
    assert np.allclose(segment.GetColor(), term.color_float, atol=1e-4)
    assert get_tag(segment, segment.GetTerminologyEntryTagName()) == term.slicer_string()
    assert "Calculus" in term.slicer_string() and "Left" in term.slicer_string()
    assert get_tag(segment, "Malenia.disease") == "kidney_stone" and get_tag(segment, "Malenia.corrected") == "1"
    assert get_tag(segment, LABEL_TAG) == "3"
    # a typed disease gets the generic lesion code, the typed name, and is flagged as typed
    lesion.set_disease("Angiomyolipoma", {})
    session.apply_to_segment(lesion)
    assert segment.GetName() == "Angiomyolipoma" and get_tag(segment, "Malenia.disease") == "angiomyolipoma"
    assert "Lesion" in get_tag(segment, segment.GetTerminologyEntryTagName())


def test_exports_reread(output_dir, tmp_path):
    import slicerio

    from malenia.infer.results import SegmentationResult, validate_report

    scene, volume, logic, session = _load(output_dir, tmp_path)
    session.lesion(2).set_disease("hepatic_vessel_tumor", {"hepatic_vessel_tumor": "Hepatic vessel tumor"})
    session.lesion(1).aspects["surface"].choose("lobulated outline seen on the arterial phase")
    session.apply_to_segment(session.lesion(2))
    out = tmp_path / "export"
    paths = {kind: logic.export(kind, out / name) for kind, name in
             [("nifti", "a.nii.gz"), ("seg", "a.seg.nrrd"), ("json", "a.json"), ("html", "a.html")]}
    labels = sitk.ReadImage(str(paths["nifti"]))
    assert mrml_io.same_grid(labels, mrml_io.volume_to_sitk(volume))
    assert np.array_equal(sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(session.labels_image(relabel=True)))
    seg = slicerio.read_segmentation(str(paths["seg"]))
    assert [s["name"] for s in seg["segments"]] == ["Kidney tumor", "Hepatic vessel tumor", "Kidney cyst"]
    assert seg["segments"][1]["tags"]["Malenia.disease"] == "hepatic_vessel_tumor"
    assert seg["segments"][0]["tags"]["Malenia.attr.surface"] == "lobulated outline seen on the arterial phase"
    # the exported .seg.nrrd loads back into MRML as well
    scene2 = new_scene()
    import slicer

    node = slicer.vtkMRMLSegmentationNode()
    scene2.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(paths["seg"]))
    assert storage.ReadData(node) and node.GetSegmentation().GetNumberOfSegments() == 3
    obj = json.loads(paths["json"].read_text())
    validate_report(obj)
    back = SegmentationResult.from_json(obj)
    assert back.lesion(2).disease.name == "hepatic_vessel_tumor"
    assert back.lesion(1).attributes["surface"].description == "lobulated outline seen on the arterial phase"
    assert back.lesion(1).attributes["surface"].id is None
    assert obj["extra"]["review"]["lesions"][1]["disease_corrected"] is True
    html = paths["html"].read_text()
    assert "Hepatic vessel tumor" in html and "lobulated outline seen on the arterial phase" in html
    assert not list(out.glob(".*")), "no staging leftovers"
    with pytest.raises(ExportError, match="DICOM"):
        logic.export("dicom", out / "a.dcm")


def test_dicom_volume_exports_dicom_seg(tmp_path, shared_data):
    import highdicom as hd

    out = make_output(tmp_path / "dcm_out", dicom=True)
    image, files = read_dicom_example()
    scene = new_scene()
    volume = mrml_io.add_volume_from_sitk(scene, image, "CT series")
    logic = MaleniaLogic(scene, Settings(tmp_path / "r", tmp_path / "c"))
    session = logic.loadResults(out, volume, dicom_files=files)
    session.lesion(1).set_disease("liver_cyst", {"liver_cyst": "Liver cyst"})
    path = logic.export("dicom", tmp_path / "reviewed.dcm")
    seg = hd.seg.segread(str(path))
    assert seg.number_of_segments == 1
    assert seg.get_segment_description(1).segment_label == "Liver cyst"
    mask = seg.get_volume(combine_segments=True).array
    assert int(mask.sum()) == int((sitk.GetArrayViewFromImage(session.labels_image()) > 0).sum())


def test_deleted_and_emptied_segments(output_dir, tmp_path):
    scene, _, logic, session = _load(output_dir, tmp_path)
    session.segmentation.RemoveSegment(session.lesion(3).segment_id)
    empty = np.zeros(sitk.GetArrayViewFromImage(session.labels_image()).shape, bool)
    _replace_mask(scene, session, session.lesion(2).segment_id, empty)
    with pytest.raises(ValueError, match=r"lesion\(s\) \[2\] have an empty mask"):
        logic.saveCorrection()
    with pytest.raises(ResultsError, match="empty mask"):
        logic.export("json", tmp_path / "r.json")
    assert [lesion.label for lesion in session.lesions] == [1, 2] and session.masks_edited
    session.segmentation.RemoveSegment(session.lesion(2).segment_id)
    saved = logic.saveCorrection()
    case = read_case(tmp_path / "corrections", saved.case_id)
    assert [x.disease for x in case.report.lesions] == ["kidney_tumor"]
    assert sorted(np.unique(sitk.GetArrayViewFromImage(case.lesions)).tolist()) == [0, 1]


def test_a_lesion_drawn_after_a_deletion_never_takes_the_deleted_lesions_label(output_dir, tmp_path):
    # a reused label would give the new outline the deleted lesion's scores (profile editor, re-ranking) and a
    # describe run started before the deletion would write its description onto the new outline
    scene, _, logic, session = _load(output_dir, tmp_path)
    last = max(lesion.label for lesion in session.lesions)
    found = {x.label for x in session.result.lesions}  # what the profile editor and re-ranking look up by label
    assert last in found
    session.segmentation.RemoveSegment(session.lesion(last).segment_id)
    session.sync_with_segmentation()
    labels = sitk.GetArrayFromImage(session.labels_image())
    drawn = np.zeros(labels.shape, bool)
    drawn[20:24, 40:46, 60:66] = True
    _add_segment(scene, session, drawn & (labels == 0), "Segment_1")
    session.sync_with_segmentation()
    (new,) = session.drawn_lesions()
    assert new.label == last + 1 and new.label not in found
    # before the model describes it, every description of each aspect is offered, with its id
    offered = new.aspects["surface"].options()
    assert [c.id for c in offered] == session.vocabulary.ids("surface") and all(c.score is None for c in offered)
    assert new.aspects["surface"].choose(offered[1].text).id == offered[1].id and new.is_corrected
    session.segmentation.RemoveSegment(new.segment_id)  # a drawn lesion deleted: its label is not taken again either
    session.sync_with_segmentation()
    _add_segment(scene, session, drawn & (labels == 0), "Segment_2")
    session.sync_with_segmentation()
    assert [x.label for x in session.drawn_lesions()] == [last + 2]


def test_changing_to_a_ranked_disease_keeps_its_model_probability(output_dir, tmp_path):
    _, _, _, session = _load(output_dir, tmp_path)
    lesion = session.lesion(1)
    runner_up = lesion.disease_alternatives[0]
    chosen = lesion.set_disease(runner_up.name, {runner_up.key: runner_up.name})
    assert chosen.key == runner_up.key and chosen.probability == pytest.approx(runner_up.probability)
    assert lesion.set_disease(lesion.disease.name, {}) == lesion.disease and not lesion.is_corrected


def test_volume_in_another_axis_order_is_accepted_and_exports_on_the_scan_grid(output_dir, tmp_path):
    """A DICOM reader may stack the same slices in the opposite order: same voxels, other grid."""
    ct = sitk.ReadImage(str(TOTALSEG / "example_ct_sm.nii.gz"))
    flipped = sitk.Flip(ct, [False, False, True])
    assert not mrml_io.same_grid(flipped, ct)
    scene = new_scene()
    volume = mrml_io.add_volume_from_sitk(scene, flipped, "flipped")
    logic = MaleniaLogic(scene, Settings(tmp_path / "r", tmp_path / "c"))
    session = logic.loadResults(output_dir, volume)
    nifti = sitk.ReadImage(str(output_dir / "lesions.nii.gz"))
    mine = session.labels_image()
    assert mrml_io.same_grid(mine, flipped)
    assert np.array_equal(sitk.GetArrayViewFromImage(mine), sitk.GetArrayViewFromImage(sitk.Flip(nifti, [False, False, True])))
    exported = sitk.ReadImage(str(logic.export("nifti", tmp_path / "x.nii.gz")))
    assert mrml_io.same_grid(exported, nifti)
    assert np.array_equal(sitk.GetArrayViewFromImage(exported), sitk.GetArrayViewFromImage(nifti))
    # a volume of another scan is still refused
    shifted = sitk.Image(ct)
    shifted.SetOrigin([o + 7.0 for o in ct.GetOrigin()])
    other = mrml_io.add_volume_from_sitk(scene, shifted, "shifted")
    with pytest.raises(ResultsError):
        logic.loadResults(output_dir, other)


def _describe(logic, model, tmp_path, meanwhile=None):
    """Describe outlines to the end; `meanwhile()`: what the reader does while the run is under way."""
    import sys
    import time

    from MaleniaSegmentLib.runner import RunState
    from MaleniaSegmentLib.segment_run import SegmentRequest

    run = logic.startDescribing(SegmentRequest(None, model_dir=str(model), device="cpu"), python=sys.executable)
    if meanwhile is not None:
        meanwhile()
    deadline = time.monotonic() + 300
    while run.state is RunState.RUNNING and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.1)
    return run, logic.finishDescribing(run)


def test_outlines_drawn_or_edited_by_hand_are_described_by_the_model_and_keep_the_reviewers_choices(
        output_dir, tmp_path, tmp_path_factory):
    from segment_helpers import tiny_trained_model

    model = tiny_trained_model(tmp_path_factory)
    scene, volume, logic, session = _load(output_dir, tmp_path)
    with pytest.raises(ValueError, match="no outline to describe"):  # every outline is the model's own
        logic.startDescribing(None)
    labels = sitk.GetArrayFromImage(session.labels_image())
    first, second = np.zeros(labels.shape, bool), np.zeros(labels.shape, bool)
    first[20:24, 40:46, 60:66] = True
    second[10:13, 30:34, 20:24] = True
    _add_segment(scene, session, first & (labels == 0), "Segment_1")  # a plain name: the model names it
    _add_segment(scene, session, second & (labels == 0), "Liver cyst")  # named by a disease: the reviewer's choice
    # a found lesion re-outlined: half of it erased, after the reviewer chose its disease
    found = session.lesion(1)
    zs = np.nonzero(labels == 1)[0]
    edited = (labels == 1) & (np.arange(labels.shape[0])[:, None, None] <= np.median(zs))
    _replace_mask(scene, session, found.segment_id, edited)
    found.set_disease("Hepatic vessel tumor", {"hepatic_vessel_tumor": "Hepatic vessel tumor"})
    session.sync_with_segmentation()
    plain, named = session.drawn_lesions()
    assert [x.label for x in session.lesions_to_describe()] == [1, plain.label, named.label]
    assert found.outline_changed and not session.lesion(2).outline_changed
    assert "3 outline(s) not described" in session.edit_summary()
    plain.aspects["shape"].choose("a shape typed by the reviewer")

    run, described = _describe(logic, model, tmp_path)
    assert {r.label for r in described} == {1, plain.label, named.label}
    assert run.out_dir.name.startswith("abdomen-outlined")
    report = json.loads((run.out_dir / "report.json").read_text())
    assert report["extra"]["outlined"]["input_labels"] == sorted([1, plain.label, named.label])
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(run.out_dir / "lesions.nii.gz")))
    now = sitk.GetArrayFromImage(session.labels_image())
    for k, label in enumerate(sorted([1, plain.label, named.label]), start=1):  # the outlines as they are, voxel for voxel
        assert np.array_equal(out == k, now == label)
    for lesion in (plain, named, found):
        assert lesion.described and not lesion.outline_changed
        assert all(lesion.aspects[a].matched is not None for a in ASPECTS)
        assert lesion.disease.key is not None
    assert not plain.from_model and not named.from_model and found.from_model
    assert plain.aspects["shape"].current.text == "a shape typed by the reviewer"  # the correction stays
    assert plain.corrected_disease is None and plain.current_disease == plain.disease  # the model's name for it
    assert named.current_disease.key == "liver_cyst"
    assert named.is_corrected == (named.disease.key != "liver_cyst")
    # the found lesion: the model's calls are now those on the new outline, the reviewer's disease stays theirs
    assert found.current_disease.key == "hepatic_vessel_tumor"
    assert found.disease.key == next(x for x in session.result.lesions if x.label == 1).disease.name
    assert found.voxel_count == int(edited.sum())
    # the described outlines are the ones the calls were made on: nothing waits, until an outline changes again
    session.sync_with_segmentation()
    assert session.lesions_to_describe() == [] and "not described" not in session.edit_summary()
    grown = second.copy()
    grown[10:13, 30:34, 24] = True
    _replace_mask(scene, session, named.segment_id, grown & (labels == 0))
    session.sync_with_segmentation()
    assert session.lesions_to_describe() == [named] and named.outline_changed
    _replace_mask(scene, session, named.segment_id, np.zeros(labels.shape, bool))  # emptied: nothing to describe
    session.sync_with_segmentation()
    assert session.lesions_to_describe() == []
    _replace_mask(scene, session, named.segment_id, grown & (labels == 0))
    # the described lesions' scores joined the result: the profile editor reads them, corrections record the model's call
    from MaleniaSegmentLib.profile_editor import lesion_scores

    assert set(lesion_scores(session, plain.label)) == set(ASPECTS)
    saved = logic.saveCorrection()
    case = read_case(tmp_path / "corrections", saved.case_id)
    review = [x.extra["review"] for x in case.report.lesions if x.extra["review"]["added_by_reviewer"]]
    assert [r["described_by_model"] for r in review] == [True, True]
    assert review[0]["model_disease"] == plain.disease.key
    refound = [x.extra["review"] for x in case.report.lesions if x.extra["review"]["model_label"] == 1]
    assert refound[0]["described_by_model"] and refound[0]["model_disease"] == found.disease.key
    assert refound[0]["model_calls_on_this_outline"] and not review[1]["model_calls_on_this_outline"]  # named: re-drawn


def test_an_outline_edited_while_the_model_describes_it_waits_for_a_description_again(
        output_dir, tmp_path, tmp_path_factory):
    from segment_helpers import tiny_trained_model

    model = tiny_trained_model(tmp_path_factory)
    scene, volume, logic, session = _load(output_dir, tmp_path)
    labels = sitk.GetArrayFromImage(session.labels_image())
    found = session.lesion(1)
    zs = np.nonzero(labels == 1)[0]
    below = np.arange(labels.shape[0])[:, None, None] <= np.median(zs)
    _replace_mask(scene, session, found.segment_id, (labels == 1) & below)
    session.sync_with_segmentation()
    assert session.lesions_to_describe() == [found]
    # the reader erases more while the run describes the outline as it was when it started
    later = (labels == 1) & below & (np.arange(labels.shape[0])[:, None, None] < np.median(zs))
    assert 0 < later.sum() < ((labels == 1) & below).sum()
    run, described = _describe(logic, model, tmp_path, lambda: _replace_mask(scene, session, found.segment_id, later))
    assert described == [found] and found.described
    assert found.outline_changed and session.lesions_to_describe() == [found]  # the calls are of the earlier outline
    assert found.voxel_count == int(later.sum())
    saved = logic.saveCorrection()
    review = read_case(tmp_path / "corrections", saved.case_id).report.lesions[0].extra["review"]
    assert review["described_by_model"] and not review["model_calls_on_this_outline"]
