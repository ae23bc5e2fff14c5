"""`malenia segment --mask`: lesions a reader outlined, described as `segment` describes its own."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.aspects import ASPECTS
from malenia.cli import main
from malenia.errors import EXIT_BAD_INPUT
from segment_helpers import sphere_ct, tiny_trained_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_trained_model(tmp_path_factory)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 40 x 120 x 48 block: the bright sphere the test model finds, and a patch of plain tissue it does not,
    outlined as values 7 and 3 (a reader's outline of a lesion the model missed)."""
    root = tmp_path_factory.mktemp("outlined")
    ct, ball = sphere_ct(shape_zyx=(40, 120, 48), centre_zyx=(20, 22, 24))
    mask = np.zeros(ball.shape, np.uint8)
    mask[ball] = 7
    mask[18:23, 90:96, 20:26] = 3
    mask[30, 60, 30] = 9  # one voxel: thinner than a model voxel only on finer grids, still a lesion to describe
    img = sitk.GetImageFromArray(mask)
    img.CopyInformation(ct)
    sitk.WriteImage(ct, str(root / "ct.nii.gz"))
    sitk.WriteImage(img, str(root / "mask.nii.gz"))
    return root, mask


def _segment(capsys, *args):
    code = main(["segment", *map(str, args), "--progress", "none"])
    return code, capsys.readouterr().err.strip()


def test_each_outlined_value_becomes_one_described_lesion_with_its_own_voxels(model, case, tmp_path, capsys):
    root, mask = case
    out = tmp_path / "out"
    code, err = _segment(capsys, root / "ct.nii.gz", "--mask", root / "mask.nii.gz", "--out", out, "--model", model)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["extra"]["outlined"] == {"input_labels": [3, 7, 9]}
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesions.nii.gz")))
    for k, value in enumerate([3, 7, 9], start=1):  # output labels 1..K in the values' order, voxel for voxel
        assert np.array_equal(labels == k, mask == value)
    assert [les["label"] for les in report["lesions"]] == [1, 2, 3]
    for les in report["lesions"]:
        assert set(les["attributes"]) == set(ASPECTS)
        assert les["disease"]["name"]
    details = {d["label"]: d for d in report["extra"]["lesions"]}
    assert all(details[k]["tokens"] >= 1 for k in (1, 2, 3))  # every outline read by the network, the missed one too
    assert report["extra"]["verifier"] is None  # no lesion removed: the outline is the lesion


def test_the_network_runs_around_the_outlines_only(model, case, tmp_path, capsys):
    root, mask = case
    one = np.where(mask == 7, 1, 0).astype(np.uint8)
    img = sitk.GetImageFromArray(one)
    img.CopyInformation(sitk.ReadImage(str(root / "ct.nii.gz")))
    sitk.WriteImage(img, str(tmp_path / "one.nii.gz"))
    assert _segment(capsys, root / "ct.nii.gz", "--mask", tmp_path / "one.nii.gz", "--out", tmp_path / "a",
                    "--model", model)[0] == 0
    assert _segment(capsys, root / "ct.nii.gz", "--out", tmp_path / "b", "--model", model)[0] == 0
    outlined = json.loads((tmp_path / "a" / "report.json").read_text())["extra"]
    whole = json.loads((tmp_path / "b" / "report.json").read_text())["extra"]
    assert outlined["model_grid"]["size_zyx"][1] < whole["model_grid"]["size_zyx"][1]  # the far end not prepared


def test_a_mask_on_another_grid_is_read_onto_the_ct(model, case, tmp_path, capsys):
    root, mask = case
    full = sitk.ReadImage(str(root / "mask.nii.gz"))
    crop = full[:, :60, :]  # (x, y, z): the first 60 rows, physical position kept
    sitk.WriteImage(crop, str(tmp_path / "crop.nii.gz"))
    code, err = _segment(capsys, root / "ct.nii.gz", "--mask", tmp_path / "crop.nii.gz", "--out", tmp_path / "o",
                         "--model", model)
    assert code == 0, err
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / "lesions.nii.gz")))
    assert labels.shape == mask.shape
    assert np.array_equal(labels == 1, mask == 7)  # the sphere lies in the crop; the patch at rows 90-95 does not
    assert labels.max() == 1


def _bad_masks(root, tmp):
    ct = sitk.ReadImage(str(root / "ct.nii.gz"))

    def write(name, array, like=ct, origin=None):
        img = sitk.GetImageFromArray(array)
        img.CopyInformation(like)
        if origin is not None:
            img.SetOrigin(origin)
        sitk.WriteImage(img, str(tmp / name))
        return tmp / name

    shape = sitk.GetArrayViewFromImage(ct).shape
    fractions = np.zeros(shape, np.float32)
    fractions[5, 5, 5] = 0.4
    ones = np.ones(shape, np.uint8)
    return {
        "empty": (write("empty.nii.gz", np.zeros(shape, np.uint8)), "outlines no lesion"),
        "fractions": (write("p.nii.gz", fractions), "fractions"),
        "off_the_ct": (write("far.nii.gz", ones, origin=(5000.0, 5000.0, 5000.0)), "none of its lesions lies inside the CT"),
        "unreadable": (tmp / "nowhere.nii.gz", "not a readable image"),
    }


@pytest.mark.parametrize("bad", ["empty", "fractions", "off_the_ct", "unreadable"])
def test_bad_masks_exit_3_with_one_line_and_write_nothing(bad, model, case, tmp_path, capsys):
    root, _ = case
    path, message = _bad_masks(root, tmp_path)[bad]
    code, err = _segment(capsys, root / "ct.nii.gz", "--mask", path, "--out", tmp_path / "out", "--model", model)
    assert code == EXIT_BAD_INPUT
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("extra", [["--threshold", "0.3"], ["--min-volume", "10"], ["--no-verifier"],
                                   ["--verifier-cut", "0.2"], ["--refine"], ["--roi", "0,0,0,10,10,10"]])
def test_options_that_decide_what_is_a_lesion_are_refused_with_a_mask(extra, model, case, tmp_path, capsys):
    root, _ = case
    code, err = _segment(capsys, root / "ct.nii.gz", "--mask", root / "mask.nii.gz", "--out", tmp_path / "out",
                         "--model", model, *extra)
    assert code == EXIT_BAD_INPUT
    assert extra[0] in err and "do(es) not apply" in err
