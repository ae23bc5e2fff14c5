"""Preprocessing to the model grid and back, and the contrast-phase estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from malenia.data.contrast import detect_phase
from malenia.data.ct_io import read_ct, read_label
from malenia.data.preprocess import CANONICAL_ORIENTATION, Preprocessor
from malenia.errors import InputError

TOTALSEG = "ct/totalseg-example"
LUNG1 = "ct/pyradiomics-lung1"
AORTA, IVC = 52, 63  # TotalSegmentator v2 "total" labels (example_seg_classes.json)


@pytest.fixture(scope="module")
def example(shared_data: Path) -> tuple[sitk.Image, sitk.Image]:
    image = read_ct(shared_data / TOTALSEG / "example_ct_sm.nii.gz")
    return image, read_label(shared_data / TOTALSEG / "example_seg.nii.gz", image)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def exact_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
            and a.GetDirection() == b.GetDirection())


# ---------------------------------------------------------------------------------------------
# orientation, spacing and the inverse


def test_identity_spacing_round_trip_is_exact(example):
    image, seg = example  # stored RAS (direction diag(-1, -1, 1))
    pre = Preprocessor(target_spacing=(3.0, 3.0, 3.0), clip=(-1000, 1000), normalization="window")
    prepared = pre.prepare(image)
    assert CANONICAL_ORIENTATION == "LPS"
    assert prepared.grid.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    # RAS -> LPS is a flip of x and y: the normalised array is the flipped input
    hu = sitk.GetArrayFromImage(image)
    assert np.allclose(pre.denormalize(prepared.array), np.clip(hu[:, ::-1, ::-1], -1000, 1000), atol=1e-3)
    labels = prepared.to_prepared(seg)
    assert np.array_equal(labels, sitk.GetArrayFromImage(seg)[:, ::-1, ::-1])
    back = prepared.to_original(labels, is_label=True)
    assert exact_geometry(back, image)
    assert back.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(seg))


def test_permuted_axes_round_trip(example):
    image, seg = example
    # a KiTS-like file: array axes permuted, direction a permutation matrix
    permuted = sitk.PermuteAxes(image, [2, 0, 1])
    permuted_seg = sitk.PermuteAxes(seg, [2, 0, 1])
    pre = Preprocessor((3.0, 3.0, 3.0))
    prepared = pre.prepare(permuted)
    assert prepared.array.shape == (30, 101, 122)  # canonical (z, y, x) again
    back = prepared.to_original(prepared.to_prepared(permuted_seg))
    assert exact_geometry(back, permuted)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(permuted_seg))


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (4.5, 4.0, 4.0), (2.0, 2.5, 1.7)])
def test_resampled_round_trip(example, spacing):
    image, seg = example
    pre = Preprocessor(spacing, clip=(-200, 300), normalization="zscore", mean=50.0, std=100.0)
    prepared = pre.prepare(image)
    extent = np.array(image.GetSize()[::-1]) * 3.0
    assert prepared.array.shape == tuple(np.round(extent / np.array(spacing)).astype(int))
    assert prepared.spacing_zyx == spacing
    assert prepared.array.dtype == np.float32
    labels = prepared.to_prepared(seg)
    back = prepared.to_original(labels)
    assert exact_geometry(back, image)
    truth, result = sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(back)
    for organ in (5, 2, AORTA):  # liver, right kidney, aorta
        assert dice(truth == organ, result == organ) > (0.97 if max(spacing) <= 3 else 0.85)
    # the same physical point holds the same organ on both grids
    index = (60, 50, 15)
    point = image.TransformIndexToPhysicalPoint(index)
    x, y, z = prepared.image().TransformPhysicalPointToIndex(point)
    assert labels[z, y, x] == truth[index[2], index[1], index[0]]


def test_anisotropic_real_scan_and_probabilities(shared_data: Path):
    image = read_ct(shared_data / "ct/pyradiomics-lung1/lung1_image.nrrd")  # 0.57 x 0.57 x 5 mm, LPS
    tumour = read_label(shared_data / "ct/pyradiomics-lung1/lung1_label.nrrd", image)
    prepared = Preprocessor((1.5, 1.5, 1.5), clip=(-1000, 400), normalization="window").prepare(image)
    assert prepared.array.min() >= 0.0 and prepared.array.max() <= 1.0
    labels = prepared.to_prepared(tumour)
    truth = sitk.GetArrayFromImage(tumour) > 0
    volume = truth.sum() * np.prod(image.GetSpacing())
    assert labels.sum() * 1.5**3 == pytest.approx(volume, rel=0.2)
    back = prepared.to_original(labels)
    assert exact_geometry(back, image)
    assert dice(sitk.GetArrayFromImage(back) > 0, truth) > 0.8
    # probabilities come back by linear interpolation, as float32, channels as a vector image
    prob = ndi.gaussian_filter(labels.astype(np.float32), 1.0)
    soft = prepared.to_original(prob, is_label=False)
    assert soft.GetPixelID() == sitk.sitkFloat32 and exact_geometry(soft, image)
    assert dice(sitk.GetArrayFromImage(soft) > 0.5, truth) > 0.7
    two = prepared.to_original(np.stack([prob, 1 - prob]), is_label=False)
    assert two.GetNumberOfComponentsPerPixel() == 2 and exact_geometry(two, image)


def test_normalisation_and_its_inverse():
    z = Preprocessor((1, 1, 1), clip=(-100, 300), normalization="zscore", mean=60.0, std=40.0)
    hu = np.array([-500.0, -100.0, 60.0, 100.0, 300.0, 900.0])
    assert np.allclose(z.normalize(hu), [-4.0, -4.0, 0.0, 1.0, 6.0, 6.0])
    assert np.allclose(z.denormalize(z.normalize(hu[1:5])), hu[1:5])
    w = Preprocessor(2.0, clip=(-100, 300), normalization="window")
    assert w.target_spacing == (2.0, 2.0, 2.0)
    assert np.allclose(w.normalize(hu), [0.0, 0.0, 0.4, 0.5, 1.0, 1.0])
    assert w.background_value == 0.0 and z.background_value == -4.0
    assert Preprocessor.from_dict(z.to_dict()) == z
    for bad in ({"target_spacing": (1, 0, 1)}, {"target_spacing": 1, "clip": (5, 5)},
                {"target_spacing": 1, "normalization": "minmax"}, {"target_spacing": 1, "std": 0}):
        with pytest.raises(ValueError):
            Preprocessor(**bad)


def test_inverse_refuses_wrong_input(example):
    image, seg = example
    prepared = Preprocessor((6.0, 6.0, 6.0)).prepare(image)
    with pytest.raises(ValueError, match="does not match the model grid"):
        prepared.to_original(np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        prepared.to_original(prepared.array, is_label=True)
    other = sitk.Image(seg)
    other.SetOrigin([v + 10 for v in seg.GetOrigin()])
    with pytest.raises(InputError, match="input grid"):
        prepared.to_prepared(other)
    with pytest.raises(InputError, match="3D scalar"):
        Preprocessor(1.0).prepare(sitk.Image([8, 8], sitk.sitkFloat32))


# ---------------------------------------------------------------------------------------------
# contrast phase


def enhanced(image: sitk.Image, seg: sitk.Image, aorta: float, ivc: float) -> sitk.Image:
    hu = sitk.GetArrayFromImage(image)
    labels = sitk.GetArrayFromImage(seg)
    hu[labels == AORTA] += aorta
    hu[labels == IVC] += ivc
    out = sitk.GetImageFromArray(ndi.gaussian_filter(hu, 0.5))  # partial volume at the vessel walls
    out.CopyInformation(image)
    return out


def test_phase_from_aorta_and_ivc_masks(example):
    image, seg = example
    estimate = detect_phase(image, seg)  # TotalSegmentator numbering assumed
    assert estimate.phase == "non_contrast" and estimate.method == "aorta_ivc_masks"
    assert estimate.vocabulary_id == "enhancement.non_contrast"
    assert 38 <= estimate.aorta_hu <= 46 and 33 <= estimate.ivc_hu <= 45  # README: aorta ~42, IVC ~37
    named = detect_phase(image, sitk.GetArrayFromImage(seg), {"aorta": AORTA, "inferior_vena_cava": IVC})
    assert named.aorta_hu == pytest.approx(estimate.aorta_hu)
    # the rule needs both vessels below 80 HU
    arterial = detect_phase(enhanced(image, seg, 200, 0), seg)
    assert arterial.phase == "contrast" and arterial.ivc_hu < 80 < arterial.aorta_hu
    assert arterial.vocabulary_id == "enhancement.contrast"
    # only the aorta masked: decided on the aorta
    aorta_only = np.where(sitk.GetArrayFromImage(seg) == AORTA, 1, 0)
    assert detect_phase(image, aorta_only, {1: "aorta"}).phase == "non_contrast"


def test_phase_without_masks_is_not_misled_by_smoothed_bone(shared_data: Path):
    """A soft reconstruction kernel or a half-voxel resampling makes cancellous bone as homogeneous as blood and
    brighter than unenhanced blood: the vertebral body must not be read as the blood pool (it was: 115 HU, contrast)."""
    image = sitk.Cast(read_ct(shared_data / LUNG1 / "lung1_image.nrrd"), sitk.sitkFloat32)
    sharp = detect_phase(image)
    assert sharp.phase == "non_contrast"
    shift = sitk.TranslationTransform(3, [0.5 * v for v in image.GetSpacing()])
    soft = sitk.SmoothingRecursiveGaussian(image, 1.0)
    for smoothed in (soft, sitk.Resample(image, image, shift, sitk.sitkLinear, -1024.0)):
        estimate = detect_phase(smoothed)
        assert estimate.phase == "non_contrast" and abs(estimate.aorta_hu - sharp.aorta_hu) < 10, estimate


def test_phase_without_masks(example, shared_data: Path):
    image, seg = example
    plain = detect_phase(image)
    assert plain.method == "blood_pool_search" and plain.phase == "non_contrast"
    assert plain.aorta_hu < 80
    labels = sitk.GetArrayFromImage(seg)
    for boost in (150, 300):  # portal-venous-like and arterial-like blood
        estimate = detect_phase(enhanced(image, seg, boost, 0.7 * boost))
        assert estimate.phase == "contrast" and estimate.aorta_hu > 80 + boost / 3
        i, j, k = seg.TransformPhysicalPointToIndex(estimate.details["point_lps"])
        assert labels[k, j, i] in (AORTA, IVC)  # the blood pool it found is a great vessel
    # the shared DICOM series is a contrast-enhanced scan (bright aorta)
    dicom = detect_phase(read_ct(shared_data / TOTALSEG / "example_ct_dicom"))
    assert dicom.phase == "contrast" and dicom.aorta_hu > 120
    # a volume with nothing blood-like: undetermined, not a guess
    air = sitk.Image([40, 40, 20], sitk.sitkFloat32) - 1000.0
    air.SetSpacing((3.0, 3.0, 3.0))
    none = detect_phase(air)
    assert none.phase is None and none.vocabulary_id is None
