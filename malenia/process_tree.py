"""Child processes that can be stopped with everything they started, on Linux, macOS and Windows.

A long command (segment, train, torchrun and its workers) runs in its own process group so that
Cancel reaches the whole tree, not only the direct child:

    proc = subprocess.Popen(argv, **new_group())      # POSIX: a new session; Windows: a new process group
    ...
    stop_tree(proc, grace_s=3.0)                       # polite first, then forced; waits for the child

A tree can also outlive the process that started it (a server killed while a job ran): record the
leader's `start_id(pid)` with its pid, and a later process calls `stop_leftover(pid, recorded)`.

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
from pathlib import Path

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


def start_id(pid: int) -> str | None:
    """What tells this process apart from a later one given the same pid (its start time, as text);
    None when no such process runs. Compare it only with values from the same platform."""
    if WINDOWS:
        return _windows_start_id(pid)
    try:  # Linux: field 22 of /proc/PID/stat, clock ticks since boot (cheap, no subprocess)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        if Path("/proc/self/stat").exists():
            return None  # Linux, and no such process
    out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None  # macOS and other POSIX systems


def stop_leftover(pid: int, recorded_start: str | None) -> bool:
    """Force-stops a tree an earlier process started with `new_group` (leader `pid`, its `start_id` then
    `recorded_start`). Returns whether anything of it was still running. POSIX: the group is reached even
    after its leader exited (a reused pid does not lead that group). Windows: only while the leader is
    the recorded process (`taskkill /T` walks the tree from it; a reused pid is never touched)."""
    leader = recorded_start is not None and start_id(pid) == recorded_start
    if WINDOWS and not leader:
        return False
    if not leader and not group_alive(pid):
        return False
    signal_tree(pid, force=True)
    return True


def _windows_start_id(pid: int) -> str | None:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return None
    try:
        times = [wintypes.FILETIME() for _ in range(4)]  # creation, exit, kernel, user
        code = wintypes.DWORD()
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        if kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) and code.value != 259:  # not STILL_ACTIVE
            return None
        return str((times[0].dwHighDateTime << 32) | times[0].dwLowDateTime)
    finally:
        kernel32.CloseHandle(handle)


def _windows_alive(pid: int) -> bool:
    out = subprocess.run(["tasklist", "/FI", f"PID eq {pid}", "/NH"], capture_output=True, text=True, check=False)
    return str(pid) in out.stdout
