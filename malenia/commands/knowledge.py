"""`malenia knowledge ...`: knowledge table, leave-one-out disease accuracy, attribute bank.

    malenia knowledge table [--workbook X]    rebuild + calibrate Resources/knowledge/knowledge_table.json
    malenia knowledge loo [--json]            leave-one-out disease accuracy on the workbook lesions
    malenia knowledge bank [--encoder P]      build (or reuse) the cached attribute bank; prints timings
    malenia knowledge classify ID [ID ...]    disease posterior for a set of description ids
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _default_workbook() -> Path:
    from malenia.paths import shared_data_dir

    return shared_data_dir() / "annotations" / "malenia_attribute_annotations_en.xlsx"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knowledge", help="knowledge table, disease-inference accuracy, attribute bank")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    t = actions.add_parser("table", help="rebuild the knowledge table from the workbook + expert profiles, calibrated")
    t.add_argument("--workbook", type=Path, default=None, help="attribute workbook (default: the shared English one)")
    t.add_argument("--expert", type=Path, default=None, help="expert profiles JSON (default: Resources/knowledge)")
    t.add_argument("--out", type=Path, default=None, help="output table (default: Resources/knowledge/knowledge_table.json)")
    t.set_defaults(func=_table)

    loo = actions.add_parser("loo", help="leave-one-out disease accuracy on the real workbook lesions")
    loo.add_argument("--workbook", type=Path, default=None)
    loo.add_argument("--table", type=Path, default=None, help="knowledge table (default: built-in)")
    loo.add_argument("--json", action="store_true", help="print one JSON object")
    loo.set_defaults(func=_loo)

    b = actions.add_parser("bank", help="build or reuse the attribute bank; reports encoder load and embedding time")
    b.add_argument("--encoder", default=None, help="all-MiniLM-L6-v2 (default) or a local Hugging Face model folder")
    b.add_argument("--cache-dir", type=Path, default=None, help="bank cache folder (default: ~/.cache/malenia/banks)")
    b.add_argument("--out", type=Path, default=None, help="also write the bank to this .safetensors file")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    b.set_defaults(func=_bank)

    c = actions.add_parser("classify", help="disease posterior for description ids (one per aspect)")
    c.add_argument("ids", nargs="+", help="vocabulary description ids, e.g. location.kidney.left shape.round")
    c.add_argument("--table", type=Path, default=None)
    c.set_defaults(func=_classify)


def _table(args: argparse.Namespace) -> int:
    from malenia.atomic import write_json
    from malenia.knowledge.calibration import calibrate, loo_report
    from malenia.knowledge.estimate import build_table, load_expert_profiles
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.knowledge.workbook import read_workbook

    vocab = Vocabulary.load()
    workbook = args.workbook or _default_workbook()
    imported = read_workbook(workbook, vocab)
    table = build_table(imported.records, vocab, load_expert_profiles(vocab, args.expert), workbook.name)
    table.inference = calibrate(imported.records, table)
    out = args.out or KnowledgeTable.default_path()
    write_json(out, table.to_json())
    KnowledgeTable.load(out, vocab)  # what was written must load
    report = loo_report(imported.records, table)
    print(f"wrote {out}: {len(table.diseases)} diseases; temperature {table.inference['temperature']}, "
          f"min typicality {table.inference['min_typicality']}; leave-one-out accuracy {report['accuracy']:.3f} "
          f"on {report['lesions']} lesions")
    return 0


def _loo(args: argparse.Namespace) -> int:
    from malenia.knowledge.calibration import loo_report
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.knowledge.workbook import read_workbook

    vocab = Vocabulary.load()
    table = KnowledgeTable.load(args.table, vocab)
    imported = read_workbook(args.workbook or _default_workbook(), vocab)
    report = loo_report(imported.records, table)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Leave-one-out disease inference on {report['lesions']} real annotated lesions "
          f"(12-disease table, temperature {report['temperature']}):")
    print(f"  overall accuracy {report['accuracy']:.3f}  (majority-class rate {report['majority_class_rate']:.3f}; "
          f"mean NLL {report['mean_nll']:.3f}; unclassified {report['unclassified']})")
    for d, r in report["per_disease"].items():
        wrong = {k: v for k, v in r["predicted"].items() if k != d}
        print(f"  {r['name']:<16} n={r['n']:<4} accuracy {r['accuracy']:.3f}" + (f"   errors: {wrong}" if wrong else ""))
    return 0


def _bank(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder
    from malenia.knowledge.vocabulary import Vocabulary

    t_import = time.perf_counter() - t0
    vocab = Vocabulary.load()
    t1 = time.perf_counter()
    encoder = load_text_encoder(args.encoder)
    t_load = time.perf_counter() - t1
    t2 = time.perf_counter()
    AttributeBank.build(vocab, encoder)  # timed fresh embedding of the whole vocabulary
    t_embed = time.perf_counter() - t2
    bank = AttributeBank.build_or_load(vocab, encoder, args.cache_dir)
    path = AttributeBank.cache_path(encoder.encoder_id, vocab.hash, args.cache_dir)
    if args.out:
        bank.save(args.out)
    print(f"attribute bank: {len(bank)} descriptions x {bank.dim} dims, encoder {encoder.encoder_id}, "
          f"vocabulary {vocab.hash} -> {args.out or path} ({bank.origin})")
    print(f"timings (torch threads {torch.get_num_threads()}): import {t_import:.2f} s, encoder load {t_load:.2f} s, "
          f"vocabulary embedding {t_embed:.2f} s ({1000 * t_embed / len(vocab):.1f} ms/description)")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from malenia.knowledge.inference import infer_disease
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary

    vocab = Vocabulary.load()
    table = KnowledgeTable.load(args.table, vocab)
    matches: dict[str, dict[str, float]] = {}
    for desc_id in args.ids:
        matches.setdefault(vocab.aspect_of(desc_id), {})[desc_id] = 1.0
    print(json.dumps(infer_disease(matches, table).to_json(), indent=2))
    return 0
