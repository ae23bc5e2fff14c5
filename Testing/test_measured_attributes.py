"""Measured attributes: lesion measurements, the per-aspect classifiers and their file, the blend with the
tokens, and `malenia fit-attributes` -> `malenia segment` end to end."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from malenia.errors import InputError, ModelError
from malenia.infer.lesion_features import FEATURES, FeatureImage, features_of_labels, oriented_labels
from malenia.knowledge.measured_attributes import (FILE, WEIGHT, Example, MeasuredAttributes, fit, fit_aspect,
                                               leave_one_disease_out)
from segment_helpers import assert_fine_tune_inherits, malenia, segment_report, tiny_trained_model
from train_helpers import make_tiny_dataset

SPACING = 1.5


def _ball(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def _body_with_two_lesions(seed=0):
    """A 40 HU body in air with a sharp, round, homogeneous -10 HU lesion on the patient's left and an
    irregular, blurred, heterogeneous 120 HU one on the right (LPS: x grows toward the left)."""
    rng = np.random.default_rng(seed)
    shape = (48, 64, 80)
    hu = np.full(shape, -1000.0, np.float32)
    hu[4:44, 6:58, 6:74] = 40.0
    round_ = _ball(shape, (24, 32, 56), 7)
    irregular = _ball(shape, (24, 32, 22), 5) | _ball(shape, (20, 28, 28), 4) | _ball(shape, (28, 37, 16), 4)
    irregular |= _ball(shape, (24, 24, 16), 3)
    hu[round_] = -10.0
    bright = np.where(irregular, 120.0 + rng.normal(0, 35, shape), 0.0)
    hu = np.where(irregular, 0.0, hu) + ndimage.gaussian_filter(bright, 1.5)  # a blurred margin
    hu = np.where(irregular & (hu < 40), 40.0, hu).astype(np.float32)
    hu += rng.normal(0, 4, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[round_], labels[irregular] = 1, 2
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((SPACING,) * 3)
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(image)
    return image, lab


def _features(image, labels):
    return features_of_labels(FeatureImage.of(image), oriented_labels(labels))


def test_measurements_tell_a_round_sharp_homogeneous_lesion_from_an_irregular_blurred_one():
    feats = _features(*_body_with_two_lesions())
    round_, irregular = feats[1], feats[2]
    assert set(round_) == set(FEATURES)
    assert round_["sphericity"] > irregular["sphericity"] + 0.1
    assert round_["solidity"] > 0.85 > irregular["solidity"]
    assert round_["edge_mm"] < irregular["edge_mm"]
    assert round_["hu_std"] < irregular["hu_std"]
    assert round_["contrast"] < -30 < 30 < irregular["contrast"]  # hypodense vs hyperdense to the 40 HU host
    assert round_["ring_air"] == 0.0 and round_["ring_mean"] == pytest.approx(40, abs=5)
    assert round_["pos_x"] > 0.6 > 0.4 > irregular["pos_x"]  # the patient's left vs right within the body
    assert round_["log_volume"] == pytest.approx(np.log(_ball((48, 64, 80), (24, 32, 56), 7).sum() * SPACING**3))


def test_measurements_do_not_depend_on_the_scan_orientation():
    image, labels = _body_with_two_lesions()
    flipped = {}
    for name, img in (("image", image), ("labels", labels)):
        arr = sitk.GetArrayFromImage(img)[:, ::-1, ::-1]  # the same patient stored RAS: x and y reversed
        out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        out.SetSpacing(img.GetSpacing())
        out.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        flipped[name] = out
    a, b = _features(image, labels), _features(flipped["image"], flipped["labels"])
    for label in (1, 2):
        for key in FEATURES:
            assert b[label][key] == pytest.approx(a[label][key], rel=1e-4, abs=1e-4), (label, key)


def test_the_host_shell_counts_enhanced_vessels_along_a_lesion_and_not_its_noise():
    image, labels = _body_with_two_lesions()
    hu = sitk.GetArrayFromImage(image)
    alone = _features(image, labels)[1]["ring_vessel"]
    vessel = np.zeros(hu.shape, bool)
    vessel[:, 30:35, 63:68] = True  # a 7 mm tube along z, passing 0-6 mm beside the round lesion (x 49-63)
    hu[vessel & (sitk.GetArrayFromImage(labels) == 0)] = 140.0  # enhanced blood, 100 HU above the 40 HU host
    hu[vessel & (hu > 300)] = 140.0
    with_vessel = sitk.GetImageFromArray(hu)
    with_vessel.CopyInformation(image)
    beside = _features(with_vessel, labels)[1]["ring_vessel"]
    assert alone == 0.0  # 4 HU noise never stands 40 HU above the host
    assert 0.02 < beside < 0.5
    hu[vessel & (sitk.GetArrayFromImage(labels) == 0)] = 900.0  # bone, not blood
    as_bone = sitk.GetImageFromArray(hu)
    as_bone.CopyInformation(image)
    assert _features(as_bone, labels)[1]["ring_vessel"] == 0.0


ONE_SIDED = {"kind": "one_sided", "feature": "ring_vessel", "description": "relationship.vascular",
             "organ": "liver", "quantile": 0.9}


def _relationship_examples(n=80, seed=5):
    """Liver and kidney lesions, none along the vessels; the kidney's shells are brighter (enhancing cortex)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        organ = ("liver", "kidney")[i % 2]
        f = {k: 0.0 for k in FEATURES} | {"pos_z": 0.5 if organ == "liver" else 0.2,
                                         "ring_vessel": float(rng.uniform(0, 0.02 if organ == "liver" else 0.2))}
        attrs = {"location": [f"location.{organ}.{'right_lobe' if organ == 'liver' else 'left'}"],
                 "relationship": ["relationship.separate"]}
        out.append(Example(f, attrs, f"{organ}_tumor"))
    return out


def test_a_one_sided_description_is_evidence_only_above_the_cut_and_only_in_its_organ():
    examples = _relationship_examples()
    specs = {"relationship": ONE_SIDED, "location": {"kind": "knn", "k": 3, "features": ["pos_z"], "scale": [1.0]}}
    fitted = fit(examples, specs)
    clf = fitted.aspects["relationship"]
    liver = sorted(e.features["ring_vessel"] for e in examples if e.disease == "liver_tumor")
    assert clf.params["cut"] == pytest.approx(np.quantile(liver, 0.9)) and clf.params["lesions"] == 40  # kidneys ignored
    assert "relationship" not in fitted.meta["leave_one_disease_out"]
    along = {k: 0.0 for k in FEATURES} | {"pos_z": 0.5, "ring_vessel": 0.1}
    assert fitted.distributions(along)["relationship"] == {"relationship.vascular": 1.0}
    assert "relationship" not in fitted.distributions(along | {"ring_vessel": 0.001})  # below the cut: no evidence
    assert "relationship" not in fitted.distributions(along | {"pos_z": 0.2})  # a kidney lesion: the description is the liver's
    ids = ["relationship.separate", "relationship.vascular", "location.liver.right_lobe", "location.kidney.left"]
    rows = {"relationship": np.array([0, 1]), "location": np.array([2, 3])}
    token = np.array([0.8, 0.2, 0.5, 0.5], np.float32)
    assert fitted.blend(token, rows, ids, along)[1] > 0.5 > token[1]
    assert fitted.blend(token, rows, ids, along | {"ring_vessel": 0.0})[[0, 1]] == pytest.approx(token[[0, 1]])
    back = MeasuredAttributes.from_json(json.loads(json.dumps(fitted.to_json())))
    assert back.distributions(along) == fitted.distributions(along)
    assert fit_aspect(ONE_SIDED, [e for e in examples if e.disease == "kidney_tumor"], "relationship") is None


def test_a_one_sided_location_moves_its_organs_share_to_a_place_no_training_lesion_had():
    """Gallstones lie in bile; a wall mass with less bile around it than nine in ten of them is read in the wall."""
    rng = np.random.default_rng(3)
    examples = []
    for i in range(60):
        organ = ("gallbladder", "liver")[i % 2]
        f = {k: 0.0 for k in FEATURES} | {"pos_z": 0.4 if organ == "gallbladder" else 0.7,
                                         "ring_fluid": float(rng.uniform(0.5, 0.9) if organ == "gallbladder" else rng.uniform(0, 0.1))}
        place = "location.gallbladder.lumen" if organ == "gallbladder" else "location.liver.right_lobe"
        examples.append(Example(f, {"location": [place]}, "gallstone" if organ == "gallbladder" else "liver_tumor"))
    wall = {"kind": "one_sided", "aspect": "location", "feature": "ring_fluid", "below": True,
            "description": "location.gallbladder.wall", "organ": "gallbladder", "quantile": 0.1}
    specs = {"location": {"kind": "knn", "k": 3, "features": ["pos_z"], "scale": [1.0]}, "location_wall": wall}
    fitted = fit(examples, specs)
    clf = fitted.aspects["location_wall"]
    stones = [e.features["ring_fluid"] for e in examples if e.disease == "gallstone"]
    assert clf.params["cut"] == pytest.approx(np.quantile(stones, 0.1)) and clf.params["lesions"] == 30
    assert clf.params["aspect"] == "location" and sum(clf.predict([e.features])[0, 0] for e in examples if e.disease == "gallstone") == 3
    mass = {k: 0.0 for k in FEATURES} | {"pos_z": 0.4, "ring_fluid": 0.2}
    read = fitted.distributions(mass)["location"]
    lumen = fitted.distributions(mass | {"ring_fluid": 0.8})["location"]  # in bile: the k-NN's reading, untouched
    assert lumen["location.gallbladder.lumen"] > 0.5
    assert read["location.gallbladder.wall"] == pytest.approx(lumen["location.gallbladder.lumen"])
    assert "location.gallbladder.lumen" not in read and read["location.liver.right_lobe"] == lumen["location.liver.right_lobe"]
    in_liver = fitted.distributions(mass | {"pos_z": 0.7})["location"]  # little bile around a liver lesion: no wall
    assert "location.gallbladder.wall" not in in_liver
    back = MeasuredAttributes.from_json(json.loads(json.dumps(fitted.to_json())))
    assert back.distributions(mass) == fitted.distributions(mass)


def _examples(n=60, seed=1):
    """Lesions whose shape follows sphericity, whose location follows the side of the body."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f = {k: float(rng.normal()) for k in FEATURES}
        f["sphericity"] = float(rng.uniform(0.4, 1.0))
        f["pos_x"] = float(rng.uniform(0, 1))
        attrs = {"shape": ["shape.round" if f["sphericity"] > 0.7 else "shape.irregular"],
                 "location": ["location.kidney.left" if f["pos_x"] > 0.5 else "location.kidney.right"]}
        out.append(Example(f, attrs, ("kidney_cyst", "kidney_tumor", "kidney_stone")[i % 3]))
    return out


SPECS = {"shape": {"kind": "logistic", "features": ["sphericity", "hu_mean"]},
         "location": {"kind": "knn", "k": 3, "features": ["pos_x", "pos_z"], "scale": [1.0, 0.0]}}


def test_classifiers_learn_a_measured_rule_and_survive_their_file():
    train, test = _examples(), _examples(seed=2)
    fitted = fit(train, SPECS, {"dataset": "constructed"})
    for aspect, key in (("shape", "sphericity"), ("location", "pos_x")):
        clf = fitted.aspects[aspect]
        pred = [clf.classes[i] for i in clf.predict([e.features for e in test]).argmax(1)]
        truth = [e.attributes[aspect][0] for e in test]
        assert np.mean([p == t for p, t in zip(pred, truth)]) >= 0.85, aspect
    assert fitted.meta["leave_one_disease_out"]["shape"] >= 0.85  # the rule holds for every "disease"
    assert fitted.meta["fitted_on"] == {"dataset": "constructed", "lesions": 60, "created": fitted.meta["fitted_on"]["created"]}
    back = MeasuredAttributes.from_json(json.loads(json.dumps(fitted.to_json())))
    for aspect, dist in fitted.distributions(test[0].features).items():
        assert back.distributions(test[0].features)[aspect] == pytest.approx(dist, abs=1e-6)
    with pytest.raises(ModelError, match="damaged"):
        MeasuredAttributes.from_json({**fitted.to_json(), "aspects": {"shape": {"kind": "logistic"}}})
    with pytest.raises(ModelError, match="not a"):
        MeasuredAttributes.from_json({"format": "other/1"})
    with pytest.raises(InputError, match="too few"):
        fit(train[:5], SPECS)
    assert fit_aspect(SPECS["shape"], [e for e in train if e.attributes["shape"] == ["shape.round"]], "shape") is None


DENSITY = {"kind": "organ_level",
           "organ": {"kind": "knn", "k": 3, "features": ["pos_z"], "scale": [1.0]},
           "level": {"kind": "logistic", "features": ["contrast"], "balanced": True},
           "lung": {"kind": "logistic", "features": ["hu_mean"], "balanced": True}}


def _density_examples(n=90, seed=4):
    """Kidney lesions (low in the body) hypodense or isodense, liver lesions (higher) of all three levels,
    lung lesions (top) ground-glass or solid: no training lesion is a hyperdense kidney lesion."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        organ = ("kidney", "liver", "lung")[i % 3]
        level = {"kidney": ("hypodense", "isodense")[(i // 3) % 2], "liver": ("hyperdense", "isodense", "hypodense")[(i // 3) % 3],
                 "lung": ("lung.ground_glass", "lung.soft_tissue")[i % 2]}[organ]
        f = {k: 0.0 for k in FEATURES} | {"pos_z": {"kidney": 0.2, "liver": 0.5, "lung": 0.85}[organ] + rng.normal(0, 0.03),
                                           "contrast": {"hypodense": -40.0, "hyperdense": 45.0}.get(level, 0.0) + rng.normal(0, 4),
                                           "hu_mean": -600.0 if level == "lung.ground_glass" else 40.0 + rng.normal(0, 5)}
        density = f"density.{level}" if organ == "lung" else f"density.{level}.{organ}"
        out.append(Example(f, {"location": [f"location.{organ}.x"], "density": [density]},
                           {"kidney": "kidney_cyst", "liver": "liver_tumor", "lung": "lung_tumor"}[organ]))
    return out


def test_density_is_fitted_as_organ_times_level_so_an_unseen_pair_can_be_named():
    """A hyperdense kidney lesion: every training kidney lesion was hypodense, so a classifier over whole
    descriptions has no such class; the level (from the contrast to the host) and the organ (from the
    position) fitted apart name it, and the level transfers to a left-out disease."""
    examples = _density_examples()
    plain = {"density": {"kind": "knn", "k": 3, "features": ["pos_z", "contrast"], "scale": [1.0, 0.01]}}
    fitted = fit(examples, {"density": DENSITY})
    clf = fitted.aspects["density"]
    assert "density.hyperdense.kidney" in clf.classes and "density.lung.ground_glass" in clf.classes
    assert "density.hyperdense.kidney" not in fit(examples, plain).aspects["density"].classes
    hyper_kidney = {k: 0.0 for k in FEATURES} | {"pos_z": 0.2, "contrast": 50.0, "hu_mean": 90.0}
    dist = fitted.distributions(hyper_kidney)["density"]
    assert max(dist, key=dist.get) == "density.hyperdense.kidney"
    assert sum(dist.values()) == pytest.approx(1.0)
    ground_glass = fitted.distributions({**hyper_kidney, "pos_z": 0.85, "hu_mean": -620.0})["density"]
    assert max(ground_glass, key=ground_glass.get) == "density.lung.ground_glass"
    # left out, the kidney's levels are read from the liver's; whole descriptions of an organ no other
    # disease has cannot be named at all
    assert fitted.meta["leave_one_disease_out"]["density"] > fit(examples, plain).meta["leave_one_disease_out"]["density"] + 0.3
    back = MeasuredAttributes.from_json(json.loads(json.dumps(fitted.to_json())))
    assert back.distributions(hyper_kidney)["density"] == pytest.approx(dist, abs=1e-6)
    damaged = fitted.to_json()
    del damaged["aspects"]["density"]["level"]["weights"]
    with pytest.raises(ModelError, match="damaged"):
        MeasuredAttributes.from_json(damaged)


def test_a_description_no_training_lesion_showed_stays_reachable_in_the_blend():
    fitted = fit(_examples(), SPECS)
    ids = ["shape.round", "shape.irregular", "shape.oval", "location.kidney.left", "location.kidney.right",
           "density.fluid"]
    rows = {"shape": np.array([0, 1, 2]), "location": np.array([3, 4]), "density": np.array([5])}
    token = np.array([0.2, 0.5, 0.3, 0.5, 0.5, 1.0], np.float32)
    features = {**_examples(1)[0].features, "sphericity": 0.98, "pos_x": 0.9}
    fitted.weight = 0.0
    assert fitted.blend(token, rows, ids, features) == pytest.approx(token, abs=1e-6)
    fitted.weight = 0.5
    mixed = fitted.blend(token, rows, ids, features)
    assert mixed[[0, 1, 2]].sum() == pytest.approx(1.0) and mixed[[3, 4]].sum() == pytest.approx(1.0)
    assert mixed[0] > token[0] and mixed[3] > token[3]  # round, on the left: the measurement moved both
    assert mixed[2] > 0.05  # "oval" was in no training lesion: only the floor speaks for it, but it stays
    assert mixed[5] == token[5]  # an aspect without a classifier keeps the token's distribution
    # the location's own share: at 1 its rows are the measurement (with the floor) alone, the token ignored
    fitted.aspect_weights = {"location": 1.0}
    own = fitted.blend(token, rows, ids, features)
    other_token = fitted.blend(np.array([0.2, 0.5, 0.3, 0.9, 0.1, 1.0], np.float32), rows, ids, features)
    assert own[[3, 4]] == pytest.approx(other_token[[3, 4]], abs=1e-6) and own[3] > mixed[3]
    assert own[[0, 1, 2]] == pytest.approx(mixed[[0, 1, 2]], abs=1e-6)  # shape keeps the file's share
    back = MeasuredAttributes.from_json(json.loads(json.dumps(fitted.to_json())))
    assert back.aspect_weights == {"location": 1.0} and back.weight_of("shape") == 0.5
    for bad in ({"location": 1.5}, {"where": 1.0}):
        with pytest.raises(ModelError, match="weights must be|unknown aspects"):
            MeasuredAttributes.from_json({**fitted.to_json(), "aspect_weights": bad})


def test_leave_one_disease_out_cannot_name_a_description_only_the_left_out_disease_has():
    examples = _examples()
    for e in examples:
        if e.disease == "kidney_stone":
            e.attributes["shape"] = ["shape.oval"]
    assert leave_one_disease_out(examples, SPECS)["shape"] < 0.7


def test_a_balanced_classifier_does_not_call_every_lesion_by_the_most_common_description():
    """Two thirds of the training lesions heterogeneous, their spreads overlapping the homogeneous ones':
    fitted plainly the classifier calls nearly every lesion heterogeneous; class-balanced it finds the
    homogeneous ones, and the balanced leave-one-disease-out accuracy says which of the two transfers."""
    rng = np.random.default_rng(3)
    examples = []
    for i in range(300):
        hetero = i % 3 != 0
        spread = float(np.exp(rng.normal(3.0 if hetero else 2.7, 0.45)))
        f = {k: 0.0 for k in FEATURES} | {"hu_std": spread, "log_hu_std": float(np.log(spread))}
        examples.append(Example(f, {"density_variation": ["density_variation.heterogeneous" if hetero
                                                          else "density_variation.homogeneous"]},
                                ("liver_tumor", "kidney_cyst", "colon_tumor", "gallstone")[i % 4]))
    homogeneous = [e for e in examples if e.attributes["density_variation"] == ["density_variation.homogeneous"]]
    recall = {}
    for balanced in (False, True):
        spec = {"density_variation": {"kind": "logistic", "features": ["log_hu_std"], "balanced": balanced}}
        clf = fit_aspect(spec["density_variation"], examples, "density_variation")
        calls = [clf.classes[i] for i in clf.predict([e.features for e in homogeneous]).argmax(1)]
        recall[balanced] = np.mean([c == "density_variation.homogeneous" for c in calls])
        plain_lodo = leave_one_disease_out(examples, spec)["density_variation"]
        balanced_lodo = leave_one_disease_out(examples, spec, balanced=True)["density_variation"]
        if not balanced:
            assert plain_lodo > balanced_lodo  # the plain accuracy rewards naming the majority
    assert recall[False] < 0.3 and recall[True] > 0.55  # seeded: 0.22 and 0.65
    assert fit(examples, {"density_variation": {"kind": "logistic", "features": ["log_hu_std"], "balanced": True}}
               ).meta["leave_one_disease_out_balanced"]["density_variation"] > 0.6


def test_fit_attributes_then_segment_reports_the_measured_attributes(tmp_path_factory, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_trained_model(tmp_path_factory), model)
    data = make_tiny_dataset(tmp_path / "ds", n_cases=8, shape=(36, 40, 40), max_lesions=3)
    res = malenia("fit-attributes", "--model", model, "--data", data, "--split", "all", "--progress", "none")
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((model / "manifest.json").read_text())
    assert FILE in manifest["files"] and manifest["measured_attributes"]["lesions"] >= 10
    assert "leave-one-disease-out accuracy" in res.stdout
    fitted = json.loads((model / FILE).read_text())
    for args, message in ((["--aspect-weight", "where=1"], "unknown aspect"), (["--aspect-weight", "location=1.5"], "[0, 1]"),
                          ([], "nothing would change")):
        bad = malenia("fit-attributes", "--model", model, *args, "--progress", "none")
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr[-500:]
    res = malenia("fit-attributes", "--model", model, "--aspect-weight", "location=1.0", "--progress", "none")
    assert res.returncode == 0, res.stderr[-2000:]
    reweighed = json.loads((model / FILE).read_text())  # the same classifiers, only the location's share added
    assert reweighed.pop("aspect_weights") == {"location": 1.0} and reweighed == fitted
    report = segment_report(_body_with_two_lesions()[0], model, tmp_path / "segment")
    used = report["extra"]["measured_attributes"]
    assert used["weight"] == WEIGHT and "shape" in used["aspects"] and used["aspect_weights"] == {"location": 1.0}
    details = report["extra"]["lesions"]
    assert details and all(set(d["measurements"]) == set(FEATURES) for d in details)
    bad = malenia("fit-attributes", "--model", model, "--data", data, "--weight", "2", "--progress", "none")
    assert bad.returncode != 0 and "--weight" in bad.stderr
    # a fine-tune keeps the classifiers: they read lesion measurements, not the network
    assert_fine_tune_inherits(model, data, tmp_path, FILE, "measured_attributes")


def test_examples_from_predictions_measure_the_predicted_mask_of_each_detected_lesion(tmp_path_factory, tmp_path):
    from malenia.data.dataset import read_case
    from malenia.evaluate.attribute_examples import examples_from_predictions
    from malenia.infer.pipeline import Segmenter, SegmentOptions, load_model

    data = make_tiny_dataset(tmp_path / "ds", n_cases=3, shape=(36, 40, 40))
    segmenter = Segmenter(load_model(tiny_trained_model(tmp_path_factory)),
                          SegmentOptions(device="cpu", threshold=0.05, min_volume_mm3=0.0))
    examples = list(examples_from_predictions(segmenter, data, None))
    assert examples, "at threshold 0.05 the tiny model overlaps the spheres"
    case = read_case(data, "case00")
    result = segmenter.segment(case.image)
    predicted = _features(case.image, result.labels)
    reference = _features(case.image, case.lesions)
    first = examples[0]  # case00 has one lesion, so the first example is its predicted mask, measured
    assert first.disease == case.report.lesions[0].disease
    assert first.attributes["shape"] == [d.id for d in case.report.lesions[0].attributes["shape"]]
    assert any(first.features == f for f in predicted.values())
    assert first.features != reference[1]  # not the reference mask's measurements
