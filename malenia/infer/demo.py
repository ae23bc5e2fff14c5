"""`malenia demo`: the built-in model on a sample CT the project synthesises itself.

The sample (malenia.data.synthesis.make_demo_case, deterministic for a seed) is a contrast-enhanced
abdominal phantom with three planted lesions: a liver tumour (a type seen in training), a kidney
tumour and a pancreatic cyst (unseen types). It is saved as the input in DIR/input/
(sample_ct.nii.gz, its truth labels sample_truth.nii.gz and sample_truth.json), segmented through
the same pipeline as `malenia segment`, and the outputs are written to DIR. Since the truth is
known, each planted lesion gets its Dice score against the predicted lesion that overlaps it most
and whether that lesion's disease was named right.

The input folder appears only with the outputs: it is staged and renamed into place after them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.errors import OutputError
from malenia.infer.pipeline import SegmentOptions, SegmentRun
from malenia.infer.progress import ProgressFn, silent

INPUT_DIR = "input"
INPUT_CT = "sample_ct.nii.gz"
TRUTH_LABELS = "sample_truth.nii.gz"
TRUTH_REPORT = "sample_truth.json"


@dataclass
class PlantedLesion:
    label: int  # in the truth label map
    disease: str
    voxels: int
    predicted_label: int | None  # the predicted lesion overlapping it most (None: missed)
    predicted_disease: str | None
    unclassified: bool
    dsc: float

    @property
    def named_right(self) -> bool:
        return self.predicted_disease == self.disease and not self.unclassified


@dataclass
class DemoRun:
    run: SegmentRun
    input_path: Path
    planted: list[PlantedLesion] = field(default_factory=list)


def score_planted(truth: np.ndarray, predicted: np.ndarray, truth_diseases: dict[int, str], result) -> list[PlantedLesion]:
    """Per planted lesion: Dice against the predicted lesion that overlaps it most, and its disease."""
    out = []
    for label, disease in sorted(truth_diseases.items()):
        t = truth == label
        hits = np.bincount(predicted[t].astype(np.int64), minlength=1)
        hits[0] = 0
        best = int(np.argmax(hits)) if hits.max() > 0 else 0
        if best == 0:
            out.append(PlantedLesion(label, disease, int(t.sum()), None, None, False, 0.0))
            continue
        p = predicted == best
        dsc = 2.0 * float(np.logical_and(t, p).sum()) / float(t.sum() + p.sum())
        call = result.lesion(best).disease
        out.append(PlantedLesion(label, disease, int(t.sum()), best, call.name, call.unclassified, dsc))
    return out


def run_demo(out_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None, options: SegmentOptions | None = None,
             overwrite: bool = False, progress: ProgressFn = silent, seed: int = 0, model=None) -> DemoRun:
    import time

    from malenia.atomic import atomic_dir, no_empty_folder_left
    from malenia.data.synthesis import make_demo_case
    from malenia.infer.outputs import _check_target, write_outputs
    from malenia.infer.pipeline import Segmenter, load_model, read_input

    start = time.perf_counter()
    out_dir = Path(out_dir)
    options = options or SegmentOptions()
    _check_target(out_dir, overwrite)
    input_dir = out_dir / INPUT_DIR
    if input_dir.exists() and not overwrite:
        raise OutputError(f"{input_dir} already exists; use --overwrite to replace it")
    progress("load", 0.0, "model")
    if model is None:
        model = load_model(model_dir, "cpu")
    progress("load", 0.3, "synthesising the sample CT")
    case = make_demo_case(seed)
    final_ct = input_dir / INPUT_CT
    # The staging folder is made in DIR (so that DIR/input appears whole): an interrupted or failed demo removes
    # DIR too when it made it and nothing was published there.
    try:
        with no_empty_folder_left(out_dir), atomic_dir(input_dir, overwrite=True, replaces=INPUT_CT) as staging:
            sitk.WriteImage(case.image, str(staging / INPUT_CT), useCompression=True)
            sitk.WriteImage(sitk.Cast(case.lesions, sitk.sitkUInt8), str(staging / TRUTH_LABELS), useCompression=True)
            (staging / TRUTH_REPORT).write_text(_json(case.report.to_json()), encoding="utf-8")
            image, _ = read_input(staging / INPUT_CT)  # the saved file, through the same checks as any input
            result = Segmenter(model, options, progress).segment(image, str(final_ct))
            progress("outputs", 0.0, f"{len(result.lesions)} lesion(s); writing outputs")
            files = write_outputs(result, out_dir, overwrite=overwrite)
    except OSError as err:
        raise OutputError(f"cannot write the demo to {out_dir}: {err.strerror or err}") from None
    progress("done", 1.0, f"{len(result.lesions)} lesion(s) in {out_dir}")
    truth = sitk.GetArrayFromImage(case.lesions)
    predicted = sitk.GetArrayFromImage(result.labels)
    planted = score_planted(truth, predicted, {x.label: x.disease for x in case.report.lesions}, result)
    return DemoRun(SegmentRun(result, files, time.perf_counter() - start), final_ct, planted)


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def planted_summary(planted: list[PlantedLesion]) -> str:
    lines = ["planted lesions (truth known):"]
    for p in planted:
        if p.predicted_label is None:
            lines.append(f"  {p.label}  {p.disease:<14} missed")
            continue
        mark = "right" if p.named_right else ("unclassified" if p.unclassified else f"wrong ({p.predicted_disease})")
        lines.append(f"  {p.label}  {p.disease:<14} -> lesion {p.predicted_label}  DSC {p.dsc:.2f}  disease {mark}")
    found = sum(p.dsc >= 0.5 for p in planted)
    right = sum(p.named_right for p in planted)
    lines.append(f"  found (DSC >= 0.5): {found}/{len(planted)}; disease named right: {right}/{len(planted)}")
    return "\n".join(lines)
