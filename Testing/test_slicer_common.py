"""MaleniaCommon, the small Lib both Slicer modules share: the Python that runs `malenia` inside Slicer,
the shared settings, the model-folder setting verified by the core, the dependency plan on the Python
Slicer 5.6/5.8 ship (3.9, no tomllib), and the Trainer's threads kept off settings and scene (issue 18)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

import slicer_segment_support  # noqa: F401  (module folders on sys.path)

from MaleniaCommon import deps, settings as shared
from MaleniaCommon.paths import PythonNotFound, configured_model_folder, python_executable

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "MaleniaTrainer") not in sys.path:
    sys.path.insert(0, str(REPO / "MaleniaTrainer"))
PY39 = Path("/root/.pyenv/versions/3.9.18/bin/python")
SLICER_PY = sorted(p for d in ("MaleniaCommon", "MaleniaSegment", "MaleniaTrainer") for p in (REPO / d).rglob("*.py"))


@pytest.fixture()
def inside_slicer(monkeypatch, tmp_path):
    """`slicer` with an `app`, and sys.executable the Slicer application (as inside Slicer)."""
    fake = types.ModuleType("slicer")
    fake.app = object()
    monkeypatch.setitem(sys.modules, "slicer", fake)
    app = tmp_path / "Slicer-5.8.1" / "bin" / "SlicerApp-real"
    app.parent.mkdir(parents=True)
    app.write_text("")
    monkeypatch.setattr(sys, "executable", str(app))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return app.parent


def test_outside_slicer_this_python_runs_malenia():
    assert python_executable() == sys.executable


def test_inside_slicer_pythonslicer_never_the_application(inside_slicer):
    with pytest.raises(PythonNotFound, match="PythonSlicer was not found"):
        python_executable()
    (inside_slicer / "PythonSlicer").write_text("#!/bin/sh\n")
    (inside_slicer / "PythonSlicer").chmod(0o755)
    assert python_executable() == str(inside_slicer / "PythonSlicer")


def test_local_training_runs_in_the_python_it_is_given(tmp_path, inside_slicer):
    from MaleniaTrainerLib.logic import MemorySettings, TrainerLogic

    from malenia.server.jobs import launcher_prefix

    logic = TrainerLogic(None, MemorySettings(), local_settings={"launcher": "python"})
    logic.configure(mode="local", local_dir=str(tmp_path / "local"))
    with pytest.raises(PythonNotFound):
        logic.backend()  # no Slicer application started instead
    (inside_slicer / "PythonSlicer").write_text("#!/bin/sh\n")
    (inside_slicer / "PythonSlicer").chmod(0o755)
    cfg = logic.backend().service.cfg
    assert launcher_prefix(cfg, 0, "j1")[0] == str(inside_slicer / "PythonSlicer")
    assert str(REPO) in cfg.subprocess_env["PYTHONPATH"].split(os.pathsep)  # finds `malenia` beside the modules
    logic.close()


def test_one_corrections_key_for_both_modules(tmp_path):
    from MaleniaTrainerLib.logic import MemorySettings, TrainerLogic

    settings = MemorySettings({shared.CORRECTIONS_FOLDER: str(tmp_path / "saved-by-segment")})
    assert TrainerLogic(None, settings).corrections_dir == tmp_path / "saved-by-segment"
    old = MemorySettings({shared.OLD_TRAINER_CORRECTIONS: str(tmp_path / "old")})
    assert TrainerLogic(None, old).corrections_dir == tmp_path / "old"  # an earlier Trainer setting still counts
    segment_glue = (REPO / "MaleniaSegment" / "MaleniaSegmentLib" / "widget.py").read_text()
    assert "CorrectionsFolder" not in segment_glue and "shared_settings.CORRECTIONS_FOLDER" in segment_glue


def test_model_folder_setting_is_verified_by_the_core(tmp_path):
    from malenia.server.testdata import make_model_folder

    assert configured_model_folder("") is None and configured_model_folder(str(tmp_path / "gone")) is None
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "manifest.json").write_text("{}")
    assert configured_model_folder(str(tmp_path / "fake")) is None  # a manifest alone is not a model
    model = make_model_folder(tmp_path / "m")
    assert configured_model_folder(str(model)) == str(model)
    (model / "weights.safetensors").write_bytes(b"damaged")
    assert configured_model_folder(str(model)) is None


def test_requirements_read_without_tomllib_equal_tomllib():
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert deps.read_requirements(REPO)[: len(data["project"]["dependencies"])] == data["project"]["dependencies"]
    assert deps.read_requirements(REPO, extra="server", only=("httpx",)) == [
        r for r in data["project"]["optional-dependencies"]["server"] if r.startswith("httpx")]


@pytest.mark.skipif(not PY39.is_file(), reason="no Python 3.9 (Slicer 5.6/5.8's) on this machine")
def test_dependency_plan_on_slicer_5_8_python_3_9():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from MaleniaCommon import deps; "
            "print('\\n'.join(deps.read_requirements())); "
            "p = deps.plan_installation(version_of=lambda n: (_ for _ in ()).throw(__import__('importlib.metadata').metadata.PackageNotFoundError(n)), pytorch_extension=True); "
            "print('TORCH', p.torch, p.torch_via_extension, len(p.packages), len(p.no_deps))")
    out = subprocess.run([str(PY39), "-I", "-c", code, str(REPO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:-1] == deps.read_requirements(REPO)
    assert lines[-1] == f"TORCH torch>=2.2 True {len(lines) - 1 - 1 - 2} 2"


def test_slicer_side_code_parses_as_python_3_9():
    for path in SLICER_PY:
        ast.parse(path.read_text(), str(path), feature_version=(3, 9))


class _ThreadCheckingSettings:
    def __init__(self, values):
        self.values, self.off_thread = dict(values), []

    def _check(self, key):
        if threading.current_thread() is not threading.main_thread():
            self.off_thread.append(key)

    def value(self, key, default=None):
        self._check(key)
        return self.values.get(key, default)

    def setValue(self, key, value):  # noqa: N802
        self._check(key)
        self.values[key] = value


def test_trainer_threads_touch_neither_settings_nor_scene(tmp_path, monkeypatch):
    import time

    import slicer
    import vtk

    from MaleniaCommon.qt_compat import BINDING, ensure_application
    from MaleniaTrainerLib.panels import TrainerPanel
    from MaleniaTrainerLib.logic import TrainerLogic
    from malenia.server.testdata import make_case, make_model_folder
    from test_trainer_logic import FAKE_TRAINER, save_review

    if BINDING != "PySide6":
        pytest.skip("run with PySide6's qt")
    app = ensure_application()
    make_model_folder(tmp_path / "base")
    save_review(tmp_path / "c", make_case(tmp_path / "src", seed=3), "scanA")
    scene = slicer.vtkMRMLScene()
    events = []
    scene.AddObserver(vtk.vtkCommand.AnyEvent, lambda *a: events.append(threading.current_thread() is threading.main_thread()))
    settings = _ThreadCheckingSettings({"MaleniaTrainer/Mode": "local", "MaleniaTrainer/LocalDataDir": str(tmp_path / "l"),
                                        shared.CORRECTIONS_FOLDER: str(tmp_path / "c"), "MaleniaTrainer/ModelsDir": str(tmp_path / "m")})
    logic = TrainerLogic(scene, settings, local_settings={"base_model": str(tmp_path / "base"), "train_command": FAKE_TRAINER,
                                                          "promotion": "always"})
    panel = TrainerPanel(logic, poll_ms=20)

    def pump(until, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not until():
            app.processEvents()
            time.sleep(0.02)
        assert until()

    panel.connect()
    assert panel.turns.active  # inside Slicer, the task's thread gets its turns while it works
    pump(lambda: "Connected" in panel.connection.status.text())
    panel.corrections.set_checked(0, True)
    panel.upload()
    pump(lambda: "uploaded" in panel.corrections.status.text())
    panel.refresh_versions()
    pump(lambda: len(panel.versions.names) == 1)
    pump(lambda: not panel.tasks)
    assert not panel.turns.active  # and no turns once nothing works
    panel.versions.table.selectRow(0)
    panel.download_and_use()
    pump(lambda: "now uses" in panel.versions.status.text())
    panel.start()  # a job's id reaches the parameter node; cancelled at once
    pump(lambda: panel.job_id is not None)
    node = logic.parameter_node()
    assert node.GetParameter("JobId") and node.GetParameter("ModelFolder")
    assert settings.off_thread == [] and events and all(events)
    panel.close()
    logic.close()


def test_slicer_side_has_no_copy_of_the_core_protocols():
    """One owner per format and protocol (issue 13): the corrections layout is malenia.data.corrections', progress
    lines are parsed by malenia.progress_lines and process trees stopped by malenia.process_tree, in both modules."""
    owned = {"VERSION_RE", "CASE_FILES"}
    stopping = ("killpg", "taskkill", "CREATE_NEW_PROCESS_GROUP", "start_new_session")
    assert len(SLICER_PY) > 20
    for path in SLICER_PY:
        source = path.read_text()
        tree = ast.parse(source)
        assigned = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        assert not assigned & owned, f"{path.name} redefines {assigned & owned}"
        assert not [w for w in stopping if w in source], f"{path.name} stops processes itself"
        assert "json.loads(line" not in source and "json.loads(text" not in source, f"{path.name} parses progress lines"
    runner = (REPO / "MaleniaSegment" / "MaleniaSegmentLib" / "runner.py").read_text()
    assert "malenia.progress_lines import ProgressLine" in runner and "malenia.process_tree import stop_tree" in runner
