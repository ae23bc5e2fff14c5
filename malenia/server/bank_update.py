"""Free-text attribute descriptions from corrections -> rows of a new version's attribute bank.

A radiologist who types a description instead of picking one (Description.id is None) adds
knowledge the vocabulary lacks. After a job, every such text of its training cases that the new
model's bank does not hold yet is embedded with the bank's own text encoder
(AttributeBank.extend refuses another encoder) and saved into the version being registered.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable

from malenia.errors import MaleniaError
from malenia.model.folder import BANK


def add_free_text(model_folder: Path, free_text: Iterable[tuple[str, str]], encoder_name: str | None) -> list[str]:
    """Extends model_folder's bank in place; returns notes for the version (never raises for a bad bank)."""
    by_aspect: dict[str, list[str]] = defaultdict(list)
    for aspect, text in free_text:
        if text not in by_aspect[aspect]:
            by_aspect[aspect].append(text)
    if not by_aspect:
        return []
    try:
        from malenia.knowledge.bank import AttributeBank
        from malenia.knowledge.encoder import load_text_encoder

        path = model_folder / BANK
        bank = AttributeBank.load(path)
        before = len(bank)
        encoder = load_text_encoder(encoder_name)
        for aspect in sorted(by_aspect):
            bank.extend(by_aspect[aspect], aspect, encoder)
        added = len(bank) - before
        if added:
            bank.save(path)
        total = sum(len(v) for v in by_aspect.values())
        return [f"attribute bank: {added} new free-text description(s) embedded with {encoder.encoder_id} "
                f"({total - added} already present)"]
    except (MaleniaError, ImportError, OSError, ValueError) as err:
        return [f"attribute bank NOT extended with {sum(len(v) for v in by_aspect.values())} free-text "
                f"description(s): {str(err).splitlines()[0] if str(err) else type(err).__name__}"]
