"""Progress of a long job: a tqdm bar for people, or one JSON object per line for programs.

JSON lines (malenia.progress_lines) follow the training CLI contract:
{"stage", "fraction", "message", "step", "total", "loss", "val_dsc"}.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from malenia.progress_lines import ProgressLine, write_line


class Progress:
    def __init__(self, total: int, mode: str = "bar", stage: str = "train", stream: IO[str] | None = None,
                 initial: int = 0, enabled: bool = True):
        if mode not in ("bar", "json", "none"):
            raise ValueError(f"progress mode must be bar, json or none, got {mode!r}")
        self.total, self.mode, self.stage, self.enabled = int(total), mode, stage, enabled
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.last: dict[str, Any] = {"loss": None, "val_dsc": None}
        self._bar = None
        if enabled and mode == "bar":
            from tqdm import tqdm

            # a run laid over wall time (total 0) shows the percentage of its time
            self._bar = tqdm(total=self.total or 100, initial=initial if self.total else 0, desc=stage, file=self.stream, dynamic_ncols=True,
                             disable=not getattr(self.stream, "isatty", lambda: False)())

    def emit(self, step: int, message: str = "", stage: str | None = None, fraction: float | None = None,
             **values: Any) -> None:
        """Reports the state at `step` (loss, val_dsc, ... are remembered until replaced). `fraction`: the share
        done when it is not step / total (a run laid over wall time)."""
        if not self.enabled:
            return
        self.last.update({k: v for k, v in values.items() if v is not None})
        stage = stage or self.stage
        if self.mode == "json":
            fraction = fraction if fraction is not None else step / self.total if self.total else 1.0
            write_line(self.stream, ProgressLine(stage, fraction, message, int(step), self.total,
                                                 _number(self.last.get("loss")), _number(self.last.get("val_dsc"))))
        elif self._bar is not None:
            self._bar.n = step if self.total or fraction is None else round(fraction * 100)
            post = {k: f"{v:.4f}" for k, v in self.last.items() if isinstance(v, float)}
            self._bar.set_postfix(post, refresh=False)
            if message:
                self._bar.set_description_str(f"{stage}: {message}", refresh=False)
            self._bar.refresh()

    def case(self, i: int, n: int, case_id: str) -> None:
        """The `on_case(i, n, case_id)` callback of the per-case loops (evaluate, calibrate, mine)."""
        self.total = n
        self.emit(i, case_id)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None
