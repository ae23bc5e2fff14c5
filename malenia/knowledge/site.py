"""The knowledge table in force: a model's table merged with site profiles, and its origin.

A model folder carries the table it was evaluated with (`MODEL/knowledge_table.json`). A site adds
a disease, or overrides one, with a profile file `<key>.json` (one disease object, the table's
fields) in a profile folder. Folders apply in this order, a later one overriding an earlier one:

    Resources/knowledge/diseases/        the installation's own profiles (if the folder exists)
    $MALENIA_KNOWLEDGE                   one or more folders (os.pathsep-separated)
    --knowledge DIR / the Slicer setting one or more folders named for this run

The model's `inference.json` may hold a "disease" block (malenia.knowledge.openset: the
"unclassified" rule fitted on the model's own attribute scores, and the weights of the aspects fitted
with it); it replaces the table's values.
`table.origin` then says which table, profiles and rule were used (report.json's "knowledge").
The model folder is a layer above this one: malenia.infer.site_table reads the model's table path and
rule and hands them in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from malenia.knowledge.inference import inference_params
from malenia.knowledge.table import KnowledgeTable
from malenia.paths import knowledge_dir

KNOWLEDGE_ENV = "MALENIA_KNOWLEDGE"
RULE_KEYS = ("min_typicality", "contradiction_fit")  # what a model's disease calibration may set


def builtin_profile_dir() -> Path:
    return knowledge_dir() / "diseases"


def env_dirs() -> list[Path]:
    value = os.environ.get(KNOWLEDGE_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def profile_dirs(explicit: Iterable[str | os.PathLike] | str | os.PathLike | None = None) -> list[Path]:
    """Every profile folder in force, in override order (later wins); one that does not exist (yet) holds no
    profiles (`missing_dirs` names them, for a warning)."""
    if isinstance(explicit, (str, os.PathLike)):
        explicit = [explicit]
    return [builtin_profile_dir(), *env_dirs(), *(Path(p) for p in explicit or [])]


def missing_dirs(explicit: Iterable[str | os.PathLike] | str | os.PathLike | None = None) -> list[Path]:
    """The folders named for the run or in $MALENIA_KNOWLEDGE that do not exist: a mistyped one would silently
    change which diseases can be named, so the commands that read profiles warn about them. (One that is a file is
    not missing: the table refuses it, KnowledgeTable.load.)"""
    return [p for p in profile_dirs(explicit)[1:] if not p.exists()]


def writable_dir(explicit: Iterable[str | os.PathLike] | str | os.PathLike | None = None) -> Path:
    """Where `malenia knowledge add|edit|remove` writes: the last folder named for the run, else
    the first of $MALENIA_KNOWLEDGE, else Resources/knowledge/diseases."""
    if isinstance(explicit, (str, os.PathLike)):
        explicit = [explicit]
    named = [Path(p) for p in explicit or []]
    if named:
        return named[-1]
    return (env_dirs() or [builtin_profile_dir()])[0]


def table_in_force(model, knowledge: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
                   rule: dict[str, Any] | None = None) -> KnowledgeTable:
    """`model`'s knowledge table (`knowledge_table_path`, `name`, `version`) with the site profiles and
    `rule`, the model's disease calibration (malenia.infer.site_table.model_disease_rule; None: the
    table's own rule)."""
    table = KnowledgeTable.load(model.knowledge_table_path, user_dir=None, site_dirs=profile_dirs(knowledge),
                                name=f"{model.name} knowledge table", version=model.version)
    own = {k: float(table.inference.get(k, 0.0)) for k in RULE_KEYS}  # the table's rule (annotation codes)
    weights = {str(a): float(w) for a, w in ((rule or {}).get("aspect_weights") or {}).items()}
    if weights:  # the aspects' weights fitted with the rule on the model's scores; the table's own kept beside
        table_weights = inference_params(table)["aspect_weights"]
        own["aspect_weights"] = {a: float(table_weights.get(a, 1.0)) for a in weights}
        # (weights come only with a rule, so `rule` is set here)
        table.inference = {**table.inference, "aspect_weights": {**(table.inference.get("aspect_weights") or {}),
                                                                 **weights}}
    if rule is not None:
        table.inference = {**table.inference, **{k: float(rule[k]) for k in RULE_KEYS}}
    table.origin["unclassified"] = {
        "min_typicality": float(table.inference.get("min_typicality", 0.0)),
        "contradiction_fit": float(table.inference.get("contradiction_fit", 0.0)),
        "fitted_on": (rule or {}).get("fitted_on", table.inference.get("fitted_on", "")),
        "source": "model" if rule is not None else "table",
        "table_rule": own,
        **({"aspect_weights": weights} if weights else {}),
        **({"inherited_from": rule["inherited_from"]} if rule and rule.get("inherited_from") else {}),
    }
    return table


def origin_json(table: KnowledgeTable) -> dict[str, Any]:
    """report.json's "knowledge" block: the table and profiles used, and the unclassified rule."""
    o = table.origin or {}
    t = o.get("table") or {"name": "", "version": "", "sha256": None}
    return {
        "table": {k: t.get(k) for k in ("name", "version", "sha256")},
        "profiles": [{k: p[k] for k in ("key", "name", "version", "sha256", "path", "overrides")}
                     for p in o.get("profiles", [])],
        "unclassified": o.get("unclassified") or {k: float(table.inference.get(k, 0.0)) for k in RULE_KEYS},
    }
