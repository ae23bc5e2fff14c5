"""Qt properties read off objects Qt itself returns, checked as Slicer's PythonQt reads them.

PythonQt looks a name up as a Qt property before it looks for a method (PythonQtClassInfo::member), so in Slicer
`table.verticalHeader().defaultSectionSize` is an int and `...defaultSectionSize()` raises "'int' object is not
callable". The stand-in (slicer_standin.pythonqt) applies that rule to every object the modules create, but not to
the ones Qt creates and hands back (a header, a layout, a parent widget): shiboken cannot retype them. This check
covers those by reading the modules' code: a method call on what such an accessor returns, directly or through a
local name, must not be the name of a Qt property of the returned class (read it with `qt_compat.get`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6 import QtCore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIRS = ("MaleniaSegment", "MaleniaTrainer", "MaleniaCommon")
# Accessors whose result Qt creates, and the class whose properties it then has in PythonQt.
ACCESSORS = {
    "horizontalHeader": QtWidgets.QHeaderView, "verticalHeader": QtWidgets.QHeaderView, "header": QtWidgets.QHeaderView,
    "layout": QtWidgets.QLayout, "parentWidget": QtWidgets.QWidget, "window": QtWidgets.QWidget,
    "viewport": QtWidgets.QWidget, "verticalScrollBar": QtWidgets.QScrollBar,
    "horizontalScrollBar": QtWidgets.QScrollBar, "selectionModel": QtCore.QItemSelectionModel,
    "lineEdit": QtWidgets.QLineEdit, "view": QtWidgets.QAbstractItemView,
}


def properties(cls) -> frozenset[str]:
    meta = cls.staticMetaObject
    return frozenset(meta.property(i).name() for i in range(meta.propertyCount()))


def _accessor(node) -> str | None:
    """The accessor name when `node` is `<anything>.<accessor>()`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ACCESSORS:
        return node.func.attr
    return None


def violations(source: str, filename: str = "<string>") -> list[str]:
    """`file:line: accessor().property()` for each property called as a method on a Qt-returned object."""
    found = []
    for scope in ast.walk(ast.parse(source, filename)):
        if not isinstance(scope, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        local = {t.id: _accessor(n.value) for n in ast.walk(scope) if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and _accessor(n.value)}
        for node in ast.walk(scope):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            accessor = _accessor(target) or (local.get(target.id) if isinstance(target, ast.Name) else None)
            if accessor and node.func.attr in properties(ACCESSORS[accessor]):
                found.append(f"{filename}:{node.lineno}: {accessor}().{node.func.attr}()")
    return sorted(set(found))


def test_the_check_finds_a_property_called_on_a_returned_header_directly_and_through_a_name():
    code = ("def fit(t):\n"
            "    a = t.verticalHeader().defaultSectionSize()\n"
            "    h = t.horizontalHeader()\n"
            "    b = h.stretchLastSection()\n"
            "    t.verticalHeader().setVisible(False)\n"     # a method, not a property: fine
            "    c = get(t.verticalHeader(), 'defaultSectionSize')\n"
            "    return t.layout().spacing() + t.parentWidget().width()\n")
    assert violations(code) == ["<string>:2: verticalHeader().defaultSectionSize()",
                                "<string>:4: horizontalHeader().stretchLastSection()",
                                "<string>:7: layout().spacing()", "<string>:7: parentWidget().width()"]


def test_no_module_calls_a_qt_property_of_a_qt_returned_object():
    files = sorted(p for d in MODULE_DIRS for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 10
    found = [v for p in files for v in violations(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert found == []
