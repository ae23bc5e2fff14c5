"""Hard negatives: where a model's false positives sit in a training dataset, and which of its lesions the
model misses (one file format, owned here).

`malenia mine` runs a model over a dataset split exactly as `malenia segment` does and records every
predicted component that touches no reference lesion: its peak voxel on the model grid (the grid the
training sampler caches, so the file only fits models with the same spacing), its size and peak
probability. `malenia train --hard-negatives FILE` then centres a share of the background patches on
these places (malenia.data.sampler). This is the case-level hard-negative mining of detection
practice (nnDetection, LUNA's false-positive reduction): a model's own confident mistakes, such as a
partial-volume lung base at a volume edge, are rare among random body voxels, so random background
patches hardly ever show them.

The same pass records the other side of the model's errors: the labels of the reference lesions no kept
component touches ("missed"). The sampler draws a share of its lesion patches among them
(`missed_fraction`): lesions are otherwise drawn uniformly, so the few a model keeps missing (small,
low-contrast, or of one rare look) get as many patches as the many it already finds — online hard-example
mining (Shrivastava et al. 2016) at the level of lesions, refreshed by mining again with the next model.

File: JSON {"format": "malenia-hard-negatives/1", "model": {...}, "dataset": name, "split": name,
"spacing": [z, y, x] mm of the model grid, "threshold": t, "min_volume_mm3": v,
"by_polarity": {"all"|disease: [{"band": "darker"|"similar"|"brighter", "lesions": n, "detected": k, "recall": r}]}
(`evaluate`'s table, found = not missed; a summary for readers, the sampler reads "cases"), "cases": {case_id: {"shape": [z, y, x], "centres": [[z, y, x], ...], "voxels": [...],
"peaks": [...], "missed": [label, ...]}}}. Files written before "missed" existed read as missing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malenia.errors import InputError

FORMAT = "malenia-hard-negatives/1"


@dataclass
class CaseNegatives:
    shape: tuple[int, int, int]  # the case's model-grid shape when mined
    centres: np.ndarray  # int64 [K, 3] model-grid (z, y, x): each false positive's peak voxel
    voxels: list[int] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)  # reference lesion labels no kept component touches


@dataclass
class HardNegatives:
    spacing: tuple[float, float, float]  # model grid (z, y, x) in mm
    cases: dict[str, CaseNegatives]
    meta: dict[str, Any] = field(default_factory=dict)  # model, dataset, split, threshold, min volume

    @property
    def count(self) -> int:
        return sum(len(c.centres) for c in self.cases.values())

    @property
    def missed_count(self) -> int:
        return sum(len(c.missed) for c in self.cases.values())

    def to_json(self) -> dict[str, Any]:
        cases = {cid: {"shape": list(c.shape), "centres": c.centres.astype(int).tolist(), "voxels": list(c.voxels),
                       "peaks": [round(float(p), 4) for p in c.peaks], "missed": [int(v) for v in c.missed]}
                 for cid, c in self.cases.items()}
        return {"format": FORMAT, **self.meta, "spacing": list(self.spacing), "cases": cases}


def write_hard_negatives(path: str | Path, negatives: HardNegatives) -> None:
    from malenia.atomic import write_json

    write_json(path, negatives.to_json())


def read_hard_negatives(path: str | Path) -> HardNegatives:
    from malenia.json_files import read_json

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no hard-negatives file (make one with `malenia mine`)")
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} file")
    try:
        cases = {cid: _case(c) for cid, c in doc["cases"].items()}
        spacing = tuple(float(v) for v in doc["spacing"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{path}: damaged hard-negatives file ({err.__class__.__name__}: {err})") from None
    for cid, c in cases.items():
        if len(c.centres) and ((c.centres < 0).any() or (c.centres >= np.array(c.shape)).any()):
            raise InputError(f"{path}: case {cid}: centres outside its shape {c.shape}")
    meta = {k: v for k, v in doc.items() if k not in ("format", "spacing", "cases")}
    return HardNegatives(spacing, cases, meta)  # type: ignore[arg-type]


def merge_hard_negatives(parts: list[HardNegatives]) -> HardNegatives:
    """Several mined files of one dataset as one (e.g. the false positives of successive models): each
    case's centres in the order of `parts`, its missed lesions those any part missed. Refuses files of
    different grids."""
    if not parts:
        raise InputError("no hard-negatives file to merge")
    if len(parts) == 1:
        return parts[0]
    cases: dict[str, CaseNegatives] = {}
    for part in parts:
        if not np.allclose(part.spacing, parts[0].spacing):
            raise InputError(f"hard-negatives files mined on different grids: {parts[0].spacing} and {part.spacing} mm")
        for cid, c in part.cases.items():
            have = cases.get(cid)
            if have is None:
                cases[cid] = CaseNegatives(c.shape, c.centres.copy(), list(c.voxels), list(c.peaks), list(c.missed))
            elif tuple(have.shape) != tuple(c.shape):
                raise InputError(f"hard negatives of {cid} were mined on grids {have.shape} and {c.shape}")
            else:
                have.centres = np.concatenate([have.centres, c.centres])
                have.voxels += c.voxels
                have.peaks += c.peaks
                have.missed = sorted(set(have.missed) | set(c.missed))
    return HardNegatives(parts[0].spacing, cases, {"merged": [p.meta for p in parts]})


def _case(c: dict[str, Any]) -> CaseNegatives:
    shape = tuple(int(v) for v in c["shape"])
    if len(shape) != 3:
        raise ValueError(f"shape {shape} is not (z, y, x)")
    centres = np.asarray(c.get("centres", []), dtype=np.int64).reshape(-1, 3)
    missed = [int(v) for v in c.get("missed", [])]
    if any(v < 1 for v in missed):
        raise ValueError(f"missed lesion labels must be positive, got {missed}")
    return CaseNegatives(shape, centres, [int(v) for v in c.get("voxels", [])],  # type: ignore[arg-type]
                         [float(v) for v in c.get("peaks", [])], missed)
