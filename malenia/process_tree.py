"""Child processes that can be stopped with everything they started, on Linux, macOS and Windows.

A long command (segment, train, torchrun and its workers) runs in its own process group so that
Cancel reaches the whole tree, not only the direct child:

    proc = subprocess.Popen(argv, **new_group())      # POSIX: a new session; Windows: a new process group
    ...
    stop_tree(proc, grace_s=3.0)                       # polite first, then forced; waits for the child

POSIX: SIGTERM to the group, then SIGKILL to the group after `grace_s` (members that outlive the
leader are reached too: a group lives while any member does). Windows: `taskkill /T /F` at once,
which walks the child tree from the leader; a polite request first (CTRL_BREAK_EVENT) could let
the leader exit and leave its children out of that tree. Malenia's outputs are written atomically,
so a forced stop leaves nothing half-written.
Pure standard library: Slicer's Python imports it without torch.
"""

from __future__ import annotations

import os
import signal
import subprocess

WINDOWS = os.name == "nt"


def new_group() -> dict:
    """Popen keyword arguments that start the child in its own process group (and no console window)."""
    if WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}  # session id = group id = the child's pid


def group_alive(pid: int) -> bool:
    """Whether any process of the group led by `pid` (started with `new_group`) still runs."""
    if WINDOWS:
        return _windows_alive(pid)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours to signal
    return True


def signal_tree(pid: int, force: bool = False) -> None:
    """Asks the group led by `pid` to stop (`force`: kills it). Gone already is fine."""
    try:
        if WINDOWS:
            if force:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=False)
            else:
                os.kill(pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(pid, signal.SIGKILL if force else signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def stop_tree(proc: subprocess.Popen, grace_s: float = 3.0) -> int | None:
    """Stops `proc` (started with `new_group`) and its whole tree: polite, then forced after `grace_s`
    seconds, and once more forced for members that outlived the leader (Windows: forced at once).
    Returns the exit code."""
    if not WINDOWS:
        signal_tree(proc.pid)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    signal_tree(proc.pid, force=True)  # children may ignore or outlive the polite request
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


def _windows_alive(pid: int) -> bool:
    out = subprocess.run(["tasklist", "/FI", f"PID eq {pid}", "/NH"], capture_output=True, text=True, check=False)
    return str(pid) in out.stdout
