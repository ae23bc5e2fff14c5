"""Hard-example mining: false positives and missed lesions found by the shipped post-processing, their file,
`malenia mine` and `malenia train --hard-negatives --missed-fraction` end to end."""

import json

import numpy as np
import pytest

from malenia.data.hard_negatives import FORMAT, read_hard_negatives, write_hard_negatives
from malenia.errors import InputError
from malenia.evaluate.mining import case_mistakes
from segment_helpers import constructed_map as _map, malenia, tiny_trained_model
from train_helpers import make_tiny_dataset, tiny_config


def _case():
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[2:5, 2:5, 2:5] = 1
    truth[0:2, 9:12, 9:12] = 2  # no probability there: missed at any threshold
    truth[8, 3, 0] = 3  # touched only by the 27-voxel block's corner ...
    prob = np.zeros(truth.shape, np.float32)
    prob[1:6, 1:6, 1:6] = 0.6  # a lesion, over-segmented: touches the truth, not a false positive
    prob[9, 9, 9:11] = (0.7, 0.8)  # a 2-voxel speck (16 mm³), peak at x = 10
    prob[7:10, 0:3, 0:3] = 0.5  # a 27-voxel false positive (216 mm³) ...
    prob[8, 2, 1] = 0.9  # ... peaking here
    prob[8, 3, 0] = 0.5  # ... which reaches lesion 3: not a false positive, and lesion 3 is found
    return _map(prob), truth


def test_false_positives_are_the_kept_components_outside_the_truth_at_their_peak():
    pm, truth = _case()
    truth[8, 3, 0] = 0  # without lesion 3 the block is a false positive
    found = case_mistakes(pm, truth, threshold=0.45, min_volume_mm3=0.0)
    assert found.shape == (12, 12, 12)
    assert sorted(map(tuple, found.centres.tolist())) == [(8, 2, 1), (9, 9, 10)]
    assert sorted(found.voxels) == [2, 28] and sorted(found.peaks) == pytest.approx([0.8, 0.9])
    # the shipped minimum volume drops the speck; a higher threshold keeps only the peak of the block
    assert case_mistakes(pm, truth, 0.45, 20.0).centres.tolist() == [[8, 2, 1]]
    assert case_mistakes(pm, truth, 0.85, 0.0).voxels == [1]


def test_missed_lesions_are_those_no_kept_component_touches():
    pm, truth = _case()
    found = case_mistakes(pm, truth, threshold=0.45, min_volume_mm3=0.0)
    assert found.missed == [2]  # lesion 1 over-segmented, lesion 3 reached by the block's corner
    assert found.centres.tolist() == [[9, 9, 10]]  # the block touches lesion 3: no longer a false positive
    # the block (28 voxels = 224 mm³) dropped by a minimum volume no longer finds lesion 3; lesion 1's 125 do
    assert case_mistakes(pm, truth, 0.45, 230.0).missed == [2, 3]
    assert case_mistakes(pm, truth, 0.95, 0.0).missed == [1, 2, 3]  # nothing kept: every lesion missed


def test_the_file_round_trips_and_bad_files_are_refused(tmp_path):
    from malenia.data.hard_negatives import HardNegatives

    pm, truth = _case()
    mined = HardNegatives((2.0, 2.0, 2.0), {"a": case_mistakes(pm, truth, 0.45, 0.0)}, {"threshold": 0.45})
    path = tmp_path / "hn.json"
    write_hard_negatives(path, mined)
    back = read_hard_negatives(path)
    assert back.spacing == (2.0, 2.0, 2.0) and back.meta["threshold"] == 0.45 and back.count == 1
    assert np.array_equal(back.cases["a"].centres, mined.cases["a"].centres)
    assert back.cases["a"].missed == [2] and back.missed_count == 1
    doc = json.loads(path.read_text())
    del doc["cases"]["a"]["missed"]  # a file mined before misses were recorded
    (tmp_path / "old.json").write_text(json.dumps(doc))
    assert read_hard_negatives(tmp_path / "old.json").missed_count == 0
    (tmp_path / "neg.json").write_text(json.dumps({**doc, "cases": {"a": {**doc["cases"]["a"], "missed": [0]}}}))
    with pytest.raises(InputError, match="damaged"):
        read_hard_negatives(tmp_path / "neg.json")
    doc["cases"]["a"]["centres"][0] = [12, 0, 0]  # outside the 12³ grid
    (tmp_path / "out.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="outside"):
        read_hard_negatives(tmp_path / "out.json")
    (tmp_path / "other.json").write_text(json.dumps({**doc, "format": "something/1"}))
    with pytest.raises(InputError, match=FORMAT):
        read_hard_negatives(tmp_path / "other.json")
    del doc["spacing"]
    (tmp_path / "damaged.json").write_text(json.dumps({**doc, "format": FORMAT}))
    with pytest.raises(InputError, match="damaged"):
        read_hard_negatives(tmp_path / "damaged.json")
    with pytest.raises(InputError, match="malenia mine"):
        read_hard_negatives(tmp_path / "missing.json")


def test_files_of_successive_models_merge_case_by_case_and_other_grids_are_refused():
    from malenia.data.hard_negatives import CaseNegatives, HardNegatives, merge_hard_negatives

    def mined(spacing, cases, missed=()):
        return HardNegatives(spacing, {cid: CaseNegatives(shape, np.array(c, np.int64).reshape(-1, 3), [1] * len(c),
                                                          [0.9] * len(c), list(missed)) for cid, (shape, c) in cases.items()})

    first = mined((2.0,) * 3, {"a": ((8, 8, 8), [[1, 2, 3]]), "b": ((9, 9, 9), [[4, 4, 4], [5, 5, 5]])})
    first.cases["a"].missed = [3, 1]
    second = mined((2.0,) * 3, {"a": ((8, 8, 8), [[7, 7, 7]]), "c": ((6, 6, 6), [[0, 0, 0]])}, missed=[2, 3])
    merged = merge_hard_negatives([first, second])
    assert merged.count == 5 and sorted(merged.cases) == ["a", "b", "c"]
    assert merged.cases["a"].missed == [1, 2, 3] and merged.cases["b"].missed == [] and merged.cases["c"].missed == [2, 3]
    assert merged.cases["a"].centres.tolist() == [[1, 2, 3], [7, 7, 7]] and len(merged.cases["a"].peaks) == 2
    assert first.cases["a"].centres.tolist() == [[1, 2, 3]]  # the parts are not changed
    assert merge_hard_negatives([first]) is first
    with pytest.raises(InputError, match="different grids"):
        merge_hard_negatives([first, mined((3.0,) * 3, {})])
    with pytest.raises(InputError, match="mined on grids"):
        merge_hard_negatives([first, mined((2.0,) * 3, {"a": ((9, 8, 8), [[0, 0, 0]])})])


def test_mine_then_train_on_the_mined_false_positives(tmp_path_factory, tmp_path):
    model = tiny_trained_model(tmp_path_factory)
    data = make_tiny_dataset(tmp_path / "ds", n_cases=3, shape=(36, 40, 40))
    out = tmp_path / "hn.json"
    res = malenia("mine", "--model", model, "--data", data, "--split", "all", "--out", out, "--threshold", "0.05",
                  "--min-volume", "0", "--threads", "1", "--progress", "none")
    assert res.returncode == 0, res.stderr[-2000:]
    mined = read_hard_negatives(out)
    assert len(mined.cases) == 3 and mined.meta["model"]["name"] and mined.meta["threshold"] == 0.05
    assert mined.count > 0, "at threshold 0.05 the tiny model claims voxels outside the spheres"
    assert f"{mined.count} false positives" in res.stdout and f"{mined.missed_count} lesions missed" in res.stdout
    # the misses by disease and contrast: the tiny data's liver tumours are bright spheres, its kidney cysts dark
    by_type = {t: {r["band"]: r for r in rows if r["lesions"]} for t, rows in mined.meta["by_polarity"].items()}
    assert set(by_type["liver_tumor"]) == {"brighter"} and set(by_type["kidney_cyst"]) == {"darker"}
    assert sum(r["lesions"] for r in by_type["all"].values()) == 1 + 2 + 1  # case i holds 1 + i % 2
    assert sum(r["lesions"] - r["detected"] for r in by_type["all"].values()) == mined.missed_count
    row = by_type["liver_tumor"]["brighter"]
    cell = f"{row['lesions'] - row['detected']}/{row['lesions']}"
    assert "liver_tumor" in res.stdout and cell in res.stdout.split("liver_tumor")[1].splitlines()[0]
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config().to_dict()))  # the mining model's grid
    train = malenia("train", "--config", config, "--data", data, "--split", "all", "--steps", "2",
                    "--hard-negatives", out, "--hard-negative-fraction", "1", "--missed-fraction", "1",
                    "--out", tmp_path / "run", "--threads", "1", "--progress", "none", "--workers", "0")
    assert train.returncode == 0, train.stderr[-2000:]
    bad_share = malenia("train", "--config", config, "--data", data, "--steps", "1", "--missed-fraction", "1.5",
                        "--out", tmp_path / "run3", "--progress", "none")
    assert bad_share.returncode != 0 and "--missed-fraction" in bad_share.stderr
    bad = malenia("train", "--config", config, "--data", data, "--split", "all", "--steps", "1",
                  "--hard-negatives", tmp_path / "none.json", "--out", tmp_path / "run2", "--progress", "none")
    assert bad.returncode != 0 and "malenia mine" in bad.stderr and not (tmp_path / "run2" / "model").exists()


def test_hard_negatives_mined_on_the_replay_dataset_place_its_patches(tmp_path):
    """`--replay-hard-negatives`: a model's mistakes on the replay dataset (e.g. fresh cases) centre that dataset's
    background patches, routed by option (both datasets here have the same case ids), and a file naming no
    training case of its dataset is refused instead of doing nothing."""
    from malenia.data.hard_negatives import CaseNegatives, HardNegatives
    from malenia.train.data import PatchStream, build_training_bank

    cfg = tiny_config()
    main = make_tiny_dataset(tmp_path / "main", n_cases=3)
    rep = make_tiny_dataset(tmp_path / "rep", n_cases=3, shape=(40, 44, 44), seed=1)
    bank = build_training_bank(cfg, [main, rep])
    plain = PatchStream(main, "train", cfg, bank, samples_per_epoch=4, replay=rep, replay_fraction=0.5,
                        hard_negative_fraction=1.0, lesion_fraction=0.0)
    case = plain.dataset.replay.cases[1]
    spot = np.array(case.image.shape) // 2 + np.array([3, -4, 5])
    spacing = tuple(plain.dataset.replay.preprocessor.target_spacing)
    mined = HardNegatives(spacing, {case.case_id: CaseNegatives(tuple(case.image.shape), spot[None].astype(np.int64),
                                                                [20], [0.9], missed=[])})
    write_hard_negatives(tmp_path / "rep_hn.json", mined)
    stream = PatchStream(main, "train", cfg, bank, samples_per_epoch=4, replay=rep, replay_fraction=0.5,
                         replay_hard_negatives=tmp_path / "rep_hn.json", hard_negative_fraction=1.0, lesion_fraction=0.0)
    assert stream.dataset.replay._with_negatives == [1] and stream.dataset.main._with_negatives == []
    half = np.array(cfg.patch_size) // 2
    for i in range(4):
        item = stream.dataset.replay[i]
        assert item["case_id"] == case.case_id and not item["lesion_centred"]
        assert np.all(np.abs(np.array(item["centre"]) - spot) <= half)
    # the main dataset's background patches stay where they were, the replay's moved
    assert [stream.dataset.main[i]["centre"] for i in range(4)] == [plain.dataset.main[i]["centre"] for i in range(4)]
    assert [stream.dataset.replay[i]["centre"] for i in range(4)] != [plain.dataset.replay[i]["centre"] for i in range(4)]
    with pytest.raises(InputError, match="--data: hard negatives mined on another dataset"):
        PatchStream(main, "val", cfg, bank, samples_per_epoch=4, hard_negatives=tmp_path / "rep_hn.json")
    with pytest.raises(InputError, match="without --replay"):
        PatchStream(main, "train", cfg, bank, samples_per_epoch=4, replay_hard_negatives=tmp_path / "rep_hn.json")
