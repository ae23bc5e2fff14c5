"""Turns for Python threads inside Slicer.

Slicer's event loop holds Python's GIL (CTK's Python manager does not turn on PythonQt's thread support), so a
Python thread (an upload, a download, a reader of a background process's output) runs only while the main thread
runs Python code: a few milliseconds per timer tick. In an imitation of that loop a 100 MiB upload took 20 s
instead of 0.5 s. `time.sleep` releases the GIL: a short sleep on a timer that runs while such threads work gives
them their turn. Under PySide6 (the tests) the event loop releases the GIL itself and the turns cost only the sleeps.
"""

from __future__ import annotations

import time

from MaleniaCommon.qt_compat import qt

TURN_S = 0.005  # a sleep per tick: the threads' share of the main thread's time is about TURN_S / interval


def let_threads_run(seconds: float = TURN_S) -> None:
    """One turn for the other Python threads (the GIL is released while this sleeps)."""
    time.sleep(seconds)


class ThreadTurns:
    """A timer that gives Python threads a turn every `interval_ms` while `keep(True)` says they work."""

    def __init__(self, interval_ms: int = 40):
        self.active = False
        self.timer = qt.QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda *_: let_threads_run())

    def keep(self, working: bool) -> None:
        if working and not self.active:
            self.timer.start()
        elif not working and self.active:
            self.timer.stop()
        self.active = bool(working)
