"""What `malenia segment` found in one CT: the label map, the lesions and their descriptions.

`SegmentationResult` is the hand-over from inference to the writers (malenia.infer.outputs). Its
JSON form is `report.json`, versioned by `Resources/report.schema.json` (SCHEMA_VERSION). Images
are SimpleITK images; the label map is in the input's exact geometry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import SimpleITK as sitk

from malenia.aspects import ASPECTS
from malenia.errors import InputError
from malenia.paths import resources_dir

SCHEMA_VERSION = "1.2.0"  # 1.1: optional "knowledge" (table origin) and per-lesion "scores"; 1.2: per-lesion "appearance"
REPORT_FORMAT = "malenia-segment-report"
SCHEMA_FILE = "report.schema.json"

Vec3 = tuple[float, float, float]


def _vec3(v: Any) -> Vec3:
    x, y, z = (float(a) for a in v)
    return (x, y, z)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass
class AttributeMatch:
    """One attribute description matched to a lesion for one aspect."""

    id: str | None  # vocabulary id; None for free text
    description: str
    score: float  # normalised over the aspect's descriptions, 0..1

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "description": self.description, "score": float(self.score)}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "AttributeMatch":
        return AttributeMatch(obj.get("id"), str(obj["description"]), float(obj["score"]))


@dataclass
class AspectMatch(AttributeMatch):
    """The best description for one aspect and the runners-up, best first."""

    alternatives: list[AttributeMatch] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "alternatives": [a.to_json() for a in self.alternatives]}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "AspectMatch":
        return AspectMatch(
            obj.get("id"), str(obj["description"]), float(obj["score"]),
            [AttributeMatch.from_json(a) for a in obj.get("alternatives", [])],
        )


def shown_disease(display_name: str, unclassified: bool, guessed: bool = True) -> str:
    """A lesion's disease as a reader sees it (command line, HTML report, Slicer's lesion table): its name, or for a
    lesion called unclassified the closest disease marked as only that, never shown as if it were the diagnosis."""
    if not unclassified:
        return display_name
    return f"Unclassified (closest: {display_name})" if guessed else "Unclassified"


@dataclass
class DiseaseCall:
    """The disease posterior of one lesion (knowledge table inference). For a lesion called unclassified, `name`
    and `display_name` are the closest disease (None and the generic name when there was no guess at all)."""

    name: str | None  # disease key (malenia.aspects.ALL_DISEASES or a user profile); None: no guess
    display_name: str
    probability: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # (disease key, probability), best first
    unclassified: bool = False  # the posterior is too flat to name a disease
    organ: str | None = None  # organ of the disease (knowledge table), for terminology of unknown diseases

    @property
    def shown(self) -> str:
        return shown_disease(self.display_name, self.unclassified, self.name is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "probability": float(self.probability),
            "unclassified": bool(self.unclassified),
            "organ": self.organ,
            "alternatives": [{"name": n, "probability": float(p)} for n, p in self.alternatives],
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "DiseaseCall":
        return DiseaseCall(
            name=obj.get("name"),
            display_name=str(obj["display_name"]),
            probability=float(obj["probability"]),
            alternatives=[(str(a["name"]), float(a["probability"])) for a in obj.get("alternatives", [])],
            unclassified=bool(obj.get("unclassified", False)),
            organ=obj.get("organ"),
        )


@dataclass
class Measurements:
    """Per-lesion measurements (malenia.infer.measurements documents how each is computed)."""

    voxel_count: int
    volume_ml: float
    centroid_ras_mm: Vec3
    long_axis_mm: float  # RECIST 1.1 longest axial diameter
    short_axis_mm: float  # longest chord perpendicular to it, same slice
    long_axis_ras_mm: tuple[Vec3, Vec3]  # end points
    short_axis_ras_mm: tuple[Vec3, Vec3]
    axial_axis: int  # image index axis (0 i, 1 j, 2 k) closest to the patient's superior axis
    recist_slice: int  # index along axial_axis of the slice with the longest diameter
    max_area_slice: int  # index along axial_axis of the largest cross-section
    hu_mean: float | None
    hu_std: float | None  # population standard deviation

    def to_json(self) -> dict[str, Any]:
        return {
            "voxel_count": int(self.voxel_count),
            "volume_ml": float(self.volume_ml),
            "centroid_ras_mm": list(self.centroid_ras_mm),
            "long_axis_mm": float(self.long_axis_mm),
            "short_axis_mm": float(self.short_axis_mm),
            "long_axis_ras_mm": [list(p) for p in self.long_axis_ras_mm],
            "short_axis_ras_mm": [list(p) for p in self.short_axis_ras_mm],
            "axial_axis": int(self.axial_axis),
            "recist_slice": int(self.recist_slice),
            "max_area_slice": int(self.max_area_slice),
            "hu_mean": self.hu_mean,
            "hu_std": self.hu_std,
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "Measurements":
        la, lb = obj["long_axis_ras_mm"]
        sa, sb = obj["short_axis_ras_mm"]
        return Measurements(
            voxel_count=int(obj["voxel_count"]),
            volume_ml=float(obj["volume_ml"]),
            centroid_ras_mm=_vec3(obj["centroid_ras_mm"]),
            long_axis_mm=float(obj["long_axis_mm"]),
            short_axis_mm=float(obj["short_axis_mm"]),
            long_axis_ras_mm=(_vec3(la), _vec3(lb)),
            short_axis_ras_mm=(_vec3(sa), _vec3(sb)),
            axial_axis=int(obj["axial_axis"]),
            recist_slice=int(obj["recist_slice"]),
            max_area_slice=int(obj["max_area_slice"]),
            hu_mean=_opt_float(obj.get("hu_mean")),
            hu_std=_opt_float(obj.get("hu_std")),
        )


@dataclass
class LesionResult:
    label: int  # value in the label map
    disease: DiseaseCall
    attributes: dict[str, AspectMatch]  # every aspect of malenia.aspects.ASPECTS
    measurements: Measurements | None = None  # filled by malenia.infer.measurements
    # aspect -> {description id: score}: what disease inference consumed, so that a changed knowledge
    # table re-ranks the lesion without re-segmenting (malenia.infer.rerank)
    scores: dict[str, dict[str, float]] | None = None
    # the appearance check (malenia.knowledge.appearance.Appearance.verdict): {"scores": {disease: score},
    # "cut", "ruled_out": [disease, ...]}; re-ranking keeps the diseases it ruled out
    appearance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        missing = [a for a in ASPECTS if a not in self.attributes]
        unknown = sorted(set(self.attributes) - set(ASPECTS))
        if missing or unknown:
            raise ValueError(f"lesion {self.label}: attributes must cover exactly {list(ASPECTS)} (missing {missing}, unknown {unknown})")
        if int(self.label) < 1:
            raise ValueError(f"lesion label must be a positive integer, got {self.label}")

    def to_json(self) -> dict[str, Any]:
        return {
            "label": int(self.label),
            "disease": self.disease.to_json(),
            "attributes": {a: self.attributes[a].to_json() for a in ASPECTS},
            "measurements": self.measurements.to_json() if self.measurements else None,
            **({"scores": {a: {i: round(float(v), 5) for i, v in m.items()} for a, m in self.scores.items()}}
               if self.scores is not None else {}),
            **({"appearance": self.appearance} if self.appearance is not None else {}),
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "LesionResult":
        m = obj.get("measurements")
        return LesionResult(
            label=int(obj["label"]),
            disease=DiseaseCall.from_json(obj["disease"]),
            attributes={a: AspectMatch.from_json(v) for a, v in obj["attributes"].items()},
            measurements=Measurements.from_json(m) if m else None,
            scores={a: {i: float(v) for i, v in d.items()} for a, d in obj["scores"].items()} if obj.get("scores") else None,
            appearance=_appearance(obj.get("appearance")),
        )


def _appearance(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("ruled_out"), list) or not isinstance(obj.get("scores"), dict):
        raise ValueError("a lesion's appearance entry needs 'scores' and a 'ruled_out' list")
    return {"scores": {str(d): float(v) for d, v in obj["scores"].items()}, "cut": float(obj.get("cut", 0.0)),
            "ruled_out": [str(d) for d in obj["ruled_out"]]}


@dataclass
class ModelInfo:
    name: str
    version: str
    sha256: str  # of the weights file, as checked against the model manifest

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "ModelInfo":
        return ModelInfo(str(obj["name"]), str(obj["version"]), str(obj["sha256"]))


@dataclass
class Enhancement:
    """Contrast phase of the scan."""

    id: str | None  # vocabulary id (enhancement.*); None if unknown
    text: str
    score: float | None = None  # confidence 0..1 where the method gives one
    method: str = "model"  # e.g. "model" (attribute matching), "hu" (aorta/IVC HU), "dicom" (header), "user"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "score": _opt_float(self.score), "method": self.method}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "Enhancement":
        """The phase of a report's scan.enhancement (its caller reads null as none); anything else that is not
        {id, text, score, method} an InputError naming the field, not a phase made of str() of what was there."""
        where = "report's scan.enhancement"
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f"{where} must be null or an object with a 'text' string, got {str(obj)[:80]!r}")
        if obj.get("id") is not None and not isinstance(obj["id"], str):
            raise InputError(f"{where} id must be a string or null, got {str(obj['id'])[:60]!r}")
        score = obj.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise InputError(f"{where} score must be a number or null, got {str(score)[:60]!r}")
        if not isinstance(obj.get("method", "model"), str):
            raise InputError(f"{where} method must be a string, got {str(obj['method'])[:60]!r}")
        return Enhancement(obj.get("id"), obj["text"], _opt_float(score), obj.get("method", "model"))


@dataclass
class ScanInfo:
    """The input scan: where it came from and its grid (the outputs' grid)."""

    source: str
    size: tuple[int, int, int]
    spacing: Vec3
    origin: Vec3
    direction: tuple[float, ...]  # 9 values, row-major, as SimpleITK gives it
    enhancement: Enhancement | None = None
    was_dicom: bool = False
    dicom_files: list[str] = field(default_factory=list)  # the series' files (any order: the SEG matches slices by position)
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. identifiers an anonymiser removed

    @staticmethod
    def from_image(image: sitk.Image, source: str, enhancement: Enhancement | None = None,
                   dicom_files: list[str] | None = None) -> "ScanInfo":
        """Scan info for `image`; with `dicom_files` (the series' files) also its study and series UIDs."""
        series_uid = study_uid = None
        warnings: list[str] = []
        if dicom_files:
            from malenia.infer.dicom_series import load_series

            datasets, warnings = load_series(list(dicom_files))
            series_uid, study_uid = str(datasets[0].SeriesInstanceUID), str(datasets[0].StudyInstanceUID)
        return ScanInfo(
            source=str(source),
            size=tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
            spacing=_vec3(image.GetSpacing()),
            origin=_vec3(image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
            enhancement=enhancement,
            was_dicom=bool(dicom_files),
            dicom_files=[str(f) for f in dicom_files or []],
            series_instance_uid=series_uid,
            study_instance_uid=study_uid,
            warnings=warnings,
        )

    def matches(self, image: sitk.Image, tol: float = 1e-4) -> bool:
        """True when `image` lies on this scan's grid (size exact; spacing, origin, direction within tol)."""
        return (
            tuple(image.GetSize()) == tuple(self.size)
            and all(math.isclose(a, b, abs_tol=tol) for a, b in zip(image.GetSpacing(), self.spacing))
            and all(math.isclose(a, b, abs_tol=tol) for a, b in zip(image.GetOrigin(), self.origin))
            and all(math.isclose(a, b, abs_tol=tol) for a, b in zip(image.GetDirection(), self.direction))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "enhancement": self.enhancement.to_json() if self.enhancement else None,
            "was_dicom": self.was_dicom,
            "dicom": {
                "series_instance_uid": self.series_instance_uid,
                "study_instance_uid": self.study_instance_uid,
                "files": len(self.dicom_files),
            } if self.was_dicom else None,
            "warnings": list(self.warnings),
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "ScanInfo":
        dicom = obj.get("dicom") or {}
        enh = obj.get("enhancement")
        return ScanInfo(
            source=str(obj["source"]),
            size=tuple(int(s) for s in obj["size"]),  # type: ignore[arg-type]
            spacing=_vec3(obj["spacing"]),
            origin=_vec3(obj["origin"]),
            direction=tuple(float(d) for d in obj["direction"]),
            enhancement=None if enh is None else Enhancement.from_json(enh),  # only null is none: {} is refused
            was_dicom=bool(obj.get("was_dicom", False)),
            series_instance_uid=dicom.get("series_instance_uid"),
            study_instance_uid=dicom.get("study_instance_uid"),
            warnings=[str(w) for w in obj.get("warnings", [])],
        )


@dataclass
class SegmentationResult:
    labels: sitk.Image  # integer label map on the input's grid: 0 background, lesion.label per lesion
    image: sitk.Image | None  # the input CT in HU (measurements, key slices); None if not kept
    scan: ScanInfo
    model: ModelInfo
    lesions: list[LesionResult] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form run details (config, timings)
    knowledge: dict[str, Any] | None = None  # the knowledge table in force (malenia.knowledge.site.origin_json)

    def lesion(self, label: int) -> LesionResult:
        for lesion in self.lesions:
            if lesion.label == label:
                return lesion
        raise KeyError(label)

    def to_json(self) -> dict[str, Any]:
        """The report body (without the per-file and per-segment parts that the writers add)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "format": REPORT_FORMAT,
            "model": self.model.to_json(),
            "scan": self.scan.to_json(),
            "lesions": [lesion.to_json() for lesion in self.lesions],
            **({"knowledge": self.knowledge} if self.knowledge else {}),
            **({"extra": self.extra} if self.extra else {}),
        }

    @staticmethod
    def from_json(obj: dict[str, Any], labels: sitk.Image | None = None, image: sitk.Image | None = None) -> "SegmentationResult":
        """Reads a report back (e.g. report.json beside lesions.nii.gz); images are passed in separately."""
        if obj.get("format") != REPORT_FORMAT:
            raise ValueError(f"not a Malenia segmentation report (format must be {REPORT_FORMAT!r})")
        major = str(obj.get("schema_version", "")).split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"report schema version {obj.get('schema_version')!r} is not readable by {SCHEMA_VERSION}")
        return SegmentationResult(
            labels=labels,  # type: ignore[arg-type]
            image=image,
            scan=ScanInfo.from_json(obj["scan"]),
            model=ModelInfo.from_json(obj["model"]),
            lesions=[LesionResult.from_json(x) for x in obj.get("lesions", [])],
            extra=dict(obj.get("extra", {})),
            knowledge=obj.get("knowledge"),
        )


@lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    with open(resources_dir() / SCHEMA_FILE, encoding="utf-8") as f:
        return json.load(f)


def validate_report(obj: dict[str, Any]) -> None:
    """Raises ValueError naming the first place where `obj` breaks Resources/report.schema.json."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(report_schema())
    validator = validator_cls(report_schema(), format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValueError(f"report.json does not match {SCHEMA_FILE} at {where}: {err.message}")
