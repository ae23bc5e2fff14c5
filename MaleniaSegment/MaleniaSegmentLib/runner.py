"""Runs `malenia segment` in a background process so that Slicer's GUI never freezes.

The process gets its own process group (POSIX: a new session; Windows: a new process group)
so that Cancel ends the whole tree, including workers it spawned. Output goes to a private
staging folder beside the destination and is moved into place only when the command
succeeded: a cancelled or failed run leaves nothing behind.

Nothing here blocks: the GUI calls `poll()` from a timer; reader threads feed a queue.

The protocol and the stopping are the core's (malenia.progress_lines, malenia.process_tree: standard
library only, so Slicer's Python imports them before any package is installed); they are imported
inside the functions that need them, once MaleniaSegment.py has put the `malenia` package on sys.path.
"""

from __future__ import annotations

import enum
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from malenia.progress_lines import ProgressLine


def parse_progress(line: str) -> "ProgressLine":
    """A `--progress json` line as a malenia.progress_lines.ProgressLine (the protocol's one parser);
    any other text line as a plain log message (stage "log", no fraction)."""
    from malenia.progress_lines import ProgressLine

    parsed = ProgressLine.parse(line)
    return parsed if parsed is not None else ProgressLine("log", None, line.strip())


class RunState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _reader(stream, sink: "queue.Queue[tuple[str, str | None]]", name: str) -> None:
    try:
        for line in iter(stream.readline, ""):
            sink.put((name, line.rstrip("\r\n")))
    except (OSError, ValueError):
        pass  # stream closed under us (cancel)
    finally:
        sink.put((name, None))


class BackgroundProcess:
    """A command in its own process group with line-wise stdout/stderr, polled without blocking."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.command = [str(c) for c in command]
        self.env = env
        self.cwd = cwd
        self.state = RunState.IDLE
        self.returncode: int | None = None
        self.stderr_lines: list[str] = []
        self.log_lines: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._queue: "queue.Queue[tuple[str, str | None]]" = queue.Queue()
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        if self.state is not RunState.IDLE:
            raise RuntimeError("process already started")
        from malenia.process_tree import new_group

        self._proc = subprocess.Popen(  # its own process group: Cancel reaches the whole tree
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=self.env, cwd=self.cwd, **new_group())
        self.state = RunState.RUNNING
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            t = threading.Thread(target=_reader, args=(stream, self._queue, name), daemon=True)
            t.start()
            self._threads.append(t)

    def poll(self) -> list[ProgressLine]:
        """Progress lines that arrived since the last call; updates `state` when the process ended."""
        out = self._drain()
        if self.state is RunState.RUNNING and self._proc is not None and self._proc.poll() is not None:
            # Ended: let the readers hand over the last lines (a grandchild holding the pipes
            # open must not stall the GUI, hence the timeout), then settle the state.
            for t in self._threads:
                t.join(timeout=0.5)
            out += self._drain()
            self.returncode = self._proc.returncode
            self.state = RunState.SUCCEEDED if self.returncode == 0 else RunState.FAILED
        return out

    def _drain(self) -> list[ProgressLine]:
        out: list[ProgressLine] = []
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                continue
            if name == "stdout":
                progress = parse_progress(line)
                if progress.stage == "log":
                    self.log_lines.append(progress.message)
                out.append(progress)
            elif line.strip():
                self.stderr_lines.append(line.strip())

    @property
    def running(self) -> bool:
        return self.state is RunState.RUNNING

    @property
    def error(self) -> str:
        """The one-line error of a failed run (the last line it wrote to stderr)."""
        if self.state is RunState.CANCELLED:
            return "cancelled"
        if self.state is not RunState.FAILED:
            return ""
        if self.stderr_lines:
            return self.stderr_lines[-1]
        return f"{Path(self.command[0]).name} exited with code {self.returncode}"

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> RunState:
        """Blocking wait (tests, batch use); the GUI polls instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"process still running after {timeout} s")
            time.sleep(interval)
        return self.state

    def cancel(self, grace_s: float = 3.0) -> None:
        """Ends the whole process tree: polite termination first, then a kill of the group."""
        if self._proc is None or self.state is not RunState.RUNNING:
            return
        from malenia.process_tree import stop_tree

        proc = self._proc
        stop_tree(proc, grace_s)  # polite, then forced, to the whole group (Windows: the whole child tree)
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - already closed by a reader
                pass
        for t in self._threads:
            t.join(timeout=1.0)
        self.returncode = proc.returncode
        self.state = RunState.CANCELLED


class SegmentationJob:
    """`malenia segment` into a staging folder, moved to `out_dir` only on success.

    `command` is everything up to (not including) `--out`; the job appends `--out STAGING`.
    """

    def __init__(self, command: Sequence[str], out_dir: str | os.PathLike, env: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists():
            raise FileExistsError(f"output folder already exists: {self.out_dir}")
        self.staging = self.out_dir.parent / f".{self.out_dir.name}.running-{uuid.uuid4().hex[:8]}"
        self.process = BackgroundProcess([*command, "--out", str(self.staging / "out")], env=env)
        self.last_progress: ProgressLine | None = None

    @property
    def state(self) -> RunState:
        return self.process.state

    @property
    def error(self) -> str:
        return self.process.error

    def start(self) -> None:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        try:
            self.process.start()
        except OSError as err:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise RuntimeError(f"cannot start {self.process.command[0]}: {err}") from None

    def poll(self) -> list[ProgressLine]:
        was_running = self.process.running
        lines = self.process.poll()
        progress = [p for p in lines if p.fraction is not None]
        if progress:
            self.last_progress = progress[-1]
        if was_running and not self.process.running:
            self._finish()
        return lines

    def _finish(self) -> None:
        produced = self.staging / "out"
        if self.process.state is RunState.SUCCEEDED:
            if produced.is_dir():
                os.replace(produced, self.out_dir)
            else:
                self.process.state = RunState.FAILED
                self.process.stderr_lines.append("malenia segment reported success but wrote no output folder")
        shutil.rmtree(self.staging, ignore_errors=True)

    def cancel(self) -> None:
        if self.process.running:
            self.process.cancel()
            shutil.rmtree(self.staging, ignore_errors=True)

    def wait(self, timeout: float | None = None) -> RunState:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.process.running:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"segmentation still running after {timeout} s")
            time.sleep(0.05)
        return self.state

