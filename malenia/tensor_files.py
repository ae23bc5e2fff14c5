"""safetensors files whose bytes depend only on their content.

safetensors (0.8) writes a file's `__metadata__` entries in the order of a Rust HashMap, which changes from one
process to the next (safetensors issue #584): the same weights saved twice got two sha256, so a model folder's
manifest could not say whether a re-saved model is the same. `sort_metadata` rewrites the header in place with
the entries sorted; the header keeps its length (same entries, same JSON), so the tensor data do not move.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

_HEADER_SIZE = struct.Struct("<Q")  # the header's length in bytes, before the header (the format's own field)


def sort_metadata(path: str | os.PathLike) -> None:
    """Sorts the `__metadata__` entries of the safetensors file at `path` (a file being written, not yet public)."""
    with open(Path(path), "r+b") as f:
        (size,) = _HEADER_SIZE.unpack(f.read(_HEADER_SIZE.size))
        raw = f.read(size)
        header = json.loads(raw)
        if not header.get("__metadata__"):
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:  # other JSON escapes than the writer's: leave the file as it was written
            return
        f.seek(_HEADER_SIZE.size)
        f.write(text + b" " * (size - len(text)))  # the format pads its header with spaces
