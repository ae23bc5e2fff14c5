"""One "Segment Lesions" run: volume node -> input file -> background `malenia segment` -> results; or one
"Describe outlines" run: the same with the reader's outlines as `--mask`.

The input is written beside the results (a NRRD of the volume, or links to its DICOM files so
that the command also writes a DICOM SEG), the command runs as a SegmentationJob (own process
group, staging folder), and the input copy is removed whatever the outcome.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import mrml_io
from MaleniaCommon.paths import python_executable, subprocess_env

from .runner import RunState, SegmentationJob

if TYPE_CHECKING:
    from malenia.progress_lines import ProgressLine

DEVICES = ("auto", "cpu", "cuda")
# What happens to the lesions the model's false-positive filter (its lesion verifier) scores as unlikely:
# "model" removes them at the model's calibrated cut; "lenient" only below LENIENT_VERIFIER_CUT (segment
# --verifier-cut); "off" keeps every candidate (--no-verifier).
LESION_FILTERS = ("model", "lenient", "off")
# Half the built-in model's cut (0.4). Measured for it on 96 validation cases (docs/training.md, fifty-second
# round): 16 more of 197 lesions found, 42 more false positives; on real chest CTs 1 more of 52 nodules for 25
# more false positives. Above a model's own cut it would filter harder than the model does.
LENIENT_VERIFIER_CUT = 0.2


@dataclass
class SegmentRequest:
    volume_node: object
    model_dir: str | None = None  # None: the built-in model
    device: str = "auto"
    roi_node: object | None = None  # a vtkMRMLMarkupsROINode: segment only inside it
    dicom_files: list[str] = field(default_factory=list)  # the volume's DICOM series, when it came from DICOM
    knowledge_dirs: list[str] = field(default_factory=list)  # site disease profile folders (--knowledge)
    refine: bool = False  # re-draw well-contrasted lesions' borders from the CT (--refine)
    lesion_filter: str = "model"  # one of LESION_FILTERS
    # lesions outlined by the reader (a SimpleITK label map on the volume's grid, each value one lesion): the run
    # describes them (`segment --mask`) instead of finding lesions; ROI, refinement and filter do not apply
    outlines: object | None = None


def roi_argument(roi_node) -> str:
    """`--roi x0,y0,z0,x1,y1,z1`: the ROI's axis-aligned bounds in RAS mm (world coordinates), min then max corner."""
    b = [0.0] * 6
    roi_node.GetRASBounds(b)
    if not all(v == v for v in b) or b[1] <= b[0] or b[3] <= b[2] or b[5] <= b[4]:
        raise ValueError(f"region of interest {roi_node.GetName()!r} is empty; place it over the region to segment")
    return ",".join(f"{v:.3f}" for v in (b[0], b[2], b[4], b[1], b[3], b[5]))


def segment_command(python: str, input_path: str | Path, model_dir: str | None = None, device: str = "auto",
                    roi: str | None = None, knowledge_dirs: Sequence[str] = (), refine: bool = False,
                    lesion_filter: str = "model", mask: str | Path | None = None) -> list[str]:
    """`malenia segment` through Slicer's Python; the job appends `--out`. With `mask` (a label map file) it
    describes the lesions outlined there instead of finding lesions."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if lesion_filter not in LESION_FILTERS:
        raise ValueError(f"lesion filter must be one of {LESION_FILTERS}, got {lesion_filter!r}")
    if mask is not None and (roi or refine or lesion_filter != "model"):
        raise ValueError("describing outlined lesions takes no region, refinement or false-positive filter")
    cmd = [python, "-m", "malenia.cli", "segment", str(input_path), "--device", device, "--progress", "json"]
    if model_dir:
        cmd += ["--model", str(model_dir)]
    if mask is not None:
        cmd += ["--mask", str(mask)]
    if roi:
        cmd.append(f"--roi={roi}")  # one token: a box starting with a negative coordinate is not an option
    for folder in knowledge_dirs:
        cmd += ["--knowledge", str(folder)]
    if refine:
        cmd.append("--refine")
    if lesion_filter == "off":
        cmd.append("--no-verifier")
    elif lesion_filter == "lenient":
        cmd.append(f"--verifier-cut={LENIENT_VERIFIER_CUT}")
    return cmd


def results_folder(results_root: str | Path, volume_name: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", volume_name).strip("._-") or "scan"
    folder = Path(results_root) / f"{stem}-{stamp}"
    n = 2
    while folder.exists():
        folder = Path(results_root) / f"{stem}-{stamp}-{n}"
        n += 1
    return folder


def _link_or_copy(files: Sequence[str], folder: Path) -> None:
    for i, f in enumerate(files):
        target = folder / f"{i:05d}_{Path(f).name}"
        try:
            os.symlink(os.path.abspath(f), target)
        except (OSError, NotImplementedError):  # Windows without symlink rights
            shutil.copy2(f, target)


class LesionRun:
    """Prepares the input and runs the job; `poll()` from a GUI timer, `cancel()` any time."""

    def __init__(self, request: SegmentRequest, results_root: str | Path, python: str | None = None,
                 command_prefix: Sequence[str] | None = None, env: dict[str, str] | None = None):
        node = request.volume_node
        if node is None or node.GetImageData() is None:
            raise ValueError("select an input volume that holds an image")
        roi = None
        if request.roi_node is not None:
            if node.GetTransformNodeID():
                raise ValueError("the input volume is transformed; harden its transform before segmenting a region")
            roi = roi_argument(request.roi_node)
        self.request = request
        self.out_dir = results_folder(results_root, node.GetName() + ("-outlined" if request.outlines is not None else ""))
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.input_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.input-", dir=self.out_dir.parent))
        try:
            if request.dicom_files:
                input_path = self.input_dir / "dicom"
                input_path.mkdir()
                _link_or_copy(request.dicom_files, input_path)
            else:
                input_path = mrml_io.write_volume(node, self.input_dir / "input.nrrd")
            mask = self._write_outlines(request.outlines)
            if command_prefix is not None:  # tests and tools: another program that speaks the same protocol
                command = [*command_prefix, str(input_path)]
            else:
                command = segment_command(python or python_executable(), input_path, request.model_dir, request.device, roi,
                                          request.knowledge_dirs, request.refine, request.lesion_filter, mask)
            self.job = SegmentationJob(command, self.out_dir, env=env if env is not None else subprocess_env())
        except BaseException:
            shutil.rmtree(self.input_dir, ignore_errors=True)
            raise

    def _write_outlines(self, outlines) -> Path | None:
        if outlines is None:
            return None
        import SimpleITK as sitk

        path = self.input_dir / "outlines.nrrd"
        sitk.WriteImage(outlines, str(path), True)
        return path

    def start(self) -> None:
        try:
            self.job.start()
        except BaseException:
            self._cleanup()
            raise

    def poll(self) -> list[ProgressLine]:
        lines = self.job.poll()
        if self.job.state is not RunState.RUNNING:
            self._cleanup()
        return lines

    def cancel(self) -> None:
        self.job.cancel()
        self._cleanup()

    @property
    def state(self) -> RunState:
        return self.job.state

    @property
    def error(self) -> str:
        return self.job.error

    def _cleanup(self) -> None:
        shutil.rmtree(self.input_dir, ignore_errors=True)
