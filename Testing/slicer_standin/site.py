"""Slicer's own Python environment: the packages it lacks until `slicer.util.pip_install` installs them.

Slicer ships without some packages the modules need (httpx for the Trainer's server mode); the suite's
Python has them all. `lacking("httpx")` hides them as Slicer's Python would not have them: the
package metadata that the dependency plan reads (importlib.metadata) reports them missing and
`import httpx` fails with "No module named 'httpx'". The stand-in's `pip_install` then "installs"
what it is given (records the call, un-hides the names): after it, the package imports again.
Everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.metadata
import re
import sys

MISSING: set[str] = set()  # normalised distribution names Slicer's Python lacks now


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _hidden_module(fullname: str) -> bool:
    return _normalise(fullname.split(".")[0]) in MISSING


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if _hidden_module(fullname):
            raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)
        return None


def installed(requirements) -> list[str]:
    """What pip_install(requirements) installs: the names of its requirements (options skipped)."""
    args = requirements.split() if isinstance(requirements, str) else list(requirements)
    names = [re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", a).group(0) for a in args if not a.startswith("-")]
    for name in names:
        MISSING.discard(_normalise(name))
    importlib.invalidate_caches()
    return names


@contextlib.contextmanager
def lacking(*names: str):
    """Slicer's Python without `names` (distribution names that are also the top-level module names)."""
    original = importlib.metadata.Distribution.__dict__["from_name"]

    def from_name(cls, name):
        if _normalise(name) in MISSING:
            raise importlib.metadata.PackageNotFoundError(name)
        return original.__func__(cls, name)

    MISSING.update(_normalise(n) for n in names)
    imported = {k: v for k, v in sys.modules.items() if _hidden_module(k)}
    for k in imported:
        del sys.modules[k]
    blocker = _Blocker()
    sys.meta_path.insert(0, blocker)
    importlib.metadata.Distribution.from_name = classmethod(from_name)
    try:
        yield MISSING
    finally:
        importlib.metadata.Distribution.from_name = original
        sys.meta_path.remove(blocker)
        MISSING.clear()
        sys.modules.update(imported)
