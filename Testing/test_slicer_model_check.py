"""Choosing a model folder in the Slicer modules does not re-hash an unchanged folder on the GUI thread
(MaleniaCommon.model_check): a second choice of the same folder hashes nothing, a changed file is checked again,
and MaleniaTrainer's background download leaves nothing for `use_model` to hash."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

import slicer_segment_support  # noqa: F401  (module folders on sys.path)

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "MaleniaTrainer") not in sys.path:
    sys.path.insert(0, str(REPO / "MaleniaTrainer"))

import malenia.model.folder as model_folder  # noqa: E402
from MaleniaCommon import model_check  # noqa: E402
from MaleniaCommon.model_check import verify_model_folder_cached  # noqa: E402
from MaleniaCommon.paths import configured_model_folder  # noqa: E402
from MaleniaTrainerLib.logic import KEY_SEGMENT_MODEL, Background, MemorySettings, TrainerLogic, fetch_version  # noqa: E402
from malenia.errors import ModelError  # noqa: E402
from malenia.model.folder import MANIFEST, WEIGHTS  # noqa: E402
from malenia.server.testdata import make_model_folder  # noqa: E402


@pytest.fixture()
def hashed(monkeypatch):
    """The files hashed, with the thread that hashed each."""
    model_check.forget()
    seen: list[tuple[str, str]] = []
    real = model_folder.sha256_file

    def counting(path):
        seen.append((Path(path).name, threading.current_thread().name))
        return real(path)

    monkeypatch.setattr(model_folder, "sha256_file", counting)
    yield seen
    model_check.forget()


def _listed(folder: Path) -> int:
    import json

    return len(json.loads((folder / MANIFEST).read_text())["files"])


def _rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:  # in place: same inode
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; ctime cannot be


def test_a_second_check_of_an_unchanged_folder_hashes_nothing_and_a_changed_file_is_checked_again(tmp_path, hashed):
    folder = make_model_folder(tmp_path / "m")
    hashed.clear()  # making it hashed its files for the manifest
    verify_model_folder_cached(folder)
    assert len(hashed) == _listed(folder)
    hashed.clear()
    assert verify_model_folder_cached(folder)["files"]  # the manifest, as verify_model_folder returns it
    assert hashed == []

    weights = folder / WEIGHTS
    original = weights.read_bytes()
    _rewrite_keeping_size_and_mtime(weights, original[:-1] + bytes([original[-1] ^ 1]))
    for _ in range(2):  # a failed check is not remembered: refused again, by hashing again
        with pytest.raises(ModelError, match="sha256 mismatch for weights"):
            verify_model_folder_cached(folder)
    assert ("weights.safetensors", "MainThread") in hashed
    _rewrite_keeping_size_and_mtime(weights, original)
    hashed.clear()
    verify_model_folder_cached(folder)
    assert hashed  # intact again: checked, then remembered
    hashed.clear()
    verify_model_folder_cached(folder)
    assert hashed == []


def test_a_folder_replaced_whole_or_losing_a_file_is_checked_again(tmp_path, hashed):
    folder = make_model_folder(tmp_path / "m", seed=1)
    verify_model_folder_cached(folder)
    make_model_folder(folder, seed=2)  # swapped whole (atomic_dir), as a new download is
    hashed.clear()
    verify_model_folder_cached(folder)
    assert len(hashed) == _listed(folder)
    (folder / WEIGHTS).unlink()
    with pytest.raises(ModelError, match="missing file weights"):
        verify_model_folder_cached(folder)


def test_segment_takes_up_the_model_setting_without_hashing_an_unchanged_folder_again(tmp_path, hashed):
    folder = make_model_folder(tmp_path / "m")
    hashed.clear()
    assert configured_model_folder(str(folder)) == str(folder)
    assert hashed
    hashed.clear()
    assert configured_model_folder(str(folder)) == str(folder)
    assert hashed == []
    (folder / MANIFEST).write_text((folder / MANIFEST).read_text().replace('"0"', '"1"'))  # the manifest changed
    assert configured_model_folder(str(folder)) == str(folder)
    assert hashed


class _Backend:
    """A download as RemoteBackend/LocalBackend do it: the version's folder written whole at `dest`."""

    def download_version(self, name, dest, progress=None):
        return make_model_folder(dest, version=name)


def test_trainer_download_verifies_in_the_background_and_use_model_hashes_nothing(tmp_path, hashed):
    logic = TrainerLogic(None, MemorySettings())
    dest = tmp_path / "models" / "v1"
    task = Background(fetch_version, _Backend(), "v1", dest).wait(30)
    assert task.error is None and task.result == dest
    # written (its manifest hashed), then verified, off the GUI thread
    assert len(hashed) == 2 * _listed(dest) and all(thread != "MainThread" for _, thread in hashed)
    hashed.clear()
    logic.use_model(dest)  # the GUI thread
    logic.use_model(dest)  # chosen again
    assert hashed == [] and logic.settings.value(KEY_SEGMENT_MODEL) == str(dest)

    weights = dest / WEIGHTS
    data = weights.read_bytes()
    _rewrite_keeping_size_and_mtime(weights, data[:-1] + bytes([data[-1] ^ 1]))
    other = make_model_folder(tmp_path / "other")
    logic.use_model(other)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        logic.use_model(dest)
    assert logic.settings.value(KEY_SEGMENT_MODEL) == str(other)  # the damaged folder was not taken
