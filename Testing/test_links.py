"""malenia.links: folder views for the server's per-job datasets, also where symbolic links need a privilege."""

from __future__ import annotations

import os

import pytest

from malenia.links import link_folder


@pytest.fixture
def case(tmp_path):
    folder = tmp_path / "store" / "case1"
    folder.mkdir(parents=True)
    for name, data in (("image.nii.gz", b"\x1f\x8b image"), ("report.json", b"{}")):
        (folder / name).write_bytes(data)
    return folder


def test_a_folder_view_is_a_symbolic_link_where_allowed(case, tmp_path):
    view = tmp_path / "view" / "case1"
    view.parent.mkdir()
    link_folder(case, view)
    assert view.is_symlink() and (view / "report.json").read_bytes() == b"{}"


def test_without_the_symlink_privilege_the_view_is_a_folder_of_hard_links(case, tmp_path, monkeypatch):
    def refused(*args, **kwargs):  # what Windows raises without developer mode or admin rights
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(os, "symlink", refused)
    view = tmp_path / "view" / "case1"
    view.parent.mkdir()
    link_folder(case, view)
    assert view.is_dir() and not view.is_symlink()
    assert sorted(p.name for p in view.iterdir()) == ["image.nii.gz", "report.json"]
    for f in case.iterdir():
        assert os.path.samefile(f, view / f.name)  # the same data, no copy
    assert [p.name for p in view.parent.iterdir()] == ["case1"]  # no staging folder left
    with pytest.raises(FileExistsError):
        link_folder(case, view)
