"""Reading the project's JSON files (datasets, reports, knowledge tables) with one-line errors.

Writing is malenia.atomic.write_json (readers never see a half-written file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from malenia.errors import InputError


def read_json(path: Path, missing: str = "missing file") -> Any:
    """A JSON file, or an InputError naming the file (`missing` words the not-found case)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{missing}: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
