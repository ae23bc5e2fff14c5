"""Naming headroom (malenia.evaluate.headroom): each aspect read as the reference annotates it, the rest as read."""

import numpy as np
import pytest

from malenia.aspects import ASPECTS
from malenia.data.dataset import CaseReport, Description, LesionReport
from malenia.evaluate import headroom
from malenia.evaluate.evaluate import add_naming_headroom, evaluate_case, markdown_tables
from malenia.infer.results import AspectMatch, DiseaseCall, LesionResult
from malenia.knowledge.inference import infer_disease
from malenia.knowledge.table import KnowledgeTable


@pytest.fixture(scope="module")
def table():
    return KnowledgeTable.load()


def _profile(table, disease):
    return {a: {i: 1.0} for a, i in table.most_probable(disease).items()}


def _misread_vessel_tumour(table):
    """A hepatic vessel tumour's typical reading with one aspect read as a liver tumour's, chosen so that the
    closest disease is then another one; and that aspect."""
    scores = _profile(table, "hepatic_vessel_tumor")
    for aspect, ids in _profile(table, "liver_tumor").items():
        trial = {**scores, aspect: ids}
        if _closest(trial, table) != "hepatic_vessel_tumor":
            return trial, aspect
    pytest.skip("no single aspect of a liver tumour's profile renames a hepatic vessel tumour in this table")


def _closest(scores, table):
    post = infer_disease(scores, table)
    return post.alternatives[0][0] if post.unclassified else post.name


def test_reading_the_misread_aspect_as_annotated_restores_the_name(table):
    scores, misread = _misread_vessel_tumour(table)
    reference = {a: list(ids) for a, ids in _profile(table, "hepatic_vessel_tumor").items()}
    out = headroom.closest_if_read(scores, reference, table)
    assert set(out) == {*ASPECTS, headroom.ALL_ASPECTS}
    assert out[misread] == "hepatic_vessel_tumor"
    assert out[headroom.ALL_ASPECTS] == "hepatic_vessel_tumor"
    for aspect in ASPECTS:  # replacing an aspect that was read right changes nothing
        if aspect != misread:
            assert out[aspect] == _closest(scores, table) != "hepatic_vessel_tumor"


def test_an_aspect_the_reference_leaves_out_stays_as_read(table):
    scores, misread = _misread_vessel_tumour(table)
    reference = {a: list(ids) for a, ids in _profile(table, "hepatic_vessel_tumor").items() if a != misread}
    out = headroom.closest_if_read(scores, reference, table)
    assert out[misread] == _closest(scores, table) != "hepatic_vessel_tumor"


def test_appearance_exclusions_are_kept(table):
    scores = _profile(table, "hepatic_vessel_tumor")
    reference = {a: list(ids) for a, ids in scores.items()}
    out = headroom.closest_if_read(scores, reference, table, ruled_out=["hepatic_vessel_tumor"])
    assert all(name != "hepatic_vessel_tumor" for name in out.values())


def test_evaluation_counts_and_tabulates_the_headroom(table):
    scores, misread = _misread_vessel_tumour(table)
    gt = np.zeros((12, 12, 12), np.int32)
    gt[1:4, 1:4, 1:4], gt[7:10, 7:10, 7:10] = 1, 2
    pred = np.where(gt > 0, gt + 4, 0).astype(np.int32)
    ref_attrs = {a: [Description(a, i) for i in ids] for a, ids in _profile(table, "hepatic_vessel_tumor").items()}
    report = CaseReport("c", [LesionReport(1, "hepatic_vessel_tumor", ref_attrs),
                              LesionReport(2, "lung_cyst", {})])  # a novel type, no profile: no headroom
    attributes = {a: AspectMatch(None, "x", 0.9) for a in ASPECTS}
    name = _closest(scores, table)
    preds = [LesionResult(5, DiseaseCall(name, name, 0.6, [], False), attributes, scores=scores),
             LesionResult(6, DiseaseCall("liver_cyst", "liver cyst", 0.6, [], False), attributes, scores=scores)]
    res = evaluate_case(pred, preds, gt, report, (1.0, 1.0, 1.0))
    add_naming_headroom(res["lesions"], preds, table)
    by_label = {les["label"]: les for les in res["lesions"]}
    assert "closest_if_read" not in by_label[2]
    summary = headroom.summarise(res["lesions"])
    assert list(summary) == ["hepatic_vessel_tumor", "all"]
    row = summary["hepatic_vessel_tumor"]
    assert row["detected"] == 1 and row[headroom.AS_READ] == 0 and row[misread] == 1 and row[headroom.ALL_ASPECTS] == 1
    lines = headroom.markdown(summary)
    assert any(line.startswith("| as read | 0 / 1 | 0 / 1 |") for line in lines)
    assert any(line.startswith("| all aspects | 1 / 1 | 1 / 1 |") for line in lines)


def test_markdown_skips_evaluations_written_before_the_headroom():
    assert headroom.markdown(None) == [] and headroom.markdown({}) == []
    result = {"protocol": {"nsd_tolerance_mm": 2.0, "detection_iou_threshold": 0.1},
              "data": {"name": "d", "split": "all", "cases": 0}, "per_type": {}, "groups": {}}
    assert "Naming headroom" not in markdown_tables(result)
