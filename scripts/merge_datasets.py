"""Merge Malenia datasets written in shards into one: case files are hard-linked (copied across file systems),
splits joined, cases and splits in case-id order. Shards of `malenia synth --shard K/N` (same --name) merge into
exactly the dataset one process writes, and must all be there; other datasets need distinct case ids. OUT appears
whole or not at all and the shards are left as they are. Used by scripts/gpu_train.sh.

    python scripts/merge_datasets.py OUT SHARD [SHARD ...]
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

from malenia.atomic import atomic_dir
from malenia.data.dataset import DatasetIndex, read_dataset, write_dataset_index
from malenia.errors import MaleniaError


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


def merge(out: Path, shards: list[Path]) -> DatasetIndex:
    indexes = [read_dataset(shard) for shard in shards]
    ids = [case for index in indexes for case in index.cases]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"merge_datasets.py: {sorted({c for c in ids if ids.count(c) > 1})[:3]} are in two of the datasets")
    for name in {index.name for index in indexes if "cases_in_all_shards" in index.extra}:  # before anything is written
        parts = [index for index in indexes if index.name == name]
        held, whole = sum(len(index.cases) for index in parts), parts[0].extra.get("cases_in_all_shards")
        if held != whole:
            raise SystemExit(f"merge_datasets.py: the shards of {name} hold {held} of its {whole} cases: some are missing")
    with atomic_dir(out) as staging:
        merged = _merged_index(out.name, indexes, sorted(ids))
        for shard, index in zip(shards, indexes):
            for case in index.cases:
                shutil.copytree(shard / "cases" / case, staging / "cases" / case, copy_function=_link_or_copy)
        write_dataset_index(staging, merged)
    return merged


def _merged_index(name: str, indexes: list[DatasetIndex], ids: list[str]) -> DatasetIndex:
    merged = DatasetIndex(name, ids, {}, "")
    for index in indexes:
        merged.description = f"{index.description} (merged from {len(indexes)} shards)"
        for split, split_ids in index.split.items():
            merged.split.setdefault(split, []).extend(split_ids)
        for key, value in index.extra.items():
            if key in ("shard", "cases_in_all_shards"):
                continue
            if isinstance(value, dict):
                merged.extra.setdefault(key, {}).update(value)
            else:
                merged.extra.setdefault(key, value)
    for split_ids in merged.split.values():
        split_ids.sort()
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="merge_datasets.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="dataset folder to write (must not exist)")
    p.add_argument("shards", type=Path, nargs="+", metavar="SHARD", help="dataset folders to merge")
    args = p.parse_args(argv)
    try:
        m = merge(args.out, args.shards)
    except FileExistsError:
        print(f"merge_datasets.py: {args.out} exists", file=sys.stderr)
        return 5
    except MaleniaError as err:  # a shard that is not a dataset
        print(f"merge_datasets.py: {err}", file=sys.stderr)
        return 3
    print(f"merged {len(m.cases)} cases:", {k: len(v) for k, v in m.split.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
