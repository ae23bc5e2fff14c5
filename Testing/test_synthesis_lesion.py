"""Synthesised attributes are measurable in the image they produce (issue 4, "Tests")."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from malenia.data.synthesis.anatomy import region_of_location
from malenia.data.synthesis.bases import load_base
from malenia.data.synthesis.enhancement import apply_contrast
from malenia.data.synthesis.features import Canvas
from malenia.data.synthesis.lesion import render_lesion
from malenia.data.synthesis.measure import edge_width, fraction_inside, sphericity
from malenia.data.synthesis.phantom import make_phantom
from malenia.knowledge.vocabulary import Vocabulary

BASE = dict(shape="shape.round", density_variation="density_variation.homogeneous", surface="surface.well_defined",
            enhancement="enhancement.non_contrast", relationship="relationship.separate", specific_features="specific_features.none")


def attrs(location: str, density: str, **kw) -> dict[str, list[str]]:
    a = {**BASE, "location": location, "density": density, **kw}
    return {k: v if isinstance(v, list) else [v] for k, v in a.items()}


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.load()


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng(7))


@pytest.fixture(scope="module")
def real(shared_data):
    return load_base(shared_data / "ct" / "totalseg-example")


def render(anat, disease, a, seed=0, radius=None, vocab=None):
    canvas = Canvas(anat.image.copy(), anat.organs.copy(), np.zeros(anat.shape, np.uint16))
    used, extra = render_lesion(anat, canvas, 1, disease, a, np.random.default_rng(seed), vocab, radius_mm=radius)
    return canvas, canvas.lesions == 1, used, extra


def host_mean(anat, mask_name, lesion):
    m = anat.mask(mask_name) & ~lesion
    return float(np.median(anat.image[m]))


@pytest.mark.parametrize("which", ["phantom", "real"])
def test_density_relative_to_host(which, phantom, real, vocab):
    anat = phantom if which == "phantom" else real
    for seed in range(3):
        _, m, _, _ = render(anat, "liver_tumor", attrs("location.liver.right_lobe", "density.hypodense.liver"), seed, 15.0, vocab)
        assert anat.image.dtype == np.float32 and m.sum() > 20
        _, m2, _, _ = render(anat, "liver_tumor", attrs("location.liver.right_lobe", "density.hyperdense.liver"), seed, 15.0, vocab)
        canvas_hypo, m, _, _ = render(anat, "liver_tumor", attrs("location.liver.right_lobe", "density.hypodense.liver"), seed, 15.0, vocab)
        canvas_hyper, m2, _, _ = render(anat, "liver_tumor", attrs("location.liver.right_lobe", "density.hyperdense.liver"), seed, 15.0, vocab)
        host = host_mean(anat, "liver", m | m2)
        assert canvas_hypo.image[m].mean() < host - 10
        assert canvas_hyper.image[m2].mean() > host + 10


def test_margin_sharpness(phantom, vocab):
    widths = {}
    for surface in ("surface.well_defined", "surface.ill_defined"):
        w = []
        for seed in range(3):
            a = attrs("location.liver.right_lobe", "density.hypodense.liver", surface=surface)
            canvas, m, _, _ = render(phantom, "liver_cyst", a, seed, 16.0, vocab)
            w.append(edge_width(canvas.image, m, phantom.spacing_zyx, 9.0, restrict=phantom.mask("liver")))
        widths[surface] = float(np.mean(w))
    assert widths["surface.ill_defined"] > 1.3 * widths["surface.well_defined"], widths


def test_lesion_lies_in_its_sub_region(phantom, vocab):
    cases = [("kidney_cyst", "location.kidney.left", "density.fluid"), ("kidney_cyst", "location.kidney.right", "density.fluid"),
             ("liver_cyst", "location.liver.left_lobe", "density.fluid"), ("liver_cyst", "location.liver.right_lobe", "density.fluid"),
             ("pancreas_cyst", "location.pancreas.head", "density.fluid"), ("pancreas_cyst", "location.pancreas.body", "density.fluid"),
             ("pancreas_cyst", "location.pancreas.tail", "density.fluid"),
             ("colon_tumor", "location.colon.ascending", "density.isodense.colon"), ("colon_tumor", "location.colon.transverse", "density.isodense.colon"),
             ("colon_tumor", "location.colon.descending", "density.isodense.colon"), ("colon_tumor", "location.colon.sigmoid", "density.isodense.colon"),
             ("colon_tumor", "location.colon.rectum", "density.isodense.colon"),
             ("lung_tumor", "location.lung.left_upper", "density.lung.soft_tissue"), ("lung_tumor", "location.lung.right_middle", "density.lung.soft_tissue"),
             ("lung_tumor", "location.lung.right_lower", "density.lung.soft_tissue"), ("gallstone", "location.gallbladder.lumen", "density.calcific")]
    for i, (disease, loc, dens) in enumerate(cases):
        _, m, used, extra = render(phantom, disease, attrs(loc, dens), i, None, vocab)
        region = phantom.region(region_of_location(loc))
        if disease == "colon_tumor":  # wall masses bulge up to 3 mm (one voxel) beyond the colon contour
            region = ndi.binary_dilation(region)
        assert fraction_inside(m, region) >= 0.9, (loc, fraction_inside(m, region))
        assert used["location"] == [loc] and extra["region"] == region_of_location(loc)


def test_irregular_less_spherical_than_round(phantom, vocab):
    sph = {}
    for shape in ("shape.round", "shape.irregular"):
        vals = []
        for seed in range(4):
            _, m, _, _ = render(phantom, "liver_tumor", attrs("location.liver.right_lobe", "density.hypodense.liver", shape=shape), seed, 18.0, vocab)
            vals.append(sphericity(m, phantom.spacing_zyx))
        sph[shape] = float(np.mean(vals))
    assert sph["shape.round"] > 0.85, sph
    assert sph["shape.irregular"] < sph["shape.round"] - 0.05, sph


def test_cyst_is_water_like_even_in_contrast(phantom, vocab):
    _, m, _, _ = render(phantom, "liver_cyst", attrs("location.liver.right_lobe", "density.fluid"), 1, 12.0, vocab)
    vals = phantom.image[m] * 0 + render(phantom, "liver_cyst", attrs("location.liver.right_lobe", "density.fluid"), 1, 12.0, vocab)[0].image[m]
    assert -5 < float(np.median(vals)) < 20
    enhanced = make_phantom(np.random.default_rng(3), phase="contrast")
    assert enhanced.image[enhanced.mask("aorta")].mean() > 120  # contrast scan
    canvas, m, _, _ = render(enhanced, "kidney_cyst", attrs("location.kidney.left", "density.hypodense.kidney"), 2, 12.0, vocab)
    assert -5 < float(np.median(canvas.image[m])) < 25


def test_stone_is_calcific(phantom, real, vocab):
    for anat, disease, loc in ((phantom, "kidney_stone", "location.kidney.right"), (real, "gallstone", "location.gallbladder.lumen")):
        canvas, m, _, extra = render(anat, disease, attrs(loc, "density.calcific"), 0, 5.0, vocab)
        assert extra["density"]["target_hu"] > 300
        assert m.sum() >= 1 and float(canvas.image[m].max()) > 300
        assert fraction_inside(m, anat.region(region_of_location(loc))) == 1.0


def test_heterogeneous_more_variable_than_homogeneous(phantom, vocab):
    stds = {}
    for var in ("density_variation.homogeneous", "density_variation.heterogeneous"):
        vals = []
        for seed in range(3):
            canvas, m, _, _ = render(phantom, "liver_tumor", attrs("location.liver.right_lobe", "density.hypodense.liver", density_variation=var), seed, 18.0, vocab)
            vals.append(canvas.image[m].std())
        stds[var] = float(np.mean(vals))
    assert stds["density_variation.heterogeneous"] > 1.3 * stds["density_variation.homogeneous"], stds


def test_relationship_separate_vs_invading(phantom, vocab):
    liver = phantom.organ_mask("liver")
    _, m, _, ex = render(phantom, "liver_tumor", attrs("location.liver.right_lobe", "density.hypodense.liver"), 0, 15.0, vocab)
    assert fraction_inside(m, liver) == 1.0 and ex["placement"]["mode"] == "separate"
    outside = []
    for seed in range(3):
        _, m, _, ex = render(phantom, "pancreas_tumor", attrs("location.pancreas.head", "density.hypodense.pancreas",
                                                                 relationship="relationship.invading"), seed, 14.0, vocab)
        assert ex["placement"]["mode"] == "invading" and ex["placement"]["neighbour"]
        outside.append(1.0 - fraction_inside(m, phantom.organ_mask("pancreas")))
    assert np.mean(outside) > 0.1, outside


def test_specific_features_change_the_image(phantom, vocab):
    pan = phantom.mask("pancreas")
    canvas, m, used, ex = render(phantom, "pancreas_tumor", attrs("location.pancreas.head", "density.isodense.pancreas",
                                                                   specific_features="specific_features.duct_dilatation"), 0, 10.0, vocab)
    fluid_before = int((pan & ~m & (phantom.image < 20)).sum())
    fluid_after = int((pan & ~m & (canvas.image < 20)).sum())
    assert fluid_after > fluid_before + 5 and used["specific_features"] == ["specific_features.duct_dilatation"]

    kid = phantom.mask("kidney_left")
    canvas, m, _, _ = render(phantom, "kidney_stone", attrs("location.kidney.left", "density.calcific",
                                                             specific_features="specific_features.hydronephrosis"), 0, 4.0, vocab)
    assert int((kid & ~m & (np.abs(canvas.image) < 25)).sum()) > int((kid & (np.abs(phantom.image) < 25)).sum()) + 20

    lung = phantom.organ_mask("lung")
    canvas, m, _, _ = render(phantom, "lung_tumor", attrs("location.lung.right_lower", "density.lung.soft_tissue",
                                                           specific_features="specific_features.pleural_traction"), 0, 8.0, vocab)
    assert int((lung & ~m & (canvas.image > -300)).sum()) > int((lung & (phantom.image > -300)).sum()) + 3

    canvas, m, _, ex = render(phantom, "liver_tumor", attrs("location.liver.right_lobe", "density.isodense.liver",
                                                             specific_features="specific_features.necrosis"), 0, 20.0, vocab)
    core = m & (ndi.distance_transform_edt(m, sampling=phantom.spacing_zyx) > 10)
    rim = m & ~core
    assert canvas.image[core].mean() < canvas.image[rim].mean() - 10

    # a finding the organ cannot have is dropped from the record, not silently claimed
    _, _, used, ex = render(phantom, "liver_tumor", attrs("location.liver.right_lobe", "density.hypodense.liver",
                                                           specific_features="specific_features.pleural_traction"), 0, 10.0, vocab)
    assert used["specific_features"] == ["specific_features.none"]
    assert ex["dropped_features"] == ["specific_features.pleural_traction"]


def test_contrast_enhancement_of_a_real_base(real, vocab):
    from malenia.data.contrast import detect_phase
    import SimpleITK as sitk

    assert real.phase == "non_contrast"
    enhanced = real.copy()
    gains = apply_contrast(enhanced, np.random.default_rng(0))
    assert enhanced.phase == "contrast" and gains["aorta"] > 100
    img = sitk.GetImageFromArray(enhanced.image)
    assert detect_phase(img, enhanced.organs, enhanced.names).phase == "contrast"
    fat = (real.organs == 0) & (real.image < -60) & (real.image > -150)
    assert np.abs(enhanced.image[fat] - real.image[fat]).mean() < 2.0  # fat does not enhance


def _floored(anat, on: bool):
    out = anat.copy()
    out.info["host_floor"] = on
    return out


@pytest.mark.parametrize("phase", ["non_contrast", "contrast"])
def test_host_floor_keeps_pancreatic_lesions_out_of_fat(real, vocab, phase):
    """The real base's pancreas label reads near fat (partial volume with the fat between its lobules): drawn
    against it, hypodense lesions fall below water. The host floor draws them against parenchyma instead."""
    base = real.copy()
    if phase == "contrast":
        base.info["contrast_gain_hu"] = apply_contrast(base, np.random.default_rng(3))
    loc = "location.pancreas.head"
    a = attrs(loc, "density.hypodense.pancreas", enhancement=f"enhancement.{phase}")
    for seed in range(3):
        cyst_old = render(_floored(base, False), "pancreas_cyst", a, seed, 9.0, vocab)[3]["density"]
        cyst = render(_floored(base, True), "pancreas_cyst", a, seed, 9.0, vocab)[3]["density"]
        tumour = render(_floored(base, True), "pancreas_tumor", a, seed, 9.0, vocab)[3]["density"]
        assert cyst["host"]["mean"] < 30.0 + (80.0 if phase == "contrast" else 0.0)  # the measured label: fat-averaged
        assert "host_floor" not in cyst_old and cyst_old["target_hu"] < 0.0  # drawn against it: below water
        assert cyst["host_floor"] and cyst["reference_hu"] >= 30.0 + (50.0 if phase == "contrast" else 0.0)
        assert 0.0 <= cyst["target_hu"] <= 20.0  # fluid stays fluid
        assert tumour["target_hu"] >= 10.0 and tumour["target_hu"] < tumour["reference_hu"]  # soft tissue, still hypodense


def test_host_floor_leaves_a_physiological_host_alone(phantom, vocab):
    a = attrs("location.liver.right_lobe", "density.hyperdense.liver")
    for seed in range(2):
        old = render(_floored(phantom, False), "liver_tumor", a, seed, 12.0, vocab)
        new = render(_floored(phantom, True), "liver_tumor", a, seed, 12.0, vocab)
        assert new[3]["density"]["reference_hu"] == old[3]["density"]["host"]["mean"]
        assert np.array_equal(new[0].image, old[0].image)  # the same lesion, voxel for voxel
