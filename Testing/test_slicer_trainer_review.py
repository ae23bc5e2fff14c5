"""MaleniaTrainer against what Slicer really does around a module (session 65's review, docs/slicer.md):
enter() on every showing of the module (qSlicerModulePanel::addModule), cleanup() on reload and exit with work in
flight, Developer mode's Reload (slicer.util.reloadScriptedModule), QTimer slots that must not raise (PythonQt
prints the error and the timer fires again), the self-test on the user's own settings (Slicer.ini), and a local
training job while the user changes the backend, reloads the module or restarts Slicer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from segment_helpers import REPO
from slicer_standin import load_module, pump, show_module, unload_module
from test_slicer_standin_modules import slicer_app  # noqa: F401  (a fixture: the stand-in with PythonSlicer)
from test_trainer_logic import save_review

TRAINER = REPO / "MaleniaTrainer" / "MaleniaTrainer.py"


def _corrections(slicer, tmp: Path, count: int) -> Path:
    from malenia.server.testdata import make_case

    folder = tmp / "corrections"
    for i in range(count):  # saved by MaleniaSegment's real corrections writer
        save_review(folder, make_case(tmp / "src" / f"s{i}", seed=30 + i), f"scan{i}")
    slicer.app.settings().setValue("Malenia/CorrectionsFolder", str(folder))
    return folder


def _local_trainer(slicer, tmp: Path):
    """The Trainer panel shown, in local mode on a small base model; the job's steps take 0.1 s each."""
    from malenia.server.testdata import make_model_folder

    make_model_folder(tmp / "base")
    load_module(TRAINER)
    trainer = show_module("MaleniaTrainer")
    trainer.logic.core.local_settings = {"base_model": str(tmp / "base"), "promotion": "always"}
    return trainer


def _connect_locally(panel) -> None:
    panel.connection.mode.setCurrentIndex(1)
    panel.connection.connect_button.click()
    pump(lambda: "Connected" in panel.connection.status.text)


def _start_job(panel, steps: int) -> None:
    panel.corrections.upload_button.click()
    pump(lambda: "uploaded" in panel.corrections.status.text)
    panel.training.steps.value = steps
    panel.training.start_button.click()
    pump(lambda: panel.job_id is not None)


def _job_state(trainer, job_id: str) -> dict:
    return trainer.logic.core.backend().job(job_id)


def test_corrections_saved_meanwhile_are_listed_when_the_module_is_shown_again(slicer_app):
    """Slicer calls enter() each time the module is selected; the list was read once, at setup()."""
    slicer, tmp = slicer_app
    folder = _corrections(slicer, tmp, 2)
    load_module(REPO / "MaleniaSegment" / "MaleniaSegment.py")
    load_module(TRAINER)
    panel = show_module("MaleniaTrainer").panel
    assert panel.corrections.table.rowCount == 2
    panel.corrections.set_checked(0, False)  # the user's choice survives the refresh
    show_module("MaleniaSegment")
    from malenia.server.testdata import make_case

    save_review(folder, make_case(tmp / "src" / "s9", seed=39), "scan9")
    show_module("MaleniaTrainer")
    assert panel.corrections.table.rowCount == 3
    assert [item.case for item in panel.corrections.checked_items()] == ["scan1", "scan9"]
    unload_module("MaleniaSegment")
    unload_module("MaleniaTrainer")


def test_cleanup_and_reload_with_a_request_in_flight_stop_every_timer(slicer_app):
    """A server that accepts the connection and never answers: the connection request is in flight when the module
    is reloaded and when Slicer exits. cleanup() stopped the poll timer but left the threads' turn timer firing."""
    slicer, tmp = slicer_app
    with socket.create_server(("127.0.0.1", 0)) as silent:
        load_module(TRAINER)
        trainer = show_module("MaleniaTrainer")
        old = trainer.panel
        old.connection.mode.setCurrentIndex(0)  # server mode, said here: a local connect returns at once
        old.connection.url.setText(f"http://127.0.0.1:{silent.getsockname()[1]}")
        old.connection.connect_button.click()
        assert old.busy and old.turns.timer.isActive(), (old.connection.status.text, old.logic.mode)
        trainer.onReload()  # Developer mode's Reload: slicer.util.reloadScriptedModule
        assert not old.timer.isActive() and not old.turns.timer.isActive()
        new = slicer.modules.maleniatrainer.widget.self().panel
        assert new is not old and new.timer.isActive() and new.connection.connect_button.text == "Connect"
        new.connection.connect_button.click()  # the stored URL, again in flight
        assert new.turns.timer.isActive()
        unload_module("MaleniaTrainer")  # application exit
        assert not new.timer.isActive() and not new.turns.timer.isActive()


def test_the_self_test_leaves_the_users_server_settings_alone(slicer_app, monkeypatch):
    """Reload and Test with MALENIA_TEST_SERVER set wrote the test server's URL, token and mode into Slicer.ini."""
    from malenia.server.testdata import ServerProcess, make_model_folder

    slicer, tmp = slicer_app
    make_model_folder(tmp / "base")
    server = ServerProcess(tmp / "data", settings={"base_model": str(tmp / "base")}).start()
    try:
        settings = slicer.app.settings()
        mine = {"MaleniaTrainer/ServerURL": "http://my-server:8000", "MaleniaTrainer/Token": "my-token",
                "MaleniaTrainer/Mode": "local"}
        for key, value in mine.items():
            settings.setValue(key, value)
        monkeypatch.setenv("MALENIA_TEST_SERVER", server.url)
        monkeypatch.setenv("MALENIA_TEST_TOKEN", server.token)
        load_module(TRAINER)
        slicer.selfTests["MaleniaTrainer"](msec=0)
        assert {key: slicer.app.settings().value(key) for key in mine} == mine
    finally:
        server.stop()


def test_a_running_local_job_keeps_its_backend_when_connect_is_clicked_with_other_settings(slicer_app, monkeypatch):
    """Connect with another mode or URL made a new backend, which closed the local one: the training was ended
    (TrainingService.close) and the panel polled the job on a server that never had it."""
    monkeypatch.setenv("MALENIA_FAKE_STEP_SECONDS", "0.1")
    slicer, tmp = slicer_app
    _corrections(slicer, tmp, 1)
    trainer = _local_trainer(slicer, tmp)
    panel = trainer.panel
    _connect_locally(panel)
    _start_job(panel, steps=400)
    job_id = panel.job_id
    pump(lambda: "running" in panel.training.status.text)
    panel.connection.mode.setCurrentIndex(0)
    panel.connection.url.setText("http://127.0.0.1:9")
    panel.connection.connect_button.click()
    assert "training job runs on this workstation" in panel.connection.status.text
    assert trainer.logic.core.mode == "local" and panel.connection.mode_key == "local"
    pump(lambda: "step" in panel.training.status.text)
    assert _job_state(trainer, job_id)["state"] == "running" and panel.job_id == job_id
    panel.training.cancel_button.click()
    pump(lambda: panel.job_id is None)
    assert _job_state(trainer, job_id)["state"] == "cancelled"
    unload_module("MaleniaTrainer")


def test_a_server_job_goes_on_when_connect_makes_another_backend_and_is_followed_again(slicer_app):
    """Connect with a new token makes a new client: the server's job is left running there and followed again."""
    from malenia.server.testdata import ServerProcess, make_model_folder
    from test_trainer_logic import FAKE_TRAINER

    slicer, tmp = slicer_app
    _corrections(slicer, tmp, 1)
    make_model_folder(tmp / "base")
    server = ServerProcess(tmp / "data", env={"MALENIA_FAKE_STEP_SECONDS": "0.1"},
                           settings={"base_model": str(tmp / "base"), "train_command": FAKE_TRAINER}).start()
    try:
        load_module(TRAINER)
        panel = show_module("MaleniaTrainer").panel
        panel.connection.url.setText(server.url)
        panel.connection.token.setText(server.token)
        panel.connection.connect_button.click()
        pump(lambda: "Connected" in panel.connection.status.text)
        _start_job(panel, steps=400)
        job_id = panel.job_id
        panel.connection.token.setText(server.token)  # typed again: a new backend
        panel.connection.connect_button.click()
        assert panel.job_id is None and f"Job {job_id} goes on" in panel.training.status.text
        pump(lambda: panel.job_id == job_id)  # found again on that server, never cancelled
        pump(lambda: "running" in panel.training.status.text)
        panel.training.cancel_button.click()
        pump(lambda: panel.job_id is None)
        assert "cancelled" in panel.training.status.text
        unload_module("MaleniaTrainer")
    finally:
        server.stop()


def test_the_poll_timer_never_raises_when_the_backend_cannot_be_made(slicer_app):
    """An exception in a QTimer slot is printed by PythonQt (PythonQtSignalTarget::call -> handleError) and the timer
    fires again: twice a second, for as long as the settings name no usable backend."""
    slicer, tmp = slicer_app
    load_module(TRAINER)
    trainer = show_module("MaleniaTrainer")
    trainer.logic.core.configure(mode="server", url="")
    trainer.panel.job_id = "j000000000001"
    trainer.panel.poll()
    assert "no server URL set" in trainer.panel.training.status.text
    unload_module("MaleniaTrainer")


def test_a_local_job_is_followed_again_after_the_module_is_reloaded(slicer_app, monkeypatch):
    """Reload (or quitting Slicer) stops the local training and requeues it from its checkpoint; the new panel
    resumed it on Connect without showing it: no progress, no Cancel, and Start offered a second job."""
    monkeypatch.setenv("MALENIA_FAKE_STEP_SECONDS", "0.05")
    slicer, tmp = slicer_app
    _corrections(slicer, tmp, 1)
    trainer = _local_trainer(slicer, tmp)
    _connect_locally(trainer.panel)
    _start_job(trainer.panel, steps=60)
    job_id = trainer.panel.job_id
    pump(lambda: _job_state(trainer, job_id)["progress"].get("step", 0) >= 8)  # past the first checkpoint (6 steps)
    trainer.onReload()
    trainer = slicer.modules.maleniatrainer.widget.self()
    trainer.logic.core.local_settings = {"base_model": str(tmp / "base"), "promotion": "always"}
    panel = trainer.panel
    assert panel.job_id is None
    _connect_locally(panel)
    pump(lambda: panel.job_id == job_id)
    assert not panel.training.start_button.enabled and panel.training.cancel_button.enabled
    pump(lambda: panel.job_id is None, timeout=120)
    assert "succeeded" in panel.training.status.text, panel.training.status.text
    unload_module("MaleniaTrainer")


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
