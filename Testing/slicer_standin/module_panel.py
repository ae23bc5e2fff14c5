"""The geometry of Slicer's module panel (Base/QTGUI/qSlicerModulePanel.cxx and Resources/UI/qSlicerModulePanel.ui).

Slicer shows a module's widget inside a QScrollArea that resizes its contents (`widgetResizable`) and never scrolls
sideways (`horizontalScrollBarPolicy` ScrollBarAlwaysOff): `addModule` sets the module layout's margins to 0,
inserts the widget into the scroll area's box layout with stretch 1 and gives it a horizontal size policy
`Minimum`. The panel's minimum width is the module's minimum width plus a scroll bar's (its `minimumSizeHint`), so
a module that needs more width widens Slicer's whole left panel; its height follows the width (word-wrapped labels
take the lines they need), which a bare top-level widget does not do. Only the geometry is reproduced here:
entering and leaving the module is `show_module`'s business.
"""

from __future__ import annotations

import contextlib

from PySide6 import QtCore, QtWidgets


def _read(obj, name: str):
    """A Qt property's value: an attribute under the stand-in's PythonQt rules, a method on plain PySide6 objects."""
    value = getattr(obj, name)
    return value() if callable(value) else value


class ModulePanel:
    def __init__(self):
        self.scroll = QtWidgets.QScrollArea()
        self.scroll.setFrameShape(QtWidgets.QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.scroll.setWidgetResizable(True)
        self.contents = QtWidgets.QWidget()
        QtWidgets.QVBoxLayout(self.contents)
        self.scroll.setWidget(self.contents)

    def add(self, module_widget) -> None:
        """qSlicerModulePanel::addModule's layout part."""
        if module_widget.layout() is not None:
            module_widget.layout().setContentsMargins(0, 0, 0, 0)
        self.contents.layout().insertWidget(0, module_widget, 1)
        policy = _read(module_widget, "sizePolicy")
        module_widget.setSizePolicy(QtWidgets.QSizePolicy.Minimum, policy.verticalPolicy())
        module_widget.setVisible(True)

    def remove(self, module_widget) -> None:
        """qSlicerModulePanel::removeModule's layout part: taken out, hidden, without a parent."""
        layout = self.contents.layout()
        layout.takeAt(layout.indexOf(module_widget))
        module_widget.setVisible(False)
        module_widget.setParent(None)

    def minimum_width(self) -> int:
        """qSlicerModulePanel::minimumSizeHint's width: the narrowest Slicer's left panel can be with this module."""
        bar = _read(self.scroll.horizontalScrollBar(), "sizeHint").width()
        return _read(self.contents, "minimumSizeHint").width() + bar

    def show_at(self, width: int) -> None:
        self.scroll.resize(width, 800)
        self.scroll.show()
        QtWidgets.QApplication.processEvents()


@contextlib.contextmanager
def in_module_panel(module_widget, width: int = 460):
    """The module's widget shown in a module panel `width` pixels wide; afterwards a top-level widget again, shown
    (as the stand-in's module_widget leaves it). Yields the panel; `panel.contents.grab()` is the whole module."""
    panel = ModulePanel()
    panel.add(module_widget)
    try:
        panel.show_at(max(width, panel.minimum_width()))
        yield panel
    finally:
        panel.remove(module_widget)
        panel.scroll.deleteLater()
        module_widget.show()
