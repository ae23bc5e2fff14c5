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


def wrong_fields(obj: Any, types: dict[str, type | tuple[type, ...]]) -> list[str]:
    """The keys of `types` that the parsed JSON object `obj` lacks or holds with another type (true and false
    are not numbers here, as Python's bool would be); all of them when `obj` is not an object."""
    if not isinstance(obj, dict):
        return list(types)
    return [k for k, t in types.items() if k not in obj or not isinstance(obj[k], t) or isinstance(obj[k], bool)]
