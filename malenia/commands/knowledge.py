"""`malenia knowledge ...`: knowledge table, leave-one-out disease accuracy, attribute bank.

    malenia knowledge table [--workbook X]    rebuild + calibrate Resources/knowledge/knowledge_table.json
    malenia knowledge loo [--json]            leave-one-out disease accuracy on the workbook lesions
    malenia knowledge bank [--encoder P]      build (or reuse) the cached attribute bank; prints timings
    malenia knowledge classify ID [ID ...]    disease posterior for a set of description ids
    malenia knowledge list [--json]           the table in force (model table + site profiles), with origin
    malenia knowledge add KEY --name N --organ O -d ID[=W] ...   a site profile for a new disease
    malenia knowledge edit KEY [--name N] [--organ O] -d ID[=W] ...   replace those aspects (or override a built-in)
    malenia knowledge remove KEY              delete a site profile
    malenia knowledge openset --model M --data D   unseen diseases: unclassified vs named wrongly; --fit stores the rule

Profile folders: --knowledge DIR (repeatable), else $MALENIA_KNOWLEDGE, else Resources/knowledge/diseases
(malenia.knowledge.site).
"""

from __future__ import annotations
from malenia.commands._types import count
from malenia.commands._runtime import require_output_file

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
    b.add_argument("--threads", type=count, default=None, help="torch CPU threads")
    b.set_defaults(func=_bank)

    c = actions.add_parser("classify", help="disease posterior for description ids (one per aspect)")
    c.add_argument("ids", nargs="+", help="vocabulary description ids, e.g. location.kidney.left shape.round")
    c.add_argument("--table", type=Path, default=None, help="a knowledge table file (default: the model's, see --model)")
    _site_arguments(c)
    c.set_defaults(func=_classify)
    _register_profiles(actions)


def _site_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="DIR", help="model folder whose table is used (default: built-in)")
    p.add_argument("--knowledge", action="append", default=None, metavar="DIR",
                   help="site profile folder (repeatable; default $MALENIA_KNOWLEDGE, else Resources/knowledge/diseases)")


def _register_profiles(actions) -> None:
    ls = actions.add_parser("list", help="the knowledge table in force: model table + site profiles, with origin")
    _site_arguments(ls)
    ls.add_argument("--json", action="store_true", help="print the origin and the diseases as JSON")
    ls.add_argument("--descriptions", default=None, metavar="ORGAN", help="list the vocabulary's descriptions for an organ")
    ls.set_defaults(func=_list)
    for verb, text in (("add", "write a site profile for a disease the table lacks"),
                       ("edit", "change a site profile's aspects (or override a built-in disease)")):
        a = actions.add_parser(verb, help=text, description=text + ". Descriptions are vocabulary ids (or their "
                               "exact texts), each with an optional =WEIGHT (default 1); per aspect the weights are "
                               "normalised. Aspects not given: " + ("every description valid for the organ, equally."
                                                                    if verb == "add" else "kept."))
        a.add_argument("key", metavar="KEY", help="disease key, lower_snake_case (e.g. hepatic_haemangioma)")
        a.add_argument("-d", "--describe", dest="descriptions", nargs="+", action="extend", default=[],
                       metavar="ID[=WEIGHT]", help="descriptions with optional weights (repeatable)")
        a.add_argument("--name", required=verb == "add", default=None, help="display name")
        a.add_argument("--organ", required=verb == "add", default=None, help="organ (vocabulary organs)")
        a.add_argument("--rationale", action="append", default=None, metavar="ASPECT=TEXT", help="why, per aspect")
        a.add_argument("--from-data", default=None, metavar="DATASET",
                       help="estimate the aspects from a dataset's annotated lesions (smoothed description counts, "
                            "as the table's workbook diseases); -d then replaces the aspects it names")
        a.add_argument("--split", default="all", help="split of --from-data (default all)")
        a.add_argument("--from-disease", default=None, metavar="DISEASE",
                       help="the lesions of --from-data to count: those of this disease (default: KEY)")
        _site_arguments(a)
        a.set_defaults(func=_add if verb == "add" else _edit)
    r = actions.add_parser("remove", help="delete a site profile (the model's own diseases cannot be removed)")
    r.add_argument("key", metavar="KEY")
    _site_arguments(r)
    r.set_defaults(func=_remove)
    from malenia.commands._openset import register as register_openset

    register_openset(actions)


def _table(args: argparse.Namespace) -> int:
    from malenia.atomic import write_json
    from malenia.knowledge.calibration import calibrate, loo_report
    from malenia.knowledge.estimate import build_table, load_expert_profiles
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.knowledge.workbook import read_workbook

    require_output_file(args.out)  # before the table is built and calibrated
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
    require_output_file(args.out)  # before the vocabulary is embedded (twice)
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
    table = KnowledgeTable.load(args.table, vocab, site_dirs=args.knowledge or ()) if args.table else _table_in_force(args)
    from malenia.knowledge.profiles import resolve_description

    matches: dict[str, dict[str, float]] = {}
    for token in args.ids:  # ids or exact texts, a typo refused naming the closest, as `add` does
        desc_id = resolve_description(token, vocab)
        matches.setdefault(vocab.aspect_of(desc_id), {})[desc_id] = 1.0
    print(json.dumps(infer_disease(matches, table).to_json(), indent=2))
    return 0


def _table_in_force(args: argparse.Namespace):
    from malenia.infer.site_table import table_in_force_at

    return table_in_force_at(args.model, args.knowledge)


def _list(args: argparse.Namespace) -> int:
    from malenia.knowledge.site import origin_json, profile_dirs

    table = _table_in_force(args)
    if args.descriptions:
        organ = args.descriptions
        if organ not in table.vocab.organs():
            from malenia.errors import InputError

            raise InputError(f"unknown organ {organ!r}; organs: {', '.join(table.vocab.organs())}")
        for e in table.vocab.entries:
            if e.applies_to(organ):
                print(f"{e.aspect:<18} {e.id:<40} {e.text}")
        return 0
    origin = origin_json(table)
    site = {p["key"]: p for p in origin["profiles"]}
    rows = [{"key": k, "name": table.name(k), "organ": table.organ(k),
             "source": "site" if k in site else "model", "overrides": bool(site.get(k, {}).get("overrides"))}
            for k in table.diseases]
    if args.json:
        print(json.dumps({"knowledge": origin, "folders": [str(p) for p in profile_dirs(args.knowledge)],
                          "diseases": rows}, indent=2))
        return 0
    t = origin["table"]
    print(f"{t['name']} {t['version']} (sha256 {t['sha256'][:12]}); {len(site)} site profile(s)")
    for r in rows:
        where = site[r["key"]]["path"] if r["key"] in site else "model table"
        print(f"  {r['key']:<22} {r['name']:<24} {r['organ']:<12} {where}" + ("  (overrides)" if r["overrides"] else ""))
    return 0


def _rationale(items: list[str] | None) -> dict[str, str] | None:
    from malenia.aspects import ASPECTS
    from malenia.errors import InputError

    out = {}
    for item in items or []:
        aspect, sep, text = item.partition("=")
        if not sep or aspect not in ASPECTS:
            raise InputError(f"--rationale {item!r}: expected ASPECT=TEXT with an aspect of {list(ASPECTS)}")
        out[aspect] = text
    return out or None


def _save(args: argparse.Namespace, adding: bool) -> int:
    from malenia.errors import InputError
    from malenia.knowledge.profiles import (build_profile, check_key, folder_lock, parse_weighted, profile_path,
                                            write_profile)
    from malenia.knowledge.site import writable_dir
    from malenia.knowledge.table import one_line

    check_key(args.key)  # before the folder is made for it
    for option, value in (("--name", args.name), ("--organ", args.organ)):
        if value is not None and not value.strip():
            raise InputError(f"{option} must not be empty")
        if value is not None and not one_line(value):
            raise InputError(f"{option} must be one line of text, got {value!r}")
    folder = writable_dir(args.knowledge)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"site profile folder {folder} is a file, not a folder")
    with folder_lock(folder):
        table = _table_in_force(args)  # read under the lock: concurrent edits see each other
        exists = args.key in table.diseases
        if adding and exists:
            raise InputError(f"disease {args.key!r} already exists ({table.name(args.key)}); use `malenia knowledge edit`")
        if not adding and not exists:
            raise InputError(f"no disease {args.key!r} in the table in force; use `malenia knowledge add`")
        base = None if adding else table.disease(args.key)
        organ = args.organ or base.organ
        weights = parse_weighted(args.descriptions, table.vocab, organ)
        if not adding and not weights and args.name is None and args.organ is None and not args.rationale \
                and not args.from_data:
            raise InputError("nothing to change: give descriptions, --name, --organ, --rationale or --from-data")
        estimate, data_name = _estimate(args, organ, table.vocab) if args.from_data else (None, "")
        rationale = _rationale(args.rationale)
        if estimate is not None:
            given = {a: "given with -d" for a in weights}
            weights = {**estimate.profile, **weights}
            rationale = {**estimate.rationale(_data_source(args)), **given, **(rationale or {})}
        profile = build_profile(args.key, args.name or base.name, organ, weights, table.vocab, base, rationale)
        if estimate is not None:
            profile.finding_count = dict(estimate.finding_count)
            profile.extra["estimated_from"] = {"dataset": data_name, "split": args.split,
                                               "disease": args.from_disease or args.key, "lesions": estimate.lesions,
                                               "described": estimate.described, "dropped": estimate.dropped}
        replaced = profile_path(folder, args.key).is_file()
        path = write_profile(folder, profile)
    verb = "added" if adding else ("edited" if replaced else "override written")
    print(f"{verb}: {args.key} ({profile.name}, {organ}), version {profile.extra['version']} -> {path}")
    if estimate is not None:
        told = ", ".join(f"{a} {n}" for a, n in estimate.described.items())
        print(f"estimated from {estimate.lesions} lesions of {_data_source(args)}; lesions describing each aspect: {told}"
              + (f"; left out: {estimate.dropped}" if estimate.dropped else ""))
    return 0


def _data_source(args: argparse.Namespace) -> str:
    from pathlib import Path

    split = "" if args.split in (None, "all") else f", split {args.split}"
    return f"{args.from_disease or args.key} in {Path(args.from_data).name}{split}"


def _estimate(args: argparse.Namespace, organ: str, vocab):
    """The profile estimated from the --from-data lesions of --from-disease (default KEY), and the dataset's name."""
    from malenia.data.dataset import lesion_descriptions, read_dataset, require_dataset
    from malenia.errors import InputError
    from malenia.knowledge.estimate import estimate_site_profile

    data = require_dataset(args.from_data, "--from-data")
    disease = args.from_disease or args.key
    lesions, held = lesion_descriptions(data, args.split, disease)
    if not lesions:
        has = ", ".join(f"{d} ({n})" for d, n in held.items()) or "no lesions"
        raise InputError(f"--from-data {data}: no lesion of disease {disease!r} in split {args.split!r} (it has: {has}); "
                         "name the lesions' disease with --from-disease")
    return estimate_site_profile(lesions, organ, vocab), read_dataset(data).name


def _add(args: argparse.Namespace) -> int:
    return _save(args, adding=True)


def _edit(args: argparse.Namespace) -> int:
    return _save(args, adding=False)


def _remove(args: argparse.Namespace) -> int:
    from malenia.errors import InputError
    from malenia.knowledge.profiles import check_key, folder_lock, profile_path, remove_profile
    from malenia.knowledge.site import writable_dir

    check_key(args.key)  # before it names a file (a key too long for one failed with an OSError)
    folder = writable_dir(args.knowledge)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"site profile folder {folder} is a file, not a folder")
    if not folder.is_dir():  # nothing to remove, and no folder (nor lock file) is made to find that out
        _no_profile_to_remove(args, folder)
    with folder_lock(folder, create=False):
        if not profile_path(folder, args.key).is_file():
            _no_profile_to_remove(args, folder)
        path = remove_profile(folder, args.key)
    print(f"removed: {args.key} ({path})")
    return 0


def _no_profile_to_remove(args: argparse.Namespace, folder: Path) -> None:
    """InputError saying why KEY cannot be removed from `folder`: one of the model's diseases, or no profile there."""
    from malenia.errors import InputError

    table = _table_in_force(args)
    if args.key in table.diseases and not any(p["key"] == args.key for p in table.origin["profiles"]):
        raise InputError(f"{args.key!r} is part of the model's knowledge table; a site profile can override "
                         "it (`malenia knowledge edit`) but not remove it")
    raise InputError(f"no site profile {args.key!r} in {folder}")
