"""MaleniaTrainer's code outside the Slicer glue: corrections, backends (server or local), logic, panels.

Imports the Qt shim from MaleniaCommon (shared with MaleniaSegment) rather than a copy;
both module folders are on sys.path inside Slicer, and tests put them there.
"""
