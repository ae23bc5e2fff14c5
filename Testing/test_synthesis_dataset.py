"""`malenia synth`: same seed same dataset, read-back, zero-shot splits, reports from the knowledge table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.aspects import SEEN_DISEASES, TRANSPLANT_TYPES, UNSEEN_DISEASES
from malenia.cli import main
from malenia.data.dataset import read_case, read_dataset
from malenia.data.synthesis.generate import load_split, make_demo_case, synthesize_dataset
from malenia.knowledge.table import KnowledgeTable
from malenia.knowledge.vocabulary import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(size=(64, 64, 64), spacing=(5.0, 5.0, 5.0))


def arrays(ds, case_id):
    c = read_case(ds, case_id)
    return [sitk.GetArrayFromImage(x) for x in (c.image, c.lesions, c.organs)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    synthesize_dataset(out, ["phantom"], ["kidney_cyst", "liver_tumor", "kidney_tumor", "gallstone"], 5, seed=4,
                       lesions_per_case=(1, 2), test_fraction=0.4, val_fraction=0.2, **SMALL)
    return out


def test_same_seed_same_dataset(dataset, tmp_path):
    again = tmp_path / "again"
    synthesize_dataset(again, ["phantom"], ["kidney_cyst", "liver_tumor", "kidney_tumor", "gallstone"], 5, seed=4,
                       lesions_per_case=(1, 2), test_fraction=0.4, val_fraction=0.2, **SMALL)
    a, b = read_dataset(dataset), read_dataset(again)
    assert [c.rsplit("_", 1)[1] for c in a.cases] == [c.rsplit("_", 1)[1] for c in b.cases]
    assert {k: [c.rsplit("_", 1)[1] for c in v] for k, v in a.split.items()} == {k: [c.rsplit("_", 1)[1] for c in v] for k, v in b.split.items()}
    for ca, cb in zip(a.cases, b.cases):
        for x, y in zip(arrays(dataset, ca), arrays(again, cb)):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
        ra = json.loads((dataset / "cases" / ca / "report.json").read_text())
        rb = json.loads((again / "cases" / cb / "report.json").read_text())
        assert ra["lesions"] == rb["lesions"]
    other = tmp_path / "other"
    synthesize_dataset(other, ["phantom"], ["kidney_cyst"], 1, seed=5, **SMALL)
    assert arrays(other, read_dataset(other).cases[0])[0].tobytes() != arrays(dataset, a.cases[0])[0].tobytes()


def test_zero_shot_split_and_reports(dataset):
    index = read_dataset(dataset)
    assert set(index.split) == {"train", "val", "test"} and len(index.split["test"]) == 2
    table, vocab = KnowledgeTable.load(), Vocabulary.load()
    for split, ids in index.split.items():
        for cid in ids:
            case = read_case(dataset, cid)
            labels = sitk.GetArrayFromImage(case.lesions)
            assert sorted(int(v) for v in np.unique(labels) if v) == [l.label for l in case.report.lesions]
            allowed = UNSEEN_DISEASES if split == "test" else SEEN_DISEASES
            for lesion in case.report.lesions:
                assert lesion.disease in allowed  # training never sees an unseen type
                assert lesion.attributes["enhancement"][0].id == case.report.enhancement.id
                profile = table.profile(lesion.disease)
                for aspect, descs in lesion.attributes.items():
                    assert descs, aspect
                    for d in descs:
                        assert d.text == vocab.text(d.id)
                        if aspect not in ("enhancement",) and d.id != "specific_features.none":
                            assert profile[aspect].get(d.id, 0) > 0, (lesion.disease, d.id)
                assert lesion.extra["synthesis"]["voxels"] == int((labels == lesion.label).sum())
            assert set(json.loads((dataset / "cases" / cid / "report.json").read_text())["extra"]["organ_labels"].values()) >= {"liver"}


def test_written_dataset_reads_back_identical(tmp_path):
    from malenia.data.dataset import write_case

    case = make_demo_case(0)
    assert {l.disease for l in case.report.lesions} & set(SEEN_DISEASES)
    assert {l.disease for l in case.report.lesions} & set(UNSEEN_DISEASES)
    write_case(tmp_path, case)
    back = read_case(tmp_path, case.case_id)
    for x, y in ((case.image, back.image), (case.lesions, back.lesions), (case.organs, back.organs)):
        assert np.array_equal(sitk.GetArrayFromImage(x), sitk.GetArrayFromImage(y))
        assert x.GetSpacing() == y.GetSpacing() and x.GetOrigin() == y.GetOrigin()
    assert back.report.to_json() == json.loads(json.dumps(case.report.to_json()))
    again = make_demo_case(0)
    assert sitk.GetArrayFromImage(again.image).tobytes() == sitk.GetArrayFromImage(case.image).tobytes()


def test_cli_on_the_real_base(tmp_path, shared_data, capsys):
    out = tmp_path / "real"
    rc = main(["synth", "--base", str(shared_data / "ct" / "totalseg-example"), "--diseases", "liver_tumor,kidney_cyst,pancreas_cyst",
               "--cases", "2", "--out", str(out), "--seed", "1", "--lesions-per-case", "2", "--quiet"])
    assert rc == 0
    index = read_dataset(out)
    assert len(index.cases) == 2
    img = arrays(out, index.cases[0])[0]
    assert img.shape == (30, 101, 122)
    assert "wrote 2 cases" in capsys.readouterr().out


def test_host_floor_is_recorded_and_off_by_default(dataset, tmp_path, shared_data):
    out = tmp_path / "floored"
    assert main(["synth", "--base", str(shared_data / "ct" / "totalseg-example"), "--diseases", "pancreas_cyst,pancreas_tumor",
                 "--cases", "2", "--out", str(out), "--seed", "1", "--lesions-per-case", "2", "--host-floor", "--quiet"]) == 0
    index = read_dataset(out)
    assert index.extra["host_floor"] is True and "host_floor" not in read_dataset(dataset).extra
    for case_id in index.cases:
        for lesion in read_case(out, case_id).report.lesions:
            density = lesion.extra["synthesis"]["density"]
            assert density["host_floor"] and density["target_hu"] >= 0.0  # no pancreatic lesion at fat density
            assert density["reference_hu"] >= 30.0


@pytest.mark.parametrize("argv, code, message", [
    (["--diseases", "kidney_flu"], 3, "unknown disease"),
    (["--diseases", "kidney_cyst", "--size", "8"], 3, "--size"),
    (["--diseases", "kidney_cyst", "--split", "nope"], 3, "split protocol not found"),
    (["--diseases", "kidney_cyst", "--lesions-per-case", "0"], 3, "lesions-per-case"),
    (["--diseases", "kidney_cyst", "--mix-attributes", "1.5"], 3, "--mix-attributes"),
    (["--diseases", "kidney_cyst", "--mix-density", "-0.1"], 3, "--mix-density"),
])
def test_cli_refuses_bad_input(tmp_path, capsys, argv, code, message):
    out = tmp_path / "ds"
    rc = main(["synth", "--base", "phantom", "--cases", "1", "--out", str(out), "--quiet", *argv])
    assert rc == code and message in capsys.readouterr().err
    assert not out.exists()


def test_mixed_attributes_leave_the_disease_look_and_are_drawn(tmp_path):
    """--mix-attributes 1: shape, density variation and margin no longer follow the disease (pancreatic tumours
    are 97 % heterogeneous, kidney cysts 97 % homogeneous in their profiles), and the renderer draws what the
    report says."""
    table = KnowledgeTable.load()
    out = tmp_path / "mixed"
    synthesize_dataset(out, ["phantom"], ["pancreas_tumor", "kidney_cyst"], 8, seed=3, lesions_per_case=(2, 2),
                       val_fraction=0.0, test_fraction=0.0, mix_attributes=1.0, **SMALL)
    mix = read_dataset(out).extra["mix_attributes"]
    assert mix["probability"] == 1.0 and set(mix["aspects"]) == {"shape", "density_variation", "surface"}
    assert set(mix["aspects"]["density_variation"]) == {"density_variation.heterogeneous", "density_variation.homogeneous"}
    off_profile, variation = 0, {}
    for cid in read_dataset(out).cases:
        for les in read_case(out, cid).report.lesions:
            synthesis = les.extra["synthesis"]
            assert synthesis["mixed"] == ["shape", "density_variation", "surface"]
            ids = {a: les.attributes[a][0].id for a in ("shape", "density_variation", "surface")}
            assert all(i in mix["aspects"][a] for a, i in ids.items())
            assert synthesis["texture"]["heterogeneous"] == (ids["density_variation"] == "density_variation.heterogeneous")
            assert synthesis["surface"]["id"] == ids["surface"]
            profile = table.profile(les.disease)
            off_profile += sum(profile[a].get(i, 0.0) < 0.05 for a, i in ids.items())
            variation.setdefault(les.disease, set()).add(ids["density_variation"])
    assert off_profile >= 4  # without mixing, about one lesion in 30 shows any such description
    assert any(len(v) == 2 for v in variation.values())


def test_mixed_density_levels_are_drawn_for_the_organ_and_rendered(tmp_path):
    """--mix-density 1: kidney cysts (97 % hypodense in their profile) and liver tumours come at every level the
    training diseases show, named for their own organ, and the renderer puts them above, near or below their host.
    Calcific, fluid and lung densities are not levels and keep their draw."""
    from malenia.data.synthesis.mixing import AttributeMix

    mix = AttributeMix.of(KnowledgeTable.load(), list(SEEN_DISEASES), 0.0, 1.0)
    for kept in ("density.calcific", "density.fluid", "density.lung.mixed"):
        attrs = {"density": [kept]}
        assert mix.apply(attrs, np.random.default_rng(0)) == [] and attrs == {"density": [kept]}
    out = tmp_path / "mixed"
    synthesize_dataset(out, ["phantom"], ["kidney_cyst", "liver_tumor", "pancreas_tumor"], 9, seed=5, lesions_per_case=(2, 2),
                       val_fraction=0.0, test_fraction=0.0, mix_density=1.0, **SMALL)
    mix = read_dataset(out).extra["mix_attributes"]
    assert mix["probability"] == 0.0 and mix["density"] == {"probability": 1.0, "levels": ["hypodense", "isodense", "hyperdense"]}
    levels, organs_ok = set(), 0
    for cid in read_dataset(out).cases:
        for les in read_case(out, cid).report.lesions:
            density = les.attributes["density"][0].id
            synthesis = les.extra["synthesis"]
            assert synthesis["mixed"] == ["density"]
            level, organ = density.split(".")[1:]
            organs_ok += organ == {"kidney_cyst": "kidney", "liver_tumor": "liver", "pancreas_tumor": "pancreas"}[les.disease]
            levels.add((les.disease, level))
            d = synthesis["density"]
            offset = d["target_hu"] - d["host"]["mean"]
            assert d["class"] == level and {"hypodense": offset < -10, "isodense": abs(offset) < 10,
                                            "hyperdense": offset > 10}[level]
    assert organs_ok == 18 and {lv for _, lv in levels} == {"hypodense", "isodense", "hyperdense"}
    assert len({lv for d, lv in levels if d == "kidney_cyst"}) >= 2  # 97 % hypodense without the mix


def test_no_mixing_draws_nothing_and_writes_nothing(dataset):
    from malenia.data.synthesis.mixing import AttributeMix

    mix = AttributeMix.of(KnowledgeTable.load(), ["liver_tumor", "kidney_cyst"], 0.0)
    rng = np.random.default_rng(1)
    attrs = {"shape": ["shape.round"]}
    assert mix.apply(attrs, rng) == [] and attrs == {"shape": ["shape.round"]}
    assert not mix.density_active and "density" not in mix.to_json()
    assert rng.random() == np.random.default_rng(1).random()  # the generator did not move: old seeds, old data
    assert "mix_attributes" not in read_dataset(dataset).extra
    assert all("mixed" not in les.extra["synthesis"] for cid in read_dataset(dataset).cases
               for les in read_case(dataset, cid).report.lesions)


def test_cli_refuses_missing_base_and_existing_output(tmp_path, capsys):
    rc = main(["synth", "--base", str(tmp_path / "none"), "--diseases", "kidney_cyst", "--cases", "1", "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 3 and "base folder not found" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "y").mkdir()
    rc = main(["synth", "--base", "phantom", "--diseases", "kidney_cyst", "--cases", "1", "--out", str(tmp_path / "y"), "--quiet"])
    assert rc == 5 and "exists" in capsys.readouterr().err



def test_commands_refuse_a_folder_that_is_not_a_dataset(dataset, tmp_path, capsys):
    """One check (malenia.data.dataset.require_dataset) names the argument and the missing file."""
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 3
    assert f"{tmp_path / 'none'} is not a Malenia dataset (no dataset.json)" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset), "--replay", str(tmp_path), "--out", str(tmp_path / "run")]) == 3
    assert f"--replay {tmp_path} is not a Malenia dataset" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset), "--augment", "scael=[1,2]", "--out", str(tmp_path / "run")]) == 3
    assert "unknown augmentation field(s) ['scael']" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset), "--augment", "scale", "--out", str(tmp_path / "run")]) == 3
    assert "--augment needs KEY=VALUE" in capsys.readouterr().err
    for flag in ("--val-every", "--log-every", "--checkpoint-every"):  # a step count of 0 would divide by zero later
        with pytest.raises(SystemExit) as usage:
            main(["train", "--data", str(dataset), flag, "0", "--out", str(tmp_path / "run")])
        assert usage.value.code == 2 and f"{flag}: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_split_files():
    zs = load_split("zero_shot")
    # training-only transplanted looks are drawn only when asked for (--diseases transplant)
    assert zs["diseases"]["train"] == list(SEEN_DISEASES) + list(TRANSPLANT_TYPES)
    assert zs["diseases"]["test"] == list(UNSEEN_DISEASES)
    assert not set(zs["diseases"]["train"]) & set(zs["diseases"]["test"])
    assert set(load_split("all_diseases")["diseases"]["train"]) == set(SEEN_DISEASES) | set(UNSEEN_DISEASES)


def test_shards_merge_into_the_one_process_dataset(dataset, tmp_path, capsys):
    """`synth --shard K/N` parts, merged by scripts/merge_datasets.py, are the dataset one process writes:
    same ids, splits and voxels (what lets a GPU machine rebuild a CPU dataset on all its cores)."""
    import importlib.util
    import subprocess
    import sys

    from malenia.cli import main

    spec = importlib.util.spec_from_file_location("merge_datasets", ROOT / "scripts" / "merge_datasets.py")
    merge_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_mod)
    common = ["synth", "--base", "phantom", "--diseases", "kidney_cyst,liver_tumor,kidney_tumor,gallstone", "--cases", "5",
              "--seed", "4", "--lesions-per-case", "1-2", "--test-fraction", "0.4", "--val-fraction", "0.2",
              "--size", str(SMALL["size"][0]), "--spacing", str(SMALL["spacing"][0]), "--name", "ds", "--quiet"]
    for k in (1, 2):
        assert main(common + ["--shard", f"{k}/2", "--out", str(tmp_path / f"part{k}")]) == 0
    assert len(read_dataset(tmp_path / "part1").cases) == 3 and len(read_dataset(tmp_path / "part2").cases) == 2
    merged = merge_mod.merge(tmp_path / "ds", [tmp_path / "part2", tmp_path / "part1"])
    whole = read_dataset(dataset)
    assert merged.cases == whole.cases and merged.split == whole.split
    for case in whole.cases:
        for x, y in zip(arrays(dataset, case), arrays(tmp_path / "ds", case)):
            assert x.tobytes() == y.tobytes()
    # one part missing: refused, not merged into a smaller dataset that looks whole
    assert main(common + ["--shard", "1/2", "--out", str(tmp_path / "lone")]) == 0
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "merge_datasets.py"), str(tmp_path / "short"), str(tmp_path / "lone")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "some are missing" in done.stderr and not (tmp_path / "short").exists()
    assert len(read_dataset(tmp_path / "lone").cases) == 3  # nothing moved out of the part
    assert all((tmp_path / f"part{k}" / "cases").is_dir() for k in (1, 2))  # a merge leaves its parts as they were
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "merge_datasets.py"), str(tmp_path / "ds"),
                            str(tmp_path / "part1"), str(tmp_path / "part2")], capture_output=True, text=True)
    assert again.returncode == 5 and "exists" in again.stderr  # an existing dataset is not merged into
    usage = subprocess.run([sys.executable, str(ROOT / "scripts" / "merge_datasets.py"), str(tmp_path / "alone")],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "SHARD" in usage.stderr and not (tmp_path / "alone").exists()
    assert main(common + ["--shard", "3/2", "--out", str(tmp_path / "bad")]) != 0
    assert "--shard K/N needs" in capsys.readouterr().err


def test_a_lesion_that_cannot_be_placed_is_left_out_and_named_when_another_fits(monkeypatch, tmp_path):
    """A third stone in a small gallbladder used to stop the whole dataset; now the case keeps the lesions that fit,
    its report names the one left out, and a case where nothing fits is still an error."""
    import malenia.data.synthesis.generate as gen
    from malenia.data.synthesis.placement import PlacementError

    render = gen.render_lesion

    def no_gallstones(anat, canvas, label, disease, *args, **kwargs):
        if disease == "gallstone":
            raise PlacementError("a gallstone of radius 2.1 mm does not fit at this resolution")
        return render(anat, canvas, label, disease, *args, **kwargs)

    monkeypatch.setattr(gen, "render_lesion", no_gallstones)
    source = gen.BaseSource("phantom", (64, 64, 64), (5.0, 5.0, 5.0))
    case = gen.synthesize_case("c", source, ["gallstone", "kidney_cyst", "gallstone"], np.random.default_rng(0),
                               disease_pool=["gallstone"])
    assert [les.disease for les in case.report.lesions] == ["kidney_cyst"]
    assert [les.label for les in case.report.lesions] == [1]
    assert set(np.unique(sitk.GetArrayFromImage(case.lesions))) == {0, 1}
    left_out = case.report.extra["synthesis"]["lesions_not_placed"]
    assert [x["disease"] for x in left_out] == ["gallstone", "gallstone"] and "does not fit" in left_out[0]["reason"]
    with pytest.raises(gen.InputError, match="cannot place a gallstone lesion"):
        gen.synthesize_case("d", source, ["gallstone"], np.random.default_rng(0), disease_pool=["gallstone"])
    out = tmp_path / "ds"
    with pytest.raises(gen.InputError):
        synthesize_dataset(out, ["phantom"], ["gallstone"], 2, seed=0, lesions_per_case=(1, 1), **SMALL)
    assert not out.exists()


def test_diameter_draws_a_disease_at_the_range_given_and_refuses_what_it_cannot_draw(tmp_path, capsys):
    """`synth --diameter liver_tumor=5-9`: that disease's lesions drawn at 5-9 mm instead of its profile's 15-70 mm,
    recorded in dataset.json; the other diseases and everything else drawn as without it."""
    common = ["synth", "--base", "phantom", "--diseases", "liver_tumor,kidney_cyst", "--cases", "4", "--seed", "5",
              "--lesions-per-case", "2", "--val-fraction", "0", "--test-fraction", "0", "--size", "80", "--spacing", "2.5",
              "--quiet"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--diameter", "liver_tumor=5-9", "--out", str(tmp_path / "small")]) == 0

    def radii(ds):
        out = []
        for case in read_dataset(ds).cases:
            out += [(les.disease, les.extra["synthesis"]["radius_mm"]) for les in read_case(ds, case, with_images=False).report.lesions]
        return out

    plain, small = radii(tmp_path / "plain"), radii(tmp_path / "small")
    assert "liver_tumor" in [d for d, _ in small] and "liver_tumor" in [d for d, _ in plain]
    assert all(r <= 4.5 for d, r in small if d == "liver_tumor")  # a placement only ever shrinks a lesion
    assert all(r >= 7.5 for d, r in plain if d == "liver_tumor")  # 15 mm is the profile's smallest diameter
    assert all(r >= 4.0 for d, r in small if d == "kidney_cyst")  # 8 mm: its own profile's range, unchanged
    assert read_dataset(tmp_path / "small").extra["diameters_mm"] == {"liver_tumor": [5.0, 9.0]}
    assert "diameters_mm" not in read_dataset(tmp_path / "plain").extra
    for bad, said in (("liver_tumor=9-5", "need 0 < LO <= HI"), ("liver_tumor=5", "must be DISEASE=LO-HI"),
                      ("liver_cist=5-9", "unknown disease"), ("gallstone=5-9", "which --diseases does not draw")):
        assert main(common + ["--diameter", bad, "--out", str(tmp_path / "bad")]) != 0
        assert said in capsys.readouterr().err and not (tmp_path / "bad").exists()
