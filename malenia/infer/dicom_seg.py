"""`lesions.dcm`: a DICOM Segmentation (highdicom) referencing the input series, one segment per lesion.

Frames are matched to the source slices by position, not by file order: each label-map slice k
must lie on a source image's ImagePositionPatient (within POSITION_TOL_MM) with the same rows,
columns and orientation, so the SEG's per-frame positions and source references are the series'.
Segments carry the same SNOMED CT codes as the .seg.nrrd (terminology.LesionTerm) and the
lesion's colour; the algorithm is identified as Malenia (AI) with the model's name and version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia import __version__
from malenia.infer.dicom_series import load_series
from malenia.infer.results import SegmentationResult
from malenia.infer.terminology import SegmentSpec

POSITION_TOL_MM = 0.01
SERIES_NUMBER = 9901  # high, so viewers list the SEG after the source series


class DicomSegError(ValueError):
    """The label map does not line up with the DICOM series it came from."""


def unsupported_reason(files: list[str]) -> str | None:
    """Why no DICOM SEG can be written for this series, or None (checks the first header only)."""
    import pydicom

    if not files:
        return "the DICOM file list is empty"
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return "multi-frame (enhanced) DICOM input is not supported for DICOM SEG output yet"
    return None


def slice_order(labels: sitk.Image, datasets) -> list[int]:
    """For each label-map slice k, the index of the source dataset at that position."""
    size = labels.GetSize()
    direction = np.asarray(labels.GetDirection(), dtype=float).reshape(3, 3)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    order = []
    for k in range(size[2]):
        p = np.asarray(labels.TransformIndexToPhysicalPoint((0, 0, k)))
        dist = np.linalg.norm(positions - p, axis=1)
        j = int(np.argmin(dist))
        if dist[j] > POSITION_TOL_MM:
            raise DicomSegError(f"slice {k} at {p.round(3).tolist()} has no DICOM image at that position")
        ds = datasets[j]
        if (int(ds.Rows), int(ds.Columns)) != (size[1], size[0]):
            raise DicomSegError(f"slice {k}: DICOM image is {ds.Rows}x{ds.Columns}, label map {size[1]}x{size[0]}")
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        if not np.allclose(iop, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-4):
            raise DicomSegError(f"slice {k}: DICOM orientation {iop.tolist()} differs from the label map's")
        order.append(j)
    if len(set(order)) != len(order):
        raise DicomSegError("two label-map slices map to the same DICOM image")
    return order


def write_dicom_seg(path: str | Path, result: SegmentationResult, specs: list[SegmentSpec]) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not specs:
        raise DicomSegError("a DICOM SEG needs at least one segment")
    datasets, _ = load_series(result.scan.dicom_files)
    order = slice_order(result.labels, datasets)
    sources = [datasets[j] for j in order]  # in label-map slice order

    arr = sitk.GetArrayViewFromImage(result.labels)  # [k, rows, columns]
    pixel_array = np.zeros(arr.shape, dtype=np.uint16 if len(specs) > 255 else np.uint8)
    for number, spec in enumerate(specs, start=1):
        pixel_array[arr == spec.label] = number  # segment numbers 1..K in lesion order

    algorithm = hd.AlgorithmIdentificationSequence(
        name="Malenia", family=codes.cid7162.ArtificialIntelligence,
        version=f"{result.model.name} {result.model.version}"[:64],
    )
    descriptions = []
    for number, spec in enumerate(specs, start=1):
        term = spec.term
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=spec.name[:64],
            segmented_property_category=term.category.to_pydicom(),
            segmented_property_type=term.type.to_pydicom(),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"lesion {spec.label}",
            anatomic_regions=[term.anatomic_region.to_pydicom()] if term.anatomic_region else None,
            display_color=hd.color.CIELabColor.from_rgb(*term.color),
        )
        if term.anatomic_region is not None and term.anatomic_region_modifier is not None:
            desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
                hd.sr.CodedConcept(term.anatomic_region_modifier.value, term.anatomic_region_modifier.scheme,
                                   term.anatomic_region_modifier.meaning)
            ]
        descriptions.append(desc)

    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Malenia",
        manufacturer_model_name=result.model.name[:64],
        software_versions=f"malenia {__version__}",
        device_serial_number="none",
        content_description="Lesions found by Malenia (zero-shot lesion segmentation)",
        content_label="LESIONS",
        omit_empty_frames=True,
    )
    seg.SeriesDescription = "Malenia lesions"
    if not all(_latin1(spec.name) for spec in specs):
        # highdicom writes ISO_IR 100 (Latin-1), where a disease named by a site profile in another script (血管瘤)
        # became "???" in the PACS; UTF-8 keeps it as report.json has it
        seg.SpecificCharacterSet = "ISO_IR 192"
    seg.save_as(str(path))


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
