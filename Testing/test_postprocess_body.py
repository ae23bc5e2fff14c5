"""Lesions outside the body's outline are not lesions (malenia.infer.postprocess.inside_body_share): on the example
DICOM series the network marked 400 ml of air in front of the patient and the table under it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from malenia.data.preprocess import Preprocessor
from malenia.infer.postprocess import ProbabilityMap, kept, lesion_map


def _trunk_scan():
    """A 2 mm CT of an elliptical trunk (40 HU) in air with an air-filled 'lung' inside it, and a network output
    with four blobs: in the soft tissue, in the lung, in the air in front of the trunk, and straddling the skin
    with most of it outside."""
    shape = (20, 64, 64)
    z, y, x = np.indices(shape)
    ct = np.full(shape, -1000.0, np.float32)
    trunk = ((y - 34) / 22.0) ** 2 + ((x - 32) / 28.0) ** 2 <= 1
    ct[trunk] = 40.0
    lung = ((y - 34) / 8.0) ** 2 + ((x - 20) / 8.0) ** 2 <= 1
    ct[lung] = -850.0
    prob = np.zeros(shape, np.float32)
    blobs = {"tissue": (10, 34, 44), "lung": (10, 34, 20), "air": (10, 3, 32), "skin": (10, 11, 32)}
    for c in blobs.values():
        prob[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 9] = 0.9
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing((2.0, 2.0, 2.0))
    prepared = Preprocessor((2.0, 2.0, 2.0), normalization="window").prepare(image)
    return ProbabilityMap(prob, prepared, image), blobs


def test_lesions_outside_the_body_outline_are_dropped_inside_ones_kept():
    pm, blobs = _trunk_scan()
    lm = lesion_map(pm, 0.5)
    found = {name: int(lm.labels[c]) for name, c in blobs.items()}
    assert found["tissue"] and found["lung"]  # the lung is inside the trunk's outline, though it is air
    assert not found["air"] and not found["skin"]  # the skin blob lies mostly (its upper part) in the air
    assert sorted(kept(lm, 0.0)) == sorted({found["tissue"], found["lung"]})


def test_a_volume_without_tissue_keeps_its_lesions():
    pm, blobs = _trunk_scan()
    air = sitk.GetImageFromArray(np.full(pm.probability.shape, -1000.0, np.float32))
    air.SetSpacing((2.0, 2.0, 2.0))
    pm = ProbabilityMap(pm.probability, pm.prepared, air)
    assert len(kept(lesion_map(pm, 0.5), 0.0)) == 4


def test_under_a_box_the_whole_scan_s_body_decides():
    """A --roi box inside the lung holds no body at all: the outline comes from the whole scan, so a lesion in the
    lung inside the box stays, and one in the air in front of the trunk (inside another box) goes."""
    full, blobs = _trunk_scan()
    for name, (i0, i1, j0, j1) in (("lung", (12, 28, 26, 42)), ("air", (24, 40, 0, 8))):
        region = ((i0, i1), (j0, j1), (0, 20))
        crop = full.image[i0:i1, j0:j1, 0:20]
        prepared = Preprocessor((2.0, 2.0, 2.0), normalization="window").prepare(crop)
        pm = ProbabilityMap(np.ascontiguousarray(full.probability[:, j0:j1, i0:i1]), prepared, full.image, region)
        lm = lesion_map(pm, 0.5)
        assert bool(lm.labels[blobs[name]]) == (name == "lung"), name
