"""`malenia evaluate`: per case and per lesion type DSC / NSD, lesion detection, attribute matching
(paper App. D, Table 8) and disease accuracy of a model folder on a dataset; Markdown and JSON tables.

Rules (metric definitions in malenia.evaluate.metrics):
- Each case is segmented by malenia.infer.pipeline.Segmenter, exactly as `malenia segment` would segment
  the case's image (same options, same post-processing, labels on the case's own grid); DSC and NSD are
  computed on that grid, at its voxel spacing. `predictions` keeps every case's `segment` outputs.
- Per lesion type d: the reference is the union of the case's lesions of type d; the prediction is every
  predicted lesion except those overlapping only lesions of other types (so a single-type case scores its
  whole prediction, false positives included); detection precision per type counts the same predictions.
  Type means average cases; group means (seen / unseen /
  all) average the type means, as the paper's tables do per dataset.
- Attributes and disease are scored on detected lesions (IoU-matched pairs).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from malenia.aspects import ASPECT_NAMES, ASPECTS, NOVEL_TYPES, SEEN_DISEASES, TRANSPLANT_TYPES, UNSEEN_DISEASES, right_name
from malenia.evaluate import headroom
from malenia.evaluate.metrics import (
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_NSD_TOLERANCE_MM,
    AttributeCounts,
    DetectionCounts,
    dice_score,
    match_instances,
    mean_or_none,
    outline_summary,
    recall_by_contrast,
    recall_by_polarity,
    recall_by_size,
    sphere_diameter_mm,
    surface_dice,
)
from malenia.evaluate.intervals import RESAMPLES, result_intervals
from malenia.evaluate.misses import markdown as misses_markdown
from malenia.evaluate.misses import summarise, where_lost

RESULT_FORMAT = "malenia-evaluation/1"


@dataclass
class GroupStats:
    dsc: list[float] = field(default_factory=list)
    nsd: list[float] = field(default_factory=list)
    detection: DetectionCounts = field(default_factory=DetectionCounts)
    attributes: AttributeCounts = field(default_factory=AttributeCounts)
    disease_correct: int = 0  # named right; a novel type (no profile in any table) when called unclassified
    disease_total: int = 0
    closest_correct: int = 0  # the most probable disease right, whether or not the lesion was called unclassified
    closest_total: int = 0  # lesions of a type that has a profile, so that a closest disease can be right

    def summary(self) -> dict[str, Any]:
        return {
            "cases": len(self.dsc),
            "dsc": mean_or_none(self.dsc),
            "dsc_std": float(np.std(self.dsc)) if self.dsc else None,
            "nsd": mean_or_none(self.nsd),
            "lesions": self.detection.gt,
            "detected": self.detection.hits,
            "predicted": self.detection.pred,
            "detection_recall": self.detection.recall,
            "detection_precision": self.detection.precision,
            "disease_accuracy": self.disease_correct / self.disease_total if self.disease_total else None,
            "closest_disease_accuracy": self.closest_correct / self.closest_total if self.closest_total else None,
            "attributes": self.attributes.summary(),
        }


def _types_touched(pred_labels: np.ndarray, gt_labels: np.ndarray, type_of_gt: dict[int, str]) -> dict[int, set[str]]:
    """Per predicted lesion, the lesion types of the reference lesions it overlaps (empty: a false positive)."""
    out: dict[int, set[str]] = {}
    for p in np.unique(pred_labels):
        if p != 0:
            out[int(p)] = {type_of_gt.get(int(g), "unknown") for g in np.unique(gt_labels[pred_labels == p]) if g != 0}
    return out


def evaluate_case(pred_labels: np.ndarray, pred_lesions: list, gt_labels: np.ndarray, report, spacing_zyx,
                  nsd_tolerance: float = DEFAULT_NSD_TOLERANCE_MM, iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> dict[str, Any]:
    """Scores one case. `pred_lesions` are malenia.infer.results.LesionResult (label, attributes, disease)."""
    type_of_gt = {les.label: (les.disease or "unknown") for les in report.lesions}
    pred_by_label = {p.label: p for p in pred_lesions}
    match = match_instances(pred_labels, gt_labels, iou_threshold)
    out: dict[str, Any] = {
        "dsc": dice_score(pred_labels > 0, gt_labels > 0),
        "nsd": surface_dice(pred_labels > 0, gt_labels > 0, spacing_zyx, nsd_tolerance),
        "match": match,
        "types": {},
        "lesions": [],
    }
    touched = _types_touched(pred_labels, gt_labels, type_of_gt)
    for disease in sorted(set(type_of_gt.values())):
        gt_ids = [g for g, d in type_of_gt.items() if d == disease]
        # A predicted lesion counts for this type unless it overlaps only lesions of other types.
        pred_ids = [p for p, types in touched.items() if not types or disease in types]
        gt_d, pr_d = np.isin(gt_labels, gt_ids), np.isin(pred_labels, pred_ids)
        out["types"][disease] = {
            "dsc": dice_score(pr_d, gt_d),
            "nsd": surface_dice(pr_d, gt_d, spacing_zyx, nsd_tolerance),
            "gt": len(gt_ids),
            "pred": len(pred_ids),
            "hits": sum(1 for g, _, _ in match.pairs if type_of_gt.get(g) == disease),
        }
    voxel_mm3 = float(np.prod(spacing_zyx))
    for les in report.lesions:
        p = match.pred_for(les.label)
        pl = pred_by_label.get(p) if p is not None else None
        gt_voxels = match.gt_voxels.get(les.label, 0)
        volume = gt_voxels * voxel_mm3
        out["lesions"].append({
            "label": les.label,
            "disease": les.disease,
            "volume_ml": round(volume / 1000.0, 4),
            "diameter_mm": round(sphere_diameter_mm(volume), 1),
            "detected": p is not None,
            "pred_label": p,
            "iou": next((iou for g, q, iou in match.pairs if g == les.label), None),
            # predicted / reference volume of a detected lesion: under 1 outlined short of it, over 1 beyond it
            "volume_ratio": round(match.pred_voxels[p] / gt_voxels, 3) if p is not None and gt_voxels else None,
            "pred_disease": _disease_named(pl) if pl else None,
            "pred_closest": pl.disease.name if pl else None,
            "pred_attributes": {a: [pl.attributes[a].id or pl.attributes[a].description] for a in ASPECTS} if pl else None,
            "_report": les,
        })
    return out


def _disease_named(lesion) -> str | None:
    """The disease a lesion's report names: none when the posterior was too flat (unclassified)."""
    return None if lesion.disease.unclassified else lesion.disease.name


OUTLINES = ("predicted", "reference")  # evaluate_dataset: the model's own lesions, or the reference ones described


def make_segmenter(model, device: str = "cpu", threshold: float | None = None, min_volume_mm3: float | None = None,
                   knowledge=None, refine: bool = False, precision: str = "auto", overlap: float | None = None,
                   verifier_cut: float | None = None, mirror: bool = False):
    """The Segmenter `malenia segment` would build for `model` (a LoadedModel) with these options
    (`knowledge`: site profile folders, as `segment --knowledge`; `refine`, `precision`, `overlap`, `verifier_cut`,
    `mirror`: as in `segment`; None: segment's default)."""
    from malenia.infer.pipeline import Segmenter, SegmentOptions

    window = {} if overlap is None else {"overlap": overlap}
    options = SegmentOptions(device=device, threshold=threshold, min_volume_mm3=min_volume_mm3, refine=refine,
                             precision=precision, verifier_cut=verifier_cut, mirror=mirror, **window)
    return Segmenter(model, options, knowledge=knowledge)


def selected_cases(data_dir: str | Path, split: str | None, max_cases: int | None = None):
    """(dataset index, the cases an evaluation reads: the split's first `max_cases`), each case checked to have its
    files."""
    from malenia.data.dataset import read_dataset, require_case_files

    index = read_dataset(data_dir)
    case_ids = index.split_cases(split)[:max_cases] if max_cases else index.split_cases(split)
    require_case_files(data_dir, case_ids)
    return index, case_ids


def evaluate_dataset(model_dir: str | Path | None, data_dir: str | Path, split: str | None = "test",
                     nsd_tolerance: float = DEFAULT_NSD_TOLERANCE_MM, iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                     device: str = "cpu", max_cases: int | None = None,
                     on_case: Callable[[int, int, str], None] | None = None, segmenter=None,
                     predictions: str | Path | None = None, outlines: str = "predicted") -> dict[str, Any]:
    """Segments every case of `split` (with `segmenter`, default: the model folder's own settings) and
    returns the JSON-ready result; `predictions`: a folder that receives each case's `segment` outputs.
    `outlines="reference"`: each case's reference lesions are described on their own outlines instead
    (`segment --mask`, Segmenter.describe_outlined): what a reader who outlines a lesion is told of it; the
    names and attributes are then measured on every lesion, and DSC and detection are 1 by construction."""
    if outlines not in OUTLINES:
        raise ValueError(f"outlines must be one of {OUTLINES}, got {outlines!r}")
    index, case_ids = selected_cases(data_dir, split, max_cases)
    if segmenter is None:
        from malenia.model.folder import load_model_folder

        segmenter = make_segmenter(load_model_folder(model_dir, device=device), device)
    groups: dict[str, GroupStats] = defaultdict(GroupStats)
    cases_out = []
    t0 = time.perf_counter()
    for i, case_id in enumerate(case_ids):
        if on_case:
            on_case(i, len(case_ids), case_id)
        res, seconds = _segment_and_score(segmenter, data_dir, case_id, nsd_tolerance, iou_threshold, predictions,
                                          outlines)
        _add_to_groups(groups, res)
        cases_out.append(_case_entry(case_id, res, seconds))
    per_type = {d: groups[d].summary() for d in sorted(groups) if d != "all_cases"}
    summary = {name: _group_summary(per_type, members) for name, members in
               (("unseen", UNSEEN_DISEASES), ("seen", SEEN_DISEASES), ("novel", NOVEL_TYPES),
                ("all_types", tuple(per_type)))}
    model_meta = dict(getattr(segmenter.model, "manifest", {}) or {})
    model_meta.pop("files", None)
    result = {
        "format": RESULT_FORMAT,
        "model": {**model_meta, "sha256": getattr(segmenter.model, "sha256", None)},
        "data": {"path": str(data_dir), "name": index.name, "split": split or "all", "cases": len(case_ids)},
        "protocol": {
            "nsd_tolerance_mm": nsd_tolerance,
            "detection_iou_threshold": iou_threshold,
            "dsc_nsd_grid": "each case's own image grid",
            "attributes": "matched lesions; per aspect, precision/recall macro-averaged over description classes",
            "predictor": "malenia segment (malenia.infer.pipeline.Segmenter)" if outlines == "predicted" else
                         "malenia segment --mask on the reference outlines (Segmenter.describe_outlined)",
            "outlines": outlines,
        },
        "threshold": segmenter.options.threshold,
        "min_volume_mm3": segmenter.options.min_volume_mm3,
        "seconds": round(time.perf_counter() - t0, 1),
        "overall": groups["all_cases"].summary() if case_ids else None,
        "groups": summary,
        "per_type": per_type,
        "by_size": recall_by_size((les["diameter_mm"], les["detected"]) for c in cases_out for les in c["lesions"]),
        "by_contrast": detection_by_contrast(cases_out),
        "by_polarity": detection_by_contrast(cases_out, recall_by_polarity),
        "by_phase": detection_by_phase(cases_out),
        "by_base": detection_by_base(cases_out),
        "misses": summarise([les for c in cases_out for les in c["lesions"]]),
        "outlines": outline_summary((les["disease"] or "unknown", les["iou"], les["volume_ratio"])
                                    for c in cases_out for les in c["lesions"] if les["volume_ratio"] is not None),
        "names": names_given(cases_out),
        "naming_headroom": headroom.summarise(les for c in cases_out for les in c["lesions"]),
        "cases": cases_out,
    }
    result["intervals"] = result_intervals(result)  # 95 % over cases, per group (malenia.evaluate.intervals)
    return result


def _segment_and_score(segmenter, data_dir, case_id: str, nsd_tolerance: float, iou_threshold: float,
                       predictions, outlines: str = "predicted") -> tuple[dict[str, Any], float]:
    """One case segmented as `malenia segment` would (or its reference lesions described on their outlines, as
    `segment --mask` would), scored; its outputs written under `predictions`."""
    import SimpleITK as sitk

    from malenia.data.dataset import read_case
    from malenia.infer.lesion_features import lesion_contrasts

    case = read_case(data_dir, case_id)
    gt = sitk.GetArrayFromImage(case.lesions).astype(np.int32)
    tc = time.perf_counter()
    if outlines == "reference":
        result, trace = segmenter.describe_outlined(case.image, gt, case_id), None
    else:
        result, trace = segmenter.segment_traced(case.image, case_id)
    seconds = time.perf_counter() - tc
    if predictions is not None:
        from malenia.infer.outputs import write_outputs

        write_outputs(result, Path(predictions) / case_id, overwrite=True)
    pred = sitk.GetArrayFromImage(result.labels).astype(np.int32)
    spacing = tuple(float(s) for s in case.image.GetSpacing()[::-1])
    res = evaluate_case(pred, result.lesions, gt, case.report, spacing, nsd_tolerance, iou_threshold)
    res["phase"] = scan_phase(case.report)
    res["base"] = scan_base(case.report)
    # a read-only view: the CT is only read here, and a copy of a whole clinical scan costs ~100 MB per case
    contrast = lesion_contrasts(sitk.GetArrayViewFromImage(case.image), gt, spacing, [les["label"] for les in res["lesions"]])
    for les in res["lesions"]:
        les["contrast_hu"] = round(contrast[les["label"]], 1) if les["label"] in contrast else None
    match = res["match"]
    lost = {} if trace is None else where_lost(gt, trace, {g for g, _, _ in match.pairs}, iou_threshold, match.gt_voxels)
    for les in res["lesions"]:
        les.update(lost.get(les["label"], {"peak": 0.0, "best_iou": 0.0, "lost_at": None if les["detected"] else "silent"}))
    res["predicted"] = [{"label": les.label, "disease": les.disease.name, "unclassified": les.disease.unclassified,
                         "voxels": match.pred_voxels.get(les.label, 0)} for les in result.lesions]
    add_naming_headroom(res["lesions"], result.lesions, segmenter.table)
    return res, seconds


def add_naming_headroom(entries: list[dict[str, Any]], predicted: list, table) -> None:
    """Gives each detected lesion of a type with a profile its "closest_if_read" (malenia.evaluate.headroom), from
    the scores its predicted lesion was named with (`predicted`: LesionResult) and its reference report."""
    by_label = {p.label: p for p in predicted}
    for les in entries:
        pl = by_label.get(les["pred_label"]) if les["detected"] else None
        if pl is None or pl.scores is None or right_name(les["disease"]) is None:
            continue
        ruled_out = (pl.appearance or {}).get("ruled_out", ())
        les["closest_if_read"] = headroom.closest_if_read(pl.scores, headroom.reference_ids(les["_report"]), table, ruled_out)


def _add_to_groups(groups: dict[str, GroupStats], res: dict[str, Any]) -> None:
    groups["all_cases"].dsc.append(res["dsc"])
    groups["all_cases"].nsd.append(res["nsd"])
    groups["all_cases"].detection.add(res["match"])
    for disease, vals in res["types"].items():
        g = groups[disease]
        g.dsc.append(vals["dsc"])
        g.nsd.append(vals["nsd"])
        g.detection.gt += vals["gt"]
        g.detection.pred += vals["pred"]
        g.detection.hits += vals["hits"]
    for les in res["lesions"]:
        for stats in (groups[les["disease"] or "unknown"], groups["all_cases"]):
            if les["detected"]:
                stats.attributes.add({a: v for a, v in les["pred_attributes"].items()}, les["_report"].attributes)
                unprofiled = right_name(les["disease"]) is None  # a novel or transplanted type
                stats.disease_total += 1
                stats.disease_correct += int(les["pred_disease"] == right_name(les["disease"]))
                if not unprofiled:
                    stats.closest_total += 1
                    stats.closest_correct += int(les["pred_closest"] == les["disease"])


def _case_entry(case_id: str, res: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "case": case_id,
        "diseases": sorted(res["types"]),
        "dsc": res["dsc"],
        "nsd": res["nsd"],
        "types": res["types"],
        "lesions_reported": len(res["lesions"]),
        "lesions_predicted": len(res["match"].pred_labels),
        "lesions_detected": res["match"].hits,
        "seconds": round(seconds, 2),
        "phase": res.get("phase"),
        "base": res.get("base"),
        "lesions": [{k: v for k, v in les.items() if not k.startswith("_")} for les in res["lesions"]],
        "predicted": res["predicted"],
    }


def _group_summary(per_type: dict[str, dict[str, Any]], members) -> dict[str, Any] | None:
    present = [d for d in members if d in per_type]
    if not present:
        return None
    out: dict[str, Any] = {"types": present}
    for key in ("dsc", "nsd", "detection_recall", "detection_precision", "disease_accuracy", "closest_disease_accuracy"):
        out[key] = mean_or_none(per_type[d].get(key) for d in present)
    out["attributes"] = {
        a: {m: mean_or_none(per_type[d]["attributes"][a][m] for d in present) for m in ("precision", "recall", "accuracy")}
        for a in ASPECTS
    }
    return out


def detection_by_contrast(cases: list[dict[str, Any]], recall=recall_by_contrast) -> dict[str, list[dict]]:
    """Detection per band of the reference lesion's contrast to its host (malenia.infer.lesion_features), for
    all lesions ("all") and per lesion type: whether a miss is a lesion a reader could see, which size alone
    does not say. `recall`: recall_by_contrast (|contrast| bands) or recall_by_polarity (darker, similar,
    brighter). Lesions without a measurement (none left on the grid) are left out."""
    rows = [(str(les.get("disease")), les["contrast_hu"], les["detected"])
            for c in cases for les in c["lesions"] if les.get("contrast_hu") is not None]
    out = {"all": recall((v, d) for _, v, d in rows)}
    for t in sorted({t for t, _, _ in rows}):
        out[t] = recall((v, d) for k, v, d in rows if k == t)
    return out


def scan_phase(report) -> str | None:
    """The scan's phase as its reference report states it: "contrast", "non_contrast" (the enhancement
    description's vocabulary id without its aspect), a free-text description as written, or None."""
    enhancement = getattr(report, "enhancement", None)
    if enhancement is None:
        return None
    return enhancement.id.split(".", 1)[-1] if enhancement.id else enhancement.text


def scan_base(report) -> str | None:
    """The CT a synthetic case's lesions were planted in, as its report records it (`malenia synth`: "phantom" or
    the base folder's name; `synth --nodules`: the real lung's folder name); None for a case that is not synthetic."""
    extra = getattr(report, "extra", None) or {}
    base = (extra.get("synthesis") or {}).get("base") or extra.get("base")
    return Path(str(base)).name if base else None


def detection_by_base(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per base CT (each case's `base`): cases, lesions found, predicted lesions and false positives (predicted
    lesions matched to none). A base the model trained on is anatomy it has seen at every step: its false
    positives there say little about a new scan's (docs/training.md, fifty-second round). Empty where no case
    records a base."""
    if not any(c.get("base") for c in cases):
        return []
    out = []
    for base in sorted({c.get("base") or "unknown" for c in cases}):
        mine = [c for c in cases if (c.get("base") or "unknown") == base]
        lesions = sum(c["lesions_reported"] for c in mine)
        found = sum(c["lesions_detected"] for c in mine)
        false = sum(c["lesions_predicted"] - c["lesions_detected"] for c in mine)
        out.append({"base": base, "cases": len(mine), "lesions": lesions, "detected": found,
                    "recall": found / lesions if lesions else None, "predicted": found + false,
                    "false_positives": false, "false_positives_per_case": false / len(mine)})
    return out


def _base_lines(result: dict[str, Any]) -> list[str]:
    rows = result.get("by_base")  # absent from evaluations written before it existed
    if not rows:
        return []
    return _titled_table("Detection and false positives by the CT the lesions were planted in (a base CT used in "
                         "training is anatomy the network has seen, which a user's scan is not):",
                         ("base CT", "cases", "found / lesions", "false positives", "per case"),
                         [(r["base"], r["cases"], f"{r['detected']} / {r['lesions']}", r["false_positives"],
                           f"{r['false_positives_per_case']:.2f}") for r in rows])


def _titled_table(title: str, columns, rows) -> list[str]:
    """A Markdown table under a title paragraph, as evaluation.md's breakdowns are written."""
    return ["", title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(v) for v in row) + " |" for row in rows)]


def detection_by_phase(cases: list[dict[str, Any]]) -> dict[str, list[dict]]:
    """Detection per scan phase (each case's `phase`; "unknown" where the report states none), for all lesions
    ("all") and per lesion type, every phase of the set listed for every type so that rows line up: a look the
    network marks in unenhanced scans can be silent beside enhanced parenchyma (kidney stones, docs/training.md,
    forty-eighth round), which one recall over both hides."""
    rows = [(str(les.get("disease")), c.get("phase") or "unknown", bool(les["detected"]))
            for c in cases for les in c["lesions"]]
    phases = sorted({p for _, p, _ in rows})

    def recall(selected: list[tuple[str, str, bool]]) -> list[dict]:
        out = []
        for phase in phases:
            found = [d for _, p, d in selected if p == phase]
            out.append({"phase": phase, "lesions": len(found), "detected": sum(found),
                        "recall": sum(found) / len(found) if found else None})
        return out

    result = {"all": recall(rows)}
    for t in sorted({t for t, _, _ in rows}):
        result[t] = recall([r for r in rows if r[0] == t])
    return result


def _found_table(table: dict[str, list[dict]] | None, column: str, title: str) -> list[str]:
    """A found / lesions table, one row per lesion type and one for all, one column per band or phase; none for
    an evaluation written before the breakdown existed, or one without lesions."""
    if not table or not any(b["lesions"] for b in table["all"]):
        return []
    names = [b[column] for b in table["all"]]
    lines = ["", title, "", "| lesion type | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for t, row in [*((t, r) for t, r in table.items() if t != "all"), ("**all**", table["all"])]:
        lines.append(f"| {t} | " + " | ".join(f"{b['detected']} / {b['lesions']}" for b in row) + " |")
    return lines


def _contrast_lines(result: dict[str, Any]) -> list[str]:
    return _found_table(result.get("by_contrast"), "band", "Lesion detection by contrast (|reference lesion's core "
                        "mean HU - median of its 1-6 mm shell|), found / lesions:")


def _polarity_lines(result: dict[str, Any]) -> list[str]:
    return _found_table(result.get("by_polarity"), "band", "Lesion detection by the sign of that contrast (darker: "
                        "-20 HU or lower, brighter: +20 HU or higher), found / lesions:")


def _phase_lines(result: dict[str, Any]) -> list[str]:
    return _found_table(result.get("by_phase"), "phase",
                        "Lesion detection by scan phase (the reference report's enhancement), found / lesions:")


def names_given(cases: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per reference lesion type, how often each name was reported for its detected lesions ("unclassified"
    included), most frequent first: where a wrong or withheld name goes, which accuracy alone does not say."""
    tally: dict[str, Counter] = defaultdict(Counter)
    for les in (les for c in cases for les in c["lesions"] if les.get("detected")):
        tally[str(les.get("disease"))][les.get("pred_disease") or "unclassified"] += 1
    return {d: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for d, c in sorted(tally.items())}


def _names_lines(result: dict[str, Any]) -> list[str]:
    names = result.get("names") or names_given(result.get("cases") or [])
    if not names:
        return []
    return _titled_table("Names reported for detected lesions (the disease `segment` names; \"unclassified\" as such):",
                         ("lesion type", "detected", "named"),
                         [(d, sum(counts.values()), ", ".join(f"{n} {k}" for n, k in counts.items()))
                          for d, counts in names.items()])


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def markdown_tables(result: dict[str, Any]) -> str:
    """The result as Markdown: segmentation/detection per lesion type, then attribute matching per aspect."""
    p = result["protocol"]
    lines = [
        f"Data: `{result['data']['name']}` split `{result['data']['split']}`, {result['data']['cases']} cases. "
        f"NSD tolerance {p['nsd_tolerance_mm']} mm; a lesion is detected at IoU ≥ {p['detection_iou_threshold']}.",
        "",
    ]
    if p.get("outlines") == "reference":
        lines += ["**Described on the reference outlines** (`--outlines reference`, as `segment --mask`): every lesion "
                  "is \"detected\" and its DSC is 1 by construction; the names and attributes are what a reader who "
                  "outlines the lesion is told.", ""]
    lines += [
        "| lesion type | seen | cases | DSC | NSD | lesions | det. recall | det. precision | disease acc. | closest disease |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d, s in result["per_type"].items():
        seen = ("seen" if d in SEEN_DISEASES else "unseen" if d in UNSEEN_DISEASES else
                "novel (validation)" if d in NOVEL_TYPES else "training-only" if d in TRANSPLANT_TYPES else "–")
        lines.append(f"| {d} | {seen} | {s['cases']} | {_f(s['dsc'])} | {_f(s['nsd'])} | {s['lesions']} | "
                     f"{_f(s['detection_recall'])} | {_f(s['detection_precision'])} | {_f(s['disease_accuracy'])} | "
                     f"{_f(s.get('closest_disease_accuracy'))} |")
    for name, g in result["groups"].items():
        if g and name != "all_types":
            lines.append(f"| **mean {name}** | | | {_f(g['dsc'])} | {_f(g['nsd'])} | | {_f(g['detection_recall'])} | "
                         f"{_f(g['detection_precision'])} | {_f(g['disease_accuracy'])} | {_f(g.get('closest_disease_accuracy'))} |")
    o = result.get("overall")
    if o:
        lines.append(f"| **all cases** | | {o['cases']} | {_f(o['dsc'])} | {_f(o['nsd'])} | {o['lesions']} | "
                     f"{_f(o['detection_recall'])} | {_f(o['detection_precision'])} | {_f(o['disease_accuracy'])} | "
                     f"{_f(o.get('closest_disease_accuracy'))} |")
    if any(d in NOVEL_TYPES for d in result["per_type"]):
        lines += ["", "A novel (validation) type has no profile in any table: its disease accuracy is the share of its "
                      "detected lesions called \"unclassified\", and it has no closest disease to get right."]
    lines += _interval_lines(result)
    lines += _names_lines(result)
    groups = [(n, g) for n, g in result["groups"].items() if g and n in ("unseen", "seen")]
    if groups:
        lines += ["", "Attribute matching on detected lesions, % (precision / recall, macro over descriptions):", ""]
        lines.append("| aspect | " + " | ".join(f"{n} precision | {n} recall" for n, _ in groups) + " |")
        lines.append("|---|" + "---|---|" * len(groups))
        for a in ASPECTS:
            cells = " | ".join(f"{_f(g['attributes'][a]['precision'], True)} | {_f(g['attributes'][a]['recall'], True)}"
                               for _, g in groups)
            lines.append(f"| {ASPECT_NAMES[a]} | {cells} |")
    bands = result.get("by_size")  # absent from evaluations written before it existed
    if bands:
        lines += ["", "Lesion detection by size (reference lesion's equivalent-sphere diameter):", "",
                  "| size | " + " | ".join(b["band"] for b in bands) + " |", "|---|" + "---|" * len(bands),
                  "| lesions (detected) | " + " | ".join(f"{b['lesions']} ({b['detected']})" for b in bands) + " |",
                  "| detection recall | " + " | ".join(_f(b["recall"]) for b in bands) + " |"]
    lines += _contrast_lines(result)
    lines += _polarity_lines(result)
    lines += _phase_lines(result)
    lines += _base_lines(result)
    lines += _outline_lines(result)
    lines += headroom.markdown(result.get("naming_headroom"))  # absent from evaluations written before it existed
    lines += misses_markdown(result.get("misses"))  # absent from evaluations written before it existed
    return "\n".join(lines) + "\n"


def _outline_lines(result: dict[str, Any]) -> list[str]:
    outlines = result.get("outlines")  # absent from evaluations written before it existed
    if not outlines:
        return []
    return _titled_table("Outlines of the detected lesions (predicted / reference volume; under 0.5: outlined at under "
                         "half the lesion, over 2: beyond twice it):",
                         ("lesion type", "detected", "median IoU", "volume ratio, median (quartiles)", "under 0.5, %",
                          "over 2, %"),
                         [(d, o["detected"], f"{o['iou_median']:.2f}",
                           f"{o['volume_ratio_median']:.2f} ({o['volume_ratio_q25']:.2f}–{o['volume_ratio_q75']:.2f})",
                           _f(o["under_outlined"], True), _f(o["over_outlined"], True)) for d, o in outlines.items()])


def _interval_lines(result: dict[str, Any]) -> list[str]:
    """The groups' 95 % intervals over cases, as stored (or, for a result written before they were, computed from its
    cases)."""
    intervals = result.get("intervals") or result_intervals(result)
    lines = []
    for name, iv in intervals.items():
        cells = [f"{label} {iv[k][0]:.3f}–{iv[k][1]:.3f}" for k, label in
                 (("dsc", "DSC"), ("detection_recall", "detection recall"), ("detection_precision", "precision"),
                  ("disease_accuracy", "disease accuracy")) if iv.get(k)]
        if cells:
            lines.append(f"- mean {name}: " + ", ".join(cells))
    if not lines:
        return []
    return ["", f"95 % intervals over cases (percentile bootstrap, {RESAMPLES} resamples of whole cases; "
                "malenia.evaluate.intervals):", "", *lines]


def dataset_from_labelled_scan(image_path: str | Path, label_path: str | Path, disease: str | None, target: str | Path) -> Path:
    """A one-case dataset from a CT and its lesion label map (each connected component one lesion, reported
    with `disease` and no attribute descriptions), so a labelled scan can be evaluated like any dataset.

    The map is read as `segment --mask` reads one (malenia.infer.outlined.read_mask): on another grid, a flipped
    or permuted one included, it is placed on the CT's by physical position (nearest neighbour). Only its size
    was once compared, so a map of the same size on a flipped grid was scored mirrored, DSC 0 without a word."""
    import SimpleITK as sitk
    from scipy import ndimage

    from malenia.data.ct_io import read_ct
    from malenia.data.dataset import Case, CaseReport, DatasetIndex, LesionReport, write_case, write_dataset_index
    from malenia.infer.outlined import read_mask

    image = read_ct(image_path)
    label = read_mask(label_path, image, what="--label")
    instances, n = ndimage.label(label > 0, structure=np.ones((3, 3, 3), bool))
    lab = sitk.GetImageFromArray(instances.astype(np.uint16))
    lab.CopyInformation(image)
    case_id = Path(str(image_path)).name.split(".")[0]
    report = CaseReport(case_id, [LesionReport(i, disease, {}) for i in range(1, n + 1)], source=str(image_path))
    write_case(target, Case(case_id, image, lab, report), overwrite=True)
    write_dataset_index(target, DatasetIndex(case_id, [case_id], {"test": [case_id]}, f"labelled scan {image_path}"))
    return Path(target)
