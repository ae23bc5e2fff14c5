"""`malenia import SOURCE ...`: turn published layouts into the Malenia dataset format.

Each source is a module exposing `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

SOURCES = {
    "annotations": ("malenia.data.importers.annotations", "the authors' attribute workbook (.xlsx) -> structured reports"),
    "msd": ("malenia.data.importers.msd", "a Medical Segmentation Decathlon task folder -> dataset"),
    "kits23": ("malenia.data.importers.kits23", "a KiTS23 dataset folder -> dataset"),
    "lidc": ("malenia.data.importers.lidc", "LIDC-IDRI nodule crops, masks and ratings (nodules.csv) -> dataset"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import the attribute workbook or a public dataset (MSD, KiTS23, LIDC nodules)")
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, (module, help_text) in SOURCES.items():
        if importlib.util.find_spec(module) is None:  # part not built yet
            continue
        sp = sources.add_parser(name, help=help_text)
        _lazy(module).add_arguments(sp)
        sp.set_defaults(func=lambda args, m=module: _lazy(m).run(args))


def _lazy(module: str):
    return importlib.import_module(module)
