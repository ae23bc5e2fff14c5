"""Bootstrap intervals of an evaluation's group means (malenia.evaluate.intervals), on hand-built case entries."""

import numpy as np
import pytest

from malenia.aspects import ASPECTS
from malenia.evaluate.evaluate import markdown_tables
from malenia.errors import InputError
from malenia.evaluate.intervals import (MIN_CASES, case_arrays, comparison_markdown, group_intervals, group_means,
                                        paired_comparison, result_intervals)
from segment_helpers import malenia


def _case(types: dict, lesions=()) -> dict:
    """An evaluation.json case entry: types {name: (dsc, gt, pred, hits)}, lesions [(disease, detected, named)]."""
    return {"types": {t: {"dsc": d, "nsd": 0.0, "gt": g, "pred": p, "hits": h} for t, (d, g, p, h) in types.items()},
            "lesions": [{"disease": t, "detected": det, "pred_disease": named} for t, det, named in lesions]}


def _result(cases: list[dict], group: str = "unseen") -> dict:
    """An evaluation result around `cases` (named case_00, case_01, ...), its group holding types a and b."""
    named = [{**c, "case": f"case_{i:02d}"} for i, c in enumerate(cases)]
    return {"model": {"name": "m", "version": "1"}, "cases": named, "groups": {group: {"types": ["a", "b"]}}}


def _cases() -> list[dict]:
    """12 cases of two types; the group means by hand: DSC (mean of a's 0.5 and b's 0.3) 0.4, recall mean(6/12,
    2/8) 0.375, precision mean(6/9, 2/2) 0.8333, disease accuracy mean(3/6, 2/2) 0.75."""
    out = []
    for i in range(6):  # type a: two lesions a case, both found (DSC 1) in every other case, 3 of those 6 named right
        found = i % 2 == 1
        first, second = ("a", "c") if i in (1, 3) else ("c", "a") if i == 5 else ("c", "c")
        out.append(_case({"a": (float(found), 2, 1 + int(found), int(found) * 2)},
                         [("a", found, first), ("a", found, second)]))
    for i in range(6):  # type b: dsc 0.3 throughout
        out.append(_case({"b": (0.3, 1 if i < 5 else 3, 1 if i < 2 else 0, 1 if i < 2 else 0)},
                         [("b", i < 2, "b")]))
    return out


def test_the_whole_sample_gives_the_group_means_evaluate_reports():
    cases = _cases()
    arrays = case_arrays(cases, ["a", "b"])
    means = group_means(arrays, np.arange(len(cases))[None])
    assert means["dsc"][0] == pytest.approx((0.5 + 0.3) / 2)
    assert means["detection_recall"][0] == pytest.approx((6 / 12 + 2 / 8) / 2)
    assert means["detection_precision"][0] == pytest.approx((6 / 9 + 2 / 2) / 2)
    assert means["disease_accuracy"][0] == pytest.approx((3 / 6 + 2 / 2) / 2)


def test_intervals_hold_the_estimate_are_seeded_and_narrow_to_nothing_without_spread():
    cases = _cases()
    iv = group_intervals(cases, ["a", "b"])
    point = {k: float(v[0]) for k, v in group_means(case_arrays(cases, ["a", "b"]), np.arange(12)[None]).items()}
    for k, (lo, hi) in iv.items():
        assert lo <= point[k] <= hi and lo < hi, k
    # a's mean DSC lies in [0, 1] and b's is 0.3: the group's in [0.15, 0.65], and the resampled a-cases spread it
    assert 0.15 <= iv["dsc"][0] < 0.35 and 0.45 < iv["dsc"][1] <= 0.65
    assert group_intervals(cases, ["a", "b"]) == iv  # seeded
    assert group_intervals(cases, ["a", "b"], seed=1) != iv
    same = [_case({"a": (0.6, 1, 1, 1)}, [("a", True, "a")])] * MIN_CASES
    flat = group_intervals(same, ["a"])
    assert flat["dsc"] == pytest.approx([0.6, 0.6]) and flat["detection_recall"] == [1.0, 1.0]
    assert flat["detection_precision"] == [1.0, 1.0] and flat["disease_accuracy"] == [1.0, 1.0]


def test_a_type_without_predictions_or_too_few_cases_gives_no_number_rather_than_a_wrong_one():
    quiet = [_case({"a": (0.0, 1, 0, 0)}) for _ in range(MIN_CASES)]
    iv = group_intervals(quiet, ["a"])
    assert iv["detection_precision"] is None and iv["disease_accuracy"] is None and iv["dsc"] == [0.0, 0.0]
    assert all(v is None for v in group_intervals(quiet[: MIN_CASES - 1], ["a"]).values())


def test_an_evaluation_result_shows_its_intervals_in_markdown():
    cases = _cases()
    result = {"protocol": {"nsd_tolerance_mm": 2.0, "detection_iou_threshold": 0.1},
              "data": {"name": "x", "split": "all", "cases": len(cases)},
              "per_type": {}, "cases": cases,
              "groups": {"seen": None, "unseen": {"types": ["a", "b"], "dsc": 0.4, "nsd": 0.0, "detection_recall": 0.375,
                                                  "detection_precision": 0.833, "disease_accuracy": 0.75,
                                                  "attributes": {a: {"precision": None, "recall": None} for a in ASPECTS}}}}
    iv = result_intervals(result)
    assert set(iv) == {"unseen"} and iv["unseen"] == group_intervals(cases, ["a", "b"])
    text = markdown_tables(result)
    lo, hi = iv["unseen"]["dsc"]
    assert f"- mean unseen: DSC {lo:.3f}–{hi:.3f}, detection recall" in text
    result["cases"] = cases[:3]
    assert "95 % intervals" not in markdown_tables(result)


def test_a_paired_comparison_tells_a_real_gain_from_none():
    a = _result(_cases())
    same = paired_comparison(a, _result(_cases()))["unseen"]
    assert all(r["difference"] == 0 and r["interval"] == [0.0, 0.0] for r in same.values())
    better = _cases()
    for c in better:  # every lesion found: recall of a 6/12 -> 12/12, of b 2/8 -> 8/8
        t = next(iter(c["types"].values()))
        t["hits"] = t["gt"]
    diff = paired_comparison(a, _result(better))["unseen"]
    assert diff["detection_recall"]["difference"] == pytest.approx((12 / 12 - 6 / 12 + 8 / 8 - 2 / 8) / 2)
    assert diff["detection_recall"]["interval"][0] > 0
    text = comparison_markdown(a, _result(better), ("old", "new"))
    assert "A = old, B = new" in text and "| unseen | detection_recall | 0.3750 | 1.0000 | +0.6250 |" in text
    assert text.splitlines()[5].endswith("B higher |") and "| unseen | dsc |" in text


def test_a_paired_comparison_refuses_other_cases_or_no_common_group(tmp_path):
    a = _result(_cases())
    with pytest.raises(InputError, match="different cases"):
        paired_comparison(a, _result(_cases()[:-1]))
    with pytest.raises(InputError, match="no lesion-type group"):
        paired_comparison(a, _result(_cases(), group="seen"))
    with pytest.raises(InputError, match="at least"):
        paired_comparison(_result(_cases()[:5]), _result(_cases()[:5]))

    import json

    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(_result(_cases()[:-1])))
    (tmp_path / "bad.json").write_text("[1, 2]")
    ok = malenia("evaluate", "--compare", tmp_path / "a.json", tmp_path / "a.json")
    assert ok.returncode == 0 and "not told apart" in ok.stdout, ok.stderr[-2000:]
    for name, folder in (("c", "runs/C61/model"), ("z", "runs/Z61/model")):  # two runs of one recipe: one name
        (tmp_path / f"{name}.json").write_text(json.dumps(a | {"model": {"name": "malenia", "version": "0", "path": folder}}))
    alike = malenia("evaluate", "--compare", tmp_path / "c.json", tmp_path / "z.json")
    assert "A = malenia 0 (runs/C61/model), B = malenia 0 (runs/Z61/model)" in alike.stdout, alike.stderr[-2000:]
    for name, overlap in (("o25", 0.25), ("o50", 0.5)):  # one model run two ways: told apart by the setting
        (tmp_path / f"{name}.json").write_text(json.dumps(a | {"model": {"name": "m", "version": "1", "path": "M"},
                                                               "overlap": overlap, "threshold": 0.4}))
    settings = malenia("evaluate", "--compare", tmp_path / "o25.json", tmp_path / "o50.json")
    assert "A = m 1 (overlap 0.25), B = m 1 (overlap 0.5)" in settings.stdout, settings.stderr[-2000:]
    (tmp_path / "z4.json").write_text(json.dumps(json.loads((tmp_path / "z.json").read_text()) | {"threshold": 0.4}))
    both = malenia("evaluate", "--compare", tmp_path / "c.json", tmp_path / "z4.json")  # other folder and setting
    assert "(runs/C61/model, threshold None), B = malenia 0 (runs/Z61/model, threshold 0.4)" in both.stdout, both.stderr
    for other in ("b.json", "bad.json", "missing.json"):
        res = malenia("evaluate", "--compare", tmp_path / "a.json", tmp_path / other)
        assert res.returncode != 0 and "malenia evaluate: error:" in res.stderr and not res.stdout, other


def test_a_novel_type_is_named_right_when_called_unclassified_and_its_group_is_compared():
    """A validation-only novel type has no profile: "unclassified" (no name) is its right name, a disease a wrong
    one, in the intervals as in `malenia evaluate`; its group gets intervals and paired comparisons."""
    from malenia.aspects import NOVEL_TYPES, TRANSPLANT_TYPES, right_name

    nv, other = NOVEL_TYPES[0], NOVEL_TYPES[1]
    assert right_name(nv) is None and right_name("kidney_cyst") == "kidney_cyst"
    assert all(right_name(t) is None for t in TRANSPLANT_TYPES)  # no profile either
    cases = [_case({nv: (0.5, 2, 2, 2)}, [(nv, True, None), (nv, True, "liver_tumor")]) for _ in range(6)]
    cases += [_case({other: (0.2, 1, 0, 0)}, [(other, False, None)]) for _ in range(6)]
    arrays = case_arrays(cases, [nv, other])
    assert arrays["named"][:, 0].tolist() == [1] * 6 + [0] * 6 and arrays["detected"][:, 0].sum() == 12
    result = _result(cases, group="novel")
    result["groups"]["novel"]["types"] = [nv, other]
    assert set(result_intervals(result)) == {"novel"}
    means = group_means(arrays, np.arange(12)[None])
    assert means["disease_accuracy"][0] == pytest.approx(0.5)  # the other type detects nothing: no value
    assert means["detection_recall"][0] == pytest.approx((12 / 12 + 0 / 6) / 2)
    assert set(paired_comparison(result, result)) == {"novel"}
