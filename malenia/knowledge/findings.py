"""Keyword rules: free-text English CT report -> "specific features" vocabulary ids.

The authors' workbook codes seven aspects as integers; the eighth (specific features) is only in
the report text. Each rule is a list of regular expressions (case-insensitive) for one finding.
A match is ignored when negated: "no", "without", "absence of" or "not" earlier in the same
clause (not across a comma) within 40 characters ("No pancreatic ductal dilatation is observed."). A report with no
finding maps to `specific_features.none`. Rules are listed in docs/knowledge.md.
"""

from __future__ import annotations

import re

NONE_ID = "specific_features.none"

# id -> patterns. Order is the order findings are reported in.
FINDING_RULES: dict[str, tuple[str, ...]] = {
    "specific_features.calcification": (
        r"calcif",
        r"(hyperdens\w*|high[- ]attenuation|high[- ]density|hyperattenuat\w*)\s+(foci|focus|areas?|structures?)",
        r"(foci|focus|areas?) of (hyperdensity|high attenuation|hyperattenuation|high density)",
        r"(punctate|linear|tubular) (hyperdens\w*|high[- ]density)",
    ),
    "specific_features.necrosis": (
        r"necros|necrotic",
        r"(hypodense|low[- ]attenuation|hypoattenuating|low[- ]density) (areas|regions|foci)",
        r"internal (hypodense|low[- ]attenuation|hypoattenuating) (area|region)",
        r"areas? of (low attenuation|hypodensity|low density|hypoattenuation)",
    ),
    "specific_features.cystic_change": (r"\bcystic\b",),
    "specific_features.septation": (r"septat",),
    "specific_features.duct_dilatation": (r"duct[^.;]{0,40}dilat", r"dilat[^.;]{0,40}\bduct"),
    "specific_features.wall_thickening": (r"thicken",),
    "specific_features.luminal_narrowing": (r"lumin\w* (narrowing|stenosis)", r"narrowing of the (bowel )?lumen"),
    "specific_features.pleural_traction": (r"pleural (traction|retraction|indentation)",),
    "specific_features.cavitation": (r"cavit", r"\bcavity\b"),
    "specific_features.fat": (r"macroscopic fat", r"\bfat(ty)? (density|attenuation|component)", r"fat-containing"),
    "specific_features.capsule": (r"capsul",),
    "specific_features.vessel_invasion": (
        r"tumou?r thromb",
        r"(invad\w*|invasion of|encas\w*)[^.;]{0,30}(vein|arter|vessel|vascul)",
    ),
    "specific_features.hydronephrosis": (
        r"hydronephros",
        r"collecting system[^.;]{0,20}dilat",
        r"dilat\w*[^.;]{0,30}(renal pelvis|collecting system)",
    ),
    "specific_features.exophytic": (r"exophytic", r"outward[- ]protrud", r"protrud\w* beyond"),
    "specific_features.layering": (r"\bdependent\b", r"layering"),
    "specific_features.parenchymal_atrophy": (r"atroph",),
    "specific_features.lobulation": (r"lobulat",),
    "specific_features.vessel_convergence": (r"(vessel|vascular) convergence",),
    "specific_features.fat_stranding": (r"strand", r"exudat"),
    "specific_features.lymph_nodes": (r"lymph", r"small nodul\w*", r"nodular (shadows?|opacit\w*)", r"small nodules"),
    "specific_features.perilesional_vessels": (
        r"tortuous vessel",
        r"vascular tortuosity",
        r"vessels? (appear )?tortuous",
        r"vessels? travers\w*",
        r"traversing vessels",
    ),
    "specific_features.marked_enhancement": (r"marked enhancement", r"markedly enhanc"),
    "specific_features.obstruction": (r"air[- ]fluid levels?", r"fluid levels", r"markedly dilated"),
    "specific_features.bronchial_change": (r"bronch\w*",),
}

_COMPILED = {fid: tuple(re.compile(p, re.IGNORECASE) for p in pats) for fid, pats in FINDING_RULES.items()}
_NEGATION = re.compile(r"\b(no|without|absence of|not)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"[^.;]+")


def _negated(sentence: str, start: int) -> bool:
    clause = re.split(r"[,:]", sentence[:start])[-1]  # negation does not cross a comma
    return bool(_NEGATION.search(clause[-40:]))


def extract_findings(text: str | None) -> list[str]:
    """Specific-feature ids found in a report text (or [NONE_ID] when none)."""
    found: list[str] = []
    sentences = [m.group(0) for m in _SENTENCE.finditer(text or "")]
    for fid, patterns in _COMPILED.items():
        hit = any(
            not _negated(s, m.start())
            for s in sentences
            for p in patterns
            for m in p.finditer(s)
        )
        if hit:
            found.append(fid)
    return found or [NONE_ID]


# Neighbouring structures a report names when the lesion is closely related to them.
_ORGAN_WORDS = {
    "liver": r"liver|hepatic|perihepatic",
    "spleen": r"spleen|splenic",
    "pancreas": r"pancrea",
    "stomach": r"stomach|gastric",
    "duodenum": r"duoden",
    "bowel": r"bowel|intestin|mesenter",
    "psoas muscle": r"psoas",
    "adrenal gland": r"adrenal",
    "gallbladder": r"gallbladder",
    "kidney": r"kidney|renal",
    "uterus": r"uter",
    "bladder": r"(?<!gall)bladder",
    "pleura": r"pleura",
    "chest wall": r"chest wall",
    "mediastinum": r"mediastin",
    "abdominal wall": r"abdominal wall",
}
_RELATION = re.compile(r"closely related|indistinct|poorly defined|unclear|interface|demarcation|borders? with", re.IGNORECASE)


_OWN = {"colon": {"bowel"}}  # words that name the lesion's own organ


def related_organs(text: str | None, own_organ: str) -> list[str]:
    """Structures named in sentences that describe the lesion's relationship to its neighbours."""
    out: list[str] = []
    skip = {own_organ} | _OWN.get(own_organ, set())
    for s in (m.group(0) for m in _SENTENCE.finditer(text or "")):
        if not _RELATION.search(s):
            continue
        for name, pat in _ORGAN_WORDS.items():
            if name not in skip and name not in out and re.search(pat, s, re.IGNORECASE):
                out.append(name)
    return out
