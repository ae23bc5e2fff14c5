"""MaleniaTrainer logic on slicer-core: corrections written by MaleniaSegment's real writer, a real
server subprocess (trainer double as job command), local mode in-process, and the error messages."""

from __future__ import annotations

import hashlib
import signal
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
for module in ("MaleniaSegment", "MaleniaTrainer"):
    if str(REPO / module) not in sys.path:
        sys.path.insert(0, str(REPO / module))

from MaleniaSegmentLib.corrections import save_correction  # noqa: E402
from MaleniaSegmentLib.review import AspectReview, Choice, DiseaseChoice, LesionReview  # noqa: E402
from MaleniaTrainerLib.logic import (KEY_SEGMENT_MODEL, KEY_TOKEN, MemorySettings, TrainerLogic,  # noqa: E402
                                     describe_error)
from malenia.server import client as client_mod  # noqa: E402
from malenia.server.client import AuthRejected, ServerUnreachable, VersionMismatch  # noqa: E402
from malenia.server.testdata import ServerProcess, make_case, make_model_folder  # noqa: E402
from malenia.server.validation import vocabulary_ids  # noqa: E402

FAKE_TRAINER = [sys.executable, "-m", "malenia.server.testdata", "train"]
FREE_TEXT = "thin peripheral rim calcification"


def save_review(corrections: Path, source_case: Path, scan: str, typed: str | None = None):
    """A correction as MaleniaSegment saves it (its real writer), from a generated case."""
    image = sitk.ReadImage(str(source_case / "image.nii.gz"))
    labels = sitk.ReadImage(str(source_case / "lesions.nii.gz"))
    first: dict[str, str] = {}
    for aspect, desc_id in sorted(vocabulary_ids()):
        first.setdefault(aspect, desc_id)
    n = int(sitk.GetArrayViewFromImage(labels).max())
    lesions = []
    for k in range(1, n + 1):
        aspects = {a: AspectReview(a, Choice(f"text of {i}", i, 0.8)) for a, i in first.items()}
        if typed:
            aspects["specific_features"].choose(typed)
        lesions.append(LesionReview(k, DiseaseChoice("kidney_cyst", "Kidney cyst", 0.9), [], aspects))
    return save_correction(corrections, scan, image, labels, lesions)


@pytest.fixture(scope="module")
def corrections(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    src = [make_case(root / "src" / f"s{i}", seed=10 + i) for i in range(2)]
    folder = root / "corrections"
    save_review(folder, src[0], "scanA")
    save_review(folder, src[0], "scanA", typed=FREE_TEXT)  # scanA v002 supersedes v001
    save_review(folder, src[1], "scanB")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer_server")
    make_model_folder(root / "base")
    srv = ServerProcess(root / "data", env={"MALENIA_FAKE_STEP_SECONDS": "0.01"}, settings={
        "base_model": str(root / "base"), "train_command": FAKE_TRAINER, "promotion": "always"}).start()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM)


def new_scene():
    from slicer import vtkMRMLScene

    return vtkMRMLScene()


def test_corrections_listed_with_latest_versions_selected(corrections):
    logic = TrainerLogic(new_scene(), MemorySettings())
    logic.configure(corrections_dir=str(corrections))
    items = logic.corrections()
    assert [(i.case, i.version, i.latest) for i in items] == [("scanA", 1, False), ("scanA", 2, True), ("scanB", 1, True)]
    assert [i.free_text for i in items] == [0, 1, 0] and all(i.lesions == 1 for i in items)
    assert items[1].label == "scanA/v002"


def test_server_round_trip_from_slicer_logic(server, corrections, tmp_path):
    scene = new_scene()
    settings = MemorySettings()
    logic = TrainerLogic(scene, settings)
    logic.configure(url=server.url, token=server.token, mode="server", corrections_dir=str(corrections),
                    models_dir=str(tmp_path / "models"))
    info = logic.connect()
    assert "Connected to" in logic.connection_message(info) and info["current_version"] == "v1"
    node = logic.parameter_node()
    assert node.GetParameter("ServerURL") == server.url
    assert server.token not in str(scene.GetNodeByID(node.GetID())) and server.token not in repr(logic)
    assert settings.value(KEY_TOKEN) == server.token  # kept in the settings, not in the scene
    latest = [i for i in logic.corrections() if i.latest]
    seen = []
    outcomes = logic.upload(latest, progress=lambda done, total, label: seen.append((done, total)))
    assert [o.error for o in outcomes] == [None, None] and not any(o.duplicate for o in outcomes)
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    again = logic.upload(latest[:1])
    assert again[0].duplicate and again[0].case_id == outcomes[0].case_id
    stored = server.data / "cases" / outcomes[0].case_id
    assert hashlib.sha256((stored / "image.nii.gz").read_bytes()).digest() == \
        hashlib.sha256((latest[0].path / "image.nii.gz").read_bytes()).digest()
    job = logic.start_training(steps=12, case_ids=[o.case_id for o in outcomes], replay_fraction=0.2)
    assert node.GetParameter("JobId") == job.id
    view = logic.wait(job.id, timeout=60, poll=0.2)
    assert view.state == "succeeded" and view.step == view.total == 12 and len(view.losses) == 12
    assert view.val_points and 0 <= view.val_points[-1][1] <= 1 and "val DSC" in view.summary
    versions, current = logic.versions()
    assert current == view.result_version and [v["name"] for v in versions] == ["v1", current]
    folder = logic.download(current)
    logic.use_model(folder)
    assert settings.value(KEY_SEGMENT_MODEL) == str(folder) and node.GetParameter("ModelFolder") == str(folder)
    assert logic.download(current) == folder  # a verified copy is reused
    logic.close()


def test_clear_errors_for_unreachable_rejected_and_mismatch(server, monkeypatch):
    logic = TrainerLogic(new_scene(), MemorySettings())
    logic.configure(url="http://127.0.0.1:9", token="mlt_00000000_" + "z" * 43, mode="server")
    with pytest.raises(ServerUnreachable) as err:
        logic.connect()
    assert describe_error(err.value).startswith("Server unreachable:")
    wrong = "mlt_00000000_" + "q" * 43
    logic.configure(url=server.url, token=wrong)
    with pytest.raises(AuthRejected) as err:
        logic.connect()
    message = describe_error(err.value)
    assert message.startswith("Token rejected:") and wrong not in message
    monkeypatch.setattr(client_mod, "API_VERSION", "9.0")
    logic.configure(token=server.token)
    with pytest.raises(VersionMismatch) as err:
        logic.connect()
    assert describe_error(err.value).startswith("Version mismatch:") and "9.0" in str(err.value)
    logic.close()


def test_local_mode_runs_the_same_job_without_http(corrections, tmp_path):
    make_model_folder(tmp_path / "base")
    logic = TrainerLogic(new_scene(), MemorySettings(), local_settings={
        "base_model": str(tmp_path / "base"), "train_command": FAKE_TRAINER, "promotion": "always"})
    logic.configure(mode="local", local_dir=str(tmp_path / "local"), corrections_dir=str(corrections),
                    models_dir=str(tmp_path / "models"))
    assert logic.connect()["current_version"] == "v1"
    outcomes = logic.upload([i for i in logic.corrections() if i.latest])
    assert all(o.case_id for o in outcomes)
    job = logic.start_training(steps=5)
    view = logic.wait(job.id, timeout=60, poll=0.2)
    assert view.state == "succeeded", logic.backend().log(job.id)
    folder = logic.download(view.result_version)
    logic.use_model(folder)
    assert (folder / "manifest.json").is_file() and logic.segment_model == str(folder)
    logic.close()
