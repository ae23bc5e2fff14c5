"""`malenia import annotations`: the authors' workbook -> per-case reports, quirks by rule."""

import json

import openpyxl
import pytest

from malenia.aspects import ASPECTS
from malenia.cli import main
from malenia.data.dataset import read_report
from malenia.errors import InputError
from malenia.knowledge.findings import extract_findings, related_organs
from malenia.knowledge.vocabulary import Vocabulary
from malenia.knowledge.workbook import CODE_COLUMNS, SHEETS, normalise_case_id, read_workbook

# Rows per sheet in the shared workbook minus its worked examples and rule-skipped rows.
EXPECTED_CASES = {"肾癌": 160, "肾囊肿": 66, "肝癌": 39, "胰腺癌": 36, "胰腺囊肿": 58, "结肠癌": 42, "肺癌": 21}


@pytest.fixture(scope="module")
def workbook(shared_data):
    return shared_data / "annotations" / "malenia_attribute_annotations_en.xlsx"


@pytest.fixture(scope="module")
def imported(workbook, tmp_path_factory):
    out = tmp_path_factory.mktemp("wb") / "reports"
    assert main(["import", "annotations", str(workbook), "--out", str(out), "--quiet"]) == 0
    return out


def test_import_writes_one_report_per_case(imported):
    summary = json.loads((imported / "summary.json").read_text())
    assert {s: summary["sheets"][s]["cases"] for s in SHEETS} == EXPECTED_CASES
    assert summary["lesions"] == sum(EXPECTED_CASES.values())
    files = sorted(p for p in imported.glob("*.json") if p.name != "summary.json")
    assert len(files) == summary["cases"]
    names = {p.stem for p in files}
    assert {"liver_2", "pancreas_001", "case_00000", "colon_001", "lung_001"} <= names
    assert not any(n.endswith(".nii") or n.lower().startswith("example") or n.isdigit() for n in names)
    # KiTS23 case_00002 has a tumour and a cyst: one report, two lesions
    both = read_report(imported / "case_00002.json")
    assert [l.disease for l in both.lesions] == ["kidney_tumor", "kidney_cyst"]
    assert [l.label for l in both.lesions] == [1, 2]


def test_every_code_maps_to_the_vocabulary(imported):
    vocab = Vocabulary.load()
    lesions = 0
    for path in imported.glob("*.json"):
        if path.name == "summary.json":
            continue
        report = read_report(path)
        assert report.enhancement is not None and report.enhancement.id in vocab.ids("enhancement")
        for lesion in report.lesions:
            lesions += 1
            assert lesion.extra["report_text"]
            for aspect in ASPECTS:
                descs = lesion.attributes[aspect]
                assert descs, (path.name, aspect)  # no aspect left undescribed in the real cases
                for d in descs:
                    assert vocab.aspect_of(d.id) == aspect and d.text == vocab.text(d.id)
            organ = SHEETS[lesion.extra["sheet"]].organ
            assert vocab.organ_of(lesion.attributes["location"][0].id) == organ
    assert lesions == sum(EXPECTED_CASES.values())


def test_worked_examples_and_quirks_are_counted_not_crashed_on(imported):
    summary = json.loads((imported / "summary.json").read_text())
    quirks = summary["quirks"]
    assert quirks["worked_example"] == 8  # 'Example N' rows and bare-number rows
    assert quirks["unrecognised_case_id"] == 1  # 'imaging.nii' in the kidney tumour sheet
    assert quirks["empty_row"] == 1  # liver_34: no codes, no report
    assert quirks["blank_cell_recovered"] == 1  # case_00110's blank phase, read from "Contrast-enhanced CT"
    assert quirks["multi_valued"] == 2  # '1、2' (both kidneys) and 12 (round + irregular)
    assert quirks["out_of_range_code"] == 2  # colon example row: 4 in enhancement and relationship
    assert set(summary["rules"]) == set(quirks)
    bilateral = read_report(imported / "case_00119.json")
    cyst = [l for l in bilateral.lesions if l.disease == "kidney_cyst"][0]
    assert [d.id for d in cyst.attributes["location"]] == ["location.kidney.bilateral"]
    assert "multi_valued" in cyst.extra["quirks"]
    two_shapes = read_report(imported / "pancreas_043.json").lesions[0]
    assert [d.id for d in two_shapes.attributes["shape"]] == ["shape.round", "shape.irregular"]
    assert not (imported / "liver_34.json").exists()


def test_specific_features_keyword_rules(imported):
    panc = read_report(imported / "pancreas_001.json").lesions[0]
    ids = [d.id for d in panc.attributes["specific_features"]]
    assert "specific_features.duct_dilatation" in ids and "specific_features.parenchymal_atrophy" in ids
    assert panc.extra["related_organs"] == ["duodenum"]
    lung = [d.id for d in read_report(imported / "lung_001.json").lesions[0].attributes["specific_features"]]
    assert lung == ["specific_features.pleural_traction"]
    assert [d.id for d in read_report(imported / "lung_001.json").lesions[0].attributes["surface"]] == ["surface.spiculated"]
    # negation and the empty case
    assert extract_findings("No pancreatic ductal dilatation is observed.") == ["specific_features.none"]
    assert extract_findings("A round cyst, not closely related to adjacent organs, with internal septations.") == [
        "specific_features.septation"]
    assert extract_findings("Wall thickening with marked enhancement; no lymphadenopathy.") == [
        "specific_features.wall_thickening", "specific_features.marked_enhancement"]
    assert related_organs("The lesion is closely related to the psoas muscle with poorly defined borders.", "kidney") == [
        "psoas muscle"]


def test_case_id_normalisation():
    assert normalise_case_id("liver_2.nii") == "liver_2"
    assert normalise_case_id(" pancreas_001.nii.gz ") == "pancreas_001"
    assert normalise_case_id("case_00000") == "case_00000"


def _write_workbook(path, rows_by_sheet, header_cols=9, sheets=None):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name in sheets or SHEETS:
        ws = wb.create_sheet(name)
        ws.append(["ID"] + [f"c{i}" for i in range(1, header_cols)])
        for row in rows_by_sheet.get(name, []):
            ws.append(row)
    wb.save(path)


def test_synthetic_quirks_follow_the_rules(tmp_path):
    path = tmp_path / "quirky.xlsx"
    _write_workbook(path, {
        "肾癌": [
            ["case_00001", 2, "1，2", 2, 3, 2, 2, 1, "Contrast-enhanced CT: lesions in both kidneys with calcification."],
            ["case_00001", 2, 1, 2, 3, 2, 2, 1, "duplicate row"],
            ["case_00002", None, None, 2, 3, 2, 2, 9, "Non-contrast CT: mass in the right kidney."],
            ["示例1", 2, 1, 1, 1, 1, 1, 1, "worked example"],
            ["case_00003", 2, "x", 2, 2, 2, 2, 1, None],
        ],
    })
    result = read_workbook(path)
    assert [r.case_id for r in result.records] == ["case_00001", "case_00002", "case_00003"]
    a, b, c = result.records
    assert a.attributes["location"] == ["location.kidney.bilateral"]
    assert a.attributes["specific_features"] == ["specific_features.calcification"]
    assert b.attributes["enhancement"] == ["enhancement.non_contrast"]  # recovered from the text
    assert b.attributes["location"] == ["location.kidney.right"]
    assert b.attributes["relationship"] == []  # code 9: left undescribed
    assert c.attributes["location"] == [] and c.attributes["specific_features"] == ["specific_features.none"]
    q = result.quirks
    assert (q["duplicate_case"], q["worked_example"], q["blank_cell_recovered"], q["out_of_range_code"], q["multi_valued"]) == (
        1, 1, 2, 2, 1)
    assert len(CODE_COLUMNS) == 7


def test_malformed_workbooks_get_one_line_errors(tmp_path, capsys):
    not_xlsx = tmp_path / "notes.xlsx"
    not_xlsx.write_text("this is not a spreadsheet")
    assert main(["import", "annotations", str(not_xlsx), "--out", str(tmp_path / "o1")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("malenia import: error:") and "not a readable .xlsx" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o1").exists()

    missing = tmp_path / "missing.xlsx"
    _write_workbook(missing, {}, sheets=list(SHEETS)[:3])
    with pytest.raises(InputError, match="missing disease sheet"):
        read_workbook(missing)

    narrow = tmp_path / "narrow.xlsx"
    _write_workbook(narrow, {}, header_cols=5)
    with pytest.raises(InputError, match="expected a header row"):
        read_workbook(narrow)

    assert main(["import", "annotations", str(tmp_path / "absent.xlsx"), "--out", str(tmp_path / "o2")]) == 3
    assert "workbook not found" in capsys.readouterr().err


def test_existing_output_needs_overwrite(workbook, imported, capsys):
    assert main(["import", "annotations", str(workbook), "--out", str(imported), "--quiet"]) == 5
    assert "--overwrite" in capsys.readouterr().err
