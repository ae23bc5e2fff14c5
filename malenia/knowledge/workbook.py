"""The authors' attribute workbook (.xlsx) -> one record per annotated lesion, in vocabulary ids.

Parsing only; `malenia import annotations` (malenia.data.importers.annotations) turns the records into
dataset reports. Layout of the workbook (../shared/data/README.md): one sheet per disease; column 1
case id, columns 2-8 integer codes, column 9 the free-text report.

Data-quality rules (each application is warned about and counted in the summary):
- worked_example: id `Example N` / `示例N` or a bare number -> row excluded (not a dataset case).
- unrecognised_case_id: id not in the sheet's dataset naming (e.g. `imaging.nii`) -> row skipped.
- duplicate_case: the same case twice in one sheet -> later row skipped.
- empty_row: no codes and no report text -> row skipped.
- blank_cell: a code cell is empty -> enhancement/location recovered from the report text by
  keyword when it names them (blank_cell_recovered), otherwise that aspect stays undescribed.
- multi_valued: a cell with several codes (`1、2`, `12`) -> kidney left+right = bilateral and
  liver left+right = both lobes; otherwise every listed value is kept as a description.
- out_of_range_code: a code outside the scheme -> that aspect stays undescribed.
- enhancement_conflict: two lesions of one case disagree on the scan phase -> first kept.
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malenia.errors import InputError
from malenia.knowledge.findings import extract_findings
from malenia.knowledge.vocabulary import Vocabulary


@dataclass(frozen=True)
class SheetSpec:
    disease: str
    organ: str
    source: str
    case_pattern: str  # dataset case naming after normalisation


SHEETS: dict[str, SheetSpec] = {
    "肾癌": SheetSpec("kidney_tumor", "kidney", "KiTS23", r"case_\d{5}"),
    "肾囊肿": SheetSpec("kidney_cyst", "kidney", "KiTS23", r"case_\d{5}"),
    "肝癌": SheetSpec("liver_tumor", "liver", "MSD Task03_Liver", r"liver_\d+"),
    "胰腺癌": SheetSpec("pancreas_tumor", "pancreas", "MSD Task07_Pancreas", r"pancreas_\d+"),
    "胰腺囊肿": SheetSpec("pancreas_cyst", "pancreas", "MSD Task07_Pancreas", r"pancreas_\d+"),
    "结肠癌": SheetSpec("colon_tumor", "colon", "MSD Task10_Colon", r"colon_\d+"),
    "肺癌": SheetSpec("lung_tumor", "lung", "MSD Task06_Lung", r"lung_\d+"),
}

# Column order of the codes (columns 2-8) and of the text (column 9).
CODE_COLUMNS = ("enhancement", "location", "shape", "density", "density_variation", "surface", "relationship")
N_COLUMNS = 9

_LOCATION = {
    "kidney": {1: "location.kidney.left", 2: "location.kidney.right"},
    "liver": {1: "location.liver.left_lobe", 2: "location.liver.right_lobe"},
    "pancreas": {1: "location.pancreas.head", 2: "location.pancreas.body", 3: "location.pancreas.tail"},
    "colon": {1: "location.colon.ascending", 2: "location.colon.transverse", 3: "location.colon.descending",
              4: "location.colon.sigmoid", 5: "location.colon.rectum"},
    "lung": {1: "location.lung.left_upper", 2: "location.lung.left_lower", 3: "location.lung.right_upper",
             4: "location.lung.right_middle", 5: "location.lung.right_lower"},
}
_BOTH_SIDES = {"kidney": "location.kidney.bilateral", "liver": "location.liver.both_lobes"}


def code_map(aspect: str, organ: str) -> dict[int, str]:
    """The workbook coding scheme of one aspect for one organ: code -> vocabulary id."""
    if aspect == "enhancement":
        return {1: "enhancement.non_contrast", 2: "enhancement.contrast"}
    if aspect == "location":
        return _LOCATION[organ]
    if aspect == "shape":
        return {1: "shape.round", 2: "shape.irregular"}
    if aspect == "density":
        if organ == "lung":
            return {1: "density.lung.ground_glass", 2: "density.lung.soft_tissue", 3: "density.lung.dense",
                    4: "density.lung.mixed"}
        return {1: f"density.hypodense.{organ}", 2: f"density.isodense.{organ}", 3: f"density.hyperdense.{organ}"}
    if aspect == "density_variation":
        return {1: "density_variation.homogeneous", 2: "density_variation.heterogeneous"}
    if aspect == "surface":
        # lung code 2 is "rough or spiculated margin"
        return {1: "surface.well_defined", 2: "surface.spiculated" if organ == "lung" else "surface.ill_defined"}
    if aspect == "relationship":
        return {1: "relationship.separate", 2: "relationship.invading"}
    raise KeyError(aspect)


QUIRK_RULES: dict[str, str] = {
    "worked_example": "row named 'Example N', '示例N' or a bare number: a worked example, excluded",
    "unrecognised_case_id": "case id not in the sheet's dataset naming: row skipped",
    "duplicate_case": "case listed twice in one sheet: later row skipped",
    "empty_row": "no codes and no report text: row skipped",
    "blank_cell": "empty code cell: aspect left undescribed",
    "blank_cell_recovered": "empty enhancement/location cell recovered from the report text",
    "multi_valued": "several codes in one cell: left+right -> bilateral / both lobes, else all values kept",
    "out_of_range_code": "code outside the coding scheme: aspect left undescribed",
    "enhancement_conflict": "lesions of one case disagree on the scan phase: first kept",
}

_EXAMPLE = re.compile(r"^(example\s*\d*|示例\s*\d*|\d+(\.0)?)$", re.IGNORECASE)
_MULTI_SPLIT = re.compile(r"[、,，;；/\s+和]+")
_NON_CONTRAST = re.compile(r"non[- ]?contrast|unenhanced|plain (ct|scan)", re.IGNORECASE)
_CONTRAST = re.compile(r"contrast[- ]enhanced|enhanced ct|after contrast", re.IGNORECASE)


def normalise_case_id(raw: Any) -> str:
    """`liver_2.nii` -> `liver_2`; `case_00000` unchanged; surrounding spaces removed."""
    text = str(raw).strip()
    for suffix in (".nii.gz", ".nii"):
        if text.lower().endswith(suffix):
            return text[: -len(suffix)]
    return text


@dataclass
class LesionRecord:
    """One annotated lesion (one workbook row) mapped to vocabulary ids."""

    sheet: str
    row: int  # 1-based spreadsheet row
    case_id: str
    disease: str
    organ: str
    source: str
    attributes: dict[str, list[str]]  # aspect -> vocabulary ids (empty list = undescribed)
    text: str
    codes: dict[str, Any]
    quirks: list[str] = field(default_factory=list)


@dataclass
class WorkbookImport:
    path: Path
    records: list[LesionRecord]
    sheets: dict[str, dict[str, Any]]
    quirks: Counter
    warnings: list[str]

    def quirk(self, rule: str, message: str, rec: LesionRecord | None = None) -> None:
        self.quirks[rule] += 1
        self.warnings.append(message)
        if rec is not None:
            rec.quirks.append(rule)

    def summary(self, n_cases: int) -> dict[str, Any]:
        return {
            "workbook": str(self.path),
            "cases": n_cases,
            "lesions": len(self.records),
            "sheets": self.sheets,
            "quirks": {rule: self.quirks.get(rule, 0) for rule in QUIRK_RULES},
            "rules": QUIRK_RULES,
            "warnings": self.warnings,
        }


def _parse_codes(value: Any) -> list[int] | None:
    """Cell -> list of integer codes; None for a blank cell; [] for something unreadable."""
    if value is None:
        return None
    if isinstance(value, bool):
        return []
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        digits = str(value)
        return [int(d) for d in digits] if value >= 10 else [value]  # `12` = codes 1 and 2
    text = str(value).strip()
    if not text:
        return None
    parts = [p for p in _MULTI_SPLIT.split(text) if p]
    codes: list[int] = []
    for p in parts:
        if not p.isdigit():
            return []
        codes.extend(int(d) for d in p)  # `12` = codes 1 and 2 (no code has two digits)
    return codes


def _recover_from_text(aspect: str, organ: str, text: str) -> str | None:
    if aspect == "enhancement":
        if _NON_CONTRAST.search(text):
            return "enhancement.non_contrast"
        if _CONTRAST.search(text):
            return "enhancement.contrast"
    if aspect == "location":
        words = {"left": 1, "right": 2}
        hits = {c for w, c in words.items() if re.search(rf"\b{w} (kidney|hepatic lobe|lobe of the liver)", text, re.I)}
        if organ in ("kidney", "liver") and len(hits) == 1:
            return _LOCATION[organ][hits.pop()]
    return None


def _open(path: Path):
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    if not path.is_file():
        raise InputError(f"workbook not found: {path}")
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable .xlsx workbook ({type(err).__name__}: {err})") from None


def read_workbook(path: str | Path, vocab: Vocabulary | None = None) -> WorkbookImport:
    """Parses the workbook; rows that break the rules above are warned about, never fatal."""
    path = Path(path)
    vocab = vocab or Vocabulary.load()
    wb = _open(path)
    try:
        missing = [s for s in SHEETS if s not in wb.sheetnames]
        if missing:
            raise InputError(f"{path.name}: missing disease sheet(s) {missing}; expected {list(SHEETS)}")
        result = WorkbookImport(path, [], {}, Counter(), [])
        for extra in (s for s in wb.sheetnames if s not in SHEETS):
            result.warnings.append(f"sheet {extra!r} is not a known disease sheet: ignored")
        for name, spec in SHEETS.items():
            _read_sheet(wb[name], name, spec, vocab, result)
        return result
    finally:
        wb.close()


def _read_sheet(ws, name: str, spec: SheetSpec, vocab: Vocabulary, result: WorkbookImport) -> None:
    rows = ws.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None or len(header) < N_COLUMNS or str(header[0] or "").strip().lower() != "id":
        found = 0 if header is None else len(header)
        raise InputError(f"sheet {name!r}: expected a header row 'ID' + 7 code columns + report ({N_COLUMNS} columns), "
                         f"found {found} column(s) starting {str(header[0] if header else None)!r}")
    stats = {"disease": spec.disease, "source": spec.source, "rows": 0, "cases": 0, "examples_excluded": 0, "skipped": 0}
    seen: set[str] = set()
    pattern = re.compile(rf"^{spec.case_pattern}$")
    for row_index, row in enumerate(rows, start=2):
        row = tuple(row) + (None,) * (N_COLUMNS - len(row))
        raw_id, cells, text = row[0], row[1:8], row[8]
        if raw_id is None and all(c is None or str(c).strip() == "" for c in row[1:N_COLUMNS]):
            continue  # trailing empty spreadsheet row, not a data row
        stats["rows"] += 1
        where = f"sheet {name} ({spec.disease}) row {row_index} id {raw_id!r}"
        case_id = normalise_case_id(raw_id) if raw_id is not None else ""
        if _EXAMPLE.match(case_id):
            result.quirk("worked_example", f"{where}: worked example, excluded")
            stats["examples_excluded"] += 1
            _check_codes(cells, spec, where, result, None)  # its code quirks are still reported
            continue
        if not pattern.match(case_id):
            result.quirk("unrecognised_case_id", f"{where}: not a {spec.source} case id, skipped")
            stats["skipped"] += 1
            continue
        if case_id in seen:
            result.quirk("duplicate_case", f"{where}: {case_id} already listed in this sheet, skipped")
            stats["skipped"] += 1
            continue
        text = "" if text is None else str(text).strip()
        if all(c is None or str(c).strip() == "" for c in cells) and not text:
            result.quirk("empty_row", f"{where}: no codes and no report, skipped")
            stats["skipped"] += 1
            continue
        seen.add(case_id)
        rec = LesionRecord(name, row_index, case_id, spec.disease, spec.organ, spec.source, {}, text,
                           {a: c if isinstance(c, (int, float, str, type(None))) else str(c)
                            for a, c in zip(CODE_COLUMNS, cells)})
        rec.attributes = _check_codes(cells, spec, where, result, rec, text)
        rec.attributes["specific_features"] = extract_findings(text)
        for ids in rec.attributes.values():
            for i in ids:
                vocab.entry(i)  # every mapped id must exist (InputError otherwise: a vocabulary bug)
        result.records.append(rec)
        stats["cases"] += 1
    result.sheets[name] = stats


def _check_codes(cells, spec: SheetSpec, where: str, result: WorkbookImport, rec: LesionRecord | None,
                 text: str = "") -> dict[str, list[str]]:
    attrs: dict[str, list[str]] = {}
    for aspect, cell in zip(CODE_COLUMNS, cells):
        mapping = code_map(aspect, spec.organ)
        codes = _parse_codes(cell)
        if codes is None:
            recovered = _recover_from_text(aspect, spec.organ, text) if rec is not None else None
            if recovered:
                result.quirk("blank_cell_recovered", f"{where}: blank {aspect} cell, read {recovered} from the report", rec)
                attrs[aspect] = [recovered]
            else:
                result.quirk("blank_cell", f"{where}: blank {aspect} cell, aspect left undescribed", rec)
                attrs[aspect] = []
            continue
        bad = [c for c in codes if c not in mapping] if codes else [cell]
        if bad:
            result.quirk("out_of_range_code", f"{where}: {aspect} code {cell!r} outside {sorted(mapping)}, "
                          "aspect left undescribed", rec)
            attrs[aspect] = []
            continue
        codes = list(dict.fromkeys(codes))
        if len(codes) > 1:
            if aspect == "location" and spec.organ in _BOTH_SIDES and set(codes) == {1, 2}:
                ids = [_BOTH_SIDES[spec.organ]]
            else:
                ids = [mapping[c] for c in codes]
            result.quirk("multi_valued", f"{where}: {aspect} cell {cell!r} has several codes -> {ids}", rec)
            attrs[aspect] = ids
            continue
        attrs[aspect] = [mapping[codes[0]]]
    return attrs
