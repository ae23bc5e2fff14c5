"""slicer.util.loadUI on PySide6's QUiLoader: every widget made as its PythonQt-like class (Qt's own
and Slicer's custom ones), and the .ui's <connections> made by signal name after loading, as Qt's
loader would with the real C++ signatures (e.g. mrmlSceneChanged(vtkMRMLScene*) -> setMRMLScene)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from PySide6 import QtCore
from PySide6.QtUiTools import QUiLoader


class _Loader(QUiLoader):
    def __init__(self, classes):
        super().__init__()
        self._classes = classes

    def createWidget(self, className, parent=None, name=""):
        cls = self._classes.get(className)
        widget = cls(parent) if cls is not None else super().createWidget(className, parent, name)
        widget.setObjectName(name)
        return widget


def _classes():
    import ctk
    import qt
    import slicer

    out = {name: getattr(qt, name) for name in dir(qt) if name.startswith("Q") and isinstance(getattr(qt, name), type)}
    out.update({"qMRMLWidget": slicer.qMRMLWidget, "qMRMLNodeComboBox": slicer.qMRMLNodeComboBox,
                "ctkCollapsibleButton": ctk.ctkCollapsibleButton, "ctkPathLineEdit": ctk.ctkPathLineEdit})
    return out


def load_ui(path):
    tree = ET.parse(path)
    root = tree.getroot()
    connections = root.find("connections")
    wiring = []
    if connections is not None:
        for c in connections.findall("connection"):
            wiring.append(tuple(c.find(k).text for k in ("sender", "signal", "receiver", "slot")))
        root.remove(connections)
    data = QtCore.QByteArray(ET.tostring(root, encoding="utf-8"))
    buffer = QtCore.QBuffer(data)
    buffer.open(QtCore.QIODevice.ReadOnly)
    widget = _Loader(_classes()).load(buffer)
    if widget is None:
        raise RuntimeError(f"Could not load UI file: {path}\n\n")
    named = {QtCore.QObject.objectName(w): w for w in widget.findChildren(QtCore.QObject)}
    named[QtCore.QObject.objectName(widget)] = widget
    for sender, signal, receiver, slot in wiring:
        getattr(named[sender], re.match(r"\w+", signal).group(0)).connect(
            getattr(named[receiver], re.match(r"\w+", slot).group(0)))
    return widget
