"""A report's scan-level `enhancement` (session 66): only null or absent means "none". Both readers, the dataset
report's (malenia.data.dataset.CaseReport) and the segment report's scan (malenia.infer.results.ScanInfo), read it
with a falsy check before, so {}, "", 0 and false were taken as "no phase" without a word; they are refused now with
an InputError that names the field, and a well-formed value still reads back as written."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk

from malenia.data.dataset import CASE_FORMAT, CaseReport, Description, read_report
from malenia.errors import InputError
from malenia.infer.results import Enhancement, ScanInfo

FALSY_OR_MALFORMED = [{}, "", 0, False, [], "contrast", {"text": 5}, {"id": 3, "text": "contrast"}]


def _case(**fields) -> dict:
    return {"format": CASE_FORMAT, "case_id": "c1", "source": "", "lesions": [], **fields}


@pytest.mark.parametrize("value", FALSY_OR_MALFORMED, ids=repr)
def test_case_report_refuses_a_malformed_enhancement_naming_the_field(value, tmp_path):
    with pytest.raises(InputError, match="^report's enhancement: "):
        CaseReport.from_json(_case(enhancement=value))
    path = tmp_path / "report.json"  # the dataset's reader, from a file
    path.write_text(json.dumps(_case(enhancement=value)))
    with pytest.raises(InputError, match="report's enhancement"):
        read_report(path)


def test_case_report_reads_null_absent_and_a_description():
    assert CaseReport.from_json(_case(enhancement=None)).enhancement is None
    assert CaseReport.from_json(_case()).enhancement is None
    given = Description("contrast-enhanced", "enhancement.contrast")
    report = CaseReport.from_json(_case(enhancement=given.to_json()))
    assert report.enhancement == given
    assert CaseReport.from_json(json.loads(json.dumps(report.to_json()))).enhancement == given


def _scan_json(enhancement) -> dict:
    image = sitk.Image([4, 5, 6], sitk.sitkInt16)
    obj = ScanInfo.from_image(image, "ct.nii.gz").to_json()
    return json.loads(json.dumps({**obj, "enhancement": enhancement}))


@pytest.mark.parametrize("value", [*FALSY_OR_MALFORMED, {"text": "contrast", "score": "high"},
                                   {"text": "contrast", "score": True}, {"text": "contrast", "method": 1}], ids=repr)
def test_segment_report_scan_refuses_a_malformed_enhancement_naming_the_field(value):
    with pytest.raises(InputError, match="^report's scan.enhancement"):
        ScanInfo.from_json(_scan_json(value))


def test_segment_report_scan_reads_null_and_a_phase_as_written():
    assert ScanInfo.from_json(_scan_json(None)).enhancement is None
    phase = Enhancement("enhancement.contrast", "contrast-enhanced", 0.75, "hu")
    assert ScanInfo.from_json(_scan_json(phase.to_json())).enhancement == phase
    no_score = Enhancement(None, "portal venous", None, "user")
    assert ScanInfo.from_json(_scan_json(no_score.to_json())).enhancement == no_score


def test_slicer_module_shows_a_malformed_enhancement_as_its_one_line_results_error(tmp_path):
    """MaleniaSegment's reader of an output folder: the InputError reaches the user as its ResultsError (one line,
    the file named), not as a traceback; the folder as written reads back."""
    import numpy as np
    import slicer_segment_support  # noqa: F401  (puts MaleniaSegment's Lib on the path)
    from MaleniaSegmentLib.session import ResultsError, read_result

    from malenia.infer.outputs import write_outputs
    from malenia.infer.results import ModelInfo, SegmentationResult

    image = sitk.GetImageFromArray(np.zeros((6, 8, 8), np.int16))
    labels = sitk.GetImageFromArray(np.zeros((6, 8, 8), np.uint8))
    phase = Enhancement("enhancement.contrast", "contrast-enhanced", 0.75, "hu")
    out = tmp_path / "out"
    write_outputs(SegmentationResult(labels=labels, image=image, scan=ScanInfo.from_image(image, "ct.nii.gz", phase),
                                     model=ModelInfo("malenia-compact", "0.1.0", "0" * 64)), out)
    assert read_result(out).scan.enhancement == phase
    report = json.loads((out / "report.json").read_text())
    report["scan"]["enhancement"] = {}
    (out / "report.json").write_text(json.dumps(report))
    with pytest.raises(ResultsError, match=r"report\.json: report's scan\.enhancement must be null or an object"):
        read_result(out)
