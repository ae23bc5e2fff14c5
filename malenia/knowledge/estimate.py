"""Knowledge-table profiles estimated from annotated lesions (smoothed counts).

For a disease of organ o and an aspect a, the support S is the set of descriptions the workbook's
coding can express for o (plus "both kidneys"/"both lobes" for paired locations); for specific
features it is every finding plausible in o (vocabulary `organs`). Then

    P(id) = (count(id) + alpha) / (n + alpha * |S|)

with alpha = 1 for coded aspects and 0.5 for findings (a 25-finding vocabulary with alpha = 1
would flatten the rare, informative findings). A cell with k values (multi-valued quirk) and a
report with k findings count 1/k each. The five types not in the workbook come from
Resources/knowledge/expert_profiles.json.

A site profile may be estimated the same way from any annotated lesions (`malenia knowledge add --from-data`:
a dataset's reports, e.g. corrected lesions or rated nodules; `estimate_site_profile`). Its support is every
description valid for the organ (the vocabulary's, not the workbook's coding), so a description the lesions
never show keeps the smoothing's mass and stays reachable; an aspect no lesion describes comes out uniform,
which is what a hand-written profile gives an aspect it leaves out.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from malenia.aspects import ALL_DISEASES, ASPECTS, SEEN_DISEASES
from malenia.errors import InputError
from malenia.knowledge.table import NONE_FINDING, DiseaseProfile, KnowledgeTable
from malenia.knowledge.vocabulary import Vocabulary
from malenia.knowledge.workbook import _BOTH_SIDES, SHEETS, LesionRecord, code_map
from malenia.paths import knowledge_dir

ALPHA = 1.0
ALPHA_FINDINGS = 0.5
MAX_FINDING_COUNT = 3  # lesions with more findings count as 3 in finding_count

DISEASE_NAMES = {
    "colon_tumor": "colon tumor",
    "lung_tumor": "lung tumor",
    "liver_tumor": "liver tumor",
    "pancreas_tumor": "pancreas tumor",
    "kidney_cyst": "kidney cyst",
    "gallstone": "gallstone",
    "hepatic_vessel_tumor": "hepatic vessel tumor",
    "pancreas_cyst": "pancreas cyst",
    "kidney_tumor": "kidney tumor",
    "liver_cyst": "liver cyst",
    "gallbladder_tumor": "gallbladder tumor",
    "kidney_stone": "kidney stone",
}


def support(aspect: str, organ: str, vocab: Vocabulary) -> list[str]:
    if aspect == "specific_features":
        return vocab.ids_for_organ(aspect, organ)
    ids = list(code_map(aspect, organ).values())
    if aspect == "location" and organ in _BOTH_SIDES:
        ids.append(_BOTH_SIDES[organ])
    return ids


@dataclass
class Counts:
    """Weighted description counts of one disease (subtractable for leave-one-out)."""

    organ: str
    aspects: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    findings_per_lesion: Counter = field(default_factory=Counter)
    n_lesions: int = 0

    def add(self, rec: LesionRecord, sign: int = 1) -> None:
        self.add_attributes(rec.attributes, sign)

    def add_attributes(self, attributes: Mapping[str, list[str]], sign: int = 1) -> None:
        self.n_lesions += sign
        for aspect in ASPECTS:
            ids = attributes.get(aspect) or []
            for i in ids:
                self.aspects[aspect][i] += sign / len(ids)
        findings = [i for i in attributes.get("specific_features", []) if i != NONE_FINDING]
        if findings:
            self.findings_per_lesion[min(len(findings), MAX_FINDING_COUNT)] += sign

    def profile(self, vocab: Vocabulary, support_of: Callable[[str, str, Vocabulary], list[str]] | None = None
                ) -> dict[str, dict[str, float]]:
        """Smoothed counts over `support_of(aspect, organ, vocab)` (default: the workbook's coding) plus any
        description counted."""
        support_of = support_of or support
        out = {}
        for aspect in ASPECTS:
            counts = self.aspects[aspect]
            ids = list(dict.fromkeys(support_of(aspect, self.organ, vocab) + [i for i, c in counts.items() if c > 1e-9]))
            alpha = ALPHA_FINDINGS if aspect == "specific_features" else ALPHA
            total = sum(max(counts.get(i, 0.0), 0.0) for i in ids) + alpha * len(ids)
            out[aspect] = {i: (max(counts.get(i, 0.0), 0.0) + alpha) / total for i in ids}
        return out

    def finding_count(self) -> dict[int, float]:
        ks = range(1, MAX_FINDING_COUNT + 1)
        total = sum(max(self.findings_per_lesion[k], 0) for k in ks) + ALPHA_FINDINGS * len(ks)
        return {k: (max(self.findings_per_lesion[k], 0) + ALPHA_FINDINGS) / total for k in ks}


def organ_support(aspect: str, organ: str, vocab: Vocabulary) -> list[str]:
    """Every description of `aspect` valid for `organ` (a site profile's support)."""
    return vocab.ids_for_organ(aspect, organ)


@dataclass
class SiteEstimate:
    """A site profile's aspects estimated from annotated lesions (`estimate_site_profile`)."""

    profile: dict[str, dict[str, float]]
    finding_count: dict[int, float]
    lesions: int
    described: dict[str, int]  # per aspect, how many lesions describe it (0: the aspect is uniform)
    dropped: dict[str, int]  # descriptions left out: "free text", "unknown id", "other aspect", "other organ"

    def rationale(self, source: str) -> dict[str, str]:
        return {a: (f"estimated from {self.described[a]} of {self.lesions} annotated lesions ({source}), Laplace-"
                    f"smoothed (alpha={ALPHA_FINDINGS if a == 'specific_features' else ALPHA})" if self.described[a]
                    else f"not described by the {self.lesions} lesions ({source}): every description equally")
                for a in ASPECTS}


def estimate_site_profile(lesions: Iterable[Mapping[str, list[str | None]]], organ: str, vocab: Vocabulary) -> SiteEstimate:
    """Smoothed description counts of `lesions` (aspect -> description ids; None for free text) for a
    disease of `organ`. Ids the vocabulary lacks, or that describe another organ, are left out and
    counted in `dropped`; a lesion's aspect then counts only its valid descriptions."""
    counts, described, dropped, n = Counts(organ), Counter(), Counter(), 0
    for attributes in lesions:
        kept: dict[str, list[str]] = {}
        for aspect in ASPECTS:
            given = attributes.get(aspect) or []
            why = [_left_out(i, aspect, organ, vocab) for i in given]
            dropped.update(w for w in why if w)
            kept[aspect] = [i for i, w in zip(given, why) if not w]
            described[aspect] += bool(kept[aspect])
        counts.add_attributes(kept)
        n += 1
    if not n:
        raise InputError("no lesions to estimate a profile from")
    return SiteEstimate(counts.profile(vocab, organ_support), counts.finding_count(), n,
                        {a: described[a] for a in ASPECTS}, dict(dropped))


def _left_out(desc_id: str | None, aspect: str, organ: str, vocab: Vocabulary) -> str:
    """Why a lesion's description cannot count for a disease of `organ` ("" when it can)."""
    if desc_id is None:
        return "free text"
    if desc_id not in vocab:
        return "unknown id"
    if vocab.aspect_of(desc_id) != aspect:
        return "other aspect"
    return "" if vocab.entry(desc_id).applies_to(organ) else "other organ"


def count_records(records: Iterable[LesionRecord]) -> dict[str, Counts]:
    counts: dict[str, Counts] = {}
    for rec in records:
        counts.setdefault(rec.disease, Counts(rec.organ)).add(rec)
    return counts


def workbook_profile(key: str, counts: Counts, vocab: Vocabulary, sheet: str, source: str) -> DiseaseProfile:
    n = counts.n_lesions
    rationale = {a: f"estimated from {n} annotated {source} lesions (workbook sheet {sheet}), "
                    f"Laplace-smoothed (alpha={ALPHA_FINDINGS if a == 'specific_features' else ALPHA})" for a in ASPECTS}
    rationale["specific_features"] += "; findings read from the report text by keyword rules"
    return DiseaseProfile(
        key=key, name=DISEASE_NAMES.get(key, key.replace("_", " ")), organ=counts.organ, seen=key in SEEN_DISEASES,
        source="workbook", profile=counts.profile(vocab), rationale=rationale,
        finding_count=counts.finding_count(), extra={"cases": n},
    )


def load_expert_profiles(vocab: Vocabulary, path: str | Path | None = None) -> dict[str, DiseaseProfile]:
    path = Path(path) if path else knowledge_dir() / "expert_profiles.json"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read expert profiles {path}: {err}") from None
    return {k: DiseaseProfile.from_json(k, v, vocab, str(path)) for k, v in obj.get("diseases", {}).items()}


def build_table(records: list[LesionRecord], vocab: Vocabulary, expert: dict[str, DiseaseProfile] | None = None,
                workbook_name: str = "") -> KnowledgeTable:
    """Workbook-estimated profiles for the annotated types + expert profiles for the rest."""
    expert = load_expert_profiles(vocab) if expert is None else expert
    sheet_of = {spec.disease: (name, spec.source) for name, spec in SHEETS.items()}
    diseases: dict[str, DiseaseProfile] = {}
    for key, counts in count_records(records).items():
        sheet, source = sheet_of[key]
        diseases[key] = workbook_profile(key, counts, vocab, sheet, source)
    for key, prof in expert.items():
        diseases.setdefault(key, prof)
    missing = [d for d in ALL_DISEASES if d not in diseases]
    if missing:
        raise InputError(f"knowledge table would lack {missing}: neither in the workbook nor in the expert profiles")
    ordered = {k: diseases[k] for k in ALL_DISEASES} | {k: v for k, v in diseases.items() if k not in ALL_DISEASES}
    meta = {"note": "Per disease and aspect, a probability over vocabulary description ids. Built by "
                    "`malenia knowledge table`; see docs/knowledge.md.",
            "vocabulary_hash": vocab.hash, "workbook": workbook_name,
            "estimation": {"alpha": ALPHA, "alpha_findings": ALPHA_FINDINGS}}
    return KnowledgeTable(ordered, vocab, {}, meta)
