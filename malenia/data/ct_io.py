"""Reading and writing CT volumes with their exact geometry, and refusing what is not a usable CT.

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and DICOM series
folders. Everything goes through SimpleITK so that origin, spacing and direction are the ones
3D Slicer shows. `read_ct` returns a float32 image in Hounsfield units; `write_like` writes an
array back onto a reference grid, atomically; `read_label` reads a label map that must sit on
an image's grid.

Checks (each refusal is one `InputError` line, see docs/data.md):
  * path exists and is readable; format recognised; file complete (truncated NIfTI is caught:
    ITK reads it silently as zeros);
  * exactly 3 spatial dimensions and one value per voxel (2D, 4D/time series, RGB refused);
  * spacing written in the header, positive, in [MIN_SPACING_MM, MAX_SPACING_MM];
  * size in [MIN_VOXELS_PER_AXIS, MAX_VOXELS_PER_AXIS] per axis and at most MAX_TOTAL_VOXELS;
  * finite values (no NaN/inf);
  * a plausible CT Hounsfield range (skipped with force=True): not an 8-bit image, air or fat
    present (minimum <= -200 HU), something at least as dense as water (maximum >= 0 HU) and
    nothing beyond the 16-bit CT scale. This refuses MR, PET, windowed 8-bit exports and CT
    saved without its rescale intercept.
  * DICOM: modality CT (unless forced), pixel spacing present, slices evenly spaced (no missing
    or duplicate slices).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.atomic import atomic_path
from malenia.data.geometry import Grid
from malenia.errors import InputError

MIN_VOXELS_PER_AXIS = 8
MAX_VOXELS_PER_AXIS = 2048
MAX_TOTAL_VOXELS = 1 << 30  # 4 GiB as float32
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 30.0
HU_AIR_OR_FAT_MAX = -200.0  # the lowest voxel of a CT must be at most this (air, lung or fat)
HU_WATER_MIN = 0.0  # the highest voxel must be at least this (soft tissue, bone)
HU_MAX = 40000.0  # beyond the extended CT scale
SLICE_GAP_TOLERANCE = 0.01  # relative spread of DICOM slice gaps still called even

FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_ct(path: str | Path, force: bool = False, series_uid: str | None = None) -> sitk.Image:
    """Reads a CT volume as a float32 SimpleITK image in HU, geometry untouched.

    `path` is an image file or a folder holding a DICOM series (the series with most slices is
    taken unless `series_uid` names one). `force` skips the Hounsfield-range and DICOM modality
    checks only; the structural checks always apply.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if path.is_dir():
        image, modality = _read_dicom_series(path, series_uid)
        if modality and modality.upper() != "CT" and not force:
            raise InputError(f"{path.name}: DICOM modality is {modality}, not CT (use force to read it anyway)")
    else:
        image = _read_file(path)
    _check_geometry(image, path)
    _check_values(image, path, force)
    return image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)


def read_label(path: str | Path, reference: sitk.Image) -> sitk.Image:
    """Reads an integer label map that must lie on `reference`'s grid.

    Size must be equal; spacing, origin and direction equal within header rounding (then the
    reference's exact geometry is copied). Returns an unsigned integer image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    label = _read_dicom_series(path, None)[0] if path.is_dir() else _read_file(path)
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path.name}: label map must be a 3D scalar image")
    mismatch = grid_mismatch(label, reference)
    if mismatch:
        raise InputError(f"{path.name}: label map does not match the image grid ({mismatch})")
    label.CopyInformation(reference)
    values = sitk.GetArrayViewFromImage(label)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise InputError(f"{path.name}: label map has non-integer values")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo < 0:
        raise InputError(f"{path.name}: label map has negative values (min {lo:g})")
    pixel = sitk.sitkUInt8 if hi < 256 else sitk.sitkUInt16 if hi < 65536 else sitk.sitkUInt32
    return sitk.Cast(label, pixel)


def write_like(array_zyx: np.ndarray, reference: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Writes `array_zyx` (numpy order z, y, x) with `reference`'s exact geometry, atomically.

    bool becomes uint8, wide integers the smallest type holding their range, float64 float32.
    The format follows the file name (.nii.gz, .nrrd, .mha, ...).
    """
    array = np.asarray(array_zyx)
    expected = tuple(reversed(reference.GetSize()))
    if array.shape != expected:
        raise InputError(f"array shape {array.shape} does not match the reference grid {expected} (z, y, x)")
    image = sitk.GetImageFromArray(_compact_dtype(array))
    image.CopyInformation(reference)
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as err:
            raise InputError(f"cannot write {path}: {_itk_message(err)}") from None
    return path


def grid_mismatch(image: sitk.Image, reference: sitk.Image) -> str:
    """'' when both images share a voxel grid (within header rounding), else what differs."""
    return Grid.of(reference).mismatch(Grid.of(image))


# ---------------------------------------------------------------------------------------------
# reading


def _read_file(path: Path) -> sitk.Image:
    name = path.name.lower()
    if not name.endswith(FILE_SUFFIXES):
        raise InputError(f"{path.name}: unsupported format (expected {', '.join(FILE_SUFFIXES)} or a DICOM folder)")
    _check_header_spacing(path, name)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"cannot read {path.name}: {_itk_message(err)}") from None
    _check_shape(tuple(reader.GetSize()), reader.GetDimension(), reader.GetNumberOfComponents(), path)
    if name.endswith(".nii.gz"):
        check_gzip_complete(path)
    elif name.endswith(".nii"):
        _check_nifti_complete(path)
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti_finite(path)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read {path.name}: {_itk_message(err)}") from None
    if image.GetDimension() == 4:  # a 4D file with one time point
        image = image[:, :, :, 0]
    return image


def _read_dicom_series(folder: Path, series_uid: str | None) -> tuple[sitk.Image, str]:
    reader = sitk.ImageSeriesReader()
    try:
        with _itk_warnings_off():  # GDCM prints a warning to stderr when a folder has no series
            series = list(reader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as err:
        raise InputError(f"cannot scan {folder}: {_itk_message(err)}") from None
    if not series:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"{folder}: no DICOM series {series_uid} (found {len(series)})")
        chosen = series_uid
    else:  # the series with most slices is the volume; scouts and dose reports are short
        chosen = max(series, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(folder), s)))
    files = list(reader.GetGDCMSeriesFileNames(str(folder), chosen))  # sorted by slice position
    if len(files) == 1:  # an enhanced (multi-frame) DICOM holds the whole volume in one file
        return _read_multiframe(folder, files[0])
    if len(files) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"{folder.name}: DICOM series has {len(files)} slice(s); a CT volume needs at least {MIN_VOXELS_PER_AXIS}")
    modality = _check_dicom_slices(folder, files)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read DICOM series in {folder.name}: {_itk_message(err)}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{folder.name}: DICOM series is not greyscale ({image.GetNumberOfComponentsPerPixel()} values per voxel)")
    return image, modality


def _read_multiframe(folder: Path, file: str) -> tuple[sitk.Image, str]:
    r = sitk.ImageFileReader()
    r.SetFileName(file)
    try:
        r.ReadImageInformation()
        _check_shape(tuple(r.GetSize()), r.GetDimension(), r.GetNumberOfComponents(), Path(file))
        image = r.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read DICOM file in {folder.name}: {_itk_message(err)}") from None
    modality = image.GetMetaData("0008|0060").strip() if image.HasMetaDataKey("0008|0060") else ""
    return image, modality


def _check_dicom_slices(folder: Path, files: list[str]) -> str:
    """Every slice's header: spacing present, one orientation, evenly spaced positions."""
    positions, modality, normal = [], "", None
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        r.LoadPrivateTagsOff()
        try:
            r.ReadImageInformation()
        except RuntimeError as err:
            raise InputError(f"{folder.name}: cannot read DICOM file {Path(f).name}: {_itk_message(err)}") from None
        tags = set(r.GetMetaDataKeys())
        if "0028|0030" not in tags:
            raise InputError(f"{folder.name}: DICOM slice {Path(f).name} has no pixel spacing (0028,0030)")
        if "0020|0032" not in tags or "0020|0037" not in tags:
            raise InputError(f"{folder.name}: DICOM slice {Path(f).name} has no image position/orientation")
        pos = np.array([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
        cos = np.array([float(v) for v in r.GetMetaData("0020|0037").split("\\")])
        n = np.cross(cos[:3], cos[3:])
        if normal is None:
            normal = n
        elif not np.allclose(n, normal, atol=1e-3):
            raise InputError(f"{folder.name}: DICOM slices have different orientations")
        positions.append(float(pos @ normal))
        modality = modality or (r.GetMetaData("0008|0060").strip() if "0008|0060" in tags else "")
    gaps = np.diff(np.sort(positions))
    if np.any(gaps < 1e-3):
        raise InputError(f"{folder.name}: DICOM series has duplicate slice positions")
    if gaps.max() - gaps.min() > SLICE_GAP_TOLERANCE * gaps.mean() + 1e-3:
        raise InputError(
            f"{folder.name}: DICOM slices are unevenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm; missing slices?)"
        )
    return modality


def _check_header_spacing(path: Path, name: str) -> None:
    """ITK silently replaces missing or zero spacing by 1 mm; look at the header first."""
    if name.endswith((".nii", ".nii.gz")):
        header = _nifti_header(path)
        pixdim = [float(v) for v in header["pixdim"][1:4]]
        if any(not np.isfinite(v) or v <= 0 for v in pixdim):
            raise InputError(f"{path.name}: voxel spacing in the header is zero, negative or missing ({_fmt(pixdim)})")
    elif name.endswith((".nrrd", ".nhdr")):
        import nrrd

        try:
            header = nrrd.read_header(str(path))
        except Exception as err:
            raise InputError(f"cannot read {path.name}: not a valid NRRD file ({str(err).splitlines()[0][:120]})") from None
        if "space directions" in header:
            dirs = [np.asarray(d, dtype=float) for d in header["space directions"] if d is not None]
            norms = [float(np.linalg.norm(d)) if np.all(np.isfinite(d)) else 0.0 for d in dirs]
            if len(norms) >= 3 and min(norms[-3:]) <= 0:
                raise InputError(f"{path.name}: zero voxel spacing in the NRRD header")
        elif "spacings" in header:
            sp = [float(v) for v in header["spacings"]]
            if any(not np.isfinite(v) or v <= 0 for v in sp):
                raise InputError(f"{path.name}: voxel spacing in the header is zero, negative or missing ({_fmt(sp)})")
        else:
            raise InputError(f"{path.name}: the NRRD header gives no voxel spacing (no 'space directions' or 'spacings')")
    elif name.endswith((".mha", ".mhd")):
        text = _meta_header(path)
        match = re.search(r"^\s*ElementSpacing\s*=\s*(.+)$", text, re.MULTILINE) or re.search(
            r"^\s*ElementSize\s*=\s*(.+)$", text, re.MULTILINE
        )
        if not match:
            raise InputError(f"{path.name}: the MetaImage header gives no voxel spacing (ElementSpacing)")
        try:
            sp = [float(v) for v in match.group(1).split()]
        except ValueError:
            raise InputError(f"{path.name}: unreadable ElementSpacing {match.group(1)!r}") from None
        if any(not np.isfinite(v) or v <= 0 for v in sp):
            raise InputError(f"{path.name}: voxel spacing in the header is zero, negative or missing ({_fmt(sp)})")


def _nifti_header(path: Path):
    """The header as written (nibabel's loader would quietly repair zero pixdims)."""
    import nibabel as nib

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
        for order, code in (("little", "<"), ("big", ">")):
            size = int.from_bytes(raw[:4], order) if len(raw) >= 4 else 0
            if size == 348 and len(raw) >= 348:
                return nib.Nifti1Header(binaryblock=raw[:348], endianness=code, check=False)
            if size == 540 and len(raw) >= 540:
                return nib.Nifti2Header(binaryblock=raw[:540], endianness=code, check=False)
        raise ValueError("no NIfTI header")
    except Exception as err:  # gzip, struct and nibabel errors alike mean "not a NIfTI file"
        raise InputError(f"cannot read {path.name}: not a valid NIfTI file ({str(err).splitlines()[0][:120]})") from None


def _check_nifti_finite(path: Path) -> None:
    """ITK's NIfTI reader turns NaN into 0 without a word; look at float data with nibabel."""
    import nibabel as nib

    if _nifti_header(path).get_data_dtype().kind != "f":
        return
    data = np.asanyarray(nib.load(str(path)).dataobj)
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InputError(f"{path.name}: {bad} voxel(s) are NaN or infinite")


def _meta_header(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16384)
    end = head.find(b"ElementDataFile")
    return head[: end if end >= 0 else len(head)].decode("latin-1")


def check_gzip_complete(path: Path, what: str | None = None) -> None:
    """ITK's NIfTI reader fills a truncated .nii.gz with zeros without a word; decompress to check."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"cannot read {what or Path(path).name}: corrupt or truncated file ({err})") from None


def _check_nifti_complete(path: Path) -> None:
    header = _nifti_header(path)
    needed = int(header["vox_offset"]) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    if path.stat().st_size < needed:
        raise InputError(f"cannot read {path.name}: truncated file ({path.stat().st_size} of {needed} bytes)")


# ---------------------------------------------------------------------------------------------
# checks


def _check_shape(size: tuple[int, ...], dim: int, components: int, path: Path) -> None:
    if dim == 4 and size[3] == 1:
        size, dim = size[:3], 3
    if dim != 3:
        what = "2D" if dim == 2 else f"{dim}D" + (f" ({size[3]} volumes, e.g. a time series)" if dim == 4 else "")
        raise InputError(f"{path.name}: image is {what}; a CT volume must be 3D")
    if components != 1:
        raise InputError(f"{path.name}: {components} values per voxel (colour or vector image); a CT volume has one")
    if min(size) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"{path.name}: size {size} has fewer than {MIN_VOXELS_PER_AXIS} voxels along an axis; not a CT volume")
    if max(size) > MAX_VOXELS_PER_AXIS or int(np.prod(size, dtype=np.int64)) > MAX_TOTAL_VOXELS:
        raise InputError(
            f"{path.name}: size {size} is beyond the supported {MAX_VOXELS_PER_AXIS} voxels per axis / {MAX_TOTAL_VOXELS} in total"
        )


def _check_geometry(image: sitk.Image, path: Path) -> None:
    _check_shape(tuple(image.GetSize()), image.GetDimension(), image.GetNumberOfComponentsPerPixel(), path)
    spacing = np.array(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or spacing.min() < MIN_SPACING_MM or spacing.max() > MAX_SPACING_MM:
        raise InputError(
            f"{path.name}: voxel spacing {_fmt(spacing)} mm is outside the plausible {MIN_SPACING_MM}-{MAX_SPACING_MM} mm"
        )
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(image.GetOrigin())) or not np.allclose(direction @ direction.T, np.eye(3), atol=1e-3):
        raise InputError(f"{path.name}: origin or direction in the header is invalid")


def _check_values(image: sitk.Image, path: Path, force: bool) -> None:
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            raise InputError(f"{path.name}: {int((~finite).sum())} voxel(s) are NaN or infinite")
    eight_bit = values.dtype.itemsize == 1
    if force:
        return
    lo, hi = float(values.min()), float(values.max())
    hint = "use force (--force) to read it anyway"
    if eight_bit:
        raise InputError(f"{path.name}: 8-bit image (values {lo:g}..{hi:g}), not CT Hounsfield units (a windowed export?); {hint}")
    if lo > HU_AIR_OR_FAT_MAX or hi < HU_WATER_MIN or hi > HU_MAX:
        raise InputError(
            f"{path.name}: values {lo:g}..{hi:g} are not a CT Hounsfield range (an MR, PET or windowed image, or a CT without "
            f"its rescale intercept?); {hint}"
        )


# ---------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _itk_warnings_off():
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _compact_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize > 2:
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for t in (np.uint8, np.int16, np.uint16, np.int32):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                return array.astype(t)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _itk_message(err: Exception) -> str:
    """The useful line of an ITK exception (they span several lines and name source files)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if "exception thrown" in low or low.startswith("/") or ".cxx:" in low or ".cpp:" in low:
            continue
        ln = re.sub(r"^(sitk::ERROR|ITK ERROR|itk::ERROR)\S*\s*", "", ln)
        ln = re.sub(r"^\w+ImageIO\(0x[0-9a-f]+\):\s*", "", ln)
        if ln:
            return ln[:200]
    return lines[-1][:200] if lines else "unknown error"


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
