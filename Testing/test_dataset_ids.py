"""dataset.json case ids that would name a folder outside DATASET/cases, or the same case twice, are refused when
the index is read (session 66): before, "../x" or "/etc" became case_dir(...) paths that every command then read
(or a training run's symlinks pointed at), and a case listed twice was trained on or scored twice."""

from __future__ import annotations

import json

import pytest

from malenia.cli import main
from malenia.data.dataset import DATASET_FORMAT, read_dataset
from malenia.errors import EXIT_BAD_INPUT, InputError


def _write(tmp_path, cases, split=None):
    (tmp_path / "dataset.json").write_text(json.dumps({"format": DATASET_FORMAT, "name": "d", "cases": cases,
                                                       "split": split or {}}))
    return tmp_path


@pytest.mark.parametrize("bad, words", [
    ("..", "has an empty, '.' or '..' part"),
    ("../outside", "has an empty, '.' or '..' part"),
    ("a/../../b", "has an empty, '.' or '..' part"),
    (".", "has an empty, '.' or '..' part"),
    ("a//b", "has an empty, '.' or '..' part"),
    ("a/", "has an empty, '.' or '..' part"),
    ("/etc/passwd", "is an absolute path"),
    ("C:/data/case", "is an absolute path"),
    ("c:case", "is an absolute path"),
    ("a\\..\\b", "has a backslash or NUL"),
    ("a\0b", "has a backslash or NUL"),
])
@pytest.mark.parametrize("where", ["cases", "split"])
def test_a_case_id_that_escapes_cases_is_refused_naming_it(tmp_path, bad, words, where):
    cases, split = (["a", bad], None) if where == "cases" else (["a"], {"train": [bad]})
    with pytest.raises(InputError) as err:
        read_dataset(_write(tmp_path, cases, split))
    field = "'cases' entry 1" if where == "cases" else "'split.train' entry 0"
    assert f"{field}: case id {bad!r} {words}" in str(err.value)


@pytest.mark.parametrize("cases, split, words", [
    (["a", "b", "a"], None, "field 'cases' lists case id 'a' more than once"),
    (["a", "b"], {"train": ["a", "b"], "val": ["b", "b"]}, "field 'split.val' lists case id 'b' more than once"),
])
def test_a_case_listed_twice_is_refused_naming_it(tmp_path, cases, split, words):
    with pytest.raises(InputError, match=words):
        read_dataset(_write(tmp_path, cases, split))


def test_plain_and_nested_ids_still_read(tmp_path):
    # "case/v001" is how the corrections store (malenia.data.corrections) names a case's latest version
    cases = ["liver_001", "CT chest_1a2b3c4d/v003", "x.y-z", "..a", "a..", "case:1"]
    index = read_dataset(_write(tmp_path, cases, {"train": cases[:2], "val": cases[2:]}))
    assert index.cases == cases and index.split["val"] == cases[2:]


def test_train_given_such_a_dataset_exits_3_with_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data = _write(tmp_path / "data", ["ok", "../../elsewhere"])
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "out"), "--steps", "1"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "case id '../../elsewhere'" in err, err
    assert not (tmp_path / "out").exists()
