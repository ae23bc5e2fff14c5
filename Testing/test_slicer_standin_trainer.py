"""MaleniaTrainer loaded as Slicer loads it (Testing/slicer_standin) against real backends (issue 18 targets):
server mode connects with only the packages the user consented to, on a Slicer Python that lacks httpx
(slicer_standin.site); local mode fine-tunes a real tiny model for 10 steps through PythonSlicer to a new
model version (opt-in: `-m slow`; the fast variant with the trainer double is in test_slicer_standin_modules)."""

from __future__ import annotations

import json
import os
import signal
import tomllib
from pathlib import Path

import pytest

from segment_helpers import REPO, tiny_trained_model
from slicer_standin import (install, load_module, module_widget, pump, python_slicer, site, train_locally, unload_module,
                            util)
from test_trainer_logic import FAKE_TRAINER, save_review

HTTPX = [r for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
         if r.startswith("httpx")]


@pytest.fixture()
def slicer_app(tmp_path, monkeypatch):
    """The stand-in; PythonSlicer on PATH logs each call and runs this Python (Slicer's Python launcher)."""
    launcher = python_slicer(tmp_path)
    monkeypatch.setenv("PATH", f"{launcher.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MALENIA_SLICER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for recorded in (util.DIALOGS, util.ANSWERS, util.PIP):
        recorded.clear()
    with install(tmp_path / "settings") as slicer:
        yield slicer, tmp_path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from malenia.server.testdata import ServerProcess, make_model_folder

    root = tmp_path_factory.mktemp("standin_server")
    make_model_folder(root / "base")
    srv = ServerProcess(root / "data", settings={"base_model": str(root / "base"), "train_command": FAKE_TRAINER}).start()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM)


@pytest.mark.parametrize("consent", [False, True], ids=["refused", "consented"])
def test_server_mode_connects_with_only_the_consented_packages(slicer_app, server, consent):
    slicer, _ = slicer_app
    with site.lacking("httpx"):
        with pytest.raises(ModuleNotFoundError, match="httpx"):
            import httpx  # noqa: F401  (Slicer's Python: "No module named 'httpx'")
        load_module(REPO / "MaleniaTrainer" / "MaleniaTrainer.py")
        trainer, _ = module_widget("MaleniaTrainer")
        connection = trainer.panel.connection
        connection.mode.setCurrentIndex(0)  # retraining server
        connection.url.setText(server.url)
        connection.token.setText(server.token)
        util.ANSWERS.append(consent)
        connection.connect_button.click()
        asked = [text for kind, text in util.DIALOGS if kind == "confirm"]
        assert len(asked) == 1 and util.asked_packages(asked[0]) == HTTPX  # httpx only: no torch, no server packages
        if consent:
            assert util.PIP == [" ".join(HTTPX)]  # installed: exactly what was consented to, once
            pump(lambda: "Connected" in connection.status.text)
            assert server.url in connection.status.text and not site.MISSING
        else:
            assert util.PIP == []
            errors = [text for kind, text in util.DIALOGS if kind == "error"]
            assert len(errors) == 1 and "declined" in errors[0] and "\n" not in errors[0]
            assert connection.status.text.startswith("Not connected") and "installed" in connection.status.text
            # declined: nothing of this attempt is stored (no URL, no token), as before the click
            assert not trainer.logic.core.server_url and not trainer.logic.core.has_token
            assert slicer.app.settings().value("MaleniaTrainer/Token") in (None, "")
            with pytest.raises(ModuleNotFoundError):
                import httpx  # noqa: F401,F811  nothing was installed
        unload_module("MaleniaTrainer")


@pytest.mark.slow
def test_local_mode_fine_tunes_a_real_tiny_model_through_pythonslicer(slicer_app, tmp_path_factory):
    """Ten real optimiser steps of `malenia train` (tiny config, --init a tiny model) started by the panel's
    local mode through PythonSlicer, ending in a new model version made MaleniaSegment's model."""
    from malenia.server.testdata import make_case
    from train_helpers import tiny_config

    slicer, tmp = slicer_app
    base = Path(os.environ.get("MALENIA_TEST_TINY_MODEL") or tiny_trained_model(tmp_path_factory))
    config = tmp / "tiny-config.json"
    config.write_text(json.dumps(tiny_config().to_dict()))
    corrections = tmp / "corrections"
    for i in range(3):  # saved by MaleniaSegment's real corrections writer
        save_review(corrections, make_case(tmp / "src" / f"s{i}", seed=20 + i), f"scan{i}")
    slicer.app.settings().setValue("Malenia/CorrectionsFolder", str(corrections))

    load_module(REPO / "MaleniaTrainer" / "MaleniaTrainer.py")
    trainer, _ = module_widget("MaleniaTrainer")
    panel = trainer.panel
    trainer.logic.core.local_settings = {"base_model": str(base), "train_config": str(config), "promotion": "always",
                                         "extra_train_args": ["--threads", "1", "--workers", "0"]}
    assert panel.corrections.table.rowCount == 3
    train_locally(panel, rows=3, steps=10, timeout=900)
    log = (tmp / "pythonslicer.log").read_text()
    assert "succeeded" in panel.training.status.text, (panel.training.status.text, log)
    assert f"-m malenia.cli train --config {config}" in log and "--steps 10" in log and f"--init " in log
    assert "malenia.server.testdata" not in log  # the real trainer, not the double
    pump(lambda: len(panel.versions.names) == 2)
    backend = trainer.logic.core.backend()
    new = backend.versions()["current"]
    assert new != "v1" and new in panel.versions.names
    from malenia.model.folder import read_manifest, verify_model_folder

    folder = backend.service.layout.model_dir(new)
    verify_model_folder(folder)
    manifest = read_manifest(folder)
    assert manifest["config"] == "tiny" and manifest["training"]["steps"] == 10, manifest
    assert manifest["lineage"], "fine-tuned from the base model (--init), not trained from scratch"
    unload_module("MaleniaTrainer")
