"""MaleniaSegment defaults its model to the folder MaleniaTrainer stores in the setting Malenia/ModelFolder."""

import sys

from segment_helpers import REPO

for module in ("MaleniaSegment", "MaleniaTrainer"):
    if str(REPO / module) not in sys.path:
        sys.path.insert(0, str(REPO / module))


def test_the_segment_module_reads_the_key_the_trainer_writes():
    from MaleniaSegmentLib.paths import MODEL_FOLDER_SETTING
    from MaleniaTrainerLib.logic import KEY_SEGMENT_MODEL

    assert MODEL_FOLDER_SETTING == KEY_SEGMENT_MODEL == "Malenia/ModelFolder"
    glue = (REPO / "MaleniaSegment" / "MaleniaSegment.py").read_text()
    assert "qt.QSettings().value(MODEL_FOLDER_SETTING" in glue and "configured_model_folder(" in glue


def test_only_a_model_folder_becomes_the_default(tmp_path):
    from MaleniaSegmentLib.paths import configured_model_folder

    assert configured_model_folder(None) is None and configured_model_folder("") is None
    assert configured_model_folder(str(tmp_path / "gone")) is None
    assert configured_model_folder(str(tmp_path)) is None  # a folder, but not a model folder
    (tmp_path / "manifest.json").write_text("{}")
    assert configured_model_folder(str(tmp_path)) == str(tmp_path)
