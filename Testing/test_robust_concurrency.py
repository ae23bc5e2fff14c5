"""Parallel writers through real processes: nothing acknowledged is lost or overwritten (issue 16, items 1-2)."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WRITERS = 8


def _atomic_writer(target: str, barrier, results) -> None:
    from malenia.atomic import atomic_dir

    try:
        with atomic_dir(target) as staging:
            (staging / "who").write_text(str(os.getpid()))
            barrier.wait(30)  # every writer has passed the "target exists?" look before anyone renames
        results.put(("ok", os.getpid()))
    except FileExistsError:
        results.put(("exists", os.getpid()))


def test_atomic_dir_without_overwrite_lets_exactly_one_parallel_writer_win(tmp_path):
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    target = tmp_path / "v001"
    procs = [ctx.Process(target=_atomic_writer, args=(str(target), barrier, results)) for _ in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = [results.get(timeout=5) for _ in procs]
    winners = [pid for what, pid in outcomes if what == "ok"]
    assert len(winners) == 1, outcomes  # before the fix all 8 "succeeded", each replacing the last
    assert (target / "who").read_text() == str(winners[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v001"]  # no staging folder left


def _saver(root: str, barrier, results, seed: int) -> None:
    import SimpleITK as sitk

    from malenia.data.corrections import CorrectionStore
    from malenia.data.dataset import LesionReport

    image = sitk.GetImageFromArray(np.full((8, 16, 16), -1000, np.int16))
    labels = np.zeros((8, 16, 16), np.uint8)
    labels[2:4, 2:4, 2 + seed:4 + seed] = 1
    barrier.wait(30)
    saved = CorrectionStore(root).save("scan_0001", image, sitk.GetImageFromArray(labels),
                                       [LesionReport(1, "kidney_cyst", {}, {"writer": seed})])
    results.put(saved.case_id)


def test_parallel_correction_saves_each_get_their_own_version(tmp_path):
    from malenia.data.corrections import CorrectionStore
    from malenia.data.dataset import read_case, read_dataset

    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_saver, args=(str(tmp_path), barrier, results, k)) for k in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    acknowledged = sorted(results.get(timeout=5) for _ in procs)
    assert all(p.exitcode == 0 for p in procs)
    store = CorrectionStore(tmp_path)
    assert acknowledged == [f"scan_0001/v{n:03d}" for n in range(1, WRITERS + 1)]
    writers = {read_case(tmp_path, cid, with_images=False).report.lesions[0].extra["writer"] for cid in acknowledged}
    assert writers == set(range(WRITERS))  # every saved correction is still there, none overwritten
    assert store.versions("scan_0001") == list(range(1, WRITERS + 1))
    assert read_dataset(tmp_path).cases == [f"scan_0001/v{WRITERS:03d}"]  # the index names the latest
    # one CT on disk: every version's image is a hard link to the single stored copy
    inodes = {os.stat(tmp_path / "cases" / cid / "image.nii.gz").st_ino for cid in acknowledged}
    assert len(inodes) == 1 and len(list((tmp_path / "images").glob("*.nii.gz"))) == 1


@pytest.mark.timeout(180)
def test_parallel_model_imports_register_distinct_versions(tmp_path):
    from malenia.model.folder import verify_model_folder
    from malenia.server.testdata import make_model_folder

    sources = [make_model_folder(tmp_path / f"m{k}", name=f"model-{k}", seed=k) for k in range(4)]
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "malenia.cli", "serve", "model", "import", str(src), "--data",
                               str(data)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for src in sources]
    outs = [p.communicate(timeout=170) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert not any("Traceback" in err for _, err in outs)
    names = {}
    for v in sorted((data / "models").iterdir()):
        manifest = verify_model_folder(v)  # each version holds exactly its own import's files
        names[v.name] = manifest["name"]
    assert sorted(names.values()) == [f"model-{k}" for k in range(4)] and sorted(names) == ["v1", "v2", "v3", "v4"]
