"""The MaleniaSegment Slicer module's code (the module file MaleniaSegment.py only declares the module).

Inside Slicer only (PythonQt's `qt`, `slicer`; imported by the module file):
widget          the panel, MaleniaSegmentWidget
module_logic    MaleniaSegmentLogic (MaleniaLogic on slicer.mrmlScene) and the parameter node of a run's inputs
self_test       MaleniaSegmentTest, run by Reload and Test and ctest

Testable without the Slicer application (slicer-core MRML, PySide6):
runner          background `malenia segment` process: progress lines and stopping the tree (the core's protocols)
segment_run     one Segment Lesions run: input file, command, job
mrml_io         images <-> MRML volume nodes (Slicer and slicer-core)
session         output folder -> segmentation node and reviewable lesions; masks; reviewed result
review          the review model: disease and 8 aspects per lesion, with corrections
corrections     saving a review as a versioned training case (malenia.data.corrections)
export          label map, .seg.nrrd, DICOM SEG, report JSON/HTML of the reviewed result
logic           the module logic on any MRML scene
profile_editor  site disease profiles
lesion_table, attribute_panel, review_panel   the plain-Qt panels
Shared with MaleniaTrainer, in MaleniaCommon: paths, settings keys, deps (first-use installation), qt_compat.
"""
