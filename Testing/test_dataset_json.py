"""A malformed dataset.json or report.json field is one InputError naming the file and the field (session 65's
probe: a list as "split" was an AttributeError; a string as "cases" was read letter by letter)."""

from __future__ import annotations

import json

import pytest

from malenia.data.dataset import DATASET_FORMAT, CaseReport, read_dataset
from malenia.errors import InputError

GOOD = {"format": DATASET_FORMAT, "name": "d", "description": "", "cases": ["a", "b"], "split": {"train": ["a"]}}


def _write(tmp_path, **fields):
    (tmp_path / "dataset.json").write_text(json.dumps({**GOOD, **fields}))
    return tmp_path


def test_a_well_formed_index_reads_as_before(tmp_path):
    index = read_dataset(_write(tmp_path, extra={"k": 1}))
    assert (index.name, index.cases, index.split, index.extra) == ("d", ["a", "b"], {"train": ["a"]}, {"k": 1})
    (tmp_path / "dataset.json").write_text(json.dumps({"format": DATASET_FORMAT, "cases": ["a"]}))  # optional fields
    assert read_dataset(tmp_path).split == {} and read_dataset(tmp_path).name == tmp_path.name


@pytest.mark.parametrize("field, value, words", [
    ("split", ["a"], "'split' must be an object"),
    ("split", None, "'split' must be an object"),
    ("split", {"train": "a"}, "'split.train' must be a list"),
    ("split", {"train": [1]}, "'split.train' entry 0 must be a case id string"),
    ("cases", "ab", "'cases' must be a list"),
    ("cases", 5, "'cases' must be a list"),
    ("cases", None, "'cases' must be a list"),
    ("cases", ["a", {"id": "b"}], "'cases' entry 1 must be a case id string, got an object"),
    ("cases", ["a", 7], "'cases' entry 1 must be a case id string, got a number"),
    ("cases", ["a", ""], "'cases' entry 1 must be a case id string"),
    ("name", 5, "'name' must be a string"),
    ("description", ["x"], "'description' must be a string"),
    ("extra", [1], "'extra' must be an object"),
])
def test_each_malformed_field_is_one_line_naming_file_and_field(tmp_path, field, value, words):
    with pytest.raises(InputError) as err:
        read_dataset(_write(tmp_path, **{field: value}))
    message = str(err.value)
    assert words in message and str(tmp_path / "dataset.json") in message and "\n" not in message


@pytest.mark.parametrize("key, value", [("case_id", 7), ("case_id", None), ("source", {"a": 1})])
def test_a_report_id_or_source_that_is_not_a_string_is_refused(key, value):
    report = {"format": "malenia-case/1", "case_id": "x", "source": "", "lesions": [], key: value}
    with pytest.raises(InputError, match=f"report's {key} must be a string"):
        CaseReport.from_json(report)
    assert CaseReport.from_json({**report, key: "7"}).to_json()[key] == "7"
