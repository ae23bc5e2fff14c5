"""Naming headroom: which aspect's reading costs a detected lesion its disease.

A lesion's name comes from eight per-aspect readings weighed against the knowledge table
(malenia.knowledge.inference.infer_disease). When the closest disease is wrong, the evaluation says so but
not why. Here each detected lesion is re-named eight more times, each time with one aspect's scores
replaced by the descriptions its reference report gives (the annotation's exact codes, as the table was
fitted on: malenia.knowledge.inference.one_hot_matches), everything else as `segment` read it, and once with
every aspect replaced. The share of lesions whose closest disease is then right, against the share as read,
is how much a better reading of that aspect could give the names, with the masks as they are: the lever a
model round should aim at. The appearance check's exclusions stay as `segment` made them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from malenia.aspects import ASPECT_NAMES, ASPECTS

AS_READ = "as read"
ALL_ASPECTS = "all aspects"


def closest_if_read(scores: Mapping[str, Mapping[str, float]], reference: Mapping[str, Sequence[str]], table,
                    ruled_out: Iterable[str] = ()) -> dict[str, str | None]:
    """{aspect: the closest disease with that aspect read as `reference` gives it ({aspect: [description id]})}
    for every aspect (one the reference does not describe with vocabulary ids stays as read), and ALL_ASPECTS
    with every described aspect replaced."""
    from malenia.knowledge.inference import infer_disease, one_hot_matches

    ruled_out = tuple(ruled_out)
    exact = one_hot_matches({a: [i for i in ids if i in table.vocab] for a, ids in reference.items()})

    def closest(matches) -> str | None:
        post = infer_disease(matches, table, ruled_out)
        return post.alternatives[0][0] if post.unclassified and post.alternatives else (
            None if post.unclassified else post.name)

    as_read = closest(scores)
    out: dict[str, str | None] = {a: closest({**scores, a: exact[a]}) if a in exact else as_read for a in ASPECTS}
    out[ALL_ASPECTS] = closest({**scores, **exact})
    return out


def reference_ids(report_lesion) -> dict[str, list[str]]:
    """A reference lesion's description ids per aspect (free-text descriptions left out)."""
    return {a: [d.id for d in report_lesion.attributes.get(a, []) if d.id] for a in ASPECTS}


def summarise(lesions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per lesion type and over all ("all"): detected lesions with a headroom entry, and how many have the right
    closest disease as read, with each aspect read as annotated, and with all of them."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for les in lesions:
        alt = les.get("closest_if_read")
        if not alt:
            continue
        for key in (str(les["disease"]), "all"):
            row = counts[key]
            row["detected"] += 1
            row[AS_READ] += int(les["pred_closest"] == les["disease"])
            for aspect, name in alt.items():
                row[aspect] += int(name == les["disease"])
    ordered = sorted(k for k in counts if k != "all") + (["all"] if "all" in counts else [])
    return {k: dict(counts[k]) for k in ordered}


def markdown(summary: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    """Rows: as read, each aspect read as annotated, all of them; columns: lesion types and all (right / detected)."""
    if not summary:
        return []
    types = list(summary)
    rows = [AS_READ, *ASPECTS, ALL_ASPECTS]
    head = "| closest disease right, with | " + " | ".join(types) + " |"
    lines = ["", "Naming headroom: detected lesions whose closest disease is right as `segment` read them, and if one "
             "aspect (or every aspect) were read as the reference report annotates it, the masks unchanged "
             "(malenia.evaluate.headroom):", "", head, "|---|" + "---|" * len(types)]
    for r in rows:
        lines.append(f"| {ASPECT_NAMES.get(r, r)} | " + " | ".join(_cell(summary[t], r) for t in types) + " |")
    return lines


def _cell(row: Mapping[str, int], key: str) -> str:
    return f"{row.get(key, 0)} / {row.get('detected', 0)}"
