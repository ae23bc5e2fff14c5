"""Helpers of the MaleniaSegment Slicer module (MaleniaSegment.py stays thin).

runner          background `malenia segment` process: progress, cancel of the whole tree
segment_run     one Segment Lesions run: input file, command, job
deps            first-use check and installation of Python packages (with consent)
mrml_io         images <-> MRML volume nodes (Slicer and slicer-core)
session         output folder -> segmentation node and reviewable lesions; masks; reviewed result
review          the review model: disease and 8 aspects per lesion, with corrections
corrections     saving a review as a versioned training case (dataset format)
export          label map, .seg.nrrd, DICOM SEG, report JSON/HTML of the reviewed result
logic           the module logic on any MRML scene
qt_compat       one `qt` for PythonQt and PySide6
lesion_table, attribute_panel, review_panel   the plain-Qt panels
"""
