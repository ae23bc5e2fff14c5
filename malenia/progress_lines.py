"""The JSON progress-line protocol of Malenia's long commands: its only writer and its only parser.

`malenia segment | demo | train | evaluate | calibrate --progress json` and the server's jobs write one
JSON object per line on stdout; the Slicer modules and the server read them from a child process.

    {"stage": str, "fraction": float 0..1 or null, "message": str}                  every line
    + {"step": int, "total": int, "loss": float, "val_dsc": float} (null if unknown)  training-style lines

A line is a training-style line when it carries a step or a total. Readers get a `ProgressLine`
from `parse`; any other text (a warning, a log line) parses to None and is the caller's to show.
Pure standard library: Slicer's Python imports it without torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import IO, Any

BASE_KEYS = ("stage", "fraction", "message")
STEP_KEYS = ("step", "total", "loss", "val_dsc")
KEYS = BASE_KEYS + STEP_KEYS


@dataclass(frozen=True)
class ProgressLine:
    stage: str
    fraction: float | None = None  # 0..1 over the whole run; None when unknown
    message: str = ""
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    val_dsc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "fraction": _number(self.fraction, 6), "message": self.message}
        if self.step is not None or self.total is not None:
            out.update(step=self.step, total=self.total, loss=_number(self.loss, 6), val_dsc=_number(self.val_dsc, 6))
        return out

    def to_json(self) -> str:
        """The line without its newline."""
        return json.dumps(self.to_dict())

    @staticmethod
    def parse(text: str) -> "ProgressLine | None":
        """A progress line, or None for any other text (not JSON, not an object, no stage/fraction/step)."""
        text = text.strip()
        if not text.startswith("{"):
            return None
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not set(obj) & {"stage", "fraction", "step"}:
            return None
        fraction = _number(obj.get("fraction"))
        return ProgressLine(
            stage=str(obj.get("stage") or ""),
            fraction=None if fraction is None else min(1.0, max(0.0, fraction)),
            message=str(obj.get("message") or ""),
            step=_integer(obj.get("step")),
            total=_integer(obj.get("total")),
            loss=_number(obj.get("loss")),
            val_dsc=_number(obj.get("val_dsc")),
        )


def write_line(stream: IO[str], line: ProgressLine) -> None:
    """Writes one line and flushes it (a reader waits for whole lines)."""
    stream.write(line.to_json() + "\n")
    stream.flush()


def _number(value: Any, digits: int | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return round(float(value), digits) if digits is not None else float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)
