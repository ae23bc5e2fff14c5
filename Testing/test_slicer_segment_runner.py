"""The background runner of MaleniaSegment on real subprocesses (a stand-in that speaks `--progress json`)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slicer_segment_support import TOTALSEG, new_scene

from MaleniaSegmentLib import mrml_io
from malenia.progress_lines import ProgressLine
from MaleniaSegmentLib.runner import BackgroundProcess, RunState, parse_progress
from MaleniaSegmentLib.segment_run import LENIENT_VERIFIER_CUT, SegmentRequest, LesionRun, roi_argument, segment_command

# Behaves like `malenia segment INPUT --out DIR --progress json`: progress lines on stdout, a worker
# child process, files in DIR, a one-line error on stderr and a non-zero exit on failure.
FAKE_SEGMENT = textwrap.dedent('''
    import argparse, json, os, signal, subprocess, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--mode")
    p.add_argument("input")
    p.add_argument("--out")
    a = p.parse_args()
    def progress(stage, fraction, message):
        print(json.dumps({"stage": stage, "fraction": fraction, "message": message}), flush=True)
    progress("read", 0.0, f"input {os.path.getsize(a.input)} bytes")
    if a.mode == "ok":
        print("a plain log line", flush=True)
        os.makedirs(a.out + ".tmp")
        for name in ("lesions.nii.gz", "report.json"):
            open(os.path.join(a.out + ".tmp", name), "w").write(name)
        progress("predict", 0.5, "half way")
        os.replace(a.out + ".tmp", a.out)
        progress("done", 1.0, "finished")
    elif a.mode == "hang":
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
        os.makedirs(a.out)
        open(os.path.join(a.out, "lesions.nii.gz"), "wb").write(b"partial")
        progress("predict", 0.25, f"worker {child.pid}")
        time.sleep(120)
    elif a.mode == "fail":
        progress("read", 0.05, "checking input")
        print("some warning on stderr", file=sys.stderr)
        print("malenia segment: error: input is not a CT image (expected 3 dimensions, got 2)", file=sys.stderr)
        sys.exit(3)
''')


@pytest.fixture()
def fake(tmp_path) -> Path:
    path = tmp_path / "fake_segment.py"
    path.write_text(FAKE_SEGMENT)
    return path


@pytest.fixture(scope="module")
def scene():
    return new_scene()


@pytest.fixture(scope="module")
def volume(scene, shared_data):
    return mrml_io.load_volume(scene, TOTALSEG / "example_ct_sm.nii.gz", name="abdomen CT")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; it only waits for its (new) parent to reap it
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _run(volume, fake, root, mode):
    run = LesionRun(SegmentRequest(volume), root, command_prefix=[sys.executable, str(fake), "--mode", mode])
    run.start()
    return run


def _wait(run, until, timeout=30.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += run.poll()
        if until(seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"timed out; saw {seen}")


def test_progress_arrives_and_results_appear_whole(volume, fake, tmp_path):
    run = _run(volume, fake, tmp_path / "results", "ok")
    seen = _wait(run, lambda s: run.state is not RunState.RUNNING)
    assert run.state is RunState.SUCCEEDED, run.error
    progress = [p for p in seen if p.fraction is not None]
    assert [p.fraction for p in progress] == [0.0, 0.5, 1.0]
    assert progress[0].stage == "read" and int(progress[0].message.split()[1]) > 100_000  # the NRRD of the volume
    assert ProgressLine("log", None, "a plain log line") in seen
    assert run.out_dir.name.startswith("abdomen_CT-")
    assert sorted(p.name for p in run.out_dir.iterdir()) == ["lesions.nii.gz", "report.json"]
    assert sorted(p.name for p in run.out_dir.parent.iterdir()) == [run.out_dir.name], "input copy and staging removed"


def test_cancel_ends_the_whole_tree_and_leaves_nothing(volume, fake, tmp_path):
    run = _run(volume, fake, tmp_path / "results", "hang")
    seen = _wait(run, lambda s: any(p.message.startswith("worker") for p in s))
    worker = int(next(p.message for p in seen if p.message.startswith("worker")).split()[1])
    main = run.job.process.pid
    assert _alive(main) and _alive(worker)
    for _ in range(5):  # polling never blocks while it runs
        run.poll()
        assert run.state is RunState.RUNNING
    run.cancel()
    assert run.state is RunState.CANCELLED and run.error == "cancelled"
    deadline = time.monotonic() + 10
    while (_alive(main) or _alive(worker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(main), "segment process left running"
    assert not _alive(worker), "worker child (ignores SIGTERM) left running"
    assert not run.out_dir.exists()
    assert list(run.out_dir.parent.iterdir()) == [], "no partial output, staging or input copy"


def test_failing_run_shows_its_error_line(volume, fake, tmp_path):
    run = _run(volume, fake, tmp_path / "results", "fail")
    _wait(run, lambda s: run.state is not RunState.RUNNING)
    assert run.state is RunState.FAILED
    assert run.error == "malenia segment: error: input is not a CT image (expected 3 dimensions, got 2)"
    assert run.job.process.returncode == 3
    assert not run.out_dir.exists() and list(run.out_dir.parent.iterdir()) == []


def test_a_program_that_cannot_start_is_a_clear_error(tmp_path):
    proc = BackgroundProcess([str(tmp_path / "no-such-python"), "-m", "malenia.cli"])
    with pytest.raises(OSError):
        proc.start()
    assert proc.state is RunState.IDLE


def test_progress_lines_are_parsed_by_the_core_protocol():
    """The runner reads the core's progress lines with the core's parser (malenia.progress_lines), not its own."""
    assert parse_progress('{"stage": "predict", "fraction": 1.7, "message": "x"}') == ProgressLine("predict", 1.0, "x")
    assert parse_progress('{"stage": "s", "fraction": "n/a"}') == ProgressLine("s", None, "")
    assert parse_progress("Loading model ...") == ProgressLine("log", None, "Loading model ...")
    line = ProgressLine("train", 0.5, "step 5/10", step=5, total=10, loss=0.25)
    assert parse_progress(line.to_json()) == line  # what the core writes, the module reads back whole
    assert parse_progress('{"no": "progress keys"}').stage == "log"


def test_segment_command_and_roi(scene):
    import slicer

    roi = slicer.vtkMRMLMarkupsROINode()
    scene.AddNode(roi)
    roi.SetCenter(-10.0, 20.0, 100.0)
    roi.SetSize(40.0, 30.0, 20.0)
    arg = roi_argument(roi)
    assert [float(v) for v in arg.split(",")] == [-30.0, 5.0, 90.0, 10.0, 35.0, 110.0]
    cmd = segment_command("/opt/Slicer/bin/PythonSlicer", "/tmp/in.nrrd", "/models/m1", "cuda", arg)
    assert cmd == ["/opt/Slicer/bin/PythonSlicer", "-m", "malenia.cli", "segment", "/tmp/in.nrrd", "--device", "cuda",
                   "--progress", "json", "--model", "/models/m1", f"--roi={arg}"]
    from malenia.cli import build_parser

    assert build_parser().parse_args([*cmd[3:], "--out", "/tmp/o"]).roi == arg  # the real parser takes it ("-" first)
    assert "--model" not in segment_command("py", "in.nrrd")
    refined = segment_command("py", "in.nrrd", refine=True)
    assert refined[-1] == "--refine" and "--refine" not in segment_command("py", "in.nrrd")
    assert build_parser().parse_args([*refined[3:], "--out", "/tmp/o"]).refine is True
    every = segment_command("py", "in.nrrd", lesion_filter="off")
    assert every[-1] == "--no-verifier" and "--no-verifier" not in segment_command("py", "in.nrrd")
    assert build_parser().parse_args([*every[3:], "--out", "/tmp/o"]).no_verifier is True
    lenient = build_parser().parse_args([*segment_command("py", "in.nrrd", lesion_filter="lenient")[3:], "--out", "/tmp/o"])
    assert lenient.verifier_cut == LENIENT_VERIFIER_CUT and not lenient.no_verifier
    default = build_parser().parse_args([*segment_command("py", "in.nrrd")[3:], "--out", "/tmp/o"])
    assert default.verifier_cut is None and not default.no_verifier
    with pytest.raises(ValueError, match="lesion filter"):
        segment_command("py", "in.nrrd", lesion_filter="strict")
    described = segment_command("py", "in.nrrd", mask="/tmp/outlines.nrrd")  # Describe drawn lesions
    assert build_parser().parse_args([*described[3:], "--out", "/tmp/o"]).mask == "/tmp/outlines.nrrd"
    for other in ({"roi": arg}, {"refine": True}, {"lesion_filter": "off"}):  # what the CLI refuses with --mask
        with pytest.raises(ValueError, match="describing outlined lesions"):
            segment_command("py", "in.nrrd", mask="/tmp/outlines.nrrd", **other)
    with pytest.raises(ValueError, match="device"):
        segment_command("py", "in.nrrd", device="gpu")
    empty = slicer.vtkMRMLMarkupsROINode()
    scene.AddNode(empty)
    empty.SetSize(0.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="empty"):
        roi_argument(empty)
