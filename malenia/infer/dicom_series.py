"""The input DICOM series' headers, as the outputs reference them (report.json's UIDs, lesions.dcm).

Kept apart from the DICOM SEG writer (malenia.infer.dicom_seg) so that the results model
(malenia.infer.results) can read a series' UIDs without depending on a writer.
"""

from __future__ import annotations


def read_source_datasets(files: list[str]):
    import pydicom

    from malenia.errors import InputError

    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            raise InputError(f"cannot read DICOM file {f} of the input series: {err}") from None
    return datasets


def load_series(files: list[str]):
    """Headers of the source series, with identifiers that anonymisers blanked filled in where possible.

    SOP Class/Instance UIDs come from the file meta information (the same values by definition);
    a Study, Series or Frame of Reference UID missing from every file is derived deterministically
    from the instance UIDs, with a warning (the SEG then references that derived UID).
    Returns (datasets, warnings).
    """
    from pydicom.uid import generate_uid

    from malenia.errors import InputError

    datasets = read_source_datasets(files)
    warnings: list[str] = []
    for attr, meta in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        filled = 0
        for f, ds in zip(files, datasets):
            if not str(ds.get(attr, "") or ""):
                value = str(getattr(getattr(ds, "file_meta", None), meta, "") or "")
                if not value:
                    raise InputError(f"DICOM file {f} has no {attr}; cannot reference it from a DICOM SEG")
                setattr(ds, attr, value)
                filled += 1
        if filled:
            warnings.append(f"{filled} DICOM files lack {attr}; taken from their file meta information")
    instance_uids = sorted(str(ds.SOPInstanceUID) for ds in datasets)
    if len(set(instance_uids)) != len(instance_uids):
        raise InputError("the DICOM series has repeated SOP Instance UIDs")
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(attr, "") or "") for ds in datasets}
        if values == {""}:
            uid = generate_uid(entropy_srcs=[attr, *instance_uids])
            for ds in datasets:
                setattr(ds, attr, uid)
            warnings.append(f"the DICOM series has no {attr}; derived {uid} from its instance UIDs")
        elif len(values) > 1:
            raise InputError(f"the DICOM files do not share one {attr} ({len(values)} values)")
    _fill_slice_thickness(datasets, warnings)
    return datasets, warnings


def _fill_slice_thickness(datasets, warnings: list[str]) -> None:
    """Slice Thickness is required in a CT image (type 2) and in the SEG's pixel measures, but series written by
    ITK or SimpleITK, and some anonymisers, leave it out: highdicom then failed with an AttributeError after the
    whole run (exit 1, nothing written). The distance between slice centres stands in, with a warning."""
    import numpy as np

    lacking = [ds for ds in datasets if ds.get("SliceThickness", None) in (None, "")]
    if not lacking or len(datasets) < 2:
        return
    try:
        cosines = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
        normal = np.cross(cosines[:3], cosines[3:])
        along = np.sort([float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in datasets])
    except (AttributeError, TypeError, ValueError):  # no geometry to go by: the SEG writer says so itself
        return
    step = float(np.median(np.diff(along)))
    if step <= 0:
        return
    for ds in lacking:
        ds.SliceThickness = round(step, 6)
    warnings.append(f"{len(lacking)} DICOM files lack SliceThickness; the slice spacing, {step:.4g} mm, stands in")
