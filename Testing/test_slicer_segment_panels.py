"""Lesion table and attribute panel (plain Qt) on PySide6 offscreen, filled with real results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slicer_segment_support import TOTALSEG, make_output, new_scene

from malenia.aspects import ASPECTS
from malenia.data.dataset import read_case

from MaleniaSegmentLib import mrml_io
from MaleniaSegmentLib.logic import MaleniaLogic, Settings
from MaleniaCommon.qt_compat import BINDING, ensure_application, get, qt
from MaleniaSegmentLib.review_panel import ReviewPanel

SCREENSHOT = Path("/tmp/malenia_panel.png")


@pytest.fixture(scope="module")
def app():
    assert BINDING == "PySide6"
    return ensure_application()


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory, shared_data) -> Path:
    return make_output(tmp_path_factory.mktemp("malenia") / "out")


@pytest.fixture()
def loaded(app, output_dir, tmp_path):
    scene = new_scene()
    volume = mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen")
    logic = MaleniaLogic(scene, Settings(tmp_path / "results", tmp_path / "corrections"))
    session = logic.loadResults(output_dir, volume)
    known = {k: session.terminology.display_name(k) for k in session.terminology.diseases}
    panel = ReviewPanel(known)
    panel.set_lesions(session.lesions, f"{len(session.lesions)} lesions · model {session.result.model.name} "
                                       f"{session.result.model.version} · {session.out_dir.name}")
    panel.widget.resize(470, 860)
    panel.widget.show()
    app.processEvents()
    yield logic, session, panel
    panel.widget.close()


def _click_row(app, table, row):
    from PySide6.QtTest import QTest

    rect = table.visualItemRect(table.item(row, 1))
    QTest.mouseClick(table.viewport(), qt.Qt.LeftButton, qt.Qt.NoModifier, rect.center())
    app.processEvents()


def _type(app, line_edit, text):
    from PySide6.QtTest import QTest

    line_edit.selectAll()
    QTest.keyClicks(line_edit, text)
    QTest.keyClick(line_edit, qt.Qt.Key_Return)
    app.processEvents()


def test_table_shows_one_row_per_lesion(loaded):
    _, session, panel = loaded
    rows = panel.table.rows()
    assert len(rows) == len(session.lesions) == 3
    for row, lesion in zip(rows, sorted(session.lesions, key=lambda x: x.label)):
        assert row[0] == str(lesion.label)
        assert row[1] == lesion.disease.name
        assert float(row[2]) == pytest.approx(lesion.disease.probability, abs=0.006)
        assert float(row[3]) == pytest.approx(lesion.volume_ml, abs=0.006)
        assert float(row[4]) == pytest.approx(lesion.longest_mm, abs=0.06)
        assert float(row[5]) == pytest.approx(lesion.short_axis_mm, abs=0.06)
    # sorting by volume is numeric
    panel.table.widget.sortItems(3, qt.Qt.DescendingOrder)
    volumes = [float(r[3]) for r in panel.table.rows()]
    assert volumes == sorted(volumes, reverse=True)


def test_selecting_a_lesion_shows_its_attributes(app, loaded):
    _, session, panel = loaded
    selected = []
    panel.lesionSelected.connect(selected.append)
    table = panel.table.widget
    row = panel.table.row_of(2)
    _click_row(app, table, row)
    assert selected[-1] == 2 and panel.table.selected_label() == 2
    lesion = session.lesion(2)
    attrs = panel.attributes
    assert attrs.lesion is lesion
    assert "Lesion 2" in get(attrs.header, "text") and lesion.disease.name in get(attrs.header, "text")
    for aspect in ASPECTS:
        row_widgets = attrs.rows[aspect]
        matched = lesion.aspects[aspect].matched
        assert get(row_widgets.combo, "currentText") == matched.text
        assert get(row_widgets.bar, "value") == round(100 * matched.score)
        assert get(row_widgets.combo, "count") == len(lesion.aspects[aspect].options())
        best_alt = lesion.aspects[aspect].options()[1].text if len(lesion.aspects[aspect].options()) > 1 else None
        if best_alt:
            assert best_alt in get(row_widgets.alternatives, "text")
    assert get(attrs.disease_combo, "currentText") == lesion.disease.name
    assert get(attrs.disease_bar, "value") == round(100 * lesion.disease.probability)
    assert "Ruled out" not in get(attrs.disease_alternatives, "text")
    _click_row(app, table, panel.table.row_of(1))  # the kidney tumour, whose report rules kidney cyst out
    assert session.lesion(1).ruled_out == [session.terminology.display_name("kidney_cyst")]
    assert "Ruled out by its CT values: Kidney cyst" in get(attrs.disease_alternatives, "text")


def test_editing_aspects_and_disease_then_saving(app, loaded, tmp_path):
    logic, session, panel = loaded
    applied = []
    panel.lesionChanged.connect(lambda lesion: (session.apply_to_segment(lesion), applied.append(lesion.label)))
    saved = []
    panel.saveRequested.connect(lambda: saved.append(logic.saveCorrection()))
    _click_row(app, panel.table.widget, panel.table.row_of(1))
    attrs = panel.attributes
    lesion = session.lesion(1)

    # pick the runner-up density from the list
    density = attrs.rows["density"]
    second = lesion.aspects["density"].options()[1]
    density.combo.setCurrentIndex(1)
    app.processEvents()
    assert lesion.aspects["density"].current == second and lesion.aspects["density"].is_corrected
    assert get(density.bar, "value") == round(100 * second.score)
    assert "✎" in get(density.name, "text")
    assert "✎" in panel.table.rows()[panel.table.row_of(1)][1]

    # type a new specific feature
    features = attrs.rows["specific_features"]
    _type(app, features.combo.lineEdit(), "small fat-containing focus")
    current = lesion.aspects["specific_features"].current
    assert (current.text, current.id) == ("small fat-containing focus", None)
    assert get(features.bar, "format") == "typed"

    # change the disease by typing its name
    _type(app, attrs.disease_combo.lineEdit(), "Kidney cyst")
    assert lesion.current_disease.key == "kidney_cyst"
    assert panel.table.rows()[panel.table.row_of(1)][1].startswith("Kidney cyst")
    segment = session.segmentation.GetSegment(lesion.segment_id)
    assert segment.GetName().startswith("Kidney cyst") and 1 in applied

    # screenshot of the panel with real results and corrections in it
    app.processEvents()
    assert panel.widget.grab().save(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000

    # save: a training case with the corrections
    from PySide6.QtTest import QTest

    QTest.mouseClick(attrs.save_button, qt.Qt.LeftButton)
    app.processEvents()
    assert len(saved) == 1
    case = read_case(tmp_path / "corrections", saved[0].case_id)
    report = {x.label: x for x in case.report.lesions}
    assert report[1].disease == "kidney_cyst"
    assert report[1].attributes["density"][0].id == second.id
    assert report[1].attributes["specific_features"][0].text == "small fat-containing focus"
    assert report[2].disease == session.lesion(2).disease.key

    # revert brings the model's answers back
    QTest.mouseClick(attrs.revert_button, qt.Qt.LeftButton)
    app.processEvents()
    assert not lesion.is_corrected and get(density.combo, "currentText") == lesion.aspects["density"].matched.text


def test_an_unclassified_lesion_is_shown_so_until_the_reviewer_names_it(app, tmp_path, shared_data):
    out = make_output(tmp_path / "out", unclassified=(2,))  # the liver cyst, left unclassified by the model
    scene = new_scene()
    volume = mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen")
    session = MaleniaLogic(scene, Settings(tmp_path / "results", tmp_path / "corrections")).loadResults(out, volume)
    panel = ReviewPanel({k: session.terminology.display_name(k) for k in session.terminology.diseases})
    panel.set_lesions(session.lesions, "")
    panel.lesionChanged.connect(session.apply_to_segment)
    panel.widget.show()
    lesion = session.lesion(2)
    closest = lesion.disease.name
    assert lesion.disease.unclassified and closest == "Liver cyst"
    segment = session.segmentation.GetSegment(lesion.segment_id)
    assert segment.GetName().endswith("(unclassified)")  # as `malenia segment` named it
    assert panel.table.rows()[panel.table.row_of(2)][1] == "Unclassified (closest: Liver cyst)"
    _click_row(app, panel.table.widget, panel.table.row_of(2))
    attrs = panel.attributes
    assert "Unclassified (closest: Liver cyst)" in get(attrs.header, "text")
    assert get(attrs.disease_combo, "currentText") == "Unclassified (closest: Liver cyst)"

    # a corrected description keeps the model's call: the segment is not renamed after the closest disease
    attrs.rows["density"].combo.setCurrentIndex(1)
    app.processEvents()
    assert lesion.is_corrected and segment.GetName().endswith("(unclassified)")

    # naming the closest disease is a correction of the disease
    attrs.set_disease(closest)
    assert lesion.corrected_disease is not None and lesion.current_disease.key == "liver_cyst"
    assert panel.table.rows()[panel.table.row_of(2)][1] == "Liver cyst ✎"
    assert "Model: Unclassified (closest: Liver cyst)" in get(attrs.disease_alternatives, "text")
    assert segment.GetName() == "Liver cyst"
    assert session.reviewed_lesion(lesion).disease.unclassified is False

    # and the combo's first entry goes back to the model's call
    attrs.disease_combo.setCurrentIndex(0)
    app.processEvents()
    assert lesion.corrected_disease is None and lesion.current_disease.unclassified
    assert segment.GetName().endswith("(unclassified)")
    panel.widget.close()


def test_empty_panel_before_results(app):
    panel = ReviewPanel({})
    assert panel.attributes.lesion is None and not panel.attributes.widget.isEnabled()
    assert panel.table.rows() == []
    panel.set_lesions([])
    assert panel.table.selected_label() is None and np.isclose(get(panel.attributes.disease_bar, "value"), 0)


def test_a_lesion_waiting_for_a_description_says_so_in_its_tooltip(loaded):
    _, session, panel = loaded
    table = panel.table.widget

    def tip(label):
        return table.item(panel.table.row_of(label), 1).toolTip()

    assert "Describe outlines" not in tip(1)
    session.lesion(1).outline_changed = True  # what ReviewSession.remeasure sets after a Segment Editor edit
    panel.table.update_lesion(session.lesion(1))
    assert "outline edited since the model described it" in tip(1) and "Describe outlines" not in tip(2)


def test_a_lesion_drawn_by_hand_offers_every_description_before_the_model_describes_it(app, loaded):
    from MaleniaSegmentLib.review import DiseaseChoice, LesionReview, drawn_aspects

    _, session, panel = loaded
    drawn = LesionReview(label=9, disease=DiseaseChoice(None, "Segment_1"), disease_alternatives=[],
                         aspects=drawn_aspects(session.vocabulary), from_model=False)
    panel.set_lesions(session.lesions + [drawn])
    _click_row(app, panel.table.widget, panel.table.row_of(9))
    row = panel.attributes.rows["shape"]
    shapes = session.vocabulary.ids("shape")
    assert get(row.combo, "count") == len(shapes) and get(row.combo, "currentText") == ""
    assert get(row.bar, "format") == "—"  # nothing described yet, nothing typed
    assert not row.alternatives.isVisible()  # unscored: no runners-up line
    row.combo.setCurrentIndex(2)
    app.processEvents()
    assert drawn.aspects["shape"].current.id == shapes[2] and drawn.is_corrected
    assert get(row.bar, "format") == "chosen"  # a vocabulary description the model has not scored, not typed text
