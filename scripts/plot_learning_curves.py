"""Validation patch Dice against training minutes, one line per run: the figure in docs/training.md.

Usage: python scripts/plot_learning_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
Each RUN_DIR is a `malenia train --out` folder; its metrics.jsonl gives `seconds` (of this launch) on the
logged steps and `val_dsc` on the validation steps. Minutes are wall-clock minutes of the training loop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def curve(run: Path) -> tuple[list[float], list[float], list[int]]:
    """(minutes, val_dsc, step) at each validation of the run."""
    seconds_at: dict[int, float] = {}
    points = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "seconds" in row:
            seconds_at[row["step"]] = row["seconds"]
        if "val_dsc" in row:
            points.append(row)
    out: tuple[list[float], list[float], list[int]] = ([], [], [])
    for row in points:
        logged = [s for s in seconds_at if s <= row["step"]]
        if not logged:
            continue
        out[0].append(seconds_at[max(logged)] / 60)
        out[1].append(row["val_dsc"])
        out[2].append(row["step"])
    return out


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(7, 5.2), dpi=110)
    colours = plt.get_cmap("tab20").colors  # tab10 repeats after ten runs
    for i, spec in enumerate(argv[1:]):
        label, _, path = spec.partition("=")
        minutes, dice, steps = curve(Path(path))
        ax.plot(minutes, dice, marker="o", ms=3, color=colours[(2 * i) % 20 + (2 * i) // 20],
                label=f"{label} ({steps[-1] if steps else 0} steps)")
    ax.set_xlabel("training minutes (wall clock, 2 shared CPU cores)")
    ax.set_ylabel("validation patch Dice")
    ax.grid(alpha=0.3)
    ax.set_ylim(0, 0.7)
    # below the axes: with more than ten runs a legend inside covers the curves
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(argv[0], bbox_inches="tight")  # the legend below the axes stays inside the image
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
