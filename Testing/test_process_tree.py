"""The progress-line protocol (one writer, one parser) and stopping a whole process tree."""

import json
import math
import subprocess
import sys
import time

from malenia.process_tree import group_alive, new_group, stop_tree
from malenia.progress_lines import ProgressLine, write_line


def test_progress_lines_round_trip_and_other_text_is_not_progress(tmp_path):
    seg = ProgressLine("windows", 0.25, "window 3/12")
    assert json.loads(seg.to_json()) == {"stage": "windows", "fraction": 0.25, "message": "window 3/12"}
    train = ProgressLine("train", 0.5, "", step=50, total=100, loss=math.nan, val_dsc=0.71234567)
    obj = json.loads(train.to_json())  # NaN would not be JSON: an unknown loss is null
    assert obj == {"stage": "train", "fraction": 0.5, "message": "", "step": 50, "total": 100, "loss": None,
                   "val_dsc": 0.712346}
    assert ProgressLine.parse(train.to_json()) == ProgressLine("train", 0.5, "", 50, 100, None, 0.712346)
    assert ProgressLine.parse(seg.to_json()) == seg
    for other in ("Warning: something", "", "[1, 2]", '{"loss": 1.0}', "{not json"):
        assert ProgressLine.parse(other) is None
    assert ProgressLine.parse('{"stage": "x", "fraction": 7}').fraction == 1.0  # clamped
    assert ProgressLine.parse('{"stage": "x", "fraction": "half"}').fraction is None
    with open(tmp_path / "p.txt", "w") as f:
        write_line(f, seg)
        write_line(f, train)
    lines = (tmp_path / "p.txt").read_text().splitlines()
    assert [ProgressLine.parse(x).stage for x in lines] == ["windows", "train"]


CHILD = """
import subprocess, sys, time
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
grandchild = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, text=True)
grandchild.stdout.readline()  # it ignores SIGTERM from here on
print(grandchild.pid, flush=True)
time.sleep(60)
"""


def test_stopping_a_tree_ends_a_grandchild_that_ignores_the_polite_request():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, **new_group())
    grandchild = int(proc.stdout.readline())
    assert group_alive(proc.pid)
    t = time.monotonic()
    rc = stop_tree(proc, grace_s=2.0)
    assert rc is not None and time.monotonic() - t < 10
    deadline = time.monotonic() + 5
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(proc.pid)  # the grandchild outlived its parent's SIGTERM, not the group's SIGKILL
    gone = subprocess.run(["ps", "-p", str(grandchild), "-o", "stat="], capture_output=True, text=True).stdout.strip()
    assert gone in ("", "Z")  # no such process (or a zombie awaiting its reaper)
    proc.stdout.close()


PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(float(sys.argv[1]))  # 0: the leader exits at once and leaves its child running
"""


def _gone(pid: int) -> bool:
    state = subprocess.run(["ps", "-p", str(pid), "-o", "stat="], capture_output=True, text=True).stdout.strip()
    return state in ("", "Z") or state.startswith("Z")


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(pid)


def test_a_tree_left_by_an_earlier_process_is_stopped_from_its_recorded_leader():
    """What the retraining server does at start for a job tree its killed predecessor left running."""
    from malenia.process_tree import start_id, stop_leftover

    parent = subprocess.Popen([sys.executable, "-c", PARENT, "60"], stdout=subprocess.PIPE, text=True, **new_group())
    child = int(parent.stdout.readline())
    recorded = start_id(parent.pid)
    assert recorded is not None and start_id(parent.pid) == recorded
    assert stop_leftover(parent.pid, recorded)
    parent.wait(timeout=10)
    assert _wait_gone(child)
    deadline = time.monotonic() + 5
    while group_alive(parent.pid) and time.monotonic() < deadline:  # until the orphaned child is reaped
        time.sleep(0.05)
    assert not group_alive(parent.pid)
    assert start_id(parent.pid) is None and not stop_leftover(parent.pid, recorded)  # nothing left to stop
    parent.stdout.close()


def test_a_leftover_child_is_stopped_after_its_leader_exited_and_a_reused_pid_is_left_alone():
    from malenia.process_tree import start_id, stop_leftover

    parent = subprocess.Popen([sys.executable, "-c", PARENT, "0"], stdout=subprocess.PIPE, text=True, **new_group())
    child = int(parent.stdout.readline())
    recorded = start_id(parent.pid)
    parent.wait(timeout=10)
    assert not _gone(child)  # the leader is gone, its child still runs in the group
    assert stop_leftover(parent.pid, recorded)
    assert _wait_gone(child)
    parent.stdout.close()
    # a process that merely has a recorded pid (not a group leader, another start time) is not touched
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not stop_leftover(other.pid, "not its start time")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
