"""What the two Slicer modules (MaleniaSegment, MaleniaTrainer) share; small, Qt-free except qt_compat.

paths       where the `malenia` package is; the Python (PythonSlicer) that runs `malenia` subprocesses
settings    the shared application-settings keys (corrections, results, model folder)
qt_compat   one `qt` for Slicer's PythonQt and PySide6
deps        first-use check and installation of Python packages, with the user's consent

The corrections folder layout is not here: it has one owner, the core's malenia.data.corrections
(CorrectionStore, scan_case_folders), which both modules import.

In a checkout this folder sits beside MaleniaSegment/ and MaleniaTrainer/; each module file puts
its parent folder on sys.path. The built extension installs it beside the modules.
"""
