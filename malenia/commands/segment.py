"""`malenia segment INPUT --out DIR`: lesions, attributes and disease classes of one CT (docs/segment.md)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

from malenia.commands._types import count
from malenia.errors import EXIT_INTERRUPTED, MaleniaError
from malenia.model.precision import PRECISIONS


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `segment` and `demo`."""
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in the folder")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda (default auto)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                   help="bar on a terminal; json: one {stage, fraction, message} object per line on stdout")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap, 0 to <1 (default 0.25)")
    p.add_argument("--window-batch", type=int, default=1, metavar="N", help="windows per network call (default 1)")
    p.add_argument("--mirror", action="store_true",
                   help="test-time mirroring about the axes the model trained mirrored on (up to 8x slower; refused "
                        "for a model trained without mirroring, as the built-in one)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the network's arithmetic: auto = bfloat16 where the device computes it natively (CUDA, CPUs "
                        "with AVX512-BF16 or AMX), else float32 (default auto)")
    p.add_argument("--threshold", type=float, default=None,
                   help="lesion probability threshold (default: the model's calibrated value, else 0.5)")
    p.add_argument("--threads", type=count, default=None, metavar="N", help="CPU threads for PyTorch (default: all cores)")
    p.add_argument("--min-volume", type=float, default=None, metavar="MM3",
                   help="remove lesions smaller than this, mm^3 (default: the model's calibrated value, else 50)")
    lesions = p.add_mutually_exclusive_group()
    lesions.add_argument("--no-verifier", action="store_true",
                         help="keep every lesion the model's lesion verifier would remove as a likely false positive")
    lesions.add_argument("--verifier-cut", type=float, default=None, metavar="P",
                         help="keep a lesion when the verifier gives it P(real) >= P, 0 to <1 (default: the model's "
                              "calibrated cut; lower finds more lesions and more false positives)")
    p.add_argument("--refine", action="store_true",
                   help="re-draw the borders of lesions that stand clearly apart from their surroundings from the CT")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment and describe the lesions of one CT",
                       description="Segments lesions in a CT (NIfTI, NRRD, MetaImage or a DICOM series folder) and "
                                   "describes each by 8 attributes and a disease class. Writes lesions.nii.gz, "
                                   "lesions.seg.nrrd, report.json, report.html (and lesions.dcm for DICOM input).")
    p.add_argument("input", metavar="INPUT", help="CT image file or DICOM series folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the built-in model)")
    p.add_argument("--roi", default=None, metavar="x0,y0,z0,x1,y1,z1",
                   help="segment only inside this box: RAS mm, minimum corner then maximum corner")
    p.add_argument("--force", action="store_true", help="read images outside the CT Hounsfield range / non-CT DICOM")
    p.add_argument("--knowledge", action="append", default=None, metavar="DIR",
                   help="site disease profiles merged into the model's knowledge table (repeatable; also $MALENIA_KNOWLEDGE)")
    p.add_argument("--mask", default=None, metavar="LABELS",
                   help="describe the lesions this label map outlines instead of finding lesions: each non-zero "
                        "value one lesion (e.g. segments drawn in Slicer, exported as a label map); the network runs "
                        "around them only, and threshold, minimum volume, verifier and --refine do not apply")
    add_run_arguments(p)
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace, roi: str | None = None):
    from malenia.infer.pipeline import SegmentOptions
    from malenia.infer.roi import RasBox

    return SegmentOptions(device=args.device, overlap=args.overlap, sw_batch_size=args.window_batch, mirror=args.mirror,
                          threshold=args.threshold, min_volume_mm3=args.min_volume,
                          roi=RasBox.parse(roi) if roi else None, force=getattr(args, "force", False),
                          verify=not args.no_verifier, verifier_cut=args.verifier_cut,
                          refine=getattr(args, "refine", False), precision=args.precision)


class InterruptedAfterOutputs(MaleniaError):
    """Ctrl-C or SIGTERM arrived once the new outputs were already in place: they are complete."""

    exit_code = EXIT_INTERRUPTED


def run(args: argparse.Namespace) -> int:
    from malenia.atomic import clean_stale
    from malenia.commands._runtime import configure_cpu, terminate_as_interrupt

    configure_cpu(args.threads)
    clean_stale(Path(args.out))  # staging folders of an earlier run that was killed (kill -9, power cut)
    before = _outputs_state(Path(args.out))
    try:
        with terminate_as_interrupt():
            done = _segment(args)
    except KeyboardInterrupt:
        # The outputs move into place all together or not at all (infer.outputs); if they changed, the new
        # ones are complete and "nothing was written" would be false.
        if _outputs_state(Path(args.out)) != before:
            raise InterruptedAfterOutputs(f"interrupted after the new outputs were written to {args.out} "
                                          "(they are complete)") from None
        raise
    if args.progress != "json":
        with _interrupts_ignored():  # the outputs are in place: an interrupt now would only cut the summary
            print(summary(done.result, done.seconds))
            print(f"outputs in {args.out}: " + ", ".join(p.name for p in done.files.values()))
            for warning in report_warnings(done.files):
                print(f"malenia segment: warning: {warning}", file=sys.stderr)
    return 0


def report_warnings(files) -> list[str]:
    """report.json's scan.warnings (a DICOM SEG left out and why, identifiers an anonymiser removed): they were
    in the report only, so a terminal user saw lesions.dcm missing from the file list without a reason."""
    from malenia.json_files import read_json

    path = files.get("json")
    if path is None:
        return []
    try:
        return [str(w) for w in (read_json(path).get("scan") or {}).get("warnings") or []]
    except (OSError, MaleniaError, AttributeError):  # the outputs stand; the warnings are a courtesy
        return []


def _segment(args: argparse.Namespace):
    from malenia.infer.pipeline import segment_path
    from malenia.infer.progress import SegmentProgress

    if args.mask is not None:
        from malenia.commands._runtime import refuse_finding_options

        refuse_finding_options(args, "--mask describes the outlined lesions as they are")
    options = options_from_args(args, args.roi)
    progress = SegmentProgress(args.progress)
    try:
        return segment_path(args.input, args.out, args.model, options, overwrite=args.overwrite, progress=progress,
                            knowledge=args.knowledge, mask=args.mask)
    finally:
        progress.close()


def _outputs_state(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each output file in `out`: any change means new outputs were moved in."""
    from malenia.infer.outputs import FILE_NAMES

    state = {}
    for name in FILE_NAMES.values():
        try:
            st = (out / name).stat()
        except OSError:
            continue
        state[name] = (st.st_ino, st.st_mtime_ns)
    return state


@contextlib.contextmanager
def _interrupts_ignored():
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def summary(result, seconds: float | None = None) -> str:
    """One line per lesion: label, disease (probability), volume, RECIST diameters, top attributes."""
    enh = result.scan.enhancement
    head = f"{len(result.lesions)} lesion(s)"
    if enh is not None:
        head += f"; scan: {enh.text} ({enh.method})"
    if seconds is not None:
        head += f"; {seconds:.1f} s"
    lines = [head]
    for les in result.lesions:
        m = les.measurements
        d = les.disease
        name = d.shown
        size = f"{volume_text(m.volume_ml)}, {m.long_axis_mm:.0f} x {m.short_axis_mm:.0f} mm" if m else ""
        attrs = "; ".join(les.attributes[a].description for a in ("location", "density", "shape", "surface", "specific_features"))
        lines.append(f"  {les.label:>2}  {name} {d.probability:.2f}  {size}  [{attrs}]")
    return "\n".join(lines)


def volume_text(ml: float) -> str:
    """One decimal, as a reader quotes a volume; two significant digits under 0.1 ml, where the minimum volume lets
    lesions through (25 mm3 by default): '0.0 ml' read as an empty lesion."""
    return f"{ml:.1f} ml" if ml >= 0.095 or ml == 0 else f"{ml:.2g} ml"
