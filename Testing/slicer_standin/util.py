"""slicer.util as the modules use it (names and behaviour read from Slicer's Base/Python/slicer/util.py).

Dialogs do not block: each call is recorded in `DIALOGS` (kind, text) and confirmations answer from
`ANSWERS` (True unless a test queues False). `pip_install` records its argument in `PIP` and installs
nothing: it un-hides the packages that site.lacking() hid (Slicer's Python without them).
"""

from __future__ import annotations

import contextlib
import logging
import os

import slicer

DIALOGS: list[tuple[str, str]] = []
ANSWERS: list[bool] = []
PIP: list[object] = []
SELECTED: list[str] = []


def toBool(value):
    if isinstance(value, str):
        return value.lower() in ("true", "1", "on", "yes")
    return bool(value)


def settingsValue(key, default, converter=lambda v: v, settings=None):
    settings = settings or slicer.app.settings()
    return converter(settings.value(key)) if settings.contains(key) else default


def loadUI(path):
    from PySide6 import QtCore

    from .uiloader import load_ui

    if not QtCore.QFile(path).exists():
        raise RuntimeError(f"Could not load UI file: file not found {path}\n\n")
    return load_ui(path)


def findChildren(widget=None, name="", text="", title="", className=""):
    from PySide6 import QtCore, QtWidgets

    return [w for w in widget.findChildren(QtWidgets.QWidget) if not name or QtCore.QObject.objectName(w) == name]


def childWidgetVariables(widget):
    ui = type("", (), {})()
    for child in findChildren(widget):
        if hasattr(child, "name") and child.name:
            setattr(ui, child.name, child)
    return ui


def _dialog(kind, text, answer=None):
    DIALOGS.append((kind, str(text)))
    logging.info("%s: %s", kind, text)
    return answer


def errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _dialog("error", text)


def warningDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _dialog("warning", text)


def infoDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _dialog("info", text)


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs):
    return _dialog("confirm", text, ANSWERS.pop(0) if ANSWERS else True)


def confirmYesNoDisplay(text, windowTitle=None, parent=None, **kwargs):
    return confirmOkCancelDisplay(text, windowTitle, parent, **kwargs)


def asked_packages(text):
    """The requirements a consent question lists (the dependency plan's '  - requirement' lines)."""
    return [line.strip()[2:] for line in str(text).splitlines() if line.strip().startswith("- ")]


def delayDisplay(message, autoCloseMsec=1000, parent=None, **kwargs):
    _dialog("delay", message)
    slicer.app.processEvents()


def pip_install(requirements, **kwargs):
    from . import site

    PIP.append(requirements)
    site.installed(requirements)


@contextlib.contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    try:
        yield
    except Exception as err:
        if show:
            errorDisplay(f"{message}\n\n{err}" if message else str(err))
        raise


class WaitCursor:
    def __init__(self, show=True):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def modulePath(moduleName):
    return getattr(slicer.modules, moduleName.lower()).path


def selectModule(module):
    # Selecting a module shows its panel, which Slicer builds on first use.
    import slicer

    name = module if isinstance(module, str) else module.name
    SELECTED.append(name)
    if name == "SegmentEditor":
        slicer.modules.segmenteditor.widgetRepresentation()


def setSliceViewerLayers(background=None, foreground=None, label=None, fit=False, **kwargs):
    pass


def reloadScriptedModule(moduleName):
    from . import reload_module

    reload_module(moduleName)


def startupEnvironment():
    return dict(os.environ)


def loadVolume(filename, properties=None, returnNode=False):
    from MaleniaSegmentLib import mrml_io

    return mrml_io.load_volume(slicer.mrmlScene, filename, name=os.path.basename(filename).split(".")[0])


class VTKObservationMixin:
    """Slicer's observer bookkeeping: obj -> {event: {method: (group, tag, priority)}}."""

    def __init__(self):
        super().__init__()
        self.__observations = {}

    @property
    def Observations(self):
        return [(obj, event, method, group, tag, priority)
                for obj, events in self.__observations.items()
                for event, methods in events.items()
                for method, (group, tag, priority) in methods.items()]

    def removeObservers(self, method=None):
        # As Slicer's: removing observations leaves the objects and events as (empty) keys.
        if method is None:
            for obj, _, _, _, tag, _ in self.Observations:
                obj.RemoveObserver(tag)
            self.__observations.clear()
            return
        for obj, events in self.__observations.items():
            for methods in events.values():
                if method in methods:
                    obj.RemoveObserver(methods.pop(method)[1])

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        methods = self.__observations.setdefault(obj, {}).setdefault(event, {})
        if method in methods:
            logging.warning("already has observer")
            return
        methods[method] = (group, obj.AddObserver(event, method, priority), priority)

    def removeObserver(self, obj, event, method):
        # Slicer's keeps `obj` as a key of its bookkeeping (and so keeps it alive) after its last observation goes.
        try:
            group, tag, priority = self.__observations[obj][event].pop(method)
        except KeyError:
            logging.warning("does not have observer")
            return
        obj.RemoveObserver(tag)

    def getObserver(self, obj, event, method, default=None):
        try:
            group, tag, priority = self.__observations[obj][event][method]
            return group, tag, priority
        except KeyError:
            return default

    def hasObserver(self, obj, event, method):
        return self.getObserver(obj, event, method) is not None
