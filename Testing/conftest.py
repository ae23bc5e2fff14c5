import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"shared data folder missing: {SHARED_DATA}"
    return SHARED_DATA


# --- retraining server (issue 8): tests that need the real `malenia train` and `malenia segment` ---
def _missing_commands(*names: str) -> list[str]:
    import importlib.util

    return [n for n in names if importlib.util.find_spec(f"malenia.commands.{n}") is None]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_train: end-to-end test that runs the real `malenia train` and `malenia segment`; "
                   "skipped, with the missing command named, until both exist")


def pytest_collection_modifyitems(config, items):
    missing = _missing_commands("train", "segment")
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs_train: waiting for `malenia {'` and `malenia '.join(missing)}`")
    for item in items:
        if "needs_train" in item.keywords:
            item.add_marker(skip)
