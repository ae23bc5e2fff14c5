"""`malenia import annotations WORKBOOK --out DIR`: the authors' workbook -> one dataset report per case.

Writes DIR/<case_id>.json (a malenia.data.dataset CaseReport) and DIR/summary.json (cases per sheet,
counts of every quirk rule, all warnings). The workbook itself is parsed by malenia.knowledge.workbook
(one LesionRecord per row, in vocabulary ids); this module only turns its records into reports, so the
knowledge layer never depends on the dataset format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from malenia.aspects import ASPECTS
from malenia.atomic import atomic_dir, write_json
from malenia.data.dataset import CaseReport, Description, LesionReport
from malenia.errors import OutputError
from malenia.knowledge.findings import related_organs
from malenia.knowledge.vocabulary import Vocabulary
from malenia.knowledge.workbook import LesionRecord, WorkbookImport, read_workbook


def case_reports(imported: WorkbookImport, vocab: Vocabulary) -> dict[str, CaseReport]:
    """CaseReports keyed by case id; a case in several sheets gets one lesion per row. Lesions of one
    case that disagree on the scan phase count as the `enhancement_conflict` quirk (first kept)."""
    by_case: dict[str, list[LesionRecord]] = {}
    for rec in imported.records:
        by_case.setdefault(rec.case_id, []).append(rec)
    out = {}
    for case_id, recs in by_case.items():
        enhancement = None
        for rec in recs:
            phase = rec.attributes.get("enhancement", [])
            if phase and enhancement is None:
                enhancement = Description(vocab.text(phase[0]), phase[0])
            elif phase and enhancement is not None and phase[0] != enhancement.id:
                imported.quirk("enhancement_conflict", f"case {case_id}: lesions disagree on the scan phase; "
                               f"kept {enhancement.id}", rec)
        lesions = [_lesion(label, rec, vocab) for label, rec in enumerate(recs, start=1)]  # quirks now final
        sources = sorted({r.source for r in recs})
        out[case_id] = CaseReport(
            case_id=case_id, lesions=lesions, enhancement=enhancement,
            source=f"{' + '.join(sources)} (Malenia attribute workbook)",
            extra={"labels": "numbered in workbook row order; not tied to a lesion mask"},
        )
    return out


def _lesion(label: int, rec: LesionRecord, vocab: Vocabulary) -> LesionReport:
    attrs = {a: [Description(vocab.text(i), i) for i in rec.attributes.get(a, [])] for a in ASPECTS}
    extra = {"sheet": rec.sheet, "row": rec.row, "report_text": rec.text, "codes": rec.codes}
    if rec.quirks:
        extra["quirks"] = list(rec.quirks)
    organs = related_organs(rec.text, rec.organ)
    if organs and "relationship.invading" in rec.attributes.get("relationship", []):
        extra["related_organs"] = organs
    return LesionReport(label=label, disease=rec.disease, attributes=attrs, extra=extra)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workbook", type=Path, help="the authors' English attribute workbook (.xlsx)")
    parser.add_argument("--out", type=Path, required=True, help="output folder: <case_id>.json + summary.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="do not print each warning")


def run(args: argparse.Namespace) -> int:
    vocab = Vocabulary.load()
    imported = read_workbook(args.workbook, vocab)
    reports = case_reports(imported, vocab)
    if args.out.exists() and not args.overwrite:
        raise OutputError(f"{args.out} exists (use --overwrite to replace it)")
    try:
        with atomic_dir(args.out, overwrite=args.overwrite, replaces="summary.json") as staging:
            for case_id, report in sorted(reports.items()):
                write_json(staging / f"{case_id}.json", report.to_json())
            write_json(staging / "summary.json", imported.summary(len(reports)))
    except OSError as err:
        raise OutputError(f"cannot write {args.out}: {err}") from None
    if not args.quiet:
        for w in imported.warnings:
            print(f"warning: {w}", file=sys.stderr)
    counts = ", ".join(f"{r}={n}" for r, n in imported.quirks.items() if n)
    print(f"{len(reports)} case reports ({len(imported.records)} lesions) written to {args.out}; "
          f"rules applied: {counts or 'none'}")
    return 0
