"""The Malenia dataset format (docs/architecture.md, "Dataset format").

    DATASET/dataset.json            {"format", "name", "description", "cases": [...], "split": {...}}
    DATASET/cases/<id>/image.nii.gz      CT in HU
    DATASET/cases/<id>/lesions.nii.gz    instance labels 0..K on the image grid
    DATASET/cases/<id>/report.json       per-lesion disease and the 8 aspect descriptions
    DATASET/cases/<id>/organs.nii.gz     optional organ labels (synthesis, contrast phase)

A lesion's attributes map each aspect key (malenia.aspects.ASPECTS) to a list of
descriptions: usually one; "specific_features" may hold several findings. A description
has a vocabulary id, or id None for free text a radiologist typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from malenia.aspects import ASPECTS
from malenia.atomic import atomic_dir, write_json
from malenia.errors import InputError
from malenia.json_files import read_json

if TYPE_CHECKING:  # imported where images are read or written: the names above stay cheap to import
    import SimpleITK as sitk

DATASET_FORMAT = "malenia-dataset/1"
CASE_FORMAT = "malenia-case/1"
# The file names of the format: every module that reads or writes a dataset or a case spells them from here.
DATASET_FILE = "dataset.json"
CASES_DIR = "cases"
IMAGE_FILE = "image.nii.gz"
LESIONS_FILE = "lesions.nii.gz"
REPORT_FILE = "report.json"
ORGANS_FILE = "organs.nii.gz"  # optional
CASE_FILES = (IMAGE_FILE, LESIONS_FILE, REPORT_FILE)  # what every case has


@dataclass(frozen=True)
class Description:
    text: str
    id: str | None = None  # vocabulary id; None for free text

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "Description":
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f"attribute description must be an object with a 'text' string, got {str(obj)[:80]}")
        if obj.get("id") is not None and not isinstance(obj["id"], str):
            raise InputError(f"attribute description id must be a string or null, got {str(obj['id'])[:80]}")
        return Description(text=obj["text"], id=obj.get("id"))


def _enhancement(value: Any) -> Description | None:
    """A report's scan-level enhancement: null or absent is none; {}, "" or 0 are malformed, not none (a falsy
    value read as none would drop what the author meant to say without a word)."""
    if value is None:
        return None
    try:
        return Description.from_json(value)
    except InputError as err:
        raise InputError(f"report's enhancement: {err}") from None


def _require_object(value: Any, what: str) -> None:
    if not isinstance(value, dict):
        raise InputError(f"{what} must be an object, got {str(value)[:60]}")


@dataclass
class LesionReport:
    label: int
    disease: str | None
    attributes: dict[str, list[Description]]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. synthesis parameters

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "disease": self.disease,
            "attributes": {a: [d.to_json() for d in self.attributes.get(a, [])] for a in ASPECTS},
            **({"extra": self.extra} if self.extra else {}),
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "LesionReport":
        if not isinstance(obj, dict):
            raise InputError(f"malformed lesion entry in report: an object expected, got {str(obj)[:80]}")
        label, disease = obj.get("label"), obj.get("disease")
        if isinstance(label, bool) or not isinstance(label, int):  # 1.7 or true are not labels (int() would take them)
            raise InputError(f"malformed lesion entry in report: label must be an integer, got {str(label)[:40]}")
        if disease is not None and not isinstance(disease, str):
            raise InputError(f"malformed lesion entry in report: disease must be a string or null, got {str(disease)[:60]}")
        _require_object(obj.get("attributes", {}), "a lesion's attributes")
        _require_object(obj.get("extra", {}), "a lesion's extra")
        try:
            attrs = obj.get("attributes", {})
            unknown = set(attrs) - set(ASPECTS)
            if unknown:
                raise InputError(f"unknown attribute aspect(s) {sorted(unknown)}; expected {list(ASPECTS)}")
            return LesionReport(
                label=label,
                disease=disease,
                attributes={a: [Description.from_json(d) for d in attrs.get(a, [])] for a in ASPECTS},
                extra=dict(obj.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"malformed lesion entry in report: {err}") from None


@dataclass
class CaseReport:
    case_id: str
    lesions: list[LesionReport]
    enhancement: Description | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CASE_FORMAT,
            "case_id": self.case_id,
            "source": self.source,
            "enhancement": self.enhancement.to_json() if self.enhancement else None,
            "lesions": [lesion.to_json() for lesion in self.lesions],
            **({"extra": self.extra} if self.extra else {}),
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "CaseReport":
        if not isinstance(obj, dict) or obj.get("format") != CASE_FORMAT:
            raise InputError(f"not a Malenia case report (format must be {CASE_FORMAT!r})")
        if not isinstance(obj.get("lesions", []), list):
            raise InputError("report's lesions must be a list")
        _require_object(obj.get("extra", {}), "the report's extra")
        for key in ("case_id", "source"):  # str() would store 7 as "7" and {"a": 1} as its Python spelling
            if not isinstance(obj.get(key, ""), str):
                raise InputError(f"report's {key} must be a string, got {str(obj[key])[:60]}")
        lesions = [LesionReport.from_json(x) for x in obj.get("lesions", [])]
        labels = [x.label for x in lesions]
        if len(set(labels)) != len(labels) or any(v < 1 for v in labels):
            raise InputError(f"lesion labels must be unique positive integers, got {labels}")
        return CaseReport(
            case_id=obj.get("case_id", ""),
            lesions=lesions,
            enhancement=_enhancement(obj.get("enhancement")),
            source=obj.get("source", ""),
            extra=dict(obj.get("extra", {})),
        )

    def lesion(self, label: int) -> LesionReport:
        for lesion in self.lesions:
            if lesion.label == label:
                return lesion
        raise KeyError(label)


@dataclass
class Case:
    case_id: str
    image: sitk.Image
    lesions: sitk.Image
    report: CaseReport
    organs: sitk.Image | None = None


def case_dir(dataset_dir: str | Path, case_id: str) -> Path:
    """The folder of one case: DATASET/cases/<id>."""
    return Path(dataset_dir) / CASES_DIR / case_id


def is_dataset(path: str | Path) -> bool:
    """Whether `path` is a dataset folder (it has a dataset.json)."""
    return (Path(path) / DATASET_FILE).is_file()


def require_dataset(path: str | Path, option: str = "") -> Path:
    """`path` as a Path when it is a dataset folder; otherwise the commands' one-line InputError
    (`option`, e.g. "--eval", says which argument named it)."""
    if not is_dataset(path):
        raise InputError(f"{option + ' ' if option else ''}{path} is not a Malenia dataset (no {DATASET_FILE})")
    return Path(path)


def read_report(path: str | Path) -> CaseReport:
    return CaseReport.from_json(read_json(Path(path)))


def write_case(dataset_dir: str | Path, case: Case, overwrite: bool = False) -> Path:
    """Writes one case folder atomically (all files appear together)."""
    if case.image.GetSize() != case.lesions.GetSize():
        raise InputError(f"case {case.case_id}: lesion grid {case.lesions.GetSize()} != image grid {case.image.GetSize()}")
    import SimpleITK as sitk

    target = case_dir(dataset_dir, case.case_id)
    with atomic_dir(target, overwrite=overwrite, replaces=REPORT_FILE) as staging:
        sitk.WriteImage(case.image, str(staging / IMAGE_FILE), useCompression=True)
        sitk.WriteImage(sitk.Cast(case.lesions, sitk.sitkUInt8 if _max_label(case.lesions) < 256 else sitk.sitkUInt16),
                        str(staging / LESIONS_FILE), useCompression=True)
        if case.organs is not None:
            sitk.WriteImage(case.organs, str(staging / ORGANS_FILE), useCompression=True)
        write_json(staging / REPORT_FILE, case.report.to_json())
    return target


def _max_label(img: sitk.Image) -> int:
    import SimpleITK as sitk

    return int(sitk.GetArrayViewFromImage(img).max()) if img.GetNumberOfPixels() else 0


def read_case(dataset_dir: str | Path, case_id: str, with_images: bool = True) -> Case:
    folder = case_dir(dataset_dir, case_id)
    report = read_report(folder / REPORT_FILE)
    if not with_images:
        return Case(case_id, None, None, report)  # type: ignore[arg-type]
    image, lesions = _read_case_image(folder, IMAGE_FILE, case_id), _read_case_image(folder, LESIONS_FILE, case_id)
    organs = _read_case_image(folder, ORGANS_FILE, case_id) if (folder / ORGANS_FILE).exists() else None
    return Case(case_id, image, lesions, report, organs)


def require_case_files(dataset_dir: str | Path, case_ids: list[str]) -> None:
    """InputError naming the first missing files of the cases a run will read, before it reads any: a long
    evaluation must not stop at its fortieth case for a file that was missing from the start."""
    missing = [f"{case_id}/{name}" for case_id in case_ids for name in (REPORT_FILE, IMAGE_FILE, LESIONS_FILE)
               if not (case_dir(dataset_dir, case_id) / name).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{dataset_dir}: missing case files: {', '.join(missing[:5])}{more}")


def _read_case_image(folder: Path, name: str, case_id: str):
    """One image file of a case folder; InputError naming the file when it is missing or unreadable."""
    import SimpleITK as sitk

    from malenia.data.ct_io import scan_data

    path = folder / name
    if not path.is_file():
        raise InputError(f"case {case_id}: {name} is missing ({path})")
    scan_data(path, f"case {case_id}: {name}")  # ITK would read a truncated file as zeros without a word
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise InputError(f"case {case_id}: cannot read {name} ({lines[-1] if lines else 'unreadable'})") from None


@dataclass
class DatasetIndex:
    name: str
    cases: list[str]
    split: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DATASET_FORMAT,
            "name": self.name,
            "description": self.description,
            "cases": self.cases,
            "split": self.split,
            **({"extra": self.extra} if self.extra else {}),
        }

    def split_cases(self, split: str | None) -> list[str]:
        if split is None or split == "all":
            return list(self.cases)
        if split not in self.split:
            raise InputError(f"dataset {self.name!r} has no split {split!r} (has: {sorted(self.split)})")
        return list(self.split[split])


def read_dataset(dataset_dir: str | Path) -> DatasetIndex:
    path = Path(dataset_dir) / DATASET_FILE
    obj = read_json(path)
    if not isinstance(obj, dict) or obj.get("format") != DATASET_FORMAT:
        raise InputError(f"{dataset_dir}: not a Malenia dataset (dataset.json format must be {DATASET_FORMAT!r})")
    cases = _case_ids(obj.get("cases", []), path, "cases")
    split = obj.get("split", {})
    if not isinstance(split, dict):
        raise InputError(f"{path}: field 'split' must be an object of split name -> list of case ids, "
                         f"got {_json_type(split)}")
    split = {k: _case_ids(v, path, f"split.{k}") for k, v in split.items()}
    missing = sorted({c for v in split.values() for c in v} - set(cases))
    if missing:
        raise InputError(f"{dataset_dir}: split names cases not in the dataset: {missing[:5]}")
    name, description = obj.get("name", Path(dataset_dir).name), obj.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise InputError(f"{path}: field {key!r} must be a string, got {_json_type(value)}")
    if not isinstance(obj.get("extra", {}), dict):
        raise InputError(f"{path}: field 'extra' must be an object, got {_json_type(obj['extra'])}")
    return DatasetIndex(name, cases, split, description, obj.get("extra", {}))


def _case_ids(value: Any, path: Path, key: str) -> list[str]:
    """A list of case id strings; anything else an InputError naming the file and the field (a string would
    otherwise be read letter by letter and a number or object turned into an id no folder has)."""
    if not isinstance(value, list):
        raise InputError(f"{path}: field {key!r} must be a list of case ids, got {_json_type(value)}")
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InputError(f"{path}: field {key!r} entry {i} must be a case id string, got {_json_type(item)} "
                             f"{str(item)[:40]!r}")
        problem = _unsafe_case_id(item)
        if problem:
            raise InputError(f"{path}: field {key!r} entry {i}: case id {item[:80]!r} {problem}")
        if item in seen:  # listed twice it would be trained or scored twice, or land in train and val at once
            raise InputError(f"{path}: field {key!r} lists case id {item[:80]!r} more than once")
        seen.add(item)
    return list(value)


def _unsafe_case_id(case_id: str) -> str | None:
    """Why `case_id` would name a folder outside DATASET/cases (or none at all), or None when it is safe. An id is
    a relative path of plain names: one name, or several joined by "/" as the corrections store's "case/v001"."""
    if "\\" in case_id or "\0" in case_id:
        return "has a backslash or NUL (ids join plain names with '/')"
    if case_id.startswith("/") or re.match(r"^[A-Za-z]:", case_id):
        return "is an absolute path (a case id is a folder name under cases/)"
    if any(part in ("", ".", "..") for part in case_id.split("/")):
        return "has an empty, '.' or '..' part (it would not name one case folder under cases/)"
    return None


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, as the file's author wrote it."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def lesion_descriptions(dataset_dir: str | Path, split: str | None, disease: str) -> tuple[list[dict[str, list]], dict[str, int]]:
    """The description ids (None for free text) of every lesion of `disease` in a split, read from the
    reports alone; and how many lesions each disease has there (to say what a dataset holds instead)."""
    index, found, diseases = read_dataset(dataset_dir), [], {}
    for case_id in index.split_cases(split):
        for lesion in read_report(case_dir(dataset_dir, case_id) / REPORT_FILE).lesions:
            diseases[str(lesion.disease)] = diseases.get(str(lesion.disease), 0) + 1
            if lesion.disease == disease:
                found.append({a: [d.id for d in v] for a, v in lesion.attributes.items()})
    return found, dict(sorted(diseases.items(), key=lambda kv: -kv[1]))


def write_dataset_index(dataset_dir: str | Path, index: DatasetIndex) -> None:
    write_json(Path(dataset_dir) / DATASET_FILE, index.to_json())
