"""The corrections store keeps a correction pointing at a sound CT, and a stray file never blocks a save
(session 65's probe: a damaged stored CT was linked into every later version; a plain file `v0NN` made every
later save of that scan fail)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.data.corrections import CorrectionStore, case_name
from malenia.data.dataset import IMAGE_FILE, LesionReport, read_case
from malenia.errors import OutputError


def _scan(seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    arr = np.random.default_rng(seed).integers(-1000, 400, (8, 24, 24)).astype(np.int16)
    labels = np.zeros(arr.shape, np.uint8)
    labels[3:5, 8:14, 8:14] = 1
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 0.7, 2.5))
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    return image, mask


def _save(store: CorrectionStore, image: sitk.Image, mask: sitk.Image):
    return store.save(case_name("CT chest", image), image, mask, [LesionReport(1, None, {})])


def _blob(store: CorrectionStore):
    (blob,) = (store.root / "images").glob("*.nii.gz")
    return blob


def _same_voxels(store: CorrectionStore, case_id: str, image: sitk.Image) -> bool:
    read = read_case(store.root, case_id).image  # refuses a truncated file (ct_io.scan_data)
    return np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


def test_an_intact_stored_ct_is_shared_by_every_version(tmp_path):
    store, (image, mask) = CorrectionStore(tmp_path), _scan()
    first = _save(store, image, mask)
    blob = _blob(store)
    inode, mtime = blob.stat().st_ino, blob.stat().st_mtime_ns
    second = _save(store, image, mask)
    assert (blob.stat().st_ino, blob.stat().st_mtime_ns) == (inode, mtime)  # checked, not rewritten
    assert {(p / IMAGE_FILE).stat().st_ino for p in (first.path, second.path)} == {inode}
    assert blob.stat().st_nlink == 3


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_stored_ct_is_written_again_and_earlier_versions_mended(tmp_path, damage):
    store, (image, mask) = CorrectionStore(tmp_path), _scan()
    first = _save(store, image, mask)
    blob = _blob(store)
    size = blob.stat().st_size
    if damage == "truncated":
        os.truncate(blob, size // 2)  # in place: v001 (a hard link to it) is damaged with it
    else:
        with open(blob, "r+b") as f:  # same size, different bytes inside the compressed stream
            f.seek(size // 2)
            chunk = f.read(16)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
    second = _save(store, image, mask)
    assert _same_voxels(store, second.case_id, image)
    assert _same_voxels(store, first.case_id, image)  # relinked to the fresh copy
    # Still content-addressed: the fresh blob and both versions are one file.
    assert {(p / IMAGE_FILE).stat().st_ino for p in (first.path, second.path)} == {_blob(store).stat().st_ino}


def test_a_stored_ct_without_its_record_is_replaced_once_then_shared(tmp_path):
    store, (image, mask) = CorrectionStore(tmp_path), _scan()
    first = _save(store, image, mask)
    for record in (store.root / "images").glob("*.json"):  # a store from before records were kept
        record.unlink()
    second = _save(store, image, mask)
    third = _save(store, image, mask)
    inodes = {(v.path / IMAGE_FILE).stat().st_ino for v in (first, second, third)}
    assert inodes == {_blob(store).stat().st_ino} and _same_voxels(store, first.case_id, image)


@pytest.mark.parametrize("stray", ["v002", "v021"])
def test_a_stray_file_named_like_a_version_does_not_block_saving(tmp_path, stray):
    store, (image, mask) = CorrectionStore(tmp_path), _scan()
    first = _save(store, image, mask)
    (first.path.parent / stray).write_text("not a version folder")
    if stray == "v021":  # the next numbers run into it
        for n in range(2, 21):
            (first.path.parent / f"v{n:03d}").mkdir()
    saved = _save(store, image, mask)
    assert saved.path.is_dir() and saved.path.name != stray and _same_voxels(store, saved.case_id, image)
    assert (first.path.parent / stray).read_text() == "not a version folder"
    assert store.index().cases == [saved.case_id]
    (first.path.parent / f"v{saved.version + 1:03d}").mkdir()  # a version-named folder without a report
    assert store.latest_report(saved.case_id.split("/")[0]).case_id == saved.case_id


def test_a_file_in_place_of_the_case_folder_is_a_one_line_error(tmp_path):
    store, (image, mask) = CorrectionStore(tmp_path), _scan()
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / case_name("CT chest", image)).write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        _save(store, image, mask)
