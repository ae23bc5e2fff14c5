"""Process set-up for the long-running commands (segment, demo), and the options the model-running commands share.

- SIGTERM ends a command like Ctrl-C: KeyboardInterrupt unwinds it, so staging folders are removed
  and nothing half-written stays (malenia.cli turns it into exit code 130).
- CPU threads: OpenMP threads that spin while waiting make PyTorch many times slower when other
  programs (3D Slicer's GUI, another job) share the cores; passive waiting costs almost nothing
  when the cores are free. Set before torch is imported; the environment can override it.
"""

from __future__ import annotations
from malenia.commands._types import count

import contextlib
import os
import signal
import threading
from typing import Iterator


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def configure_cpu(threads: int | None = None) -> None:
    """Call before importing torch: passive OpenMP waiting; `threads` CPU threads if given."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def require_output_folder(path, option: str = "--out") -> None:
    """OutputError at once, before any work, when the folder a command will write into is an existing file, or
    cannot be made or written where it is (the work would be lost when the first result is saved)."""
    from malenia.atomic import check_output_folder

    if path is not None:
        check_output_folder(path, option)


def require_output_file(path, option: str = "--out") -> None:
    """OutputError at once, before any work, when the file a command writes at its end could not be: the path is
    a folder, or its folder is a file or not writable."""
    from pathlib import Path

    from malenia.atomic import check_creatable
    from malenia.errors import OutputError

    if path is None:
        return
    if Path(path).is_dir():
        raise OutputError(f"{option} {path} is a folder, not a file")
    check_creatable(path, f"cannot write {option} {path}")


def require_updatable_model(folder, dry_run: bool = False) -> None:
    """OutputError before a fit or calibration when its result could not be stored: update_model_folder replaces the
    model folder whole, through a staging folder beside it, so the folder above must be writable (a read-only
    installed model is found out before the work, not after it)."""
    from malenia.atomic import check_creatable

    if not dry_run:
        check_creatable(folder, f"cannot update the model folder {folder} (use --dry-run to only print, or copy the "
                                "model somewhere writable)")


def add_model_run_options(p, dry_run: str | None = None) -> None:
    """The options every command that runs a model over a dataset shares: --device, --threads, --progress;
    `dry_run`: the help of a --dry-run flag, for commands that write into a model folder."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=count, default=None)
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help=dry_run)
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")


# The options that decide what is a lesion (`segment` and `evaluate`): meaningless where an outline is the lesion
# (`segment --mask`, `evaluate --outlines reference`).
FINDING_OPTIONS = (("roi", "--roi"), ("threshold", "--threshold"), ("min_volume", "--min-volume"),
                   ("no_verifier", "--no-verifier"), ("verifier_cut", "--verifier-cut"), ("refine", "--refine"))


def refuse_finding_options(args, because: str) -> None:
    """InputError naming every finding option given on the command line (those a command lacks count as not given)."""
    from malenia.errors import InputError

    given = [flag for name, flag in FINDING_OPTIONS if getattr(args, name, None) not in (None, False)]
    if given:
        raise InputError(f"{because}: {', '.join(given)} do(es) not apply")
