"""MaleniaTrainer panels (plain Qt) on PySide6 offscreen, driven against a real server subprocess."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
for module in ("MaleniaSegment", "MaleniaTrainer"):
    if str(REPO / module) not in sys.path:
        sys.path.insert(0, str(REPO / module))

from MaleniaCommon.qt_compat import BINDING, ensure_application, get, qt  # noqa: E402
from MaleniaTrainerLib.logic import KEY_TOKEN, MemorySettings, TrainerLogic  # noqa: E402
from MaleniaTrainerLib.panels import TrainerPanel  # noqa: E402
from malenia.server.testdata import ServerProcess, make_model_folder  # noqa: E402
from test_trainer_logic import FAKE_TRAINER, corrections  # noqa: E402,F401  (corrections: a fixture)

SCREENSHOT = Path("/tmp/malenia_trainer.png")


@pytest.fixture(scope="module")
def app():
    assert BINDING == "PySide6"
    return ensure_application()


def pump(app, until, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if until():
            return
        time.sleep(0.02)
    raise AssertionError("GUI condition not reached in time")


def test_panels_upload_train_and_use_a_version(app, corrections, tmp_path):
    make_model_folder(tmp_path / "base", real_bank=True)  # free text gets embedded into v2's bank
    srv = ServerProcess(tmp_path / "data", env={"MALENIA_FAKE_STEP_SECONDS": "0.05"}, settings={
        "base_model": str(tmp_path / "base"), "train_command": FAKE_TRAINER, "promotion": "always"}).start()
    try:
        settings = MemorySettings()
        logic = TrainerLogic(None, settings)
        logic.configure(corrections_dir=str(corrections), models_dir=str(tmp_path / "models"))
        panel = TrainerPanel(logic, poll_ms=50)
        panel.widget.resize(720, get(panel.widget, "sizeHint").height() + 40)
        panel.widget.show()
        used = []
        panel.model_changed.connect(used.append)

        # corrections: every version listed, the latest of each scan ticked
        t = panel.corrections.table
        assert get(t, "rowCount") == 3
        assert [get(t.item(r, 0), "checkState") == qt.Qt.Checked for r in range(3)] == [False, True, True]
        assert t.item(1, 4).text() == "1" and t.item(0, 5).text() == "earlier version"

        # connect: a wrong token gives a clear message and is not kept in the field
        panel.connection.url.setText(srv.url)
        panel.connection.token.setText("mlt_00000000_" + "w" * 43)
        panel.connection.connect_button.click()
        assert get(panel.connection.token, "text") == ""
        pump(app, lambda: "Token rejected" in panel.connection.status.text())
        panel.connection.token.setText(srv.token)
        panel.connection.connect_button.click()
        pump(app, lambda: panel.connection.status.text().startswith("Connected"))
        assert settings.value(KEY_TOKEN) == srv.token and srv.token not in panel.connection.status.text()
        pump(app, lambda: get(panel.versions.table, "rowCount") == 1)

        # upload the ticked ones
        panel.corrections.upload_button.click()
        pump(app, lambda: "uploaded" in panel.corrections.status.text())
        assert panel.corrections.status.text().startswith("2 uploaded, 0 already there, 0 refused")
        assert [t.item(r, 5).text() for r in range(3)] == ["earlier version", "uploaded", "uploaded"]
        assert get(panel.corrections.progress, "value") == 1000

        # train: live progress, loss curve, then the new version is listed as current
        panel.training.steps.setValue(30)
        panel.training.start_button.click()
        pump(app, lambda: panel.job_id is not None)
        pump(app, lambda: "running" in panel.training.status.text() and "step" in panel.training.status.text())
        assert get(panel.training.cancel_button, "isEnabled") and not get(panel.training.start_button, "isEnabled")
        pump(app, lambda: panel.job_id is None and "succeeded" in panel.training.status.text())
        assert get(panel.training.progress, "value") == 1000 and "30/30" in panel.training.status.text()
        assert "Validation DSC: 0.9" in panel.training.val_label.text()
        pump(app, lambda: get(panel.versions.table, "rowCount") == 2)
        assert panel.versions.table.item(1, 1).text() == "●" and panel.versions.selected() == "v2"
        assert panel.versions.table.item(1, 2).text() == "0.900 (patch)"
        assert "1 new free-text description(s) embedded" in panel.versions.table.item(1, 5).text()
        image = panel.training.plot.widget.pixmap().toImage()
        blue = sum(1 for x in range(0, image.width(), 2) for y in range(0, image.height(), 2)
                   if image.pixelColor(x, y).blue() > 150 and image.pixelColor(x, y).red() < 100)
        assert blue > 40  # the loss curve is drawn

        # download the current version and make it MaleniaSegment's model
        panel.versions.use_button.click()
        pump(app, lambda: bool(used))
        assert Path(used[0], "manifest.json").is_file() and logic.segment_model == used[0]
        assert "MaleniaSegment now uses" in panel.versions.status.text()
        app.processEvents()
        assert panel.widget.grab().save(str(SCREENSHOT))
        panel.close()
        logic.close()
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)


class _SlowServer:
    """A backend whose answers wait for the test: the panel's worker threads stay busy while it clicks again."""

    def __init__(self):
        import threading

        self.go = threading.Event()
        self.calls: list[str] = []

    def connect(self):
        self.calls.append("connect")
        self.go.wait(30)
        return {"malenia_version": "x", "api_version": 1, "cases": 0}

    def versions(self):
        self.calls.append("versions")
        self.go.wait(30)
        return {"versions": [], "current": None}

    def close(self):
        pass


def test_a_second_click_while_a_task_works_starts_no_second_thread(app, tmp_path, monkeypatch):
    logic = TrainerLogic(None, MemorySettings())
    logic.configure(corrections_dir=str(tmp_path / "none"), models_dir=str(tmp_path / "models"))
    server = _SlowServer()
    monkeypatch.setattr(logic, "backend", lambda: server)
    panel = TrainerPanel(logic, poll_ms=20)
    try:
        panel.connection.url.setText("http://127.0.0.1:9")
        panel.connection.connect_button.click()
        assert not panel.connection.connect_button.isEnabled()  # disabled while it works
        panel.connect()  # a click that came in anyway (or a script)
        pump(app, lambda: server.calls == ["connect"])
        panel.refresh_versions()
        panel.refresh_versions()  # while the first request works: asked once more when it is done, not in parallel
        pump(app, lambda: "versions" in server.calls)
        server.go.set()
        pump(app, lambda: panel.connection.status.text().startswith("Connected") and not panel.tasks)
        assert panel.connection.connect_button.isEnabled() and panel.versions.refresh_button.isEnabled()
        assert server.calls.count("connect") == 1 and server.calls.count("versions") >= 2
    finally:
        server.go.set()
        panel.close()
