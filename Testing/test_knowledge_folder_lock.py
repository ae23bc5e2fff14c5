"""A refused `malenia knowledge add|edit` leaves nothing it made (folder, lock file), and never removes a folder or
lock file that existed before or that a concurrent writer made (malenia.knowledge.profiles.folder_lock)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from malenia.cli import main as cli
from malenia.errors import OutputError
from malenia.knowledge.profiles import LOCK_FILE, folder_lock

ADD = ["knowledge", "add", "hepatic_haemangioma", "--name", "Hepatic haemangioma", "--organ", "liver"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_refused_add_or_edit_into_a_new_folder_leaves_nothing(tmp_path, capsys):
    site = tmp_path / "new" / "deeper" / "site"
    assert cli([*ADD, "-d", "shape.rond", "--knowledge", str(site)]) == 3
    assert "closest: shape.round" in capsys.readouterr().err
    assert _tree(tmp_path) == []  # neither the folder, its lock file nor the folders above it
    assert cli(["knowledge", "edit", "no_such_disease", "--name", "X", "--knowledge", str(site)]) == 3
    assert cli([*ADD[:-1], "livr", "--knowledge", str(site)]) == 3  # unknown organ
    assert _tree(tmp_path) == []
    # the same add, accepted, makes the folder and keeps its lock file
    assert cli([*ADD, "-d", "shape.round", "--knowledge", str(site)]) == 0
    assert sorted(p.name for p in site.iterdir()) == [LOCK_FILE, "hepatic_haemangioma.json"]


def test_a_folder_or_write_that_fails_leaves_nothing_made(tmp_path, capsys, monkeypatch):
    # the folder's own name refused (too long) after the folders above it were made
    assert cli([*ADD, "-d", "shape.round", "--knowledge", str(tmp_path / "new" / "deeper" / ("x" * 300))]) == 5
    assert "cannot create or lock it" in capsys.readouterr().err
    assert _tree(tmp_path) == []

    def full_disk(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("malenia.knowledge.profiles.write_json", full_disk)
    assert cli([*ADD, "-d", "shape.round", "--knowledge", str(tmp_path / "new" / "site")]) == 5
    assert "No space left on device" in capsys.readouterr().err
    assert _tree(tmp_path) == []


def test_refused_add_keeps_a_folder_that_existed(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli([*ADD, "-d", "shape.rond", "--knowledge", str(empty)]) == 3
    assert empty.is_dir() and list(empty.iterdir()) == []  # the folder stays; the lock file this call made goes

    used = tmp_path / "used"
    assert cli([*ADD, "-d", "shape.round", "--knowledge", str(used)]) == 0
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in used.iterdir()}
    assert cli([*ADD, "--knowledge", str(used)]) == 3  # exists already
    assert cli(["knowledge", "edit", "hepatic_haemangioma", "-d", "shape.rond", "--knowledge", str(used)]) == 3
    assert {p.name: (p.stat().st_ino, p.read_bytes()) for p in used.iterdir()} == before


def test_an_interrupted_block_removes_only_what_it_made(tmp_path):
    site = tmp_path / "a" / "site"
    with pytest.raises(KeyboardInterrupt), folder_lock(site):
        assert (site / LOCK_FILE).is_file()
        raise KeyboardInterrupt
    assert _tree(tmp_path) == []
    # a folder that holds anything else stays, with its lock file gone only because this call made it
    with pytest.raises(RuntimeError), folder_lock(site):
        (site / "other.txt").write_text("x")
        raise RuntimeError
    assert _tree(tmp_path) == ["a", "a/site", "a/site/other.txt"]


def test_a_folder_another_writer_makes_meanwhile_is_not_removed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    real_mkdir = Path.mkdir

    def racing_mkdir(self, *a, **kw):  # the other writer makes the folder between the look and the mkdir
        if self == site and not site.exists():
            os.mkdir(site)
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    with pytest.raises(RuntimeError), folder_lock(site):
        raise RuntimeError
    assert site.is_dir()  # the other writer's, not this call's (its own lock file, though, goes)


def _held_by_someone(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_waiting_writer_survives_the_removal_of_the_folder_it_waits_on(tmp_path, monkeypatch):
    """Writer A made the folder and fails; writer B waited on A's lock file. B must not hold a lock on the unlinked
    file (where nobody else would see it) nor write into a removed folder: it makes the folder again and locks the
    file at the path."""
    site = tmp_path / "site"
    b_waits, seen, b_locks = threading.Event(), {}, []
    real_flock = fcntl.flock

    def flock(fd, op):
        if threading.current_thread().name == "writer-b" and not op & fcntl.LOCK_NB:
            b_locks.append(os.fstat(fd).st_ino)
            b_waits.set()
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)

    def writer_b():
        with folder_lock(site):
            seen["held"] = _held_by_someone(site / LOCK_FILE)
            (site / "b.json").write_text("{}")

    b = threading.Thread(target=writer_b, name="writer-b")
    with pytest.raises(RuntimeError), folder_lock(site):
        a_lock = (site / LOCK_FILE).stat().st_ino
        b.start()
        assert b_waits.wait(5)
        time.sleep(0.2)  # B is now blocked in flock on A's lock file
        assert b.is_alive()
        raise RuntimeError  # A refuses: its folder and lock file go
    b.join(10)
    assert not b.is_alive()
    assert len(b_locks) == 2 and b_locks[0] == a_lock  # B waited on A's file, then locked a new one
    assert seen == {"held": True}  # the lock B held is on the file at the path
    assert sorted(p.name for p in site.iterdir()) == [LOCK_FILE, "b.json"]


def test_remove_without_create_on_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(OutputError, match="cannot lock it"), folder_lock(tmp_path / "none", create=False):
        pass
    assert _tree(tmp_path) == []
