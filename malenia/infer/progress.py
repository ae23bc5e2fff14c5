"""Progress of `malenia segment` / `malenia demo`: a bar for people, JSON lines for programs.

`--progress json` prints one object per line on stdout (malenia.progress_lines), `{"stage",
"fraction", "message"}` with fraction in 0..1 over the whole run (the contract the MaleniaSegment Slicer module reads, see
docs/slicer.md). `bar` draws a tqdm bar on stderr when it is a terminal and stays silent
otherwise; `none` prints nothing.
"""

from __future__ import annotations

import sys
from typing import IO, Callable

from malenia.progress_lines import ProgressLine, write_line

MODES = ("bar", "json", "none")

# Share of the whole run each stage takes (start, end); the sliding windows dominate.
STAGES: dict[str, tuple[float, float]] = {
    "load": (0.0, 0.03),  # model folder and input image
    "phase": (0.03, 0.08),  # contrast phase from the blood pool
    "preprocess": (0.08, 0.12),
    "windows": (0.12, 0.88),
    "lesions": (0.88, 0.92),
    "outputs": (0.92, 1.0),
    "done": (1.0, 1.0),
}

ProgressFn = Callable[[str, float, str], None]  # (stage, fraction within the stage 0..1, message)


class SegmentProgress:
    """`progress(stage, within, message)`: reports `within` (0..1) of `stage` as overall progress."""

    def __init__(self, mode: str = "bar", stream: IO[str] | None = None):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.fraction = 0.0
        self._bar = None
        if mode == "bar" and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=100, file=self.stream, dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, stage: str, within: float = 0.0, message: str = "") -> None:
        lo, hi = STAGES.get(stage, (self.fraction, self.fraction))
        fraction = max(self.fraction, min(1.0, lo + (hi - lo) * min(max(float(within), 0.0), 1.0)))
        self.fraction = fraction  # never goes backwards
        if self.mode == "json":
            write_line(self.stream, ProgressLine(stage, round(fraction, 4), message))
        elif self._bar is not None:
            self._bar.set_description_str(f"{stage}: {message}"[:60], refresh=False)
            self._bar.n = int(round(100 * fraction))
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def silent(stage: str, within: float = 0.0, message: str = "") -> None:
    """A ProgressFn that reports nothing."""
