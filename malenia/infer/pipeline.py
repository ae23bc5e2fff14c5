"""`malenia segment`: one CT in, lesions with attributes and disease classes out.

    read_ct (validated)  ->  contrast phase (blood-pool HU)  ->  [--roi crop]  ->  preprocess
    (canonical orientation, model spacing, HU window)  ->  sliding windows (malenia.infer.windows:
    tokens -> per-aspect match against the stored bank -> CMKI -> ensembled masks)  ->  lesions on
    the input's exact grid (malenia.infer.postprocess: threshold, components, smooth borders, ROI,
    minimum volume)  ->  instances (malenia.infer.instances: tokens and windows de-duplicated)  ->
    per lesion attributes and disease posterior (malenia.infer.matching)  ->  SegmentationResult
    ->  write_outputs (all files at once).

`Segmenter` is the project's only predictor: `malenia evaluate`, `calibrate` and `ablate` run it
too, so every measured number is a number of what ships.

Memory: the model-grid probability and the candidates' bit-packed crops, the input image, and at
the end one probability and one label volume on the input grid (no per-token full volumes).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from malenia.errors import InputError, ModelError
from malenia.infer.progress import ProgressFn, silent
from malenia.model.precision import PRECISIONS
from malenia.infer.roi import RasBox


@dataclass
class SegmentOptions:
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    overlap: float = 0.25  # sliding-window overlap (fraction of the patch)
    sw_batch_size: int = 1  # windows per network call
    # test-time mirroring (nnU-Net's) about the axes the model trained mirrored on, up to 8x the network calls;
    # refused for a model trained without mirrored patches (Segmenter._mirror_axes)
    mirror: bool = False
    # Foreground probability of a lesion voxel, and the volume under which a component is removed;
    # None: the model's calibrated values (MODEL/inference.json), else 0.5 and 50 mm³ (a 4.6 mm sphere).
    threshold: float | None = None
    token_threshold: float = 0.5  # lesion score (1 - p(no lesion)) for a token to be a candidate
    min_volume_mm3: float | None = None
    min_overlap: float = 0.25  # share of a candidate's voxels inside a component for it to describe it
    alternatives: int = 3  # runners-up per aspect and per disease
    roi: RasBox | None = None
    skip_air: bool = True  # windows that hold only air are not run
    force: bool = False  # read_ct: skip the CT Hounsfield-range and DICOM modality checks
    measured: bool = True  # fold the model's measured attributes (if it has them) into the tokens' attributes
    verify: bool = True  # drop the lesions the model's lesion verifier (if it has one) calls false positives
    # P(real) a lesion needs to pass the verifier; None: the model's calibrated cut. Lower finds more lesions at
    # more false positives (docs/segment.md, `--verifier-cut`).
    verifier_cut: float | None = None
    refine: bool = False  # re-draw well-contrasted lesions' borders from the CT (malenia.infer.refine)
    precision: str = "auto"  # the network's arithmetic (malenia.model.precision): auto, bf16 or fp32

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.overlap < 1.0:
            problems.append(f"overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            problems.append(f"window batch must be at least 1, got {self.sw_batch_size}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.token_threshold < 1.0:
            problems.append(f"token threshold must be in [0, 1), got {self.token_threshold}")
        if self.min_volume_mm3 is not None and not 0 <= self.min_volume_mm3 < float("inf"):
            problems.append(f"minimum lesion volume must be a finite number of mm³, at least 0, got {self.min_volume_mm3}")
        if self.verifier_cut is not None and not 0.0 <= self.verifier_cut < 1.0:
            problems.append(f"verifier cut must be in [0, 1), got {self.verifier_cut}")
        if self.verifier_cut is not None and not self.verify:
            problems.append("a verifier cut needs the verifier (not both --verifier-cut and --no-verifier)")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {self.precision!r}")
        if problems:
            raise InputError("; ".join(problems))

    def with_model_defaults(self, defaults) -> "SegmentOptions":
        """These options with unset post-processing values taken from a model's InferenceDefaults."""
        from dataclasses import replace

        return replace(self, threshold=defaults.threshold if self.threshold is None else self.threshold,
                       min_volume_mm3=defaults.min_volume_mm3 if self.min_volume_mm3 is None else self.min_volume_mm3)


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda") from None


def load_model(model_dir: str | os.PathLike | None, device="cpu"):
    """A verified model folder (default: the built-in model); ModelError when missing or damaged."""
    from malenia.model.folder import MANIFEST, load_model_folder
    from malenia.paths import builtin_model_dir

    if model_dir is None and not (builtin_model_dir() / MANIFEST).is_file():
        raise ModelError(f"the built-in model is not installed ({builtin_model_dir()}); pass --model MODEL_DIR")
    model = load_model_folder(model_dir, device=str(device))
    if not model.config.multi_positive:
        raise ModelError(f"{model.path}: a single-positive ablation model cannot describe lesions per aspect; "
                         "use it with `malenia evaluate`")
    return model


def read_input(path: str | os.PathLike, force: bool = False) -> tuple[sitk.Image, list[str] | None]:
    """The CT (malenia.data.ct_io.read_ct) and, for a DICOM folder, the series' files (slice order)."""
    from malenia.data.ct_io import read_ct

    image = read_ct(path, force=force)
    files = None
    if Path(path).is_dir():  # the same series read_ct chose: the one with most files
        reader = sitk.ImageSeriesReader
        series = list(reader.GetGDCMSeriesIDs(str(path)))
        chosen = max(series, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(path), s)))
        files = list(reader.GetGDCMSeriesFileNames(str(path), chosen))
    return image, files


def series_warnings(folder: str | os.PathLike, dicom_files: list[str]) -> list[str]:
    """The other DICOM series of an input folder, named in report.json and on the terminal (not chosen between
    silently: an arterial phase beside a longer venous one, a scout, a dose report)."""
    from malenia.data.ct_io import other_series

    others = other_series(folder, dicom_files)
    if not others:
        return []
    return [f"{Path(folder).name} holds {len(others) + 1} DICOM series; read the one with most slices "
            f"({len(dicom_files)}), not: {'; '.join(others)} (put the one you want in a folder of its own)"]


def bank_tensors(bank, extra_rows: np.ndarray | None = None, device="cpu"):
    """(embeddings [R, Dt], aspect index [R]) for the network; `extra_rows` are the whole-report rows
    (aspect -1) of a single-positive ablation model."""
    import torch

    from malenia.model.attributes import REPORT_ASPECT

    emb, asp = np.asarray(bank.embeddings, np.float32), bank.aspect_indices()
    if extra_rows is not None and len(extra_rows):
        emb = np.concatenate([emb, np.asarray(extra_rows, np.float32)])
        asp = np.concatenate([asp, np.full(len(extra_rows), REPORT_ASPECT, np.int64)])
    return torch.as_tensor(emb, device=device), torch.as_tensor(asp, dtype=torch.int64, device=device)


@dataclass
class StageTrace:
    """What `Segmenter.segment` passed from step to step: every component at the threshold (`lesions`, before
    any removal; input grid), the ids that reach the minimum volume (`sized`), and of those the ids the lesion
    verifier keeps (`verified`: the reported lesions, in output order; before `--refine` re-draws them)."""

    pm: Any  # malenia.infer.postprocess.ProbabilityMap
    lesions: Any  # malenia.infer.postprocess.LesionMap
    sized: list[int]
    verified: list[int] = field(default_factory=list)

    def probability(self) -> np.ndarray:
        """The network's foreground probability on the whole input grid (0 outside a --roi crop)."""
        fine = self.pm.fine_probability()
        if self.pm.region is None:
            return fine
        out = np.zeros(self.pm.shape, np.float32)
        (i0, i1), (j0, j1), (k0, k1) = self.pm.region
        out[k0:k1, j0:j1, i0:i1] = fine
        return out


class Segmenter:
    """A loaded model ready to segment CT images: `segment(image) -> SegmentationResult`.

    The only predictor: `malenia segment`, the Slicer module, `evaluate`, `calibrate` and `ablate`
    all run it. `segment` = `probability_map` (the network) + malenia.infer.postprocess (pure:
    probability -> lesion labels) + `describe` (attributes, disease, report)."""

    def __init__(self, model, options: SegmentOptions | None = None, progress: ProgressFn = silent, knowledge=None):
        """`knowledge`: site profile folders for this run (malenia.knowledge.site), besides $MALENIA_KNOWLEDGE."""
        import torch

        from malenia.data.preprocess import preprocessor_for
        from malenia.infer.matching import BankMatcher
        from malenia.infer.site_table import table_for_model
        from malenia.model.precision import resolve_precision

        self.options = (options or SegmentOptions()).with_model_defaults(model.inference_defaults())
        self.progress = progress
        self.model = model
        self.cfg = model.config
        self.device = resolve_device(self.options.device)
        self.precision = resolve_precision(self.options.precision, self.device)
        self.net = self.precision.prepare_model(model.network.to(self.device).eval())
        self.bank_emb, self.bank_aspects = bank_tensors(model.bank, model.report_rows(), self.device)
        self.preprocessor = preprocessor_for(self.cfg)
        self.table = table_for_model(model, knowledge)
        self.matcher = BankMatcher(model.bank, self.table, self.options.alternatives)
        self.measured = model.measured_attributes() if self.options.measured else None
        self.verifier = self._verifier(model)
        self.mirror_axes = self._mirror_axes(model)
        self.appearance = model.appearance() if self.options.measured else None  # measured, as the attributes
        self._torch = torch

    def _verifier(self, model):
        """The model's lesion verifier at the cut the options ask for (None: no verifier, or not wanted)."""
        from dataclasses import replace

        verifier = model.lesion_verifier() if self.options.verify else None
        if verifier is None and self.options.verifier_cut is not None:
            raise InputError(f"model {model.name} has no lesion verifier: a verifier cut does not apply")
        if verifier is None or self.options.verifier_cut is None:
            return verifier
        return replace(verifier, cut=self.options.verifier_cut)

    def _mirror_axes(self, model) -> tuple[int, ...]:
        """The flips test-time mirroring averages over: those the model trained on, as nnU-Net mirrors at inference
        only about its training's mirror axes (every axis when the manifest does not say). A network that never
        saw a mirrored patch reads location from anatomy: averaged with mirrored views, the built-in model lost
        most of what it finds (docs/segment.md), so mirroring it is refused, not run."""
        if not self.options.mirror:
            return ()
        axes = model.trained_flip_axes()
        if axes is None:
            return (0, 1, 2)
        if not axes:
            raise InputError(f"--mirror: model {model.name} {model.version} was trained without mirrored patches "
                             "(its manifest's training.augment.flip_axes is empty), and averaging it over mirrored "
                             "views lowers its accuracy (docs/segment.md, test-time mirroring); leave --mirror off")
        return axes

    def runner(self, on_window=None, collect: bool = True):
        from malenia.infer.windows import WindowRunner

        o = self.options
        return WindowRunner(self.net, self.bank_emb, self.bank_aspects, self.cfg.patch_size, self.device,
                            overlap=o.overlap, sw_batch_size=o.sw_batch_size, mirror_axes=self.mirror_axes,
                            threshold=o.threshold, token_threshold=o.token_threshold,
                            background=self.preprocessor.background_value, skip_air=o.skip_air, on_window=on_window,
                            collect=collect, precision=self.precision)

    def probability_map(self, image: sitk.Image, timings: dict[str, float] | None = None, collect: bool = True,
                        region=None):
        """(ProbabilityMap, WindowPass) of `image` (cropped to the ROI when one is set, or to `region`, index
        ranges as malenia.infer.roi.crop_region gives): the network's part."""
        from malenia.infer import roi as roi_mod
        from malenia.infer.postprocess import ProbabilityMap

        o, progress = self.options, self.progress
        timings = {} if timings is None else timings
        t = time.perf_counter()
        progress("preprocess", 0.0, "orientation, spacing, intensities")
        if region is None and o.roi is not None:
            region = roi_mod.crop_region(image, o.roi)
        prepared = self.preprocessor.prepare(roi_mod.crop(image, region) if region is not None else image)
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        runner = self.runner(lambda done, total: progress("windows", done / max(total, 1), f"window {done}/{total}"),
                             collect)
        progress("windows", 0.0, f"{runner.count_windows(prepared.array.shape)} windows")
        with self._torch.inference_mode():
            wp = runner.run(prepared.array)
        timings["windows"] = time.perf_counter() - t
        return ProbabilityMap(wp.probability, prepared, image, region, o.roi), wp

    def segment(self, image: sitk.Image, source: str = "", dicom_files: list[str] | None = None):
        return self.segment_traced(image, source, dicom_files)[0]

    def segment_traced(self, image: sitk.Image, source: str = "", dicom_files: list[str] | None = None):
        """(SegmentationResult, StageTrace): `segment`'s result and what each post-processing step kept, so
        that `malenia evaluate` can say where a reference lesion was lost (malenia.evaluate.misses)."""
        from malenia.infer.postprocess import kept, lesion_map

        o, timings = self.options, {}
        image, phase = self._phase(image, timings)
        pm, wp = self.probability_map(image, timings)
        t = time.perf_counter()
        self.progress("lesions", 0.0, "instances, attributes, diseases")
        lm = lesion_map(pm, o.threshold)
        order = kept(lm, o.min_volume_mm3)
        rows = self._rows(pm, lm, order)
        trace = StageTrace(pm, lm, sized=list(order))
        order, verdict = self.verify(order, rows, lm)
        trace.verified = list(order)
        lm, refined = self.refine(pm, lm, order)
        result = self.describe(pm, wp, lm, order, phase, source, dicom_files, rows, verdict)
        result.extra["refine"] = refined
        timings["lesions"] = time.perf_counter() - t
        result.extra["seconds"] = {k: round(v, 3) for k, v in timings.items()}
        return result, trace

    def describe_outlined(self, image: sitk.Image, labels: np.ndarray, source: str = "",
                          dicom_files: list[str] | None = None):
        """The SegmentationResult of lesions outlined by a reader (`segment --mask`, malenia.infer.outlined):
        `labels` (z, y, x) on `image`'s grid, each non-zero value one lesion; described as `segment` describes
        its own, with the network run over the lesions and half a patch around them only. No threshold,
        minimum volume, verifier or refinement: the outline is the lesion."""
        from malenia.infer import outlined

        if self.options.roi is not None:
            raise InputError("--mask and --roi: the outlines decide where the network runs; give one of them")
        timings = {}
        image, phase = self._phase(image, timings)
        ids = outlined.lesion_ids(labels)
        context_mm = np.array(self.cfg.patch_size[::-1]) * np.array(self.preprocessor.target_spacing[::-1]) / 2
        pm, wp = self.probability_map(image, timings, region=outlined.region(image, labels, context_mm))
        t = time.perf_counter()
        self.progress("lesions", 0.0, "attributes, diseases")
        lm = outlined.lesion_map(pm, labels, ids)
        order = list(range(1, len(ids) + 1))
        result = self.describe(pm, wp, lm, order, phase, source, dicom_files, self._rows(pm, lm, order))
        timings["lesions"] = time.perf_counter() - t
        result.extra["outlined"] = {"input_labels": ids}
        result.extra["seconds"] = {k: round(v, 3) for k, v in timings.items()}
        return result

    def _phase(self, image: sitk.Image, timings: dict[str, float]):
        """(the image as float32, its contrast phase call): what every caller segments and how it is enhanced."""
        from malenia.data.contrast import detect_phase
        from malenia.infer.matching import phase_call

        if image.GetPixelID() != sitk.sitkFloat32:  # what read_ct gives: every caller segments the same values
            image = sitk.Cast(image, sitk.sitkFloat32)
        t = time.perf_counter()
        self.progress("phase", 0.0, "contrast phase from the blood pool")
        phase = phase_call(detect_phase(image))
        timings["phase"] = time.perf_counter() - t
        return image, phase

    def _rows(self, pm, lm, order: list[int]) -> dict[int, dict[str, float]] | None:
        """Per kept lesion (id of `lm`) its features (malenia.infer.lesion_features.lesion_rows), when the
        verifier, the measured attributes or the appearance check need them; else None."""
        if self.verifier is None and self.measured is None and self.appearance is None:
            return None
        from malenia.infer.lesion_features import lesion_rows

        return lesion_rows(pm, lm, order)

    def verify(self, order: list[int], rows, lm) -> tuple[list[int], dict[str, Any] | None]:
        """The lesions of `order` the verifier keeps (all without a verifier), and its verdict for the report."""
        if self.verifier is None:
            return order, None
        measured = [k for k in order if k in rows]
        p = dict(zip(measured, self.verifier.probability([rows[k] for k in measured]).tolist()))
        keep = [k for k in order if p.get(k, 1.0) >= self.verifier.cut]  # unmeasurable: kept, no evidence
        removed = [{"voxels": int(lm.voxels[k]), "probability": round(p[k], 4)} for k in order if k not in keep]
        return keep, {"cut": self.verifier.cut, "probability": p, "removed": removed}

    def refine(self, pm, lm, order: list[int]):
        """(the lesion map with the kept lesions' borders re-drawn from the CT, what was done for the report)
        when `--refine` is on; else (lm, None). Runs after the verifier, whose features describe the
        network's own masks (as it was fitted)."""
        if not self.options.refine or not order:
            return lm, None
        from malenia.infer.postprocess import with_labels
        from malenia.infer.refine import RefineParams, refine_labels

        hu = sitk.GetArrayViewFromImage(pm.image)
        labels, changed = refine_labels(hu, lm.labels, pm.image.GetSpacing()[::-1], order, RefineParams())
        return with_labels(lm, pm, labels), {"lesions": len(order), "redrawn": len(changed)}

    def describe(self, pm, wp, lm, order: list[int], phase, source: str = "", dicom_files: list[str] | None = None,
                 rows: dict[int, dict[str, float]] | None = None, verdict: dict[str, Any] | None = None):
        """The SegmentationResult of the lesions `order` (ids of `lm`, malenia.infer.postprocess.kept);
        `rows`: their features (Segmenter._rows; None when nothing reads them), `verdict`: the verifier's."""
        from malenia.infer.lesion_features import FEATURES
        from malenia.infer.matching import scan_enhancement
        from malenia.infer.postprocess import relabel
        from malenia.infer.results import LesionResult, ModelInfo, ScanInfo, SegmentationResult

        label_image = sitk.GetImageFromArray(relabel(lm, order))
        label_image.CopyInformation(pm.image)
        lesions, details, enh_votes = [], [], []
        rows = rows or {}  # measured once, before the verifier: its kept lesions are not measured again
        measured = {label: {f: v for f, v in rows[k].items() if f in FEATURES}
                    for label, k in enumerate(order, start=1) if k in rows}
        verified = {} if verdict is None else verdict["probability"]
        for label, inst in enumerate(self._instances(pm, wp, lm, order), start=1):
            distribution = inst.distribution
            if label in measured and self.measured is not None:
                distribution = self.measured.blend(distribution, self.matcher.rows, self.model.bank.ids, measured[label])
            attributes = self.matcher.attributes(distribution, phase)
            scores = self.matcher.full_matches(distribution, attributes)
            look = self.appearance.verdict(measured[label]) if self.appearance and label in measured else None
            call = self.matcher.disease(scores, ruled_out=look["ruled_out"] if look else ())
            lesions.append(LesionResult(label, call, attributes, scores=scores, appearance=look))
            enh_votes.append((attributes["enhancement"], float(inst.voxels)))
            details.append({"label": label, "lesion_score": round(inst.lesion_score, 4),
                            "mean_probability": round(inst.mean_probability, 4), "tokens": len(inst.candidates),
                            "windows": inst.windows, "model_voxels": inst.voxels}
                           | ({"measurements": {k: round(v, 4) for k, v in measured[label].items()}}
                              if label in measured else {})
                           | ({"verifier_probability": round(verified[order[label - 1]], 4)}
                              if order[label - 1] in verified else {}))
        scan = ScanInfo.from_image(pm.image, source, scan_enhancement(phase, enh_votes, self.table.vocab), dicom_files)
        model = ModelInfo(self.model.name, self.model.version, self.model.sha256)
        from malenia.knowledge.site import origin_json

        extra = self._extra(pm, wp, phase, details) | {"verifier": None if verdict is None else {
            "cut": verdict["cut"], "removed": verdict["removed"]}}
        return SegmentationResult(label_image, pm.image, scan, model, lesions, extra, origin_json(self.table))

    def _instances(self, pm, wp, lm, order: list[int]):
        """Per kept lesion (output order) its Instance: candidates and aggregated distribution."""
        from malenia.infer.instances import assign
        from malenia.infer.postprocess import relabel_model

        model_labels = relabel_model(lm, order)
        instances = assign(model_labels, len(order), wp.candidates, pm.probability, self.options.min_overlap)
        for inst in instances:
            if inst.distribution is None:  # nobody in the unflipped pass claimed it: one centred window
                with self._torch.inference_mode():
                    cand = self.runner().describe_at(pm.prepared.array, model_labels == inst.label)
                if cand is not None:
                    inst.candidates = [(cand, 1.0)]
                    inst.distribution = cand.distribution
                else:  # cannot happen for a non-empty component; no evidence then: uniform per aspect
                    inst.distribution = np.zeros(len(self.model.bank), np.float32)
        return instances

    def _extra(self, pm, wp, phase, details: list[dict]) -> dict[str, Any]:
        o = self.options
        return {
            "config": self.cfg.name,
            "device": str(self.device),
            "precision": self.precision.name,  # what options.precision resolved to on this device
            "options": {k: (str(v) if isinstance(v, RasBox) else v) for k, v in asdict(o).items() if k != "roi"}
            | {"roi_ras_mm": str(o.roi) if o.roi else None},
            "model_grid": {"size_zyx": list(pm.probability.shape), "spacing_zyx": list(pm.prepared.grid.spacing_zyx)},
            "windows": {"total": wp.windows_total, "run": wp.windows_run, "forward_passes": wp.forward_passes,
                        "candidates": len(wp.candidates)},
            "phase": {"id": phase.id, "confidence": round(phase.confidence, 4), "method": phase.method,
                      "blood_hu": None if phase.blood_hu is None else round(phase.blood_hu, 1),
                      "used_for_enhancement": phase.confident},
            "lesions": details,
            "measured_attributes": None if self.measured is None else {
                "aspects": sorted(self.measured.aspects), "weight": self.measured.weight, "floor": self.measured.floor,
                **({"aspect_weights": self.measured.aspect_weights} if self.measured.aspect_weights else {})},
        }


@dataclass
class SegmentRun:
    result: Any  # SegmentationResult
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def segment_path(input_path: str | os.PathLike, out_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
                 options: SegmentOptions | None = None, overwrite: bool = False, progress: ProgressFn = silent,
                 model=None, knowledge=None, mask: str | os.PathLike | None = None) -> SegmentRun:
    """The whole command: checks the output folder, loads the model, reads the CT, segments (or, given `mask`,
    describes the lesions it outlines: Segmenter.describe_outlined), writes.

    Errors are one-line MaleniaErrors: OutputError (5) before any work when the folder is not
    writable or outputs exist without `overwrite`; ModelError (4); InputError (3).
    """
    from malenia.infer.outputs import _check_target, write_outputs

    start = time.perf_counter()
    options = options or SegmentOptions()
    _check_target(Path(out_dir), overwrite)  # refuse early: before minutes of work
    progress("load", 0.0, "model")
    if model is None:
        model = load_model(model_dir, "cpu")
    progress("load", 0.5, f"reading {Path(input_path).name}")
    image, dicom_files = read_input(input_path, options.force)
    segmenter = Segmenter(model, options, progress, knowledge)
    if mask is None:
        result = segmenter.segment(image, str(input_path), dicom_files)
    else:
        from malenia.infer.outlined import read_mask

        result = segmenter.describe_outlined(image, read_mask(mask, image), str(input_path), dicom_files)
    if dicom_files:
        result.scan.warnings.extend(series_warnings(input_path, dicom_files))
    progress("outputs", 0.0, f"{len(result.lesions)} lesion(s); writing outputs")
    files = write_outputs(result, out_dir, overwrite=overwrite)
    progress("done", 1.0, f"{len(result.lesions)} lesion(s) in {out_dir}")
    return SegmentRun(result, files, time.perf_counter() - start)
