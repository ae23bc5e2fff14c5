"""Synthetic cases and datasets: anatomy (phantom or real base) + lesions sampled from the knowledge table.

One case: draw its lesions' diseases from the split's pool, sample each lesion's attributes from
its disease profile (KnowledgeTable.sample_attributes), fix the scan's phase from the first
lesion's enhancement draw (every lesion then reports that phase), build or copy the anatomy in
that phase, and render the lesions one by one. A lesion whose location the anatomy lacks (e.g.
a rectum outside the field of view) is re-drawn from the profile conditioned on an available
location; one that cannot be placed is re-drawn a few times, then another disease is drawn.
Each case has its own generator seeded by (seed, case index): same seed, same dataset.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import SimpleITK as sitk

from malenia.aspects import ALL_DISEASES, ASPECTS, NOVEL_TYPES, SEEN_DISEASES, TRANSPLANT_TYPES, UNSEEN_DISEASES
from malenia.data.dataset import DATASET_FILE, Case, CaseReport, DatasetIndex, Description, LesionReport, write_case, write_dataset_index
from malenia.data.synthesis.anatomy import Anatomy, organ_of_region, region_of_location
from malenia.data.synthesis.enhancement import apply_contrast
from malenia.data.synthesis.features import Canvas
from malenia.data.synthesis.lesion import render_lesion
from malenia.data.synthesis.mixing import AttributeMix
from malenia.data.synthesis.novel import FREE_TEXTS, drawn_look, look_of, sample_novel_attributes
from malenia.data.synthesis.phantom import make_phantom
from malenia.data.synthesis.placement import PlacementError
from malenia.data.synthesis.profiles import PROFILES
from malenia.errors import InputError, OutputError
from malenia.paths import resources_dir

PHANTOM = "phantom"
DEFAULT_SIZE = (128, 128, 128)
DEFAULT_SPACING = (3.0, 3.0, 3.0)
SPLIT_FORMAT = "malenia-split/1"
MIN_REGION_ML = 0.3
ATTRIBUTE_TRIES = 12
DISEASE_TRIES = 6


@dataclass
class LesionSpec:
    """A lesion to plant: its disease and, optionally, explicit attribute ids (else sampled)."""

    disease: str
    attributes: dict[str, list[str]] | None = None
    radius_mm: float | None = None  # else drawn from the disease's size distribution


@dataclass
class BaseSource:
    """Where a case's anatomy comes from: the phantom generator or one real base scan."""

    name: str  # "phantom" or the base folder
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    host_floor: bool = False  # relative densities against the parenchyma floor (malenia.data.synthesis.lesion)
    diameters_mm: dict[str, tuple[float, float]] = field(default_factory=dict)  # per disease, instead of its profile's
    _base: Anatomy | None = field(default=None, repr=False)

    @property
    def is_phantom(self) -> bool:
        return self.name == PHANTOM

    def base_phase(self) -> str | None:
        return None if self.is_phantom else self._load().phase

    def _load(self) -> Anatomy:
        if self._base is None:
            from malenia.data.synthesis.bases import fit_size, load_base, resample

            anat = load_base(self.name)
            if self.spacing is not None:
                anat = resample(anat, self.spacing)
            if self.size is not None:
                anat = fit_size(anat, self.size)
            self._base = anat
        return self._base

    def anatomy(self, rng: np.random.Generator, phase: str) -> tuple[Anatomy, dict[str, Any]]:
        if self.is_phantom:
            anat = make_phantom(rng, self.size or DEFAULT_SIZE, self.spacing or DEFAULT_SPACING, phase)
            info: dict[str, Any] = {"base": PHANTOM, "contrast_phase": anat.info["contrast_phase"],
                                    "noise_std": round(anat.info["noise_std"], 2)}
        else:
            anat = self._load().copy()
            info = {"base": self.name, "base_phase": anat.phase}
            if phase == "contrast" and anat.phase != "contrast":
                info["contrast_gain_hu"] = anat.info["contrast_gain_hu"] = apply_contrast(anat, rng)
        anat.info["host_floor"] = self.host_floor
        anat.info["diameters_mm"] = self.diameters_mm
        return anat, info


def _table():
    from malenia.knowledge.table import KnowledgeTable

    return KnowledgeTable.load()


def _vocab():
    from malenia.knowledge.vocabulary import Vocabulary

    return Vocabulary.load()


def _phase_of(enhancement_id: str) -> str:
    return "contrast" if enhancement_id == "enhancement.contrast" else "non_contrast"


def _region_ok(anat: Anatomy, region: str) -> bool:
    return region != "kidney.bilateral" and anat.region(region).any() and anat.region_volume_ml(region) >= MIN_REGION_ML


def _location_ok(anat: Anatomy, location_id: str) -> bool:
    region = region_of_location(location_id)
    if region == "kidney.bilateral":
        return _region_ok(anat, "kidney.left") and _region_ok(anat, "kidney.right")
    return _region_ok(anat, region)


KNOWN_TYPES = ", ".join(ALL_DISEASES + NOVEL_TYPES + TRANSPLANT_TYPES)


def _sample_for_anatomy(table, disease: str, anat: Anatomy, rng: np.random.Generator, notes: list[str]) -> dict[str, list[str]]:
    """Attributes from the disease profile, conditioned on a location this anatomy has."""
    if drawn_look(disease):
        return sample_novel_attributes(table, disease, lambda loc: _location_ok(anat, loc), rng)
    for _ in range(ATTRIBUTE_TRIES):
        attrs = table.sample_attributes(disease, rng)
        if _location_ok(anat, attrs["location"][0]):
            return attrs
    profile = table.profile(disease)["location"]
    ok = [i for i in profile if _location_ok(anat, i)]
    if not ok:
        raise PlacementError(f"the base has none of the locations of {disease}")
    p = np.array([profile[i] for i in ok])
    attrs["location"] = [ok[int(rng.choice(len(ok), p=p / p.sum()))]]
    notes.append("location drawn among the locations this base has")
    return attrs


def synthesize_case(case_id: str, source: BaseSource, lesions: Sequence[LesionSpec | str], rng: np.random.Generator,
                    table=None, vocab=None, phase: str | None = None, disease_pool: Sequence[str] | None = None,
                    mix: AttributeMix | None = None) -> Case:
    """One synthetic case. `lesions` are diseases (attributes sampled from `table`) or LesionSpecs.

    phase: "contrast"/"non_contrast"; default: the first lesion's enhancement (explicit or drawn).
    A lesion that cannot be placed is replaced by another disease of `disease_pool` (when given); one that still
    cannot (a third stone in a small gallbladder) is left out and named in the report's `lesions_not_placed`, as
    long as another lesion of the case fits (a case without any is an error).
    mix: re-draws sampled lesions' organ-agnostic attributes (malenia.data.synthesis.mixing).
    """
    vocab = vocab or _vocab()
    specs = [s if isinstance(s, LesionSpec) else LesionSpec(s) for s in lesions]
    for s in specs:
        if s.disease not in PROFILES:
            raise InputError(f"unknown disease {s.disease!r}; known: {KNOWN_TYPES}")
    if any(s.attributes is None for s in specs) and table is None:
        table = _table()
    if phase is None:  # a novel or transplanted type's scan phase is drawn as its look's
        first = specs[0].attributes or table.sample_attributes(look_of(specs[0].disease), rng)
        phase = _phase_of((first.get("enhancement") or ["enhancement.non_contrast"])[0])
    base_phase = source.base_phase()
    if base_phase == "contrast":
        phase = "contrast"  # a contrast base cannot be made non-contrast
    anat, base_info = source.anatomy(rng, phase)
    enh_id = "enhancement.contrast" if phase == "contrast" else "enhancement.non_contrast"
    canvas = Canvas(anat.image.copy(), anat.organs.copy(), np.zeros(anat.shape, np.uint16))
    reports: list[LesionReport] = []
    not_placed: list[dict[str, str]] = []
    for spec in specs:
        twins, last = _place_spec(case_id, spec, anat, canvas, len(reports), enh_id, table, vocab, rng, disease_pool, mix)
        reports.extend(twins)
        if twins:
            continue
        if spec.attributes is not None:  # an explicit lesion (the demo's) is never left out
            raise InputError(f"case {case_id}: cannot place a {spec.disease} lesion in this base ({last})")
        not_placed.append({"disease": spec.disease, "reason": last})
    if not reports:
        first = not_placed[0]
        raise InputError(f"case {case_id}: cannot place a {first['disease']} lesion in this base ({first['reason']})")
    if not_placed:
        base_info = base_info | {"lesions_not_placed": not_placed}
    return _case(case_id, anat, canvas, reports, enh_id, vocab, base_info, source)


def _place_spec(case_id: str, spec: LesionSpec, anat: Anatomy, canvas: Canvas, label: int, enh_id: str, table, vocab,
                rng: np.random.Generator, disease_pool: Sequence[str] | None,
                mix: AttributeMix | None) -> tuple[list[LesionReport], str]:
    """Renders one lesion (two for a bilateral kidney location) with labels after `label`, re-drawing its
    attributes and placement up to DISEASE_TRIES times: (its reports, "") or ([], the last placement error)."""
    disease, last = spec.disease, ""
    for attempt in range(DISEASE_TRIES):
        notes: list[str] = []
        try:
            if spec.attributes is not None:  # explicit: only the placement is re-drawn
                attrs = {a: list(v) for a, v in spec.attributes.items()}
                mixed: list[str] = []
                if not _location_ok(anat, attrs["location"][0]):
                    raise InputError(f"case {case_id}: the base has no {region_of_location(attrs['location'][0])} "
                                     f"for the {disease}")
            else:
                attrs = _sample_for_anatomy(table, disease, anat, rng, notes)
                mixed = mix.apply(attrs, rng) if mix is not None else []
            attrs["enhancement"] = [enh_id]
            region = region_of_location(attrs["location"][0])
            regions = ["kidney.left", "kidney.right"] if region == "kidney.bilateral" else [region]
            snapshot = (canvas.image.copy(), canvas.organs.copy(), canvas.lesions.copy())
            twins: list[LesionReport] = []
            try:
                for r in regions:
                    used, extra = render_lesion(anat, canvas, label + 1 + len(twins), disease, attrs, rng, vocab, region=r,
                                                 radius_mm=spec.radius_mm if disease == spec.disease else None)
                    if notes:
                        extra["notes"] = notes
                    if mixed:
                        extra["mixed"] = mixed
                    if len(regions) > 1:
                        extra["bilateral_twin"] = len(twins)
                    twins.append(_lesion_report(label + 1 + len(twins), disease, used, extra, vocab))
            except PlacementError:
                canvas.image, canvas.organs, canvas.lesions = snapshot
                raise
            return twins, ""
        except PlacementError as err:
            last = str(err)
            if spec.attributes is None and attempt >= DISEASE_TRIES // 2 and disease_pool:
                disease = str(rng.choice(list(disease_pool)))
    return [], last


def _lesion_report(label: int, disease: str, used: dict[str, list[str]], extra: dict[str, Any], vocab) -> LesionReport:
    attrs = {a: [Description(FREE_TEXTS[i]) if i in FREE_TEXTS else Description(vocab.text(i), i)
                 for i in used.get(a, [])] for a in ASPECTS}
    return LesionReport(label, disease, attrs, {"synthesis": extra})


def _case(case_id: str, anat: Anatomy, canvas: Canvas, reports: list[LesionReport], enh_id: str, vocab,
          base_info: dict[str, Any], source: BaseSource) -> Case:
    def image(arr: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(anat.spacing)
        img.SetOrigin(anat.origin)
        img.SetDirection(anat.direction)
        return img

    hu = np.clip(np.round(canvas.image), -1024, 3071).astype(np.int16)
    max_lab = int(canvas.lesions.max())
    les = canvas.lesions.astype(np.uint8 if max_lab < 256 else np.uint16)
    organs = canvas.organs.astype(np.uint8 if int(canvas.organs.max()) < 256 else np.uint16)
    present = sorted(int(v) for v in np.unique(organs) if v)
    report = CaseReport(
        case_id=case_id,
        lesions=reports,
        enhancement=Description(vocab.text(enh_id), enh_id),
        source=f"malenia synth ({'phantom' if source.is_phantom else 'real base'})",
        extra={"synthesis": base_info, "organ_labels": {str(k): anat.names[k] for k in present if k in anat.names}},
    )
    return Case(case_id, image(hu), image(les), report, image(organs))


# -- datasets --------------------------------------------------------------------------------
def splits_dir() -> Path:
    return resources_dir() / "splits"


def load_split(name_or_path: str) -> dict[str, Any]:
    """A split protocol: Resources/splits/<name>.json or a path to such a file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = splits_dir() / f"{name_or_path}.json"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in splits_dir().glob("*.json"))
        raise InputError(f"split protocol not found: {name_or_path} (built-in: {', '.join(known)})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(obj, dict) or obj.get("format") != SPLIT_FORMAT or not isinstance(obj.get("diseases"), dict):
        raise InputError(f"{path}: not a Malenia split file (format {SPLIT_FORMAT!r} with 'diseases')")
    for split, ds in obj["diseases"].items():
        unknown = sorted(set(ds) - set(ALL_DISEASES) - set(NOVEL_TYPES) - set(TRANSPLANT_TYPES))
        if unknown:
            raise InputError(f"{path}: split {split!r} names unknown diseases {unknown}")
    return obj


def parse_diseases(text: str) -> list[str]:
    groups = {"all": list(ALL_DISEASES), "seen": list(SEEN_DISEASES), "unseen": list(UNSEEN_DISEASES),
              "novel": list(NOVEL_TYPES), "transplant": list(TRANSPLANT_TYPES)}
    out: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        for d in groups.get(item, [item]):
            if d not in PROFILES:
                raise InputError(f"unknown disease {d!r}; known: {KNOWN_TYPES} (or all, seen, unseen, novel, transplant)")
            if d not in out:
                out.append(d)
    if not out:
        raise InputError("no diseases given")
    return out


def assign_splits(n_cases: int, diseases: Sequence[str], protocol: dict[str, Any], val_fraction: float, test_fraction: float,
                  rng: np.random.Generator) -> tuple[list[str], dict[str, list[str]]]:
    """Split of each case index, and each split's disease pool (requested diseases the split allows)."""
    pools = {s: [d for d in diseases if d in protocol["diseases"].get(s, [])] for s in ("train", "val", "test")}
    want = {"test": round(n_cases * test_fraction) if pools["test"] else 0,
            "val": round(n_cases * val_fraction) if pools["val"] else 0}
    if not pools["train"]:
        rest_to = "test" if pools["test"] else "val"
        want[rest_to] = n_cases - (want["val"] if rest_to == "test" else want["test"])
    want["train"] = n_cases - want["val"] - want["test"]
    if want["train"] > 0 and not pools["train"] or min(want.values()) < 0:
        raise InputError(f"the diseases {list(diseases)} do not fit split protocol {protocol.get('name')!r}")
    order = rng.permutation(n_cases)
    split_of = [""] * n_cases
    pos = 0
    for s in ("train", "val", "test"):
        for i in order[pos:pos + want[s]]:
            split_of[int(i)] = s
        pos += want[s]
    return split_of, pools


def parse_range(text: str | int) -> tuple[int, int]:
    s = str(text)
    try:
        lo, hi = (s.split("-", 1) if "-" in s else (s, s))
        out = (int(lo), int(hi))
    except ValueError:
        raise InputError(f"--lesions-per-case must be K or A-B, got {text!r}") from None
    if out[0] < 1 or out[1] < out[0] or out[1] > 20:
        raise InputError(f"--lesions-per-case must be between 1 and 20, got {text!r}")
    return out


MAX_DIAMETER_MM = 200.0


def parse_diameters(items: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    """`--diameter DISEASE=LO-HI` (repeatable) -> {disease: (lo, hi)} mm; a clear error for anything else."""
    out: dict[str, tuple[float, float]] = {}
    for item in items or ():
        disease, _, span = str(item).partition("=")
        try:
            lo, hi = (float(v) for v in span.split("-", 1))
        except ValueError:
            raise InputError(f"--diameter must be DISEASE=LO-HI in mm (for example liver_tumor=5-15), got {item!r}") from None
        if disease not in PROFILES:
            raise InputError(f"--diameter: unknown disease {disease!r}; known: {KNOWN_TYPES}")
        if not 0 < lo <= hi <= MAX_DIAMETER_MM:
            raise InputError(f"--diameter {item!r}: need 0 < LO <= HI <= {MAX_DIAMETER_MM:g} mm")
        if disease in out:
            raise InputError(f"--diameter names {disease} twice")
        out[disease] = (lo, hi)
    return out


def synthesize_dataset(out: str | Path, bases: Sequence[str], diseases: Sequence[str], n_cases: int, seed: int,
                       lesions_per_case: tuple[int, int] = (1, 3), size: tuple[int, int, int] | None = None,
                       spacing: tuple[float, float, float] | None = None, split: str = "zero_shot",
                       val_fraction: float = 0.1, test_fraction: float = 0.2, name: str | None = None,
                       overwrite: bool = False, progress: Callable[[str], None] | None = None,
                       mix_attributes: float = 0.0, shard: tuple[int, int] | None = None,
                       host_floor: bool = False, mix_density: float = 0.0,
                       diameters_mm: dict[str, tuple[float, float]] | None = None) -> DatasetIndex:
    """Writes a whole synthetic dataset to `out` (it appears complete or not at all). `mix_attributes`: the
    share of lesions whose shape, density variation and margin are drawn apart from their disease
    (malenia.data.synthesis.mixing; 0 keeps every lesion's profile draw); `mix_density` likewise for the density
    level against the host. `host_floor`: relative densities
    against a parenchyma no fainter than its floor (malenia.data.synthesis.lesion; off: the datasets of model
    2.11.1 and earlier, byte for byte). `diameters_mm`: per disease, the range its diameters are drawn from instead
    of its profile's (malenia.data.synthesis.profiles; `synth --diameter`). `shard` (k, n): only the cases
    i with i % n == k - 1 of the n_cases dataset, with that dataset's ids and splits, so that n processes write
    parts that merge (scripts/merge_datasets.py) into exactly the dataset one process writes."""
    from malenia.atomic import atomic_dir

    if n_cases < 1:
        raise InputError(f"--cases must be at least 1, got {n_cases}")
    k, n = shard or (1, 1)
    if not 1 <= k <= n <= n_cases:
        raise InputError(f"--shard K/N needs 1 <= K <= N <= --cases ({n_cases}), got {k}/{n}")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise InputError("validation and test fractions must be in [0, 1) and sum below 1")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists (use --overwrite to replace it)")
    protocol = load_split(split)
    table, vocab = _table(), _vocab()
    profiled = [d for d in diseases if not drawn_look(d)]  # a novel or transplanted type has no profile, by design
    for d in profiled:
        table.disease(d)  # clear error for a disease the table lacks
    mix = AttributeMix.of(table, profiled, mix_attributes, mix_density)
    diameters_mm = dict(diameters_mm or {})
    for d in diameters_mm:
        if d not in diseases:
            raise InputError(f"--diameter names {d}, which --diseases does not draw ({', '.join(diseases)})")
    sources = [BaseSource(PHANTOM if b == PHANTOM else str(b), size, spacing, host_floor, diameters_mm)
               for b in _expand_bases(bases)]
    split_of, pools = assign_splits(n_cases, diseases, protocol, val_fraction, test_fraction, np.random.default_rng([seed, 1 << 30]))
    width = max(4, len(str(n_cases - 1)))
    prefix = name or out.name
    cases: list[str] = []
    case_diseases: dict[str, list[str]] = {}
    split_cases: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    try:
        with atomic_dir(out, overwrite=overwrite, replaces=DATASET_FILE) as staging:
            for i in range(k - 1, n_cases, n):
                t0 = time.perf_counter()
                rng = np.random.default_rng([seed, i])
                pool = pools[split_of[i]]
                k = int(rng.integers(lesions_per_case[0], lesions_per_case[1] + 1))
                picks = [str(d) for d in rng.choice(pool, size=k)]
                case_id = f"{prefix}_{i:0{width}d}"
                case = synthesize_case(case_id, sources[i % len(sources)], picks, rng, table, vocab, disease_pool=pool,
                                       mix=mix)
                write_case(staging, case)
                cases.append(case_id)
                split_cases[split_of[i]].append(case_id)
                case_diseases[case_id] = [les.disease for les in case.report.lesions]
                if progress:
                    progress(f"[{i + 1}/{n_cases}] {case_id} ({split_of[i]}): {', '.join(case_diseases[case_id])} "
                             f"in {time.perf_counter() - t0:.2f} s")
            index = DatasetIndex(
                name=prefix, cases=cases, split={k: v for k, v in split_cases.items() if v},
                description=f"synthetic lesions ({', '.join(diseases)}) on {', '.join(s.name for s in sources)}; protocol {protocol.get('name', split)}",
                extra={"generator": "malenia synth", "seed": seed, "bases": [s.name for s in sources], "diseases": list(diseases),
                       "protocol": protocol.get("name", split), "split_diseases": pools, "lesions_per_case": list(lesions_per_case),
                       "size": list(size) if size else None, "spacing": list(spacing) if spacing else None,
                       "vocabulary_hash": vocab.hash, "case_diseases": case_diseases}
                      | ({"mix_attributes": mix.to_json()} if mix.active or mix.density_active else {})
                      | ({"host_floor": True} if host_floor else {})
                      | ({"diameters_mm": {d: list(r) for d, r in diameters_mm.items()}} if diameters_mm else {})
                      | ({"shard": [k, n], "cases_in_all_shards": n_cases} if shard else {}))
            write_dataset_index(staging, index)
    except FileExistsError:
        raise OutputError(f"{out} exists (use --overwrite to replace it)") from None
    return index


def _expand_bases(bases: Sequence[str]) -> list[str]:
    from malenia.data.synthesis.bases import find_bases

    out: list[str] = []
    for b in bases:
        out.extend([PHANTOM] if b == PHANTOM else [str(p) for p in find_bases(b)])
    if not out:
        raise InputError("no base given (--base phantom or a folder)")
    return out


# -- demo ------------------------------------------------------------------------------------
DEMO_LESIONS = (
    LesionSpec("liver_tumor", {  # seen
        "location": ["location.liver.right_lobe"], "shape": ["shape.irregular"], "density": ["density.hypodense.liver"],
        "density_variation": ["density_variation.heterogeneous"], "surface": ["surface.ill_defined"],
        "enhancement": ["enhancement.contrast"], "relationship": ["relationship.separate"],
        "specific_features": ["specific_features.necrosis"]}, radius_mm=22.0),
    LesionSpec("kidney_tumor", {  # unseen
        "location": ["location.kidney.left"], "shape": ["shape.irregular"], "density": ["density.hypodense.kidney"],
        "density_variation": ["density_variation.heterogeneous"], "surface": ["surface.ill_defined"],
        "enhancement": ["enhancement.contrast"], "relationship": ["relationship.separate"],
        "specific_features": ["specific_features.necrosis", "specific_features.calcification"]}, radius_mm=17.0),
    LesionSpec("pancreas_cyst", {  # unseen
        "location": ["location.pancreas.head"], "shape": ["shape.round"], "density": ["density.hypodense.pancreas"],
        "density_variation": ["density_variation.homogeneous"], "surface": ["surface.well_defined"],
        "enhancement": ["enhancement.contrast"], "relationship": ["relationship.separate"],
        "specific_features": ["specific_features.none"]}, radius_mm=11.0),
)


def make_demo_case(seed: int = 0) -> Case:
    """A deterministic contrast-enhanced phantom CT (128^3, 3 mm) with three planted lesions:
    a liver tumour (seen type), a kidney tumour and a pancreatic cyst (unseen types)."""
    rng = np.random.default_rng([seed, 20250])
    return synthesize_case(f"demo_{seed}", BaseSource(PHANTOM), list(DEMO_LESIONS), rng, table=None, vocab=_vocab(),
                           phase="contrast")


def print_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
