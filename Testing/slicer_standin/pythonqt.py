"""A `qt` module that behaves as Slicer's PythonQt does, on PySide6 (offscreen).

PythonQt, unlike PySide6, exposes Qt properties as Python attributes (`button.enabled = False`,
`label.text` is a str, so `label.text()` fails as it does in Slicer), also knows a QObject's
`name` (its objectName), and connects by signature (`button.connect('clicked(bool)', fn)`).
Every QObject class of QtCore/QtGui/QtWidgets is offered here as a subclass with those rules;
others (QColor, QTableWidgetItem ...) are PySide6's own.
Limit: objects Qt itself creates and returns (a layout(), a header()) are plain PySide6 objects (shiboken
cannot retype them); test_slicer_pythonqt_returned.py reads the modules' code for properties called on those.
"""

from __future__ import annotations

import re
import types

from PySide6 import QtCore, QtGui, QtWidgets

_PYSIDE = ("PySide6", "shiboken6")
_python_names_cache: dict[type, frozenset] = {}
_reading: set[str] = set()


def _python_names(cls: type) -> frozenset:
    """Attributes defined in Python (not by PySide6) on the class: they win over Qt properties."""
    names = _python_names_cache.get(cls)
    if names is None:
        names = frozenset(n for k in cls.__mro__ if not k.__module__.startswith(_PYSIDE) for n in vars(k))
        _python_names_cache[cls] = names
    return names


class PythonQtObject:
    """Mixin: Qt properties as attributes, `name`, and connect/disconnect by signature."""

    def __getattribute__(self, name):
        if name in ("connect", "disconnect"):  # PySide6's attribute lookup would return QObject's own
            return getattr(PythonQtObject, name).__get__(self)
        if name[:1] != "_" and name not in _python_names(type(self)) and name not in _reading:
            if name == "name":
                return QtCore.QObject.objectName(self)
            if QtCore.QObject.metaObject(self).indexOfProperty(name) >= 0:
                _reading.add(name)  # PySide6's property() may look the name up on the object again
                try:
                    return QtCore.QObject.property(self, name)
                finally:
                    _reading.discard(name)
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if name[:1] != "_" and name not in _python_names(type(self)):
            if name == "name":
                return QtCore.QObject.setObjectName(self, value)
            meta = QtCore.QObject.metaObject(self)
            index = meta.indexOfProperty(name)
            if index >= 0:
                if not meta.property(index).isWritable():
                    raise AttributeError(f"property {name!r} of {type(self).__name__} is read-only")
                QtCore.QObject.setProperty(self, name, value)
                return None
        return super().__setattr__(name, value)

    def connect(self, signature, slot, *args):
        """PythonQt's `obj.connect('signal(args)', callable)`."""
        if not isinstance(signature, str):
            return QtCore.QObject.connect(self, signature, slot, *args)
        signal_instance(self, signature).connect(slot)
        return True

    def disconnect(self, signature=None, slot=None):
        if not isinstance(signature, str):
            return QtCore.QObject.disconnect(self, signature, slot) if signature is not None else QtCore.QObject.disconnect(self)
        return signal_instance(self, signature).disconnect(slot)


def signal_instance(obj, signature: str):
    m = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", signature)
    if not m:
        raise ValueError(f"not a Qt signal signature: {signature!r}")
    signal = getattr(obj, m.group(1), None)
    if signal is None or not hasattr(signal, "connect"):
        raise AttributeError(f"{type(obj).__name__} has no signal {signature!r}")
    return signal


def _wrap(cls: type) -> type:
    return type(cls.__name__, (PythonQtObject, cls), {"__module__": "qt"})


def build() -> types.ModuleType:
    qt = types.ModuleType("qt")
    qt.__doc__ = __doc__
    for module in (QtCore, QtGui, QtWidgets):
        for name in dir(module):
            obj = getattr(module, name)
            if not name.startswith("Q") or not isinstance(obj, type):
                continue
            wrapped = issubclass(obj, QtCore.QObject) and obj is not QtCore.QObject and name not in ("QSignalBlocker",)
            setattr(qt, name, _wrap(obj) if wrapped else obj)
    qt.QObject = _wrap(QtCore.QObject)
    qt.Qt = QtCore.Qt
    from PySide6.QtUiTools import QUiLoader

    qt.QUiLoader = QUiLoader
    return qt
