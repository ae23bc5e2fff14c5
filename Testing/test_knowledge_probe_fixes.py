"""Site profiles probed as a user would (session 65, probe d): every refusal is one line with its exit code, never a
traceback, and nothing is written or created by a refused command."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

from malenia.cli import main as cli

ADD = ["knowledge", "add", "hepatic_haemangioma", "--name", "Hepatic haemangioma", "--organ", "liver",
       "-d", "shape.round=3", "shape.oval", "surface.well_defined=9", "surface.ill_defined"]


def _add(site, *extra) -> int:
    return cli([*ADD, "--knowledge", str(site), *extra])


def _profile(site, **changes) -> None:
    """Hand-edits the haemangioma profile of `site` (as a user with a text editor would)."""
    path = site / "hepatic_haemangioma.json"
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_key_too_long_for_a_file_name_is_refused_not_a_traceback(tmp_path, capsys):
    site = tmp_path / "site"
    key = "a" + "b" * 300
    assert cli(["knowledge", "add", key, "--name", "X", "--organ", "liver", "--knowledge", str(site)]) == 3
    assert "at most" in _one_line_error(capsys)
    assert cli(["knowledge", "remove", key, "--knowledge", str(site)]) == 3
    _one_line_error(capsys)
    assert cli(["knowledge", "edit", key, "--name", "Y", "--knowledge", str(site)]) == 3
    _one_line_error(capsys)
    assert not list(site.glob("*.json"))


def test_a_profile_folder_that_cannot_be_made_or_is_a_file_gives_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert _add(afile / "sub") == 5  # a folder under a file cannot be created
    assert "afile" in _one_line_error(capsys)
    assert cli(["knowledge", "remove", "hepatic_haemangioma", "--knowledge", str(afile)]) == 3
    assert "not a folder" in _one_line_error(capsys)
    # a reader told to read profiles from a file: refused, not "does not exist" and silently no profiles
    assert cli(["knowledge", "list", "--knowledge", str(afile)]) == 3
    assert "not a folder" in _one_line_error(capsys)
    assert afile.read_text() == "not a folder"


def test_remove_from_a_missing_folder_creates_nothing(tmp_path, capsys):
    site = tmp_path / "nosuch"
    assert cli(["knowledge", "remove", "hepatic_haemangioma", "--knowledge", str(site)]) == 3
    assert "no site profile" in _one_line_error(capsys)
    assert not site.exists()
    assert cli(["knowledge", "remove", "liver_cyst", "--knowledge", str(site)]) == 3  # the model's own: still explained
    assert "model's knowledge table" in _one_line_error(capsys)
    assert not site.exists()


@contextlib.contextmanager
def _read_only(folder):
    """`folder` made unwritable: by its mode for a user, with the immutable attribute for root (who ignores modes)."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("cannot make a folder read-only here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("lock_exists", [True, False])
def test_a_read_only_profile_folder_gives_one_line_and_keeps_its_profiles(tmp_path, capsys, lock_exists):
    site = tmp_path / "site"
    assert _add(site) == 0
    if not lock_exists:
        (site / ".malenia-knowledge.lock").unlink()
    before = sorted(p.name for p in site.iterdir())
    capsys.readouterr()
    with _read_only(site):
        assert cli(["knowledge", "add", "other_mass", "--name", "Other", "--organ", "liver", "--knowledge", str(site)]) == 5
        assert str(site) in _one_line_error(capsys)
        assert cli(["knowledge", "edit", "hepatic_haemangioma", "--name", "Y", "--knowledge", str(site)]) == 5
        _one_line_error(capsys)
        assert cli(["knowledge", "remove", "hepatic_haemangioma", "--knowledge", str(site)]) == 5
        _one_line_error(capsys)
        assert cli(["knowledge", "list", "--knowledge", str(site)]) == 0  # reading needs no write access
        assert "hepatic_haemangioma" in capsys.readouterr().out
    assert sorted(p.name for p in site.iterdir()) == before


def test_a_writers_staging_file_is_not_read_as_a_profile(tmp_path, capsys):
    from malenia.infer.site_table import table_in_force_at

    site = tmp_path / "site"
    assert _add(site) == 0
    # what atomic_path stages while a profile is written (left behind by a writer killed with -9)
    (site / ".other_mass.json.partial.4242-abcd1234.json").write_text('{"name": "half')
    table = table_in_force_at(None, [site])
    assert "hepatic_haemangioma" in table.diseases and "other_mass" not in table.diseases
    assert cli(["knowledge", "list", "--knowledge", str(site)]) == 0
    # a profile linked from a share that is gone is not skipped as a removed one would be
    (site / "linked_mass.json").symlink_to(tmp_path / "unmounted" / "linked_mass.json")
    capsys.readouterr()
    assert cli(["knowledge", "list", "--knowledge", str(site)]) == 3
    assert "linked_mass.json" in _one_line_error(capsys)


@pytest.mark.parametrize("changes, words", [
    ({"rationale": ["round"]}, "rationale"),
    ({"rationale": "round"}, "rationale"),
    ({"name": None}, "name"),
    ({"name": {"en": "x"}}, "name"),
    ({"name": "two\nlines"}, "name"),
    ({"version": "abc"}, "version"),
    ({"version": [1]}, "version"),
    ({"version": 0}, "version"),
    ({"seen": "no"}, "seen"),
    ({"finding_count": {"1": float("nan")}}, "finding_count"),
    ({"finding_count": {"1": 1.0, "2": float("inf")}}, "finding_count"),
])
def test_a_hand_edited_profile_of_the_wrong_types_stops_list_and_edit_with_one_line(tmp_path, capsys, changes, words):
    site = tmp_path / "site"
    assert _add(site) == 0
    _profile(site, **changes)
    capsys.readouterr()
    assert cli(["knowledge", "list", "--knowledge", str(site)]) == 3
    err = _one_line_error(capsys)
    assert "hepatic_haemangioma.json" in err and words in err
    assert cli(["knowledge", "edit", "hepatic_haemangioma", "--name", "Y", "--knowledge", str(site)]) == 3
    _one_line_error(capsys)


def test_a_probability_written_as_true_is_refused(tmp_path, capsys):
    site = tmp_path / "site"
    assert _add(site) == 0
    obj = json.loads((site / "hepatic_haemangioma.json").read_text())
    obj["profile"]["shape"] = {"shape.round": True}
    (site / "hepatic_haemangioma.json").write_text(json.dumps(obj))
    capsys.readouterr()
    assert cli(["knowledge", "list", "--knowledge", str(site)]) == 3
    assert "shape.round" in _one_line_error(capsys)


@pytest.mark.parametrize("weight", ["inf", "1e400", "-inf"])
def test_an_infinite_weight_is_refused_naming_it(tmp_path, capsys, weight):
    site = tmp_path / "site"
    assert _add(site, "-d", f"density.hypodense.liver={weight}") == 3
    err = _one_line_error(capsys)
    assert f"density.hypodense.liver={weight}" in err and "nan" not in err
    assert not site.exists() or not list(site.glob("*.json"))


def test_huge_finite_weights_are_normalised_without_overflow(tmp_path, capsys):
    site = tmp_path / "site"
    assert _add(site, "-d", "density.hypodense.liver=1e308", "density.isodense.liver=1e308") == 0
    density = json.loads((site / "hepatic_haemangioma.json").read_text())["profile"]["density"]
    assert density == {"density.hypodense.liver": 0.5, "density.isodense.liver": 0.5}


def test_a_description_given_twice_is_refused_not_silently_reweighted(tmp_path, capsys):
    site = tmp_path / "site"
    assert _add(site, "-d", "density.hypodense.liver=1", "density.hypodense.liver=5") == 3
    assert "given twice" in _one_line_error(capsys)
    assert not site.exists() or not list(site.glob("*.json"))


def test_a_display_name_of_two_lines_is_refused(tmp_path, capsys):
    site = tmp_path / "site"
    add = list(ADD)
    add[add.index("--name") + 1] = "Hepatic\nhaemangioma"
    assert cli([*add, "--knowledge", str(site)]) == 3
    assert "--name" in _one_line_error(capsys)
    assert not site.exists() or not list(site.glob("*.json"))


def test_the_origin_records_where_a_profile_is_whatever_the_working_folder(tmp_path, monkeypatch):
    from malenia.infer.site_table import table_in_force_at

    monkeypatch.chdir(tmp_path)
    assert _add("site") == 0
    table = table_in_force_at(None, ["site"])
    paths = [p["path"] for p in table.origin["profiles"] if p["key"] == "hepatic_haemangioma"]
    assert paths == [str(tmp_path / "site" / "hepatic_haemangioma.json")]  # report.json is read from elsewhere


def test_a_segment_named_by_a_non_latin_disease_name_is_not_left_nameless():
    from malenia.infer.seg_nrrd import segment_name

    assert segment_name("血管瘤", "hepatic_haemangioma", 3) == "hepatic haemangioma 3"
    assert segment_name("血管瘤 2", "hepatic_haemangioma", 5) == "hepatic haemangioma 5"
    assert segment_name("Hämangiom", "hepatic_haemangioma", 1) == "Hamangiom"
    assert segment_name("Liver cyst 2", "liver_cyst", 4) == "Liver cyst 2"


def test_the_slicer_profile_editor_says_why_a_profile_cannot_be_saved(tmp_path):
    """folder_lock and write_profile refuse an unwritable folder with OutputError (a MaleniaError, no longer an
    OSError): the editor's Save must still say so on its status line."""
    import slicer_segment_support  # noqa: F401  (puts MaleniaSegment on sys.path)
    from malenia.infer.site_table import table_in_force_at
    from MaleniaSegmentLib.profile_editor import ProfileEditor, ProfileEditorLogic, get, qt_compat

    qt_compat.ensure_application()
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    editor = ProfileEditor(ProfileEditorLogic(lambda: table_in_force_at(None, []), afile / "site"))
    editor.select_disease(None)
    editor.key_edit.setText("liver_mass_x")
    editor.name_edit.setText("Liver mass X")
    editor.organ_combo.setCurrentIndex(editor.organ_combo.findText("liver"))
    editor.save_button.click()
    assert "Not saved" in get(editor.status, "text") and "afile" in get(editor.status, "text")
    editor.widget.close()


def test_an_edit_keeps_the_rationale_and_provenance_of_what_it_does_not_change(tmp_path, capsys):
    from malenia.aspects import ASPECTS

    site = tmp_path / "site"
    assert _add(site) == 0
    _profile(site, rationale={a: f"why {a}" for a in ASPECTS},
             estimated_from={"dataset": "lidc", "split": "train", "disease": "lung_tumor", "lesions": 540})
    edit = ["knowledge", "edit", "hepatic_haemangioma", "--knowledge", str(site)]
    assert cli([*edit, "--rationale", "shape=checked by a second reader"]) == 0
    obj = json.loads((site / "hepatic_haemangioma.json").read_text())
    assert obj["rationale"] == {**{a: f"why {a}" for a in ASPECTS}, "shape": "checked by a second reader"}
    assert obj["estimated_from"]["lesions"] == 540 and obj["version"] == 2
    # new values for an aspect: its old reason no longer explains them and goes; the others stay
    assert cli([*edit, "-d", "surface.well_defined"]) == 0
    obj = json.loads((site / "hepatic_haemangioma.json").read_text())
    assert "surface" not in obj["rationale"] and obj["rationale"]["shape"] == "checked by a second reader"
    assert len(obj["rationale"]) == 7 and obj["estimated_from"]["dataset"] == "lidc"


@pytest.mark.parametrize("name, charset", [("血管瘤", "ISO_IR 192"), ("Hämangiom", "ISO_IR 100")])
def test_a_dicom_seg_keeps_a_disease_name_of_another_script(shared_data, tmp_path, name, charset):
    import numpy as np
    import pydicom
    import SimpleITK as sitk

    from malenia.data.ct_io import read_ct
    from malenia.infer import outputs
    from malenia.infer.results import DiseaseCall, ScanInfo, SegmentationResult
    from test_outputs_write import MODEL, _lesion

    folder = shared_data / "ct" / "totalseg-example" / "example_ct_dicom"
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = read_ct(folder)
    arr = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    arr[6:10, 280:320, 180:220] = 1
    labels = sitk.GetImageFromArray(arr)
    labels.CopyInformation(image)
    lesion = _lesion(1, "hepatic_haemangioma", "location.liver.right_lobe", 0.66)
    lesion.disease = DiseaseCall("hepatic_haemangioma", name, 0.66, [("liver_cyst", 0.1)])
    result = SegmentationResult(labels, image, ScanInfo.from_image(image, str(folder), None, dicom_files=files), MODEL,
                                [lesion])
    written = outputs.write_outputs(result, tmp_path / "out", formats=["dicom"])
    ds = pydicom.dcmread(str(written["dicom"]), stop_before_pixels=True)
    assert ds.SegmentSequence[0].SegmentLabel == name and ds.SpecificCharacterSet == charset  # not "???"


def test_a_profile_saved_with_a_byte_order_mark_loads(tmp_path, capsys):
    from malenia.infer.site_table import table_in_force_at

    site = tmp_path / "site"
    assert _add(site) == 0
    path = site / "hepatic_haemangioma.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_text().replace("\n", "\r\n").encode("utf-8"))  # Notepad's way
    table = table_in_force_at(None, [site])
    assert table.name("hepatic_haemangioma") == "Hepatic haemangioma"


def test_the_unclassified_call_cannot_be_a_disease_key(tmp_path, capsys):
    from malenia.knowledge.inference import UNCLASSIFIED
    from malenia.knowledge.table import RESERVED_KEYS

    assert UNCLASSIFIED in RESERVED_KEYS
    site = tmp_path / "site"
    assert cli(["knowledge", "add", UNCLASSIFIED, "--name", "X", "--organ", "liver", "--knowledge", str(site)]) == 3
    assert "reserved" in _one_line_error(capsys)
    assert not site.exists()
    # nor a file made by hand: it would be named "unclassified" with unclassified false
    assert _add(site) == 0
    (site / "hepatic_haemangioma.json").rename(site / f"{UNCLASSIFIED}.json")
    capsys.readouterr()
    assert cli(["knowledge", "list", "--knowledge", str(site)]) == 3
    assert "reserved" in _one_line_error(capsys)


def test_classify_names_the_closest_description_of_a_typo(capsys):
    assert cli(["knowledge", "classify", "shape.rond", "location.liver.right_lobe"]) == 3
    assert "closest: shape.round" in _one_line_error(capsys)
    assert cli(["knowledge", "classify", "round or round-like lesion shape", "location.liver.right_lobe"]) == 0
