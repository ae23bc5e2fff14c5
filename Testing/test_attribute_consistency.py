"""A lesion's density is read against the organ its location names, and its specific feature is one plausible
there (malenia.infer.matching.BankMatcher.host_row).

Density descriptions name the host organ ("higher density than the bowel wall"). Read apart from the location,
the shipped model reported a colon tumour "in the pancreatic tail" with a density "higher than the bowel wall"
(seen_test_0005) and a liver cyst "in the ascending colon", "lower density than the renal parenchyma"
(unseen_test_0045). The vocabulary lists the organs where a specific feature is plausible; read alone, the
feature was "layering" (gallbladder, kidney) for 8 lesions placed in the liver or colon on the validation sets.
"""

import numpy as np
import pytest

from malenia.aspects import organ_of


@pytest.fixture(scope="module")
def matcher():
    from malenia.infer.matching import BankMatcher
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary

    vocab = Vocabulary.load()
    ids = vocab.ids() + ["free.location.spleen"]  # a free-text location: no organ the vocabulary knows
    aspects = [vocab.aspect_of(i) for i in ids[:-1]] + ["location"]
    texts = [vocab.text(i) for i in ids[:-1]] + ["located in the spleen"]
    bank = AttributeBank(ids, texts, aspects, np.zeros((len(ids), 4), np.float32), "test", vocab.hash)
    return BankMatcher(bank, KnowledgeTable.load(vocab=vocab), alternatives=3)


def _distribution(matcher, scores: dict[str, float]) -> np.ndarray:
    """Every aspect's mass on its first row, except the aspects `scores` names (their other rows 0)."""
    ids = matcher.bank.ids
    out = np.zeros(len(ids), np.float32)
    for rows in matcher.rows.values():
        if not any(ids[r] in scores for r in rows):
            out[rows[0]] = 1.0
    for desc_id, p in scores.items():
        out[ids.index(desc_id)] = p
    return out


def _density_organ(desc_id: str | None) -> str | None:
    from malenia.knowledge.measured_attributes import density_parts

    return density_parts(desc_id)[1] if desc_id else None


def test_the_density_names_the_locations_organ(matcher):
    """seen_test_0005's scores: the location stays (its vote), the density is its best of the pancreas."""
    d = _distribution(matcher, {"location.pancreas.tail": 0.313, "location.colon.descending": 0.313,
                                "location.pancreas.body": 0.163, "location.kidney.left": 0.013,
                                "density.hyperdense.colon": 0.311, "density.hyperdense.pancreas": 0.225,
                                "density.isodense.pancreas": 0.113, "density.isodense.colon": 0.068})
    att = matcher.attributes(d)
    assert (att["location"].id, att["density"].id) == ("location.pancreas.tail", "density.hyperdense.pancreas")
    # each description keeps its own score; the density read alone is still listed, as the runner-up
    assert att["density"].score == pytest.approx(0.225 / (0.311 + 0.225 + 0.113 + 0.068), rel=1e-5)
    assert [a.id for a in att["density"].alternatives] == ["density.hyperdense.colon", "density.isodense.pancreas",
                                                           "density.isodense.colon"]


@pytest.mark.parametrize("scores, aspect, want", [
    # unseen_test_0045's pattern: the best kidney density is not reported for a lesion placed in the liver
    ({"location.liver.right_lobe": 0.465, "location.kidney.right": 0.314, "density.hypodense.kidney": 0.198,
      "density.hypodense.colon": 0.122, "density.hypodense.liver": 0.1, "density.fluid": 0.11},
     "density", "density.fluid"),
    # seen_verify_0035's scores: "layering" (gallbladder, kidney) is not reported for a lesion in the liver
    ({"location.liver.right_lobe": 0.7, "location.kidney.left": 0.3, "specific_features.layering": 0.236,
      "specific_features.none": 0.218, "specific_features.calcification": 0.144,
      "specific_features.wall_thickening": 0.1},
     "specific_features", "specific_features.none"),
])
def test_another_organs_reading_is_not_reported_in_the_liver(matcher, scores, aspect, want):
    att = matcher.attributes(_distribution(matcher, scores))
    assert (att["location"].id, att[aspect].id) == ("location.liver.right_lobe", want)
    best_alone = max((k for k in scores if k.startswith(aspect)), key=scores.get)
    assert att[aspect].alternatives[0].id == best_alone  # the reading alone, kept as the runner-up


def test_an_organ_free_density_can_win(matcher):
    d = _distribution(matcher, {"location.lung.left_lower": 0.6, "location.colon.descending": 0.4,
                                "density.hyperdense.colon": 0.5, "density.calcific": 0.45,
                                "density.lung.soft_tissue": 0.05})
    att = matcher.attributes(d)
    assert (att["location"].id, att["density"].id) == ("location.lung.left_lower", "density.calcific")


def test_agreeing_reads_are_unchanged(matcher):
    """Where the best rows agree (or the density names no organ, or the location's organ has no density
    descriptions) the report is what reading each aspect alone gives, runners-up included."""
    cases = [
        ({"location.gallbladder.lumen": 0.7, "location.liver.right_lobe": 0.3, "density.calcific": 0.6,
          "density.hyperdense.liver": 0.4}, ("location.gallbladder.lumen", "density.calcific")),
        ({"location.kidney.left": 0.8, "location.kidney.right": 0.2, "density.hypodense.kidney": 0.7,
          "density.fluid": 0.3}, ("location.kidney.left", "density.hypodense.kidney")),
        ({"free.location.spleen": 0.9, "location.kidney.left": 0.1, "density.hyperdense.liver": 0.8,
          "density.hypodense.kidney": 0.2}, (None, "density.hyperdense.liver")),
    ]
    for scores, want in cases:
        att = matcher.attributes(_distribution(matcher, scores))
        assert (att["location"].id, att["density"].id) == want
        for aspect in ("location", "density"):
            m = att[aspect]
            assert m.score == max([m.score] + [a.score for a in m.alternatives])
            assert [a.score for a in m.alternatives] == sorted((a.score for a in m.alternatives), reverse=True)


def test_every_density_agrees_with_its_location(matcher):
    """Random score vectors: the location is the aspect's best row, and the density the best of those that
    name its organ or none (a free-text location: the best of all)."""
    rng = np.random.default_rng(0)
    loc_rows, den_rows = matcher.rows["location"], matcher.rows["density"]
    ids = matcher.bank.ids
    for _ in range(200):
        d = rng.gamma(0.3, size=len(ids)).astype(np.float32)
        att = matcher.attributes(d)
        assert att["location"].description == matcher.bank.texts[loc_rows[np.argmax(d[loc_rows])]]
        organ = organ_of(att["location"].id)
        allowed = [r for r in den_rows if organ is None or _density_organ(ids[r]) in (None, organ)]
        assert att["density"].id == ids[max(allowed, key=lambda r: d[r])]
        assert organ is None or _density_organ(att["density"].id) in (None, organ)


def test_a_specific_feature_plausible_in_the_locations_organ(matcher):
    """seen_verify_0074's scores: in the colon the organ-free calcification goes before "layering", an organ-bound
    feature (gallbladder, kidney) scored higher."""
    d = _distribution(matcher, {"location.colon.transverse": 1.0, "specific_features.layering": 0.366,
                                "specific_features.calcification": 0.171, "specific_features.wall_thickening": 0.096})
    assert matcher.attributes(d)["specific_features"].id == "specific_features.calcification"
    # a free-text location (no organ the vocabulary knows) takes any feature
    d = _distribution(matcher, {"free.location.spleen": 1.0, "specific_features.layering": 0.5,
                                "specific_features.none": 0.4})
    assert matcher.attributes(d)["specific_features"].id == "specific_features.layering"


def test_every_specific_feature_is_plausible_at_its_location(matcher):
    """Random score vectors: the specific feature is the best of the rows plausible in the location's organ."""
    rng = np.random.default_rng(1)
    rows, ids, vocab = matcher.rows["specific_features"], matcher.bank.ids, matcher.vocab
    for _ in range(200):
        d = rng.gamma(0.3, size=len(ids)).astype(np.float32)
        att = matcher.attributes(d)
        organ = organ_of(att["location"].id)
        allowed = [r for r in rows if organ is None or vocab.entry(ids[r]).applies_to(organ)]
        assert att["specific_features"].id == ids[max(allowed, key=lambda r: d[r])]
