"""Slicer's and CTK's widgets the modules' .ui files and code use, as PythonQt would show them.

qMRMLWidget (setMRMLScene -> mrmlSceneChanged), qMRMLNodeComboBox (nodes of `nodeTypes` in the
scene, kept in step with NodeAdded/NodeRemoved; with noneEnabled false the first node is selected,
as the real one does), ctkCollapsibleButton (a container with `collapsed` and `text`) and
ctkPathLineEdit (`currentPath`, `filters`, currentPathChanged(QString)).
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from .pythonqt import PythonQtObject


class qMRMLWidget(PythonQtObject, QtWidgets.QWidget):
    mrmlSceneChanged = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(PythonQtObject, QtWidgets.QComboBox):
    currentNodeChanged = QtCore.Signal(object)
    currentNodeIDChanged = QtCore.Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._types, self._scene, self._tags, self._nodes = [], None, [], []
        self._current = None
        self._none, self._add, self._remove, self._children = False, True, True, True
        self.currentIndexChanged.connect(self._indexChanged)

    def _get_types(self):
        return list(self._types)

    def _set_types(self, types):
        self._types = list(types)
        self._refresh()

    nodeTypes = QtCore.Property("QStringList", _get_types, _set_types)
    noneEnabled = QtCore.Property(bool, lambda self: self._none, lambda self, v: setattr(self, "_none", bool(v)))
    addEnabled = QtCore.Property(bool, lambda self: self._add, lambda self, v: setattr(self, "_add", bool(v)))
    removeEnabled = QtCore.Property(bool, lambda self: self._remove, lambda self, v: setattr(self, "_remove", bool(v)))
    showChildNodeTypes = QtCore.Property(bool, lambda self: self._children,
                                         lambda self, v: setattr(self, "_children", bool(v)))

    def setMRMLScene(self, scene):
        import vtk

        if self._scene is not None:
            for tag in self._tags:
                self._scene.RemoveObserver(tag)
        self._scene, self._tags = scene, []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, vtk.vtkCommand.ModifiedEvent):
                self._tags.append(scene.AddObserver(event, lambda *a: self._refresh()))
        self._refresh()

    def mrmlScene(self):
        return self._scene

    def _matching(self):
        if self._scene is None:
            return []
        out = []
        for i in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(i)
            if node.GetHideFromEditors():
                continue
            if any(node.GetClassName() == t or (self._children and node.IsA(t)) for t in self._types):
                out.append(node)
        return out

    def _refresh(self):
        nodes = self._matching()
        current = self._current if self._current in nodes else None
        if current is None and not self._none and nodes:
            current = nodes[0]
        self.blockSignals(True)
        QtWidgets.QComboBox.clear(self)
        self._nodes = ([None] if self._none else []) + nodes
        for node in self._nodes:
            QtWidgets.QComboBox.addItem(self, node.GetName() if node is not None else "None")
        QtWidgets.QComboBox.setCurrentIndex(self, self._nodes.index(current) if current in self._nodes else -1)
        self.blockSignals(False)
        self._setCurrent(current)

    def _indexChanged(self, index):
        self._setCurrent(self._nodes[index] if 0 <= index < len(self._nodes) else None)

    def _setCurrent(self, node):
        if node is self._current:
            return
        self._current = node
        self.currentNodeChanged.emit(node)
        self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def currentNode(self):
        return self._current

    def currentNodeID(self):
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node):
        if node is not None and node not in self._nodes:
            self._refresh()
        if node in self._nodes:
            QtWidgets.QComboBox.setCurrentIndex(self, self._nodes.index(node))
        self._setCurrent(node)

    def setCurrentNodeID(self, node_id):
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene and node_id else None)


class ctkCollapsibleButton(PythonQtObject, QtWidgets.QGroupBox):
    contentsCollapsed = QtCore.Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    def _set_collapsed(self, value):
        self._collapsed = bool(value)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.contentsCollapsed.emit(self._collapsed)

    collapsed = QtCore.Property(bool, lambda self: self._collapsed, _set_collapsed)
    text = QtCore.Property(str, lambda self: QtWidgets.QGroupBox.title(self),
                           lambda self, v: QtWidgets.QGroupBox.setTitle(self, v))


class ctkPathLineEdit(PythonQtObject, QtWidgets.QWidget):
    Dirs, Files, Drives, NoDot, NoDotDot, Readable, Writable, Executable = 0x1, 0x2, 0x4, 0x2000, 0x4000, 0x10, 0x20, 0x40
    currentPathChanged = QtCore.Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._edit = QtWidgets.QLineEdit(self)
        self._browse = QtWidgets.QToolButton(self)
        self._browse.setText("...")
        layout.addWidget(self._edit, 1)
        layout.addWidget(self._browse)
        self._filters = self.Files
        self._edit.textChanged.connect(self.currentPathChanged.emit)

    currentPath = QtCore.Property(str, lambda self: self._edit.text(), lambda self, v: self._edit.setText(str(v)))
    filters = QtCore.Property(int, lambda self: self._filters, lambda self, v: setattr(self, "_filters", int(v)))

    def setCurrentPath(self, path):
        self._edit.setText(str(path))
