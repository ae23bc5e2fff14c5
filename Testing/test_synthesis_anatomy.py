"""Base anatomy for synthesis: the procedural phantom and the sub-regions of real organ masks."""

from __future__ import annotations

import numpy as np
import pytest

from malenia.data.contrast import detect_phase
from malenia.data.synthesis.anatomy import REGION_KEYS, TOTALSEG_IDS
from malenia.data.synthesis.bases import load_base
from malenia.data.synthesis.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng(11))


@pytest.fixture(scope="module")
def real(shared_data):
    return load_base(shared_data / "ct" / "totalseg-example")


def centroid(anat, mask):
    return anat.coords_lps(mask).mean(0)


def test_phantom_has_every_region_the_diseases_need(phantom):
    for key in REGION_KEYS:
        assert phantom.region(key).sum() > 20, key
    names = set(phantom.names.values())
    assert {"liver", "liver_vessels", "kidney_left", "kidney_right", "pancreas", "colon", "gallbladder", "aorta",
            "inferior_vena_cava", "portal_vein_and_splenic_vein", "spleen", "lung_lower_lobe_left"} <= names
    assert all(TOTALSEG_IDS[n] == k for k, n in phantom.names.items())  # TotalSegmentator numbering


def test_phantom_hu_is_plausible(phantom):
    med = lambda n: float(np.median(phantom.image[phantom.mask(n)]))  # noqa: E731
    assert 45 < med("liver") < 75 and 30 < med("spleen") < 65 and med("aorta") < 80
    assert med("lung_lower_lobe_right") < -700 and med("vertebrae_L2") > 150
    body_fat = (phantom.organs == 0) & (phantom.image > -200) & (phantom.image < -50)
    assert body_fat.sum() > 10000
    assert detect_phase(_img(phantom), phantom.organs, phantom.names).phase == "non_contrast"
    enhanced = make_phantom(np.random.default_rng(11), phase="contrast")
    assert detect_phase(_img(enhanced), enhanced.organs, enhanced.names).phase == "contrast"
    assert np.median(enhanced.image[enhanced.mask("liver")]) > med("liver") + 10


def _img(anat):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(anat.image)
    img.SetSpacing(anat.spacing)
    return img


def test_phantom_is_random_per_seed_and_deterministic(phantom):
    again = make_phantom(np.random.default_rng(11))
    other = make_phantom(np.random.default_rng(12))
    assert np.array_equal(again.image, phantom.image) and np.array_equal(again.organs, phantom.organs)
    assert not np.array_equal(other.organs, phantom.organs)
    assert abs(int(other.mask("liver").sum()) - int(phantom.mask("liver").sum())) > 100


def test_phantom_grid_follows_size_and_spacing():
    small = make_phantom(np.random.default_rng(0), size=(64, 48, 40), spacing=(5.0, 5.0, 6.0))
    assert small.image.shape == (40, 48, 64) and small.spacing == (5.0, 5.0, 6.0)
    assert small.mask("liver").any() and small.mask("kidney_left").any()


@pytest.mark.parametrize("which", ["phantom", "real"])
def test_sub_regions_are_anatomically_placed(which, phantom, real):
    anat = phantom if which == "phantom" else real
    c = lambda key: centroid(anat, anat.region(key))  # noqa: E731
    # LPS: +x is the patient's left, +y posterior, +z superior
    assert c("kidney.left")[0] > c("kidney.right")[0]
    assert c("liver.left_lobe")[0] > c("liver.right_lobe")[0]
    assert c("pancreas.tail")[0] > c("pancreas.body")[0] > c("pancreas.head")[0]
    assert c("colon.descending")[0] > c("colon.ascending")[0]
    assert c("colon.transverse")[1] < c("colon.descending")[1]  # the transverse colon is anterior
    lumen, wall = anat.region("gallbladder.lumen"), anat.region("gallbladder.wall")
    assert lumen.any() and wall.any() and not (lumen & wall).any()
    assert ((lumen | wall) == anat.mask("gallbladder")).all()
    parts = [anat.region(k) for k in ("liver.left_lobe", "liver.right_lobe")]
    assert not (parts[0] & parts[1]).any() and ((parts[0] | parts[1]) == anat.mask("liver")).all()


def test_phantom_pelvis_and_lung_lobes(phantom):
    c = lambda key: centroid(phantom, phantom.region(key))  # noqa: E731
    assert c("colon.rectum")[2] < c("colon.sigmoid")[2] < c("colon.transverse")[2]
    assert c("lung.right_upper")[2] > c("lung.right_middle")[2]
    assert c("lung.left_lower")[1] > c("lung.left_upper")[1]  # lower lobes are posterior


def test_real_base_reads_the_totalsegmentator_layout(real, shared_data):
    assert real.shape == (30, 101, 122) and real.spacing == (3.0, 3.0, 3.0)
    assert real.phase == "non_contrast" and real.names[5] == "liver"
    assert real.region("colon.rectum").sum() == 0  # the scan stops above the pelvis
    assert real.region("lung.right_upper").sum() == 0


def test_bad_base_folders_are_refused(tmp_path):
    from malenia.data.synthesis.bases import find_bases
    from malenia.errors import InputError

    with pytest.raises(InputError, match="not found"):
        find_bases(tmp_path / "nope")
    with pytest.raises(InputError, match="no CT image"):
        find_bases(tmp_path)
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="organ label"):
        load_base(tmp_path)


def test_phase_without_masks_reads_the_phantom_along_its_whole_aorta():
    """The phantom's spine has no arch at its discs: a slice there finds no spine, and before such slices borrowed
    a neighbour's search strip they broke persistence along z (contrast phantoms read on 8-12 slices, some wrongly)."""
    for seed in (4, 14, 26):
        for phase in ("non_contrast", "contrast"):
            anat = make_phantom(np.random.default_rng(seed), phase=phase)
            estimate = detect_phase(_img(anat))
            aorta_slices = int(anat.mask("aorta").any(axis=(1, 2)).sum())
            assert estimate.phase == phase and estimate.details["slices"] > aorta_slices // 2, (seed, estimate)
