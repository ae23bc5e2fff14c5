"""MaleniaTrainer's code (the module file MaleniaTrainer.py only declares the module).

Inside Slicer only: widget (MaleniaTrainerWidget), module_logic (MaleniaTrainerLogic: the consent-and-install
plan per mode), self_test (MaleniaTrainerTest). Testable without Slicer: corrections, backends (server or
local), logic, panels. Imports the Qt shim from MaleniaCommon (shared with MaleniaSegment) rather than a
copy; both module folders are on sys.path inside Slicer, and tests put them there.
"""
