"""`malenia bench segment`: wall time, peak memory and windows of `malenia segment` on this machine.

1. A CT-sized input: the demo phantom (malenia.data.synthesis.make_demo_case, 3 planted lesions)
   resampled to 512 x 512 x 200 voxels (0.75 x 0.75 x 1.92 mm, a 384 mm field of view), int16 HU
   with Gaussian noise (sd 10 HU), saved as NIfTI; segmented with `--model`'s folder, a freshly
   initialised model of `--config`, or else the built-in model (a fresh compact one when none is
   installed); the output says which: timings of a fresh model are representative, its lesions are not.
2. The `paper` configuration (freshly initialised: nothing trains it on a CPU) on an input the size
   of one of its windows (96^3 voxels at 1.5 mm), so exactly one window runs.

Each run is a separate `malenia segment` process: wall time is the whole command (start-up, reading,
contrast phase, preprocessing, windows, lesions, all outputs), peak memory is the process's
maximum resident set size (ru_maxrss), windows and per-stage seconds come from report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CT_SIZE = (512, 512, 200)  # x, y, z voxels
CT_SPACING = (0.75, 0.75, 1.92)  # mm
PAPER_WINDOW_SPACING = 1.5

_CHILD = """
import json, resource, sys
from malenia.cli import main
code = 1
try:
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        json.dump({"exit": code, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}, f)
sys.exit(code)
"""


def synthetic_ct(size=CT_SIZE, spacing=CT_SPACING, seed: int = 0):
    """The demo phantom on a clinical CT grid (int16 HU, noisy)."""
    import numpy as np
    import SimpleITK as sitk

    from malenia.data.synthesis import make_demo_case

    base = make_demo_case(seed).image
    extent = np.array(base.GetSize()) * np.array(base.GetSpacing())
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    ref.SetSpacing([float(s) for s in spacing])
    centre = np.array(base.GetOrigin()) + (extent - np.array(base.GetSpacing())) / 2
    ref.SetOrigin([float(c - (n - 1) * s / 2) for c, n, s in zip(centre, size, spacing)])
    ct = sitk.Resample(base, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(ct)
    arr += np.random.default_rng(seed).normal(0, 10, arr.shape).astype(np.float32)
    out = sitk.GetImageFromArray(np.clip(np.round(arr), -1024, 3071).astype(np.int16))
    out.CopyInformation(ct)
    return out


def fresh_model(config_name: str, folder: Path) -> Path:
    import torch

    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.model.config import get_config
    from malenia.model.folder import save_model_folder
    from malenia.model.network import MaleniaNet

    torch.manual_seed(0)
    cfg = get_config(config_name)
    bank = AttributeBank.build_or_load(Vocabulary.load(), load_text_encoder(cfg.text_encoder))
    return save_model_folder(folder, config=cfg, network=MaleniaNet(cfg), bank=bank, knowledge_table=KnowledgeTable.load(),
                             name=f"fresh-{cfg.name}", version="0", training_data="none (untrained, for timing only)")


def measure(input_path: Path, model: Path | None, out: Path, device: str = "auto", extra_args: list[str] | None = None) -> dict[str, Any]:
    """One `malenia segment` process: exit code, wall seconds, peak RSS (MB), windows, stage seconds."""
    from malenia.infer.outputs import FILE_NAMES

    stats = out.parent / f"{out.name}.stats.json"
    cmd = [sys.executable, "-c", _CHILD, str(stats), "segment", str(input_path), "--out", str(out), "--overwrite",
           "--progress", "none", "--device", device, *(["--model", str(model)] if model else []), *(extra_args or [])]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        _raise_failure(proc.returncode, proc.stderr)
    child = json.loads(stats.read_text())
    report = json.loads((out / FILE_NAMES["json"]).read_text())
    extra = report.get("extra", {})
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "windows_total": extra.get("windows", {}).get("total"),
        "windows_run": extra.get("windows", {}).get("run"),
        "stage_s": extra.get("seconds", {}),
        "lesions": len(report["lesions"]),
        "device": extra.get("device"),
        "precision": extra.get("precision"),
        "model": report["model"]["name"],
        "input_size": report["scan"]["size"],
        "model_grid": extra.get("model_grid", {}).get("size_zyx"),
    }


def _raise_failure(code: int, stderr: str) -> None:
    """A `malenia segment` run that failed: its own one-line error (same exit code) where it refused its input, model
    or output; else (a bug) RuntimeError with its last line."""
    from malenia.errors import EXIT_INTERRUPTED, InputError, ModelError, OutputError

    last = (stderr.strip().splitlines() or [""])[-1]
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    for error in (InputError, ModelError, OutputError):
        if code == error.exit_code:
            raise error(last.split(": error: ", 1)[-1])
    raise RuntimeError(f"malenia segment failed ({code}): {last}")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import SimpleITK as sitk

    from malenia.model.folder import MANIFEST
    from malenia.paths import builtin_model_dir

    if args.model:  # refused before the CT is made, with segment's own one-line error (exit 4)
        from malenia.model.folder import load_model_folder

        load_model_folder(args.model, build_network=False)
    device = os.environ.get("MALENIA_BENCH_DEVICE", "auto")
    precision = ["--precision", args.precision]
    results: dict[str, Any] = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    with tempfile.TemporaryDirectory(prefix="malenia-bench-segment-") as tmp:
        tmp = Path(tmp)
        ct = synthetic_ct()
        sitk.WriteImage(ct, str(tmp / "ct.nii.gz"), useCompression=True)
        if args.model:
            model, which = Path(args.model), f"model folder {args.model}"
        elif args.config is not None:  # asked for by name: that network's cost, not the built-in one's
            model = fresh_model(args.config, tmp / "fresh")
            which = f"freshly initialised {args.config} model (--config)"
        elif (builtin_model_dir() / MANIFEST).is_file():
            model, which = None, f"built-in model ({builtin_model_dir()})"
        else:
            model = fresh_model("compact", tmp / "fresh")
            which = "freshly initialised compact model (no built-in model installed)"
        results["ct"] = {"model": which, **measure(tmp / "ct.nii.gz", model, tmp / "out-ct", device, precision)}

        # paper configuration, one window: a 96^3 crop at 1.5 mm around the centre of the CT
        from malenia.model.config import get_config

        paper = get_config("paper")
        n = np.array(paper.patch_size[::-1])
        ref = sitk.Image([int(v) for v in n], sitk.sitkInt16)
        ref.SetSpacing([PAPER_WINDOW_SPACING] * 3)
        centre = np.array(ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()]))
        ref.SetOrigin([float(c - (k - 1) * PAPER_WINDOW_SPACING / 2) for c, k in zip(centre, n)])
        window = sitk.Resample(ct, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
        sitk.WriteImage(window, str(tmp / "window.nii.gz"), useCompression=True)
        paper_model = fresh_model("paper", tmp / "paper")
        results["paper_one_window"] = {"model": "freshly initialised paper model",
                                       **measure(tmp / "window.nii.gz", paper_model, tmp / "out-paper", device,
                                                  precision)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"malenia bench segment ({results['machine']['cpu_count']} CPUs, {results['machine']['platform']})")
    for key, title in (("ct", "512x512x200 CT"), ("paper_one_window", "paper config, one 96^3 window")):
        r = results[key]
        print(f"  {title}: {r['model']} on {r['device']} ({r['precision']})")
        print(f"    wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb'] / 1024:.2f} GB, windows {r['windows_run']} run "
              f"of {r['windows_total']} (model grid {r['model_grid']}), lesions {r['lesions']}")
        print("    stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items()))
    return 0
