"""One `qt` namespace for Slicer's PythonQt and for PySide6 (tests, tools outside Slicer).

Widgets in this package use only the API the two bindings share:
- classes from `qt` (QWidget, QTableWidget, Qt.AlignLeft ...) and new-style signal
  connections (`button.clicked.connect(fn)`);
- getters through `get(obj, "text")`: PythonQt exposes Qt properties as attributes,
  PySide6 as methods;
- no custom Qt signals (PythonQt cannot declare them in Python): widgets report events
  through plain Python callbacks (`Callbacks`).
"""

from __future__ import annotations

import types
from typing import Any, Callable

try:  # inside Slicer
    import qt  # type: ignore[import-not-found]

    BINDING = "PythonQt"
except ImportError:  # anywhere else
    from PySide6 import QtCore, QtGui, QtWidgets

    qt = types.SimpleNamespace()
    for _module in (QtCore, QtGui, QtWidgets):
        for _name in dir(_module):
            if _name.startswith("Q"):
                setattr(qt, _name, getattr(_module, _name))
    BINDING = "PySide6"


def get(obj: Any, name: str) -> Any:
    """Value of a Qt property or getter under either binding."""
    value = getattr(obj, name)
    return value() if callable(value) else value


def ensure_application() -> Any:
    """The running QApplication (Slicer's), or a new one outside Slicer."""
    app = qt.QApplication.instance()
    return app if app is not None else qt.QApplication([])


class Callbacks:
    """A minimal signal: `connect(fn)`, `emit(*args)`."""

    def __init__(self) -> None:
        self._fns: list[Callable[..., Any]] = []

    def connect(self, fn: Callable[..., Any]) -> None:
        self._fns.append(fn)

    def emit(self, *args: Any) -> None:
        for fn in list(self._fns):
            fn(*args)
