"""Validation-only lesion types: a training disease's look in an organ where no training disease shows it.

Not in the paper. Every unseen test type is a look the training types have, met in an organ where they
do not have it: a kidney stone is a gallstone's calcific body in a kidney, a liver or pancreatic cyst a
kidney cyst's fluid in another organ, a kidney or gallbladder tumour a solid mass where training has only
cysts or stones. Whether a model finds such lesions is the zero-shot question, and no validation set built
from the training types alone asks it (docs/training.md, twenty-ninth round: a model lost zero-shot recall
that the validation sets did not see). These types ask it in combinations no unseen type takes, so that
choosing a model on them does not look at the test types (malenia.aspects.NOVEL_TYPES):

    liver_calcification     a gallstone's calcific body in liver parenchyma (calcified granuloma)
    pancreas_calcification  the same in the pancreas (chronic pancreatitis)
    lung_cyst               a kidney cyst's fluid in a lung (bronchogenic cyst)

Shape, density variation and margin are drawn from the look's profile; the location uniformly among the
organ's parts the anatomy has; the density is the look's organ-free one (calcific, fluid); the lesion
stands apart from neighbours and has no findings, which are organ-bound. The knowledge table has no
profile for them, so they are never a training disease, and the right name for one is "unclassified".

The same construction, in an organ no seen, unseen or novel type uses, gives training-only types
(malenia.aspects.TRANSPLANT_TYPES), an augmentation: every model up to 2.10.1 marks a calcific body in the
gallbladder and in no other organ (docs/training.md, thirtieth round), so the network reads the organ,
not the look; a second organ with that look is the signal it lacks. The vocabulary has no location in such
an organ, so the location is reported as free text (a description without id, which training embeds):

    spleen_calcification    a gallstone's calcific body in the spleen (calcified granuloma)
    stomach_mass            a soft-tissue mass on the stomach wall growing into the gastric fluid (a
                            polypoid gastric tumour): no training type is a solid mass in a fluid-filled
                            lumen, and no model up to 2.11.1 marks one in the gallbladder (docs/training.md,
                            forty-second round). Its shape, density variation and margin are the colon
                            tumour's, the one training disease of a hollow organ's wall; its density is soft
                            tissue on an absolute scale (gastric content is fluid, food or gas, no reference),
                            given as free text too (the vocabulary's densities name their organs)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from malenia.aspects import NOVEL_TYPES, TRANSPLANT_TYPES
from malenia.data.synthesis.anatomy import REGION_KEYS, organ_of_region
from malenia.data.synthesis.placement import PlacementError
from malenia.data.synthesis.profiles import PROFILES


@dataclass(frozen=True)
class NovelType:
    key: str
    look: str  # the training disease whose shape, density variation and margin are drawn
    density: str  # an organ-free density description
    free_location: tuple[str, str] | None = None  # (region, report text) where the vocabulary has no location
    free_density: str | None = None  # report text of `density` where the vocabulary has no such description

    @property
    def organ(self) -> str:
        return PROFILES[self.key].organ


NOVEL: dict[str, NovelType] = {t.key: t for t in (
    NovelType("liver_calcification", "gallstone", "density.calcific"),
    NovelType("pancreas_calcification", "gallstone", "density.calcific"),
    NovelType("lung_cyst", "kidney_cyst", "density.fluid"),
)}
TRANSPLANT: dict[str, NovelType] = {t.key: t for t in (
    NovelType("spleen_calcification", "gallstone", "density.calcific", ("spleen.parenchyma", "located in the spleen")),
    NovelType("stomach_mass", "colon_tumor", "density.soft_tissue", ("stomach.wall", "located in the stomach wall"),
              free_density="soft-tissue density, denser than the fluid in the lumen"),
)}

assert tuple(NOVEL) == NOVEL_TYPES, "malenia.aspects.NOVEL_TYPES and the novel looks must agree"
assert tuple(TRANSPLANT) == TRANSPLANT_TYPES, "malenia.aspects.TRANSPLANT_TYPES and the transplanted looks must agree"

# Location ids outside the vocabulary (region and report text), each a transplanted look's organ.
FREE_LOCATIONS: dict[str, str] = {f"location.{t.free_location[0]}": t.free_location[1]
                                  for t in TRANSPLANT.values() if t.free_location}
FREE_DENSITIES: dict[str, str] = {t.density: t.free_density for t in TRANSPLANT.values() if t.free_density}
FREE_TEXTS: dict[str, str] = {**FREE_LOCATIONS, **FREE_DENSITIES}  # every id a report gives as free text


def drawn_look(key: str) -> NovelType | None:
    """The novel or transplanted type `key` (a training look in another organ, no profile of its own), else None."""
    return NOVEL.get(key) or TRANSPLANT.get(key)


def look_of(key: str) -> str:
    """The training disease whose look a lesion type takes: itself unless novel or transplanted."""
    t = drawn_look(key)
    return t.look if t else key


def sample_novel_attributes(table, key: str, location_ok: Callable[[str], bool],
                            rng: np.random.Generator) -> dict[str, list[str]]:
    """One lesion's descriptions for novel or transplanted type `key`; `location_ok(location_id)`: the anatomy has
    that part. PlacementError when the anatomy has no part of the organ (another type is then drawn, as for any
    lesion). A free location's id is not in the vocabulary (FREE_LOCATIONS gives its report text)."""
    novel = drawn_look(key)
    assert novel is not None, f"{key} is neither a novel nor a transplanted type"
    attrs = table.sample_attributes(novel.look, rng)
    if novel.free_location:
        parts = [f"location.{novel.free_location[0]}"]
    else:
        parts = [f"location.{r}" for r in REGION_KEYS if organ_of_region(r) == novel.organ]
    parts = [p for p in parts if location_ok(p)]
    if not parts:
        raise PlacementError(f"the base has no {novel.organ} for a {key}")
    attrs["location"] = [parts[int(rng.integers(len(parts)))]]
    attrs["density"] = [novel.density]
    attrs["relationship"] = ["relationship.separate"]
    attrs["specific_features"] = ["specific_features.none"]
    return attrs
