"""Static checks of what needs the Slicer application: extension packaging, .ui names, module glue.

The CMake files are configured for real, against a stand-in Slicer package whose macros check
that every listed file exists and record what would be installed.
"""

from __future__ import annotations

import py_compile
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from slicer_segment_support import REPO

MODULE = REPO / "MaleniaSegment"
S4EXT_FIELDS = ("scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                "category", "iconurl", "status", "description", "screenshoturls", "enabled")

STUB_CONFIG = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_FOUND TRUE)
"""
STUB_USE = r"""
set(RECORD ${CMAKE_BINARY_DIR}/record.txt)
file(WRITE ${RECORD} "")
function(_check_files kind)
  foreach(f ${ARGN})
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "${kind} file listed but missing: ${CMAKE_CURRENT_SOURCE_DIR}/${f}")
    endif()
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/${f})
    file(APPEND ${RECORD} "${kind} ${_NAME} ${f} ${rel}\n")
  endforeach()
endfunction()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME;TITLE" "SCRIPTS;RESOURCES" ${ARGN})
  set(_NAME ${MY_NAME})
  _check_files(SCRIPT ${MY_SCRIPTS})
  _check_files(RESOURCE ${MY_RESOURCES})
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  set(_NAME unittest)
  _check_files(UNITTEST ${MY_SCRIPT})
endmacro()
file(APPEND ${CMAKE_BINARY_DIR}/record.txt "")
"""


@pytest.fixture(scope="module")
def cmake_record(tmp_path_factory) -> list[tuple[str, str, str, str]]:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    tmp = tmp_path_factory.mktemp("cmake")
    stub = tmp / "stub"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_CONFIG)
    (stub / "UseSlicer.cmake").write_text(STUB_USE)
    (stub / "Empty.cmake").write_text("")
    build = tmp / "build"
    proc = subprocess.run([cmake, "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={stub}", "-DBUILD_TESTING=ON",
                           "-DCMAKE_C_COMPILER_WORKS=1", "-DCMAKE_CXX_COMPILER_WORKS=1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cache = (build / "CMakeCache.txt").read_text()
    rows = [tuple(line.split(" ", 3)) for line in (build / "record.txt").read_text().splitlines() if line]
    return rows, cache


def test_cmake_lists_every_module_file_and_the_core(cmake_record):
    rows, _ = cmake_record
    for name in ("MaleniaSegment", "MaleniaTrainer"):  # the module file and every file of its Lib
        module_scripts = {r[2] for r in rows if r[0] == "SCRIPT" and r[1] == name}
        folder = REPO / name
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "Resources" not in p.parts}
        assert module_scripts == on_disk, f"not packaged: {on_disk - module_scripts}"
    resources = {r[2] for r in rows if r[0] == "RESOURCE" and r[1] == "MaleniaSegment"}
    assert resources == {"Resources/Icons/MaleniaSegment.png", "Resources/UI/MaleniaSegment.ui"}
    assert ("UNITTEST", "unittest", "MaleniaSegment.py", "MaleniaSegment/MaleniaSegment.py") in rows
    core = {r[2] for r in rows if r[1] == "MaleniaCore"}
    assert {"malenia/__init__.py", "malenia/cli.py", "malenia/infer/outputs.py", "pyproject.toml",
            "constraints/cpu.txt", "Resources/report.schema.json"} <= core
    common = {r[2] for r in rows if r[1] == "MaleniaCommon"}
    assert common == {p.relative_to(REPO).as_posix() for p in (REPO / "MaleniaCommon").glob("*.py")}
    assert any(p.startswith("Resources/terminology/") for p in core)
    assert any(p.startswith("Resources/knowledge/") for p in core)


def _s4ext() -> dict[str, str]:
    fields = {}
    for line in (REPO / "MaleniaExtension.s4ext").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            fields[key] = value.strip()
    return fields


def test_s4ext_has_every_index_field_and_agrees_with_cmake():
    fields = _s4ext()
    assert tuple(fields) == S4EXT_FIELDS
    assert all(fields[k] for k in S4EXT_FIELDS)
    assert fields["scm"] == "git" and fields["enabled"] == "1" and fields["depends"] == "PyTorch"
    cml = (REPO / "CMakeLists.txt").read_text()

    def cmake_var(name):
        return re.search(rf'set\({name} "([^"]*)"\)', cml).group(1)
    assert cmake_var("EXTENSION_HOMEPAGE") == fields["homepage"]
    assert cmake_var("EXTENSION_CATEGORY") == fields["category"]
    assert cmake_var("EXTENSION_DESCRIPTION") == fields["description"]
    assert cmake_var("EXTENSION_ICONURL") == fields["iconurl"]
    assert cmake_var("EXTENSION_SCREENSHOTURLS") == fields["screenshoturls"]
    assert cmake_var("EXTENSION_DEPENDS") == fields["depends"]
    assert fields["iconurl"].endswith("MaleniaSegment/Resources/Icons/MaleniaSegment.png")


def test_icon_is_a_128px_png():
    from PIL import Image

    with Image.open(MODULE / "Resources" / "Icons" / "MaleniaSegment.png") as img:
        assert img.format == "PNG" and img.size == (128, 128)


# The Slicer-facing files: the module files, and the widget, logic and self-test they import from their Lib.
GLUE = {name: [REPO / name / f"{name}.py"] + [REPO / name / f"{name}Lib" / f for f in ("widget.py", "module_logic.py",
                                                                                       "self_test.py")]
        for name in ("MaleniaSegment", "MaleniaTrainer")}
SLICER_ONLY = {f"{p.parent.name}.{p.stem}": p for paths in GLUE.values() for p in paths[1:]}


def test_module_glue_compiles_and_uses_only_widgets_of_the_ui():
    for path in GLUE["MaleniaSegment"] + GLUE["MaleniaTrainer"]:
        py_compile.compile(str(path), doraise=True)
    source = (MODULE / "MaleniaSegmentLib" / "widget.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    names = {w.get("name") for w in ET.parse(MODULE / "Resources" / "UI" / "MaleniaSegment.ui").iter("widget")}
    assert used and used <= names, f"missing in the .ui: {sorted(used - names)}"


@pytest.mark.parametrize("name", sorted(GLUE))
def test_module_file_only_declares_the_module_and_imports_the_rest_from_its_lib(name):
    """As SlicerNNUNet: the module file defines the module class only; Slicer finds <Name>Widget, <Name>Logic
    and <Name>Test by name in its namespace, imported from the Lib."""
    import ast

    tree = ast.parse(GLUE[name][0].read_text())
    assert [n.name for n in tree.body if isinstance(n, ast.ClassDef)] == [name]
    imported = {a.name: n.module for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    for suffix, lib_file in (("Widget", "widget"), ("Logic", "module_logic"), ("Test", "self_test")):
        assert imported.get(name + suffix) == f"{name}Lib.{lib_file}", f"{name}{suffix} not imported from its Lib"


def test_module_glue_imports_exist():
    """Every `from MaleniaSegmentLib... import x` and `from malenia... import x` in the glue resolves (the Lib's
    Slicer-only files are read, not imported: they need the application)."""
    import ast
    import importlib
    import importlib.util
    import sys

    for name in GLUE:  # as inside Slicer: each module's folder on sys.path
        if str(REPO / name) not in sys.path:
            sys.path.append(str(REPO / name))
    count = 0
    for path in GLUE["MaleniaSegment"] + GLUE["MaleniaTrainer"]:
        package = path.parent.name if path.parent.name.endswith("Lib") else None
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            module = f"{package}.{node.module}" if node.level else node.module
            if not module.startswith(("MaleniaSegmentLib", "MaleniaTrainerLib", "MaleniaCommon", "malenia")):
                continue
            count += 1
            slicer_only = SLICER_ONLY.get(module)
            for name in (a.name for a in node.names):
                if slicer_only is not None:
                    defined = {n.name for n in ast.parse(slicer_only.read_text()).body if isinstance(n, ast.ClassDef)}
                    assert name in defined, f"{module} has no {name}"
                    continue
                mod = importlib.import_module(module)
                assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), f"{module} has no {name}"
    assert count >= 12


def test_every_module_folder_is_built_by_the_extension():
    cml = (REPO / "CMakeLists.txt").read_text()
    modules = sorted(p.parent.name for p in REPO.glob("*/CMakeLists.txt"))
    assert "MaleniaSegment" in modules
    assert [m for m in modules if f"add_subdirectory({m})" not in cml] == []


def test_extensions_index_json_beside_the_s4ext_agrees_with_it():
    """The Extensions Index takes a JSON description per extension (as PyTorch.json there)."""
    fields = _s4ext()
    entry = json.loads((REPO / "Malenia.json").read_text())
    # The fields of Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert set(entry) <= {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                          "build_subdirectory", "enabled", "tier"}
    assert entry["scm_url"] == fields["scmurl"] and entry["scm_revision"] == fields["scmrevision"]
    assert entry["scm_type"] == fields["scm"] and entry["enabled"] is (fields["enabled"] == "1")
    assert entry["category"] == fields["category"] and entry["build_dependencies"] == fields["depends"].split()
    assert entry["build_subdirectory"] == fields["build_subdirectory"]
