"""Reading and writing CT volumes with their exact geometry, and refusing what is not a usable CT.

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and DICOM series
folders. Everything goes through SimpleITK so that origin, spacing and direction are the ones
3D Slicer shows. `read_ct` returns a float32 image in Hounsfield units; `write_like` writes an
array back onto a reference grid, atomically; `read_label` reads a label map that must sit on
an image's grid.

Checks (each refusal is one `InputError` line, see docs/data.md):
  * path exists and is readable; format recognised; voxel data as long as the header says, for
    NIfTI, NRRD and MetaImage, compressed or not (ITK fills short data with zeros without a word);
    read in 4 MiB chunks (`scan_data`), so the server checks uploads without inflating them;
  * exactly 3 spatial dimensions and one value per voxel (2D, 4D/time series, RGB refused);
  * spacing written in the header, positive, in [MIN_SPACING_MM, MAX_SPACING_MM];
  * size in [MIN_VOXELS_PER_AXIS, MAX_VOXELS_PER_AXIS] per axis and at most MAX_TOTAL_VOXELS;
  * finite values (no NaN/inf);
  * a plausible CT Hounsfield range (skipped with force=True): not an 8-bit image, air or lung
    present (minimum <= -500 HU), something at least as dense as water (maximum >= 0 HU) and
    nothing beyond the 16-bit CT scale. This refuses MR, PET, windowed 8-bit exports and CT
    saved without its rescale intercept.
  * DICOM: modality CT (unless forced), pixel spacing present, slices stacked along their normal
    (no gantry tilt), evenly spaced (no missing or duplicate slices).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import os
import re
import zlib
from dataclasses import dataclass
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
# The lowest voxel of a CT must be at most this: air (-1000 HU) around the body, in the lungs or the bowel,
# or lung tissue (-900..-500), which every CT whose field of view reaches past the skin holds. Fat alone
# (-150..-50) is not enough: MR volumes stored with an offset (e.g. -330..1000) pass a fat rule. Crops
# that hold no air are read with force.
HU_AIR_MAX = -500.0
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
    actual = content_kind(path)
    if actual == DICOM_KIND:  # a slice of a series: the volume is the folder (one slice would be refused as 2D)
        raise InputError(f"{path.name}: one DICOM file; give the folder holding the whole series ({path.parent})")
    if actual is not None and not name.endswith(KIND_SUFFIXES[actual]):
        raise InputError(f"{path.name}: the file is {actual}, which its name does not say; rename it to end in "
                         f"{' or '.join(KIND_SUFFIXES[actual])}")
    if not name.endswith(FILE_SUFFIXES):
        raise InputError(f"{path.name}: unsupported format (expected {', '.join(FILE_SUFFIXES)} or a DICOM folder)")
    check_header_spacing(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"cannot read {path.name}: {_itk_message(err)}") from None
    _check_shape(tuple(reader.GetSize()), reader.GetDimension(), reader.GetNumberOfComponents(), path)
    stats = scan_data(path)  # data as long as the header says (ITK pads short data with zeros)
    if stats is not None and stats.nonfinite:  # ITK's NIfTI reader turns NaN into 0 without a word
        raise InputError(f"{path.name}: {stats.nonfinite} voxel(s) are NaN or infinite")
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read {path.name}: {_itk_message(err)}") from None
    if image.GetDimension() == 4:  # a 4D file with one time point
        image = image[:, :, :, 0]
    return image


# What a file's first bytes say it is, and the names that say the same: readers pick their parser by the name, so a
# gzip-compressed NIfTI named .nrrd or .nii failed as "not a valid NRRD file" or "no NIfTI header".
KIND_SUFFIXES = {"a gzip-compressed NIfTI": (".nii.gz",), "an uncompressed NIfTI": (".nii",),
                 "a NRRD file": (".nrrd", ".nhdr"), "a MetaImage file": (".mha", ".mhd")}
DICOM_KIND = "a DICOM file"


def content_kind(path: Path) -> str | None:
    """The KIND_SUFFIXES key (or DICOM_KIND) the file's first bytes match; None when they match none (the readers
    then judge)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                inner = f.read(4)
            return "a gzip-compressed NIfTI" if _nifti_size(inner) else None
    except (OSError, EOFError, zlib.error):  # unreadable or corrupt: the readers say so in their own words
        return None
    if _nifti_size(head[:4]):
        return "an uncompressed NIfTI"
    if head.startswith(b"NRRD"):
        return "a NRRD file"
    if re.match(rb"\s*(ObjectType|NDims)\s*=", head):
        return "a MetaImage file"
    return DICOM_KIND if head[128:132] == b"DICM" else None


def _nifti_size(first4: bytes) -> bool:
    return len(first4) == 4 and (int.from_bytes(first4, "little") in (348, 540) or int.from_bytes(first4, "big") in (348, 540))


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then 'DICM'."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_dicom_series(folder: Path, series_uid: str | None) -> tuple[sitk.Image, str]:
    reader = sitk.ImageSeriesReader()
    try:
        with _itk_warnings_off():  # GDCM prints a warning to stderr when a folder has no series
            series = list(reader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as err:
        raise InputError(f"cannot scan {folder}: {_itk_message(err)}") from None
    if not series:
        raise InputError(f"{folder}: no DICOM series found in this folder{_no_series_hint(folder)}")
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"{folder}: no DICOM series {series_uid} (found {len(series)})")
        chosen = series_uid
    else:  # the series with most slices is the volume; scouts and dose reports are short
        chosen = _largest_series(reader, folder, series)
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


def _largest_series(reader, folder: Path, series: list[str]) -> str:
    """The series with most slices; two or more with that count (e.g. soft-tissue and bone kernels of
    one scan, or two phases) are not guessed between: the error names them."""
    counts = {s: len(reader.GetGDCMSeriesFileNames(str(folder), s)) for s in series}
    most = max(counts.values())
    tied = [s for s in series if counts[s] == most]
    if len(tied) == 1:
        return tied[0]
    names = "; ".join(f"{s} ({_series_description(reader.GetGDCMSeriesFileNames(str(folder), s)[0])})" for s in tied)
    raise InputError(f"{folder.name}: {len(tied)} DICOM series with {most} slices each, cannot tell which one to "
                     f"read: {names}; put the one you want in a folder of its own")


HINT_FOLDERS = 2000  # folders looked into for DICOM files below an input folder that holds none itself


def _no_series_hint(folder: Path) -> str:
    """What to give instead, when it is plain: the image files the folder holds, or the nearest folders below it
    that hold DICOM files (a PACS or CD export nests series as DICOM/patient/study/series/)."""
    try:
        files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(FILE_SUFFIXES))
    except OSError:  # unreadable: the error stands without a hint
        return ""
    if files:
        return f"; it holds {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}: give the file itself"
    found, seen = [], 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        seen += 1
        if seen > HINT_FOLDERS or len(found) == 3:
            break
        if Path(root) != folder and any(is_dicom_file(Path(root) / n) for n in sorted(names)[:3]):
            found.append(str(Path(root).relative_to(folder)))
            dirs.clear()  # a series folder's own subfolders are not further series
    if found:
        return f"; DICOM files are in {', '.join(found)}{' ...' if len(found) == 3 else ''} below it: give that folder"
    return ""


def other_series(folder: str | Path, chosen_files: list[str]) -> list[str]:
    """'UID (N slices, description)' for each DICOM series in `folder` other than the one `chosen_files` make
    up: read_ct takes the series with most slices, and a second phase or reconstruction beside it should not be
    passed over without a word."""
    reader = sitk.ImageSeriesReader
    with _itk_warnings_off():
        series = list(reader.GetGDCMSeriesIDs(str(folder)))
    if len(series) < 2:
        return []
    chosen, out = {str(Path(f)) for f in chosen_files}, []
    for uid in series:
        files = list(reader.GetGDCMSeriesFileNames(str(folder), uid))
        if files and str(Path(files[0])) not in chosen:
            out.append(f"{uid} ({len(files)} slice{'s' if len(files) != 1 else ''}, {_series_description(files[0])})")
    return out


def _series_description(file: str) -> str:
    r = sitk.ImageFileReader()
    r.SetFileName(file)
    try:
        r.ReadImageInformation()
    except RuntimeError:
        return "unreadable"
    parts = [r.GetMetaData(k).strip() for k in ("0008|103e", "0018|1210") if r.HasMetaDataKey(k)]
    return ", ".join(p for p in parts if p) or "no description"


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
    """Every slice's header: spacing present, one orientation, positions along the normal, evenly spaced."""
    positions, points, modality, normal = [], [], "", None
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
        points.append(pos)
        modality = modality or (r.GetMetaData("0008|0060").strip() if "0008|0060" in tags else "")
    try:
        pixel = min(float(v) for v in r.GetMetaData("0028|0030").split("\\"))
    except ValueError:
        raise InputError(f"{folder.name}: unreadable DICOM pixel spacing {r.GetMetaData('0028|0030')!r}") from None
    _check_not_sheared(folder, np.array(points), np.array(positions), normal, pixel)
    gaps = np.diff(np.sort(positions))
    if np.any(gaps < 1e-3):
        raise InputError(f"{folder.name}: DICOM series has duplicate slice positions")
    if gaps.max() - gaps.min() > SLICE_GAP_TOLERANCE * gaps.mean() + 1e-3:
        raise InputError(
            f"{folder.name}: DICOM slices are unevenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm; missing slices?)"
        )
    return modality


def _check_not_sheared(folder: Path, points: np.ndarray, along: np.ndarray, normal: np.ndarray, pixel: float) -> None:
    """Slices must stack along their own normal. A tilted gantry moves each slice sideways as well; ITK reads
    such a series as an upright box (slice spacing = the distance between positions, no shear), so every voxel
    past the first slice would sit in the wrong place (20 degrees: 1.1 mm per 3 mm slice, 42 mm over 40 slices)
    and the DICOM SEG could not be written. A drift of a quarter pixel over the series is header rounding."""
    normal = normal / np.linalg.norm(normal)
    order = np.argsort(along)
    offsets = points[order] - points[order[0]]
    sideways = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(sideways, axis=1).max())  # callers pass at least MIN_VOXELS_PER_AXIS slices
    if drift > 0.25 * pixel:
        depth = float(along.max() - along.min())
        tilt = float(np.degrees(np.arctan2(drift, depth))) if depth > 0 else 90.0
        raise InputError(f"{folder.name}: DICOM slices are not stacked along their normal (gantry tilt or shear of "
                         f"{tilt:.1f} degrees, {drift:.1f} mm sideways over the series); resample it to an upright "
                         f"volume first (e.g. 3D Slicer's DICOM acquisition geometry regularization)")


def check_header_spacing(path: Path) -> None:
    """ITK silently replaces missing or zero spacing by 1 mm; look at the header first."""
    name = path.name.lower()
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


def _meta_header(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16384)
    end = head.find(b"ElementDataFile")
    return head[: end if end >= 0 else len(head)].decode("latin-1")


# ---------------------------------------------------------------------------------------------
# voxel data: as long as the header says, read once in bounded chunks

CHUNK_BYTES = 1 << 22  # 4 MiB of voxel data at a time, whatever the image size
_MET_TYPES = {"MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4",
              "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8",
              "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}


@dataclass
class DataLayout:
    """Where a file's voxel values are and what they are, from its header alone."""

    file: Path  # the file holding the data (a detached NRRD/MetaImage header names another one)
    offset: int  # bytes before the data (in the decompressed stream for .nii.gz, in the file otherwise)
    compression: str  # none | gzip-file (whole file, .nii.gz) | gzip | zlib | bzip2 (from `offset` on)
    dtype: np.dtype
    count: int  # values (voxels x components)
    scale: tuple[float, float] | None = None  # NIfTI scl_slope, scl_inter when they change values

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


@dataclass
class DataStats:
    count: int
    minimum: float  # over finite values (0 when there are none)
    maximum: float
    nonfinite: int
    itemsize: int = 0  # bytes per stored value (1: an 8-bit image)


def data_layout(path: str | Path) -> DataLayout | None:
    """The data layout of a NIfTI, NRRD or MetaImage file; None for encodings not checked (text NRRD...)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _nifti_layout(path)
    if name.endswith((".nrrd", ".nhdr")):
        return _nrrd_layout(path)
    if name.endswith((".mha", ".mhd")):
        return _meta_layout(path)
    return None


def scan_data(path: str | Path, what: str | None = None, consume=None, max_bytes: int | None = None) -> DataStats | None:
    """Reads the voxel data once, 4 MiB at a time (a decompression bomb never expands in memory).

    InputError when the data is shorter than the header says (ITK fills the rest with zeros without a
    word), when a compressed stream is corrupt, or when the header promises more than `max_bytes`
    (checked before anything is decompressed). `consume(values)` sees every chunk of values in file
    order. Returns min/max/NaN counts, or None when the file's encoding is not one checked here.
    """
    path = Path(path)
    what = what or path.name
    layout = data_layout(path)
    if layout is None:
        return None
    if max_bytes is not None and layout.nbytes > max_bytes:
        raise InputError(f"{what}: the header promises {layout.nbytes} bytes of voxel data, over the limit of {max_bytes}")
    numeric = layout.dtype.fields is None and layout.dtype.kind in "iuf"
    stats = DataStats(0, np.inf, -np.inf, 0, layout.dtype.itemsize)
    rest = b""
    try:
        for chunk in _data_chunks(layout):
            chunk = rest + chunk
            usable = len(chunk) - len(chunk) % layout.dtype.itemsize
            rest = chunk[usable:]
            values = np.frombuffer(chunk[:usable], dtype=layout.dtype)
            stats.count += values.size
            if numeric and values.size:
                _fold(stats, values if layout.scale is None else values * layout.scale[0] + layout.scale[1], consume)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise InputError(f"cannot read {what}: corrupt or truncated file ({str(err).splitlines()[0][:120]})") from None
    if stats.count < layout.count:
        raise InputError(f"cannot read {what}: truncated file: the voxel data is shorter than the header says "
                         f"({stats.count * layout.dtype.itemsize} of {layout.nbytes} bytes)")
    if stats.minimum > stats.maximum:
        stats.minimum = stats.maximum = 0.0
    return stats


def _fold(stats: DataStats, values: np.ndarray, consume) -> None:
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        bad = values.size - int(np.count_nonzero(finite))
        if bad:
            stats.nonfinite += bad
            values = values[finite]
    if values.size:
        stats.minimum = min(stats.minimum, float(values.min()))
        stats.maximum = max(stats.maximum, float(values.max()))
    if consume is not None:
        consume(values)


def _data_chunks(layout: DataLayout):
    """Bytes of voxel data, at most layout.nbytes in all (trailing data is never expanded)."""
    left = layout.nbytes
    with open(layout.file, "rb") as raw:
        if layout.compression != "gzip-file":
            raw.seek(layout.offset)
        stream = {"gzip-file": gzip.GzipFile, "gzip": gzip.GzipFile, "bzip2": lambda fileobj: bz2.BZ2File(fileobj),
                  "zlib": _ZlibReader}.get(layout.compression, lambda fileobj: fileobj)(fileobj=raw)
        if layout.compression == "gzip-file":
            _skip(stream, layout.offset)
        while left > 0:
            chunk = stream.read(min(CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


class _ZlibReader:
    """read(n) over a zlib stream (MetaImage CompressedData), never holding more than n decompressed bytes."""

    def __init__(self, fileobj):
        self.raw, self.d, self.tail = fileobj, zlib.decompressobj(), b""

    def read(self, n: int) -> bytes:
        while True:
            if not self.tail and not self.d.eof:
                self.tail = self.raw.read(1 << 20)
                if not self.tail:
                    raise EOFError("compressed stream ended early")
            out = self.d.decompress(self.tail, n)
            self.tail = self.d.unconsumed_tail
            if out or self.d.eof:
                return out


def _skip(stream, n: int) -> None:
    while n > 0:
        got = stream.read(min(n, CHUNK_BYTES))
        if not got:
            return
        n -= len(got)


def _nifti_layout(path: Path) -> DataLayout:
    header = _nifti_header(path)
    slope, inter = header.get_slope_inter()
    scale = None
    if slope is not None and np.isfinite(slope) and (slope != 1 or (inter or 0) != 0):
        scale = (float(slope), float(inter or 0.0))
    count = int(np.prod(header.get_data_shape(), dtype=np.int64))
    compression = "gzip-file" if path.name.lower().endswith(".gz") else "none"
    offset = float(header["vox_offset"])
    if not (np.isfinite(offset) and 0 <= offset < 2**40):
        raise InputError(f"{path.name}: NIfTI header has an invalid data offset ({offset})")
    return DataLayout(path, int(offset), compression, header.get_data_dtype(), count, scale)


def _nrrd_layout(path: Path) -> DataLayout | None:
    import nrrd
    from nrrd.reader import _determine_datatype

    try:
        with open(path, "rb") as f:
            header = nrrd.read_header(f)
            offset = f.tell()
        dtype = _determine_datatype(header)
    except Exception as err:  # pynrrd raises its own error types and ValueError alike
        raise InputError(f"cannot read {path.name}: not a valid NRRD file ({str(err).splitlines()[0][:120]})") from None
    encoding = {"raw": "none", "gz": "gzip", "gzip": "gzip", "bz2": "bzip2", "bzip2": "bzip2"}.get(header.get("encoding", ""))
    if encoding is None or int(header.get("line skip", 0) or 0):
        return None  # text encodings and line skips: ITK's own reader checks them
    if header.get("data file"):
        data_file = str(header["data file"])
        if " " in data_file or "%" in data_file or data_file.upper().startswith("LIST"):
            return None  # a file list or pattern
        path, offset = (path.parent / data_file), 0
    skip = int(header.get("byte skip", 0) or 0)
    if skip < 0:
        return None  # data at the end of the file
    count = int(np.prod([int(s) for s in header["sizes"]], dtype=np.int64))
    return DataLayout(path, offset + (skip if encoding == "none" else 0), encoding, dtype, count)


def _meta_layout(path: Path) -> DataLayout | None:
    with open(path, "rb") as f:
        head = f.read(65536)
    end = head.find(b"ElementDataFile")
    if end < 0:
        raise InputError(f"cannot read {path.name}: the MetaImage header has no ElementDataFile")
    line_end = head.find(b"\n", end)
    fields = {}
    for line in head[: line_end if line_end >= 0 else len(head)].decode("latin-1").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        count = int(np.prod([int(v) for v in fields["DimSize"].split()], dtype=np.int64))
        count *= int(fields.get("ElementNumberOfChannels", "1"))
        dtype = np.dtype(_MET_TYPES[fields["ElementType"]])
    except (KeyError, ValueError):
        raise InputError(f"cannot read {path.name}: MetaImage header without a usable DimSize/ElementType") from None
    msb = (fields.get("BinaryDataByteOrderMSB") or fields.get("ElementByteOrderMSB") or "False").lower() == "true"
    dtype = dtype.newbyteorder(">" if msb else "<")
    compression = "zlib" if fields.get("CompressedData", "False").lower() == "true" else "none"
    data_file = fields["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        return DataLayout(path, line_end + 1, compression, dtype, count)
    if " " in data_file or "%" in data_file or data_file.upper().startswith("LIST"):
        return None
    skip = int(fields.get("HeaderSize", "0") or 0)
    return None if skip < 0 else DataLayout(path.parent / data_file, skip, compression, dtype, count)

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
    if force:
        return
    check_hu_range(float(values.min()), float(values.max()), values.dtype.itemsize, path.name)


def check_hu_range(lo: float, hi: float, itemsize: int, what: str,
                   hint: str = "use force (--force) to read it anyway") -> None:
    """Refuses value ranges that are not CT in Hounsfield units (the rule in the module docstring)."""
    if itemsize == 1:
        raise InputError(f"{what}: 8-bit image (values {lo:g}..{hi:g}), not CT Hounsfield units (a windowed export?); {hint}")
    if lo > HU_AIR_MAX or hi < HU_WATER_MIN or hi > HU_MAX:
        raise InputError(
            f"{what}: values {lo:g}..{hi:g} are not a CT Hounsfield range (a CT holds air or lung at -1000..-500 HU; "
            f"an MR, PET or windowed image, or a CT without its rescale intercept?); {hint}"
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
