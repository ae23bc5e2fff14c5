"""A stand-in for the 3D Slicer application's Python side, for loading the modules as Slicer does.

`install(home)` puts into sys.modules what a scripted module sees in Slicer: `qt` (PythonQt's rules
on PySide6, see pythonqt.py), `ctk`, and `slicer` = slicer-core's real MRML plus `slicer.app`
(settings, processEvents, module manager), `slicer.mrmlScene`, `slicer.util`, `slicer.modules`,
`slicer.ScriptedLoadableModule`, `slicer.parameterNodeWrapper`, Slicer's widgets. `load_module(path)`
imports a module file under its own name with its folder on sys.path and instantiates the module
class with a parent (title, path ...); `module_widget(name)` builds its panel the way
qSlicerScriptedLoadableModuleWidget does (widget class with a parent, then setup(), then enter());
`show_module(name)` selects a module as the module panel does (exit() of the shown one, enter() of the new
one on every showing); `reload_module(name)` is slicer.util.reloadScriptedModule (cleanup() of the built
panel, a new widget in the same parent, setup()); `unload_module(name)` is the exit's moduleAboutToBeUnloaded.
Everything is undone on exit, so other tests keep PySide6's `qt`. `python_slicer(folder)` writes the
PythonSlicer launcher that runs `malenia` subprocesses; `pump(until)` runs the event loop as Slicer's does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import sys
import time
import types
import warnings
from pathlib import Path

from PySide6 import QtCore, QtWidgets

_SHADOWED = ("qt", "ctk", "slicer.util", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper")
_RELOADED_PREFIXES = ("MaleniaCommon", "MaleniaSegmentLib", "MaleniaTrainerLib", "MaleniaSegment", "MaleniaTrainer")


class _ModuleManager(QtCore.QObject):
    moduleAboutToBeUnloaded = QtCore.Signal(str)

    def connect(self, signature, slot):
        return self.moduleAboutToBeUnloaded.connect(slot)

    def disconnect(self, signature, slot):
        return self.moduleAboutToBeUnloaded.disconnect(slot)


class _App(QtCore.QObject):
    startupCompleted = QtCore.Signal()

    def __init__(self, qapp):
        super().__init__()
        self.qapp = qapp
        self._manager = _ModuleManager()

    def connect(self, signature, slot):
        return getattr(self, signature.split("(")[0]).connect(slot)

    def settings(self):
        return QtCore.QSettings()

    def userSettings(self):
        return QtCore.QSettings()

    def processEvents(self, *args):
        self.qapp.processEvents()

    def moduleManager(self):
        return self._manager

    def commandOptions(self):
        return types.SimpleNamespace(noMainWindow=True)


class _TerminologiesLogic:
    """Records loads; the deprecated call warns, as it does on Slicer main."""

    def __init__(self):
        self.loaded = []

    def LoadTerminologyFromFile(self, path):
        self.loaded.append(("terminology", path))
        return True

    def LoadContextFromFile(self, path):
        self.loaded.append(("context", path))
        return True

    def LoadAnatomicContextFromFile(self, path):
        warnings.warn("LoadAnatomicContextFromFile is deprecated, use LoadContextFromFile", DeprecationWarning)
        self.loaded.append(("anatomic", path))
        return True


class _ModuleParent:
    """What a module object's `parent` (qSlicerScriptedLoadableModule) offers Python."""

    def __init__(self, name, path):
        self.name, self.path = name, str(path)
        self.widget = None

    def widgetRepresentation(self):
        return self.widget

    def self(self):
        return self.instance


class _WidgetRepresentation:
    def __init__(self, instance, qwidget):
        self._instance, self.qwidget = instance, qwidget

    def self(self):
        return self._instance


class _SegmentEditor:
    """What the modules use of qMRMLSegmentEditorWidget (the Qt widget itself is not in slicer-core)."""

    def __init__(self):
        self._segmentation = self._source = self._segment = None

    def setSegmentationNode(self, node):
        self._segmentation = node

    def segmentationNode(self):
        return self._segmentation

    def setSourceVolumeNode(self, node):
        self._source = node

    def sourceVolumeNode(self):
        return self._source

    def setCurrentSegmentID(self, segment_id):
        self._segment = segment_id

    def currentSegmentID(self):
        return self._segment


class _SegmentEditorModule:
    """slicer.modules.segmenteditor as in Slicer: the first widgetRepresentation() builds the Segment Editor panel
    (in Slicer: its parameter node and every effect) and publishes it as slicer.modules.SegmentEditorWidget, as
    qSlicerScriptedLoadableModuleWidget does for each scripted module's widget; it never returns None."""

    name = "SegmentEditor"

    def __init__(self, modules):
        self._modules, self._representation, self.built = modules, None, 0

    def widgetRepresentation(self):
        if self._representation is None:
            instance = types.SimpleNamespace(editor=_SegmentEditor())
            self._representation = _WidgetRepresentation(instance, None)
            self._modules.SegmentEditorWidget = instance
            self.built += 1
        return self._representation


def _slicer_additions(qapp, qt, ctk):
    import slicer

    from . import modules as slm, util, widgets
    from .parameter_node import parameterNodeWrapper_module

    util_module = types.ModuleType("slicer.util")
    util_module.__dict__.update({k: v for k, v in vars(util).items() if not k.startswith("__")})
    slm_module = types.ModuleType("slicer.ScriptedLoadableModule")
    slm_module.__dict__.update({k: v for k, v in vars(slm).items() if not k.startswith("__")})
    terminologies = types.SimpleNamespace(logic=lambda t=_TerminologiesLogic(): t)
    markups = types.SimpleNamespace(logic=lambda: types.SimpleNamespace(JumpSlicesToLocation=lambda *a: None))
    mods = types.SimpleNamespace(terminologies=terminologies, markups=markups)
    mods.segmenteditor = _SegmentEditorModule(mods)
    return {"app": _App(qapp), "mrmlScene": slicer.vtkMRMLScene(), "util": util_module,
            "ScriptedLoadableModule": slm_module, "modules": mods, "qMRMLWidget": widgets.qMRMLWidget,
            "qMRMLNodeComboBox": widgets.qMRMLNodeComboBox, "parameterNodeWrapper": parameterNodeWrapper_module(),
            "selfTests": {}}


@contextlib.contextmanager
def install(home: Path):
    """The stand-in, with the application settings in `home` (an .ini file)."""
    import slicer

    from . import pythonqt, widgets

    qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    saved_modules = {k: v for k, v in sys.modules.items() if k in _SHADOWED or k.startswith(_RELOADED_PREFIXES)}
    for k in saved_modules:
        del sys.modules[k]
    saved_path = list(sys.path)
    QtCore.QCoreApplication.setOrganizationName("slicer-standin")
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(home))
    qt = pythonqt.build()
    ctk = types.ModuleType("ctk")
    ctk.ctkCollapsibleButton, ctk.ctkPathLineEdit = widgets.ctkCollapsibleButton, widgets.ctkPathLineEdit
    sys.modules["qt"], sys.modules["ctk"] = qt, ctk
    additions = _slicer_additions(qapp, qt, ctk)
    saved_attrs = {k: getattr(slicer, k) for k in additions if hasattr(slicer, k)}
    for k, v in additions.items():
        setattr(slicer, k, v)
    for name in ("util", "ScriptedLoadableModule", "parameterNodeWrapper"):
        sys.modules[f"slicer.{name}"] = additions[name]
    _SHOWN.clear()
    try:
        yield slicer
    finally:
        _SHOWN.clear()
        for k in [k for k in sys.modules if k in _SHADOWED or k.startswith(_RELOADED_PREFIXES)]:
            del sys.modules[k]
        sys.modules.update(saved_modules)
        for k in additions:
            if k in saved_attrs:
                setattr(slicer, k, saved_attrs[k])
            else:
                delattr(slicer, k)
        sys.path[:] = saved_path
        QtCore.QSettings.setDefaultFormat(QtCore.QSettings.NativeFormat)


def _exec_module_file(path: Path):
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def load_module(path: str | Path):
    """Imports a scripted module file as Slicer does and instantiates its module class."""
    import slicer

    path = Path(path)
    name = path.stem
    module = _exec_module_file(path)
    parent = _ModuleParent(name, path)
    parent.instance = getattr(module, name)(parent)
    setattr(slicer.modules, name.lower(), parent)
    return module, parent


def module_widget(name: str):
    """The module's panel as Slicer builds it: <Name>Widget(parent) then setup() then enter()."""
    import slicer

    parent = getattr(slicer.modules, name.lower())
    module = sys.modules[name]
    qwidget = slicer.qMRMLWidget()
    qwidget.setLayout(sys.modules["qt"].QVBoxLayout())
    qwidget.setMRMLScene(slicer.mrmlScene)
    instance = getattr(module, name + "Widget")(qwidget)
    instance.setup()
    parent.widget = _WidgetRepresentation(instance, qwidget)
    if hasattr(instance, "enter"):
        instance.enter()
    return instance, qwidget


def unload_module(name: str) -> None:
    import slicer

    slicer.app.moduleManager().moduleAboutToBeUnloaded.emit(name)


def reload_module(name: str):
    """slicer.util.reloadScriptedModule (Slicer's util.py): the module file runs again; a built panel's widget gets
    cleanup() (and loses its moduleAboutToBeUnloaded connection), its layout is emptied, and the parent's reload()
    makes a new <Name>Widget in the same parent and calls its setup() (qSlicerScriptedLoadableModuleWidget::reload),
    not enter(). The Lib packages stay imported, as in Slicer."""
    import slicer

    parent = getattr(slicer.modules, name.lower())
    module = _exec_module_file(Path(parent.path))
    if parent.widget is None:
        return module
    old, qwidget = parent.widget.self(), parent.widget.qwidget
    old.cleanup()
    slicer.app.moduleManager().disconnect("moduleAboutToBeUnloaded(QString)", old._onModuleAboutToBeUnloaded)
    for child in qwidget.children():
        if isinstance(child, QtWidgets.QWidget):
            child.hide()
    layout = qwidget.layout()
    while layout.count():
        layout.removeItem(layout.itemAt(0))
    instance = getattr(module, name + "Widget")(qwidget)
    instance.setup()
    parent.widget = _WidgetRepresentation(instance, qwidget)
    return module


_SHOWN: list[str] = []  # the module the stand-in's module panel shows


def show_module(name: str):
    """qSlicerModulePanel::setModule, as the module selector calls it: the shown module's exit(), then the new one's
    panel (built on first use: <Name>Widget(parent), setup()) and its enter(); Slicer calls enter() on every showing."""
    import slicer

    if _SHOWN and _SHOWN[-1] == name:
        return getattr(slicer.modules, name.lower()).widget.self()
    if _SHOWN:
        shown = getattr(slicer.modules, _SHOWN[-1].lower()).widget
        if shown is not None and hasattr(shown.self(), "exit"):
            shown.self().exit()
    _SHOWN[:] = [name]
    parent = getattr(slicer.modules, name.lower())
    if parent.widget is None:
        return module_widget(name)[0]
    instance = parent.widget.self()
    if hasattr(instance, "enter"):
        instance.enter()
    return instance


def python_slicer(folder: Path, before: str = "") -> Path:
    """`folder/bin/PythonSlicer`, Slicer's Python launcher: logs each call's arguments into
    `folder/pythonslicer.log` and runs this Python (`before`: shell lines that may run something else)."""
    launcher = folder / "bin" / "PythonSlicer"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/pythonslicer.log"\n{before}exec "{sys.executable}" "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    return launcher


def pump(until, timeout: float = 120.0) -> None:
    """Processes application events (timers, the panels' polling) until `until()` is true."""
    import slicer

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slicer.app.processEvents()
        if until():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def train_locally(panel, rows: int, steps: int = 10, timeout: float = 120.0) -> None:
    """Drives a built MaleniaTrainer panel as a user would: local mode, Connect, tick the first `rows`
    corrections, upload, `steps` steps, Start; returns when the job has ended (its status says how)."""
    panel.connection.mode.setCurrentIndex(1)
    panel.connection.connect_button.click()
    pump(lambda: "Connected" in panel.connection.status.text)
    assert panel.corrections.table.rowCount >= rows
    for row in range(rows):
        panel.corrections.set_checked(row, True)
    panel.corrections.upload_button.click()
    pump(lambda: f"{rows} uploaded" in panel.corrections.status.text)
    panel.training.steps.value = steps
    panel.training.start_button.click()
    pump(lambda: panel.job_id is not None)
    pump(lambda: panel.job_id is None, timeout=timeout)
