"""The MaleniaSegment profile editor on PySide6 offscreen, on a real result in a slicer-core MRML scene:
test a draft on a lesion (nothing saved), save (the open result's lesions re-ranked and their
segments renamed at once), remove (back to the model's table)."""

from __future__ import annotations

import json

import pytest

from slicer_segment_support import TOTALSEG, _attribute_matches, make_output, new_scene

from malenia.infer.site_table import table_in_force_at
from malenia.knowledge.table import KnowledgeTable
from malenia.knowledge.vocabulary import Vocabulary

from MaleniaSegmentLib import mrml_io
from MaleniaSegmentLib.logic import MaleniaLogic, Settings
from MaleniaSegmentLib.profile_editor import (ProfileEditor, ProfileEditorLogic, get, lesion_ruled_out, lesion_scores,
                                              qt_compat)

# the liver lesion of slicer_segment_support.PLANNED as a new disease would describe it
MASS = {"location.liver.right_lobe": 1, "location.liver.left_lobe": 1, "shape.round": 1, "density.fluid": 2,
        "density.hypodense.liver": 1, "density_variation.homogeneous": 1, "surface.well_defined": 1,
        "relationship.separate": 1, "specific_features.none": 1}


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory, shared_data):
    """A segment output folder whose report keeps each lesion's scores (schema 1.1)."""
    out = make_output(tmp_path_factory.mktemp("editor") / "out")
    report = json.loads((out / "report.json").read_text())
    table, vocab = KnowledgeTable.load(), Vocabulary.load()
    for lesion, (disease, side) in zip(report["lesions"], (("kidney_tumor", "right"), ("liver_cyst", None),
                                                           ("kidney_cyst", "left"))):
        assert lesion["disease"]["name"] == disease
        lesion["scores"] = _attribute_matches(disease, side, table, vocab)
    (out / "report.json").write_text(json.dumps(report))
    return out


def test_draft_is_tested_on_the_lesion_then_saved_renaming_the_open_result(output_dir, tmp_path):
    assert qt_compat.BINDING == "PySide6"
    app = qt_compat.ensure_application()
    scene = new_scene()
    volume = mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen")
    logic = MaleniaLogic(scene, Settings(tmp_path / "results", tmp_path / "corrections"))
    session = logic.loadResults(output_dir, volume)
    site = tmp_path / "site"
    editor = ProfileEditor(ProfileEditorLogic(lambda: table_in_force_at(None, [site]), site))
    editor.set_session(session)
    editor.widget.show()
    app.processEvents()

    editor.select_disease(None)  # a new disease
    editor.key_edit.setText("liver_mass_x")
    editor.name_edit.setText("Liver mass X")
    editor.organ_combo.setCurrentIndex(editor.organ_combo.findText("liver"))
    for desc_id, w in MASS.items():
        editor.set_weight(desc_id, w)
    editor.set_lesion_scores(lesion_scores(session, 2))
    editor.test_button.click()
    app.processEvents()
    rows = [get(editor.ranking.item(r, 1), "text") for r in range(editor.ranking.rowCount())]
    assert rows[0] == "liver_mass_x" and set(rows) == set(KnowledgeTable.load().diseases) | {"liver_mass_x"}
    assert "would be named Liver mass X" in get(editor.status, "text")
    editor.set_lesion_scores(lesion_scores(session, 2), ["liver_mass_x"])  # as if its look ruled the draft out
    editor.test_button.click()
    assert get(editor.ranking.item(0, 1), "text") != "liver_mass_x"
    editor.set_lesion_scores(lesion_scores(session, 2), lesion_ruled_out(session, 2))  # what the report says
    assert not site.exists() or not list(site.glob("*.json"))  # testing writes nothing
    assert session.lesion(2).disease.key == "liver_cyst"

    liver_segment = session.lesion(2).segment_id
    editor.save_button.click()
    app.processEvents()
    assert (site / "liver_mass_x.json").is_file()
    assert session.lesion(2).disease.key == "liver_mass_x"  # re-ranked at once, no re-segmentation
    # named as `malenia segment` names it: the profile's own name
    assert session.segmentation.GetSegment(liver_segment).GetName().startswith("Liver mass X")
    assert [p["key"] for p in session.result.knowledge["profiles"] if str(p["path"]).startswith(str(site))] == ["liver_mass_x"]
    assert [session.lesion(k).disease.key for k in (1, 3)] == ["kidney_tumor", "kidney_cyst"]
    assert "1 lesion(s) of the open result renamed" in get(editor.status, "text")
    # an unnamed draft is refused without writing
    editor.select_disease(None)
    editor.key_edit.setText("nameless")
    editor.save_button.click()
    assert "Not saved" in get(editor.status, "text") and not (site / "nameless.json").exists()

    editor.select_disease("liver_mass_x")
    assert get(editor.name_edit, "text") == "Liver mass X" and editor.remove_button.isEnabled()
    editor.remove_button.click()
    app.processEvents()
    assert not (site / "liver_mass_x.json").exists()
    assert session.lesion(2).disease.key == "liver_cyst"
    editor.widget.close()


def test_draft_estimated_from_saved_corrections_then_tested_and_saved(tmp_path):
    """"Estimate from corrections": the weights of a new disease from the lesions a radiologist saved under
    its key (only the latest version of each scan counts, as the corrections dataset lists it)."""
    import SimpleITK as sitk

    from malenia.data.corrections import CorrectionStore, case_name
    from malenia.data.dataset import Description, LesionReport

    app = qt_compat.ensure_application()
    site, corrections = tmp_path / "site", tmp_path / "corrections"
    editor = ProfileEditor(ProfileEditorLogic(lambda: table_in_force_at(None, [site]), site))
    editor.select_disease(None)
    editor.key_edit.setText("liver_mass_x")
    editor.name_edit.setText("Liver mass X")
    editor.organ_combo.setCurrentIndex(editor.organ_combo.findText("liver"))
    app.processEvents()
    assert editor.estimate() is None and "no corrections folder" in get(editor.status, "text")
    editor.corrections_dir = lambda: corrections
    assert editor.estimate() is None and "no saved corrections" in get(editor.status, "text")

    store, d = CorrectionStore(corrections), lambda i: [Description(i.split(".")[-1], i)]
    for k, (first, second) in enumerate((("shape.oval", "shape.round"), ("shape.round", "shape.round"))):
        image = sitk.Image(8, 8, 8, sitk.sitkInt16)
        image[1, 1, 1] = k  # another scan
        labels = sitk.Image(8, 8, 8, sitk.sitkUInt8)
        labels[2, 2, 2], labels[5, 5, 5] = 1, 2
        mass = LesionReport(1, "liver_mass_x", {"shape": d(first), "density": d("density.fluid")})
        cyst = LesionReport(2, "liver_cyst", {"shape": d("shape.oval")})
        store.save(case_name("ct", image), image, labels, [mass, cyst])
        if k == 0:  # the same scan corrected again: v002 replaces v001's oval by a round mass
            mass = LesionReport(1, "liver_mass_x", {"shape": d(second), "density": d("density.fluid")})
            store.save(case_name("ct", image), image, labels, [mass, cyst])

    draft = editor.estimate()
    shapes = editor.logic.vocab.ids_for_organ("shape", "liver")
    expect = (2 + 1) / (2 + len(shapes))  # two round masses (latest versions only), smoothed over the liver's shapes
    assert draft.weights["shape"]["shape.round"] == pytest.approx(expect)
    assert get(editor._weights["shape"]["shape.round"], "value") == pytest.approx(expect, abs=1e-3)
    assert "Estimated from 2 saved lesion(s) named liver_mass_x" in get(editor.status, "text")
    assert not site.exists() or not list(site.glob("*.json"))  # estimating writes nothing
    editor.save()
    saved = json.loads((site / "liver_mass_x.json").read_text())
    assert saved["profile"]["shape"]["shape.round"] == pytest.approx(expect, abs=1e-3)

    editor.select_disease(None)
    editor.key_edit.setText("other_mass")
    assert editor.estimate() is None
    assert "liver_mass_x (2), liver_cyst (2)" in get(editor.status, "text")  # what the corrections do hold


def test_the_disease_a_reviewers_descriptions_point_to_is_offered_and_used_in_one_click(output_dir, tmp_path):
    """A liver lesion the model read as a cyst, re-described by the reviewer as a vessel tumour is: the table names
    the disease from the corrected aspects (the others as read) and the attribute panel offers it."""
    from MaleniaSegmentLib.attribute_panel import AttributePanel
    from MaleniaSegmentLib.profile_editor import reviewed_disease
    from MaleniaSegmentLib.review import DiseaseChoice

    import shutil

    app = qt_compat.ensure_application()
    out = tmp_path / "out"
    shutil.copytree(output_dir, out)
    report = json.loads((out / "report.json").read_text())
    vocab = Vocabulary.load()
    scores = report["lesions"][1]["scores"]  # as a real report has them: every description valid for the organ scored
    for aspect in scores:
        scores[aspect] = {i: scores[aspect].get(i, 0.0) + 0.01 for i in vocab.ids_for_organ(aspect, "liver")}
    (out / "report.json").write_text(json.dumps(report))
    scene = new_scene()
    volume = mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen")
    session = MaleniaLogic(scene, Settings(tmp_path / "results", tmp_path / "corrections")).loadResults(out, volume)
    table = table_in_force_at(None, [tmp_path / "site"])
    lesion = session.lesion(2)
    offered = {c.id for c in lesion.aspects["relationship"].options()}
    assert "relationship.vascular" in offered and len(offered) == len(vocab.ids_for_organ("relationship", "liver"))
    assert lesion.disease.key == "liver_cyst" and reviewed_disease(session, 2, table) is None  # nothing corrected
    lesion.aspects["relationship"].choose("a relationship typed by the reviewer")
    assert reviewed_disease(session, 2, table) is None  # typed text: the table cannot weigh it

    panel = AttributePanel({k: session.terminology.display_name(k) for k in session.terminology.diseases})
    panel.suggest = lambda les: (lambda call: DiseaseChoice.of_call(call) if call else None)(
        reviewed_disease(session, les.label, table))
    panel.set_lesion(lesion)
    panel.widget.show()
    app.processEvents()
    assert not panel.reviewed_label.isVisible() and not panel.use_reviewed_button.isVisible()
    for aspect, desc_id in (("relationship", "relationship.vascular"), ("specific_features", "specific_features.vessel_invasion"),
                            ("shape", "shape.irregular"), ("density_variation", "density_variation.heterogeneous"),
                            ("surface", "surface.ill_defined")):
        panel.choose(aspect, vocab.text(desc_id))
    assert lesion.aspects["relationship"].current.id == "relationship.vascular"  # chosen from the list: its id kept
    call = reviewed_disease(session, 2, table)
    assert call.name == "hepatic_vessel_tumor" and not call.unclassified
    app.processEvents()
    assert "With your descriptions" in panel.reviewed_label.text() and "Hepatic vessel tumor" in panel.reviewed_label.text()
    assert panel.use_reviewed_button.isVisible() and lesion.current_disease.key == "liver_cyst"  # offered, not imposed
    panel.use_reviewed_button.click()
    app.processEvents()
    assert lesion.current_disease.key == "hepatic_vessel_tumor" and lesion.is_corrected
    assert "agree" in panel.reviewed_label.text() and not panel.use_reviewed_button.isVisible()
    lesion.reset()  # back to the model's reading: nothing to suggest
    panel.refresh()
    assert not panel.reviewed_label.isVisible()
    panel.widget.close()


def test_a_lesion_drawn_by_hand_is_named_from_the_reviewers_descriptions_alone(output_dir, tmp_path):
    """Before the model describes a drawn outline, the descriptions the reviewer picks from the offered lists name it
    through the table in force; an older report's lesion without stored scores still gets no suggestion."""
    from MaleniaSegmentLib.review import DiseaseChoice, LesionReview, drawn_aspects
    from MaleniaSegmentLib.profile_editor import reviewed_disease

    scene = new_scene()
    volume = mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen")
    session = MaleniaLogic(scene, Settings(tmp_path / "results", tmp_path / "corrections")).loadResults(output_dir, volume)
    table = table_in_force_at(None, [tmp_path / "site"])
    drawn = LesionReview(label=99, disease=DiseaseChoice(None, "Segment_1"), disease_alternatives=[],
                         aspects=drawn_aspects(session.vocabulary), from_model=False)
    session.lesions.append(drawn)
    assert reviewed_disease(session, 99, table) is None  # nothing described yet
    for aspect, desc_id in (("location", "location.kidney.left"), ("density_variation", "density_variation.heterogeneous"),
                            ("surface", "surface.ill_defined"), ("specific_features", "specific_features.necrosis"),
                            ("shape", "shape.irregular")):
        drawn.aspects[aspect].choose(session.vocabulary.text(desc_id))
    call = reviewed_disease(session, 99, table)
    assert call.name == "kidney_tumor" and not call.unclassified
    drawn.aspects["location"].choose(session.vocabulary.text("location.liver.right_lobe"))
    assert reviewed_disease(session, 99, table).name != "kidney_tumor"  # the reading follows the descriptions
    assert lesion_scores(session, 1) is not None
    session.result.lesions[0].scores = None  # an older report: its lesions' calls cannot be re-read
    session.lesion(1).aspects["shape"].choose(session.vocabulary.text("shape.irregular"))
    assert reviewed_disease(session, 1, table) is None
