"""Merge Malenia datasets written in shards into one: case folders are moved, splits joined, cases and splits
in case-id order. Shards of `malenia synth --shard K/N` (same --name) merge into exactly the dataset one
process writes, and must all be there; other datasets need distinct case ids. Used by scripts/gpu_train.sh.

    python scripts/merge_datasets.py OUT SHARD...
"""

import shutil
import sys
from pathlib import Path

from malenia.data.dataset import DatasetIndex, read_dataset, write_dataset_index


def merge(out: Path, shards: list[Path]) -> DatasetIndex:
    indexes = [read_dataset(shard) for shard in shards]
    ids = [case for index in indexes for case in index.cases]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"merge_datasets.py: {sorted({c for c in ids if ids.count(c) > 1})[:3]} are in two of the datasets")
    for name in {index.name for index in indexes if "cases_in_all_shards" in index.extra}:  # before any folder moves
        parts = [index for index in indexes if index.name == name]
        held, whole = sum(len(index.cases) for index in parts), parts[0].extra.get("cases_in_all_shards")
        if held != whole:
            raise SystemExit(f"merge_datasets.py: the shards of {name} hold {held} of its {whole} cases: some are missing")
    (out / "cases").mkdir(parents=True)
    merged = DatasetIndex(out.name, sorted(ids), {}, "")
    for shard, index in zip(shards, indexes):
        merged.description = f"{index.description} (merged from {len(shards)} shards)"
        for name, split_ids in index.split.items():
            merged.split.setdefault(name, []).extend(split_ids)
        for key, value in index.extra.items():
            if key in ("shard", "cases_in_all_shards"):
                continue
            if isinstance(value, dict):
                merged.extra.setdefault(key, {}).update(value)
            else:
                merged.extra.setdefault(key, value)
        for case in index.cases:
            shutil.move(str(shard / "cases" / case), str(out / "cases" / case))
    for split_ids in merged.split.values():
        split_ids.sort()
    write_dataset_index(out, merged)
    return merged


if __name__ == "__main__":
    m = merge(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
    print(f"merged {len(m.cases)} cases:", {k: len(v) for k, v in m.split.items()})
