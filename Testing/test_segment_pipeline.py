"""The `malenia segment` inference flow in-process: sliding windows, instances, matching, geometry, ROI, progress."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from malenia.errors import InputError
from segment_helpers import THRESHOLD, dice, sphere_ct, tiny_trained_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from malenia.infer.pipeline import load_model

    torch.set_num_threads(1)
    return load_model(tiny_trained_model(tmp_path_factory))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """An untrained tiny model: plumbing only."""
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.model.folder import load_model_folder, save_model_folder
    from malenia.model.network import MaleniaNet
    from train_helpers import tiny_config

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("fresh") / "model"
    # the token path: untrained tokens claim voxels everywhere (an untrained dense head starts at its
    # 1 % prior and claims nothing), which is what these window tests need
    cfg = tiny_config().replace(foreground_source="tokens")
    save_model_folder(path, config=cfg, network=MaleniaNet(cfg), bank=AttributeBank.build_or_load(Vocabulary.load(), load_text_encoder()),
                      knowledge_table=KnowledgeTable.load(), name="fresh", version="0", training_data="none")
    return load_model_folder(path)


def _segmenter(model, **kw):
    from malenia.infer.pipeline import Segmenter, SegmentOptions

    kw.setdefault("threshold", float(THRESHOLD))
    return Segmenter(model, SegmentOptions(device="cpu", **kw))


# --- geometry ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing,shape,centre,radius", [
    ((2.5, 2.5, 2.5), (40, 44, 48), (20, 14, 30), 4.5),  # the model's own spacing
    ((1.25, 1.25, 2.0), (50, 88, 96), (25, 28, 60), 9.0),  # finer, anisotropic: resampled both ways
])
def test_lesion_found_on_a_flipped_offset_grid_lands_on_the_truth(model, spacing, shape, centre, radius):
    img, truth = sphere_ct(shape, spacing, centre, radius)
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS-stored: preprocessing reorients to LPS and back
    img.SetOrigin((100.0, -50.0, 30.0))
    res = _segmenter(model).segment(img, "sphere")
    labels = res.labels
    assert labels.GetSize() == img.GetSize() and labels.GetSpacing() == img.GetSpacing()
    assert labels.GetOrigin() == img.GetOrigin() and labels.GetDirection() == img.GetDirection()
    arr = sitk.GetArrayFromImage(labels)
    assert len(res.lesions) == 1 and set(np.unique(arr)) == {0, 1}
    # the sphere is off-centre: a flip or shift in the mapping back would miss it
    assert dice(arr == 1, truth) > 0.6
    assert res.lesions[0].disease.name is not None
    assert res.extra["lesions"][0]["tokens"] >= 1 and res.extra["windows"]["run"] >= 1


def test_lesions_are_labelled_by_decreasing_volume_and_small_ones_removed(model):
    img, _ = sphere_ct((40, 44, 60), (2.5,) * 3, (20, 14, 15), 5.5)
    arr = sitk.GetArrayFromImage(img)
    zz, yy, xx = np.indices(arr.shape)
    arr[(zz - 20) ** 2 + (yy - 30) ** 2 + (xx - 45) ** 2 <= 3.5 ** 2] = 150.0  # a second, smaller sphere
    two = sitk.GetImageFromArray(arr)
    two.CopyInformation(img)
    res = _segmenter(model).segment(two, "two")
    lab = sitk.GetArrayFromImage(res.labels)
    sizes = [int((lab == les.label).sum()) for les in res.lesions]
    assert len(res.lesions) == 2 and sizes == sorted(sizes, reverse=True)
    assert lab[20, 14, 15] == 1 and lab[20, 30, 45] == 2
    # a minimum volume above the small sphere's removes it; the big one stays lesion 1
    small_mm3 = sizes[1] * 2.5 ** 3
    res2 = _segmenter(model, min_volume_mm3=small_mm3 * 1.5).segment(two, "two")
    assert [les.label for les in res2.lesions] == [1] and sitk.GetArrayFromImage(res2.labels)[20, 30, 45] == 0


# --- attributes, disease, enhancement -------------------------------------------------------------------

def test_every_lesion_has_eight_ranked_aspects_and_a_disease_from_the_table(model):
    from malenia.aspects import ASPECTS

    img, _ = sphere_ct()
    res = _segmenter(model, alternatives=2).segment(img, "sphere")
    table = model.knowledge_table()
    les = res.lesions[0]
    assert list(les.attributes) == list(ASPECTS)
    for aspect, m in les.attributes.items():
        assert m.id in table.vocab and table.vocab.aspect_of(m.id) == aspect
        scores = [m.score, *(a.score for a in m.alternatives)]
        assert scores == sorted(scores, reverse=True) and 0 < m.score <= 1 and len(m.alternatives) <= 2
        assert len({m.id, *(a.id for a in m.alternatives)}) == 1 + len(m.alternatives)
    # scores are normalised over the aspect's descriptions (a distribution that sums to 1)
    shape_ids = table.vocab.ids("shape")
    assert les.attributes["shape"].score + sum(a.score for a in les.attributes["shape"].alternatives) <= 1 + 1e-6
    assert len(shape_ids) >= 3
    d = les.disease
    assert d.name in table.diseases and 0 < d.probability <= 1
    assert [p for _, p in d.alternatives] == sorted((p for _, p in d.alternatives), reverse=True)
    assert all(p <= d.probability + 1e-9 for _, p in d.alternatives) or d.unclassified


def test_phase_confidence_decides_between_hu_and_model():
    from malenia.data.contrast import PhaseEstimate
    from malenia.infer.matching import phase_call, scan_enhancement
    from malenia.infer.results import AspectMatch, AttributeMatch
    from malenia.knowledge.vocabulary import Vocabulary

    vocab = Vocabulary.load()
    clear = phase_call(PhaseEstimate("contrast", "blood_pool_search", 180.0))
    near = phase_call(PhaseEstimate("non_contrast", "blood_pool_search", 70.0))
    vague = phase_call(PhaseEstimate("contrast", "body_search", 110.0))  # no spine found: needs a wider margin
    none = phase_call(PhaseEstimate(None, "undetermined"))
    assert clear.confident and clear.id == "enhancement.contrast" and clear.confidence > 0.99
    assert not near.confident and 0.5 < near.confidence < 0.9
    assert not vague.confident and not none.confident and none.id is None
    model_says = AspectMatch("enhancement.contrast", vocab.text("enhancement.contrast"), 0.8,
                             [AttributeMatch("enhancement.non_contrast", "x", 0.2)])
    e = scan_enhancement(clear, [(model_says, 1.0)], vocab)
    assert (e.id, e.method) == ("enhancement.contrast", "hu")
    e = scan_enhancement(near, [(model_says, 1.0)], vocab)  # not confident: the model's match
    assert (e.id, e.method, round(e.score, 3)) == ("enhancement.contrast", "model", 0.8)
    e = scan_enhancement(near, [], vocab)  # no lesions: the HU estimate anyway, with its low score
    assert (e.id, e.method) == ("enhancement.non_contrast", "hu") and e.score < 0.9
    assert scan_enhancement(none, [], vocab) is None


def test_confident_phase_sets_every_lesions_enhancement(model, monkeypatch):
    import malenia.data.contrast as contrast
    from malenia.data.contrast import PhaseEstimate

    img, _ = sphere_ct()
    monkeypatch.setattr(contrast, "detect_phase", lambda image, *a, **k: PhaseEstimate("non_contrast", "aorta_ivc_masks", 30.0, 28.0))
    res = _segmenter(model).segment(img, "sphere")
    assert res.scan.enhancement.method == "hu" and res.scan.enhancement.id == "enhancement.non_contrast"
    assert all(les.attributes["enhancement"].id == "enhancement.non_contrast" for les in res.lesions)
    assert res.extra["phase"]["used_for_enhancement"] is True


# --- sliding windows, candidates, instances -------------------------------------------------------------

def test_windows_cover_the_volume_and_candidates_sit_where_the_probability_is(fresh):
    """Overlap 0: windows do not blend, so each candidate voxel's probability is exactly its token's claim."""
    seg = _segmenter(fresh, overlap=0.0, threshold=0.5)
    rng = np.random.default_rng(0)
    vol = rng.uniform(0.2, 0.6, (64, 96, 32)).astype(np.float32)
    wp = seg.runner().run(vol)
    assert wp.probability.shape == vol.shape and wp.probability.dtype == np.float32
    assert wp.windows_total == 2 * 3 * 1 and wp.windows_run == wp.windows_total == wp.forward_passes
    assert wp.candidates, "an untrained model claims voxels everywhere"
    owned = np.zeros(vol.shape, np.int32)
    for c in wp.candidates:
        m = c.mask()
        assert m.sum() == c.voxels > 0 and all(s + n <= v for s, n, v in zip(c.start, c.shape, vol.shape))
        p = wp.probability[c.slices][m]
        assert p.min() >= 0.5 - 1e-5 and abs(p.mean() - c.mean_probability) < 1e-4
        assert abs(c.distribution.sum() - 8.0) < 1e-3  # one distribution per aspect
        owned[c.slices] += m
    assert owned.max() == 1  # tokens own disjoint voxels, windows do not overlap
    assert np.array_equal(owned > 0, wp.probability >= 0.5)


def test_air_windows_are_skipped_and_mirroring_runs_every_flip(fresh):
    vol = np.zeros((64, 64, 64), np.float32)
    vol[:20, :20, :20] = 0.4  # only the first 32^3 window holds tissue
    wp = _segmenter(fresh, overlap=0.0, threshold=0.5).runner().run(vol)
    assert (wp.windows_total, wp.windows_run) == (8, 1)
    assert np.all(wp.probability[32:, :, :] == 0) and np.all(wp.probability[:, 32:, :] == 0)
    wm = _segmenter(fresh, overlap=0.0, threshold=0.5, mirror=True).runner().run(vol)
    assert wm.windows_run == 1 and wm.forward_passes == 8
    # candidates come from the unflipped pass only: the same as without mirroring
    assert [(c.start, c.voxels) for c in wm.candidates] == [(c.start, c.voxels) for c in wp.candidates]
    assert not np.allclose(wm.probability[:32, :32, :32], wp.probability[:32, :32, :32])


def test_mirroring_follows_the_axes_the_model_trained_mirrored_on(fresh):
    """nnU-Net's rule: a model is averaged over the flips its training showed it; one trained without any is refused
    (mirrored views cost the built-in model most of what it finds), one whose manifest does not say gets all three."""
    from dataclasses import replace

    from malenia.errors import InputError

    def trained(flip_axes):
        return replace(fresh, manifest={**fresh.manifest, "training": {"augment": {"flip_axes": flip_axes}}})

    vol = np.zeros((32, 32, 32), np.float32)
    vol[4:20, 4:20, 4:20] = 0.4
    assert fresh.trained_flip_axes() is None and _segmenter(fresh, mirror=True).mirror_axes == (0, 1, 2)
    left_right = _segmenter(trained([2]), overlap=0.0, mirror=True)
    assert left_right.mirror_axes == (2,) and left_right.runner().run(vol).forward_passes == 2
    assert _segmenter(trained([]), mirror=False).mirror_axes == ()
    with pytest.raises(InputError, match="trained without mirrored patches"):
        _segmenter(trained([]), mirror=True)


@pytest.mark.parametrize("depth", [19, 20])
def test_a_volume_shorter_than_a_window_is_centred_as_the_training_sampler_centres_it(fresh, depth):
    """Training centres a volume that is smaller than the patch (start room // 2); inference must show the
    network the same layout, or the volume's edges sit next to padding the network never saw there."""
    from malenia.data.sampler import _crop

    runner = _segmenter(fresh, overlap=0.0, threshold=0.5).runner()
    rng = np.random.default_rng(1)
    vol = rng.uniform(0.2, 0.6, (depth, 32, 64)).astype(np.float32)  # windows do not overlap in y, x
    seen = []
    network = runner._network
    runner._network = lambda batch: (seen.append(batch.clone()), network(batch))[1]
    wp = runner.run(vol)
    patch = np.array(runner.roi)
    room = np.array(vol.shape) - patch
    first = _crop(vol, np.where(room >= 0, 0, room // 2), patch, runner.background)  # the sampler's patch
    assert np.array_equal(seen[0][0, 0].numpy(), first)
    assert wp.probability.shape == vol.shape
    assert wp.candidates and all(s >= 0 and s + n <= v for c in wp.candidates for s, n, v in zip(c.start, c.shape, vol.shape))
    for c in wp.candidates:  # each candidate's voxels are where the blended probability says so
        assert wp.probability[c.slices][c.mask()].min() >= 0.5 - 1e-5
    component = np.zeros(vol.shape, bool)
    component[2:6, 10:14, 20:25] = True
    c = runner.describe_at(vol, component)
    out = np.zeros(vol.shape, bool)
    out[c.slices] = c.mask()
    assert np.array_equal(out, component)


def test_instances_merge_tokens_and_windows_and_ignore_strays():
    from malenia.infer.instances import assign, components
    from malenia.infer.windows import TokenCandidate

    prob = np.zeros((20, 20, 20), np.float32)
    prob[2:8, 2:8, 2:8] = 0.9  # lesion A: 216 voxels
    prob[12:18, 12:18, 12:18] = 0.8  # lesion B
    prob[9:11, 9:11, 9:11] = 0.7  # lesion C: 8 voxels, inside the stray token's claim below
    prob[0, 19, 19] = 0.9  # a 1-voxel speck: removed
    labels, n = components(prob, 0.5, min_voxels=2)
    assert n == 3 and labels[0, 19, 19] == 0

    def cand(window, box, score, dist_value, centrality=1.0):
        sl = tuple(slice(a, b) for a, b in box)
        m = np.ones([b - a for a, b in box], bool)
        d = np.zeros(4, np.float32)
        d[dist_value] = 1.0
        return TokenCandidate(window, 0, tuple(a for a, _ in box), m.shape, np.packbits(m.ravel()), int(m.sum()),
                              score, 0.9, centrality, d), sl

    a1, _ = cand(0, [(2, 8), (2, 8), (2, 8)], 0.9, 0)  # window 0 sees all of A
    a2, _ = cand(1, [(2, 8), (2, 8), (5, 8)], 0.9, 1, centrality=0.5)  # window 1 sees half of A, near its border
    b1, _ = cand(1, [(12, 18), (12, 18), (12, 18)], 0.7, 2)
    # 216 voxels: 8 inside A (a stray there, below a quarter of either), all of C (it describes C)
    stray, _ = cand(2, [(6, 12), (6, 12), (6, 12)], 0.9, 3)
    inst = assign(labels, n, [a1, a2, b1, stray], prob, min_overlap=0.25)
    a = inst[labels[3, 3, 3] - 1]
    b = inst[labels[13, 13, 13] - 1]
    c = inst[labels[9, 9, 9] - 1]
    assert [x.window for x, _ in a.candidates] == [0, 1] and a.windows == 2
    assert [x.window for x, _ in b.candidates] == [1] and [x.window for x, _ in c.candidates] == [2]
    # weights: voxels inside x lesion score x centrality -> A = (216*0.9*1, 108*0.9*0.5) = 4:1
    assert a.distribution[0] == pytest.approx(0.8) and a.distribution[1] == pytest.approx(0.2)
    assert b.distribution[2] == pytest.approx(1.0) and a.distribution[3] == 0 and b.distribution[3] == 0
    assert c.distribution[3] == pytest.approx(1.0) and c.voxels == 8
    assert a.voxels == 216 and a.mean_probability == pytest.approx(0.9)


# --- ROI -------------------------------------------------------------------------------------------------

def test_roi_parsing_and_boxes_off_the_image():
    from malenia.infer.roi import RasBox, crop_region

    assert RasBox.parse("-30,5,90,10,35,110").lps_bounds[0].tolist() == [-10, -35, 90]
    for bad in ("1,2,3", "a,b,c,d,e,f", "0,0,0,0,1,1", "0,0,0,1,1,nan"):
        with pytest.raises(InputError, match="--roi"):
            RasBox.parse(bad)
    img, _ = sphere_ct()  # LPS x 0..117.5, RAS x -117.5..0
    with pytest.raises(InputError, match="does not overlap the image"):
        crop_region(img, RasBox.parse("10,0,0,20,10,10"))  # RAS x > 0 lies outside
    assert crop_region(img, RasBox.parse("-40,-40,20,-30,-30,30"), context_mm=0) == ((12, 17), (12, 17), (8, 13))


def test_roi_keeps_the_full_grid_and_clears_outside(model):
    img, truth = sphere_ct((40, 44, 60), (2.5,) * 3, (20, 14, 15), 5.5)
    arr = sitk.GetArrayFromImage(img)
    zz, yy, xx = np.indices(arr.shape)
    arr[(zz - 20) ** 2 + (yy - 30) ** 2 + (xx - 45) ** 2 <= 4.5 ** 2] = 150.0
    two = sitk.GetImageFromArray(arr)
    two.CopyInformation(img)
    # a box around the first sphere only (RAS = -LPS for x and y), cutting through it at z = 50 mm (index 20)
    box = "-60,-60,50,-10,-10,80"
    from malenia.infer.roi import RasBox

    res = _segmenter(model, roi=RasBox.parse(box)).segment(two, "two")
    lab = sitk.GetArrayFromImage(res.labels)
    assert res.labels.GetSize() == two.GetSize() and len(res.lesions) == 1
    assert lab[20, 14, 15] == 1 and lab[20, 30, 45] == 0
    assert not lab[:20].any() and lab[20:].any()  # voxel centres below z = 50 mm are outside
    assert dice(lab == 1, truth & (zz >= 20)) > 0.6
    assert res.extra["options"]["roi_ras_mm"] == "-60,-60,50,-10,-10,80"
    # a box over tissue without a lesion: nothing
    empty = _segmenter(model, roi=RasBox.parse("-110,-30,70,-90,-10,90")).segment(two, "two")
    assert empty.lesions == [] and not sitk.GetArrayFromImage(empty.labels).any()


# --- progress --------------------------------------------------------------------------------------------

def test_progress_json_lines_are_what_the_slicer_module_reads(model, tmp_path):
    import io
    import sys as _sys

    from malenia.infer.pipeline import SegmentOptions, segment_path
    from malenia.infer.progress import SegmentProgress
    from segment_helpers import REPO

    _sys.path.insert(0, str(REPO / "MaleniaSegment"))
    from MaleniaSegmentLib.runner import parse_progress

    img, _ = sphere_ct()
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    stream = io.StringIO()
    segment_path(tmp_path / "ct.nii.gz", tmp_path / "out", options=SegmentOptions(device="cpu"),
                 progress=SegmentProgress("json", stream), model=model)
    lines = stream.getvalue().splitlines()
    objs = [json.loads(x) for x in lines]
    assert all(set(o) == {"stage", "fraction", "message"} for o in objs)
    parsed = [parse_progress(x) for x in lines]
    fractions = [p.fraction for p in parsed]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.1
    stages = [p.stage for p in parsed]
    assert stages[-1] == "done" and "windows" in stages and stages.index("windows") < stages.index("outputs")
    assert sum(s == "windows" for s in stages) >= 1 + 8  # one line per window (8 windows here)


def test_window_batches_give_the_same_result_as_single_windows(fresh):
    vol = np.random.default_rng(3).uniform(0.2, 0.6, (40, 50, 36)).astype(np.float32)
    one = _segmenter(fresh, threshold=0.5).runner().run(vol)
    three = _segmenter(fresh, threshold=0.5, sw_batch_size=3).runner().run(vol)
    assert three.windows_total == one.windows_total == 8 and three.windows_run == 8
    np.testing.assert_allclose(three.probability, one.probability, atol=1e-5)
    key = lambda w: sorted((c.window, c.token, c.start, c.voxels) for c in w.candidates)  # noqa: E731
    assert key(three) == key(one) and len(one.candidates) > 0


def test_the_precision_option_is_checked_resolved_and_recorded(model):
    """`--precision`: an unknown value is an input error; the report names what it resolved to on this device,
    and float32 and the device's default find the same lesion."""
    from malenia.infer.pipeline import SegmentOptions
    from malenia.model.precision import resolve_precision

    with pytest.raises(InputError, match="precision must be auto, bf16 or fp32"):
        SegmentOptions(precision="fp16")
    img, truth = sphere_ct((40, 44, 48), (2.5, 2.5, 2.5), (20, 14, 30), 4.5)
    results = {p: _segmenter(model, precision=p).segment(img, "sphere") for p in ("fp32", "auto")}
    assert results["fp32"].extra["precision"] == "fp32 channels-last"
    assert results["auto"].extra["precision"] == resolve_precision("auto", "cpu").name
    assert results["auto"].extra["options"]["precision"] == "auto"
    for res in results.values():
        assert len(res.lesions) == 1 and dice(sitk.GetArrayFromImage(res.labels) == 1, truth) > 0.6
