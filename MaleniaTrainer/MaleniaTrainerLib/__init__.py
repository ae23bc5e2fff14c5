"""MaleniaTrainer's code outside the Slicer glue: corrections, backends (server or local), logic, panels.

Imports the Qt shim of the MaleniaSegment module (MaleniaSegmentLib.qt_compat) rather than a copy;
both module folders are on sys.path inside Slicer, and tests put them there.
"""
