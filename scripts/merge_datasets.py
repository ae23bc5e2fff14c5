"""Merge Malenia datasets written in shards (`malenia synth --name` distinct per shard) into one: case
folders are moved, splits concatenated. Used by scripts/gpu_train.sh.

    python scripts/merge_datasets.py OUT SHARD...
"""

import shutil
import sys
from pathlib import Path

from malenia.data.dataset import DatasetIndex, read_dataset, write_dataset_index


def merge(out: Path, shards: list[Path]) -> DatasetIndex:
    (out / "cases").mkdir(parents=True)
    merged = DatasetIndex(out.name, [], {}, "")
    for shard in shards:
        index = read_dataset(shard)
        merged.description = f"{index.description} (merged from {len(shards)} shards)"
        merged.cases += index.cases
        for name, ids in index.split.items():
            merged.split.setdefault(name, []).extend(ids)
        for key, value in index.extra.items():
            if isinstance(value, dict):
                merged.extra.setdefault(key, {}).update(value)
            else:
                merged.extra.setdefault(key, value)
        for case in index.cases:
            shutil.move(str(shard / "cases" / case), str(out / "cases" / case))
    write_dataset_index(out, merged)
    return merged


if __name__ == "__main__":
    m = merge(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
    print(f"merged {len(m.cases)} cases:", {k: len(v) for k, v in m.split.items()})
