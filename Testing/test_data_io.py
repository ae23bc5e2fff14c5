"""CT input/output: exact geometry round trips and one-line refusals of bad input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from malenia.data.ct_io import read_ct, read_label, write_like
from malenia.errors import InputError

TOTALSEG = "ct/totalseg-example"


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4) and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6))


@pytest.fixture(scope="module")
def ct(shared_data: Path) -> sitk.Image:
    return read_ct(shared_data / TOTALSEG / "example_ct_sm.nii.gz")


def refused(path, match: str, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_ct(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and match in message, message
    return message


# ---------------------------------------------------------------------------------------------
# reading real data


def test_reads_shared_files_with_their_geometry(shared_data: Path):
    for rel in (f"{TOTALSEG}/example_ct_sm.nii.gz", "ct/pyradiomics-lung1/lung1_image.nrrd"):
        path = shared_data / rel
        image, raw = read_ct(path), sitk.ReadImage(str(path))
        assert image.GetPixelID() == sitk.sitkFloat32
        assert image.GetOrigin() == raw.GetOrigin() and image.GetSpacing() == raw.GetSpacing()
        assert image.GetDirection() == raw.GetDirection()
        assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(raw).astype(np.float32))


def test_dicom_series_sorted_by_position(shared_data: Path):
    folder = shared_data / TOTALSEG / "example_ct_dicom"
    image = read_ct(folder)
    assert image.GetSize() == (512, 512, 20)
    assert image.GetSpacing()[2] == pytest.approx(2.0)
    # slice k lies at the k-th smallest ImagePositionPatient along the slice normal
    zs = []
    for f in folder.iterdir():
        r = sitk.ImageFileReader()
        r.SetFileName(str(f))
        r.ReadImageInformation()
        zs.append(float(r.GetMetaData("0020|0032").split("\\")[2]))
    assert image.GetOrigin()[2] == pytest.approx(min(zs))
    assert image.TransformIndexToPhysicalPoint((0, 0, 19))[2] == pytest.approx(max(zs))
    assert float(sitk.GetArrayViewFromImage(image).min()) <= -1000  # rescale applied: HU


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_write_like_round_trip(ct: sitk.Image, tmp_path: Path, suffix: str):
    array = sitk.GetArrayFromImage(ct)
    labels = (array > 100).astype(np.int64) * 3  # int64 is stored compactly
    out = write_like(labels, ct, tmp_path / f"mask{suffix}")
    back = sitk.ReadImage(str(out))
    assert back.GetPixelID() == sitk.sitkUInt8
    assert same_geometry(back, ct)
    assert np.array_equal(sitk.GetArrayFromImage(back), labels)
    assert [p.name for p in tmp_path.iterdir()] == [f"mask{suffix}"]  # no temporary left behind
    again = read_ct(write_like(array, ct, tmp_path / f"ct{suffix}"))
    assert same_geometry(again, ct) and np.array_equal(sitk.GetArrayFromImage(again), array)


def test_dicom_to_nifti_keeps_geometry(shared_data: Path, tmp_path: Path):
    image = read_ct(shared_data / TOTALSEG / "example_ct_dicom")
    array = sitk.GetArrayFromImage(image)
    back = read_ct(write_like(array, image, tmp_path / "ct.nii.gz"))
    assert same_geometry(back, image)
    assert np.array_equal(sitk.GetArrayFromImage(back), array)


def test_write_like_refuses_wrong_shape(ct: sitk.Image, tmp_path: Path):
    with pytest.raises(InputError, match="does not match the reference grid"):
        write_like(np.zeros((3, 4, 5), np.uint8), ct, tmp_path / "x.nii.gz")
    assert not any(tmp_path.iterdir())


def test_read_label(shared_data: Path, ct: sitk.Image, tmp_path: Path):
    seg = read_label(shared_data / TOTALSEG / "example_seg.nii.gz", ct)
    assert seg.GetPixelID() == sitk.sitkUInt8 and seg.GetOrigin() == ct.GetOrigin()
    with pytest.raises(InputError, match="does not match the image grid"):
        read_label(shared_data / TOTALSEG / "example_seg.nii.gz", read_ct(shared_data / TOTALSEG / "example_ct.nii.gz"))
    shifted = sitk.ReadImage(str(shared_data / TOTALSEG / "example_seg.nii.gz"))
    shifted.SetOrigin([v + 5.0 for v in shifted.GetOrigin()])
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    with pytest.raises(InputError, match="origin"):
        read_label(tmp_path / "shifted.nii.gz", ct)
    fractional = sitk.Cast(shifted, sitk.sitkFloat32) * 0.5
    fractional.CopyInformation(ct)
    sitk.WriteImage(fractional, str(tmp_path / "frac.nii.gz"))
    with pytest.raises(InputError, match="non-integer"):
        read_label(tmp_path / "frac.nii.gz", ct)


# ---------------------------------------------------------------------------------------------
# refusals


def nifti(tmp_path: Path, name: str, array: np.ndarray, zooms=(1.0, 1.0, 2.0)) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(array, np.diag([*zooms, 1.0])), str(path))
    return path


def body_volume(shape=(16, 16, 16), dtype=np.int16) -> np.ndarray:
    a = np.full(shape, -1000, dtype=dtype)
    a[4:-4, 4:-4, 4:-4] = 40
    return a


def test_refuses_wrong_dimensionality(tmp_path: Path):
    refused(nifti(tmp_path, "slice.nii.gz", np.zeros((32, 32), np.int16) - 1000), "image is 2D")
    refused(nifti(tmp_path, "series.nii.gz", np.stack([body_volume()] * 3, -1)), "4D (3 volumes")
    single = nifti(tmp_path, "one.nii.gz", body_volume()[..., None])  # 4D with one time point is a volume
    assert read_ct(single).GetSize() == (16, 16, 16)
    rgb = sitk.Image([16, 16, 16], sitk.sitkVectorInt16, 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    refused(tmp_path / "rgb.nrrd", "3 values per voxel")


def test_refuses_non_ct_ranges(tmp_path: Path):
    mr = np.random.default_rng(0).integers(0, 1200, (16, 16, 16)).astype(np.uint16)
    message = refused(nifti(tmp_path, "mr.nii.gz", mr), "not a CT Hounsfield range")
    assert "force" in message
    assert read_ct(tmp_path / "mr.nii.gz", force=True).GetPixelID() == sitk.sitkFloat32
    windowed = np.random.default_rng(0).integers(0, 256, (16, 16, 16)).astype(np.uint8)
    refused(nifti(tmp_path, "win.nii.gz", windowed), "8-bit image")
    no_intercept = body_volume() + 1024  # stored values without the rescale intercept
    refused(nifti(tmp_path, "raw.nii.gz", no_intercept), "not a CT Hounsfield range")
    bad = body_volume(dtype=np.float32)
    bad[8, 8, 8] = np.nan
    refused(nifti(tmp_path, "nan.nii.gz", bad), "NaN or infinite", force=True)
    bad[8, 8, 8] = np.inf
    refused(nifti(tmp_path, "inf.nii.gz", bad), "NaN or infinite")


def _patch_pixdim(path: Path, values) -> Path:
    """Writes pixdim[1:4] into a NIfTI-1 header (nibabel would repair it) and gzips the file."""
    raw = bytearray(path.read_bytes())
    raw[80:92] = np.asarray(values, dtype="<f4").tobytes()
    out = path.with_suffix(".nii.gz")
    out.write_bytes(gzip.compress(bytes(raw)))
    return out


def test_refuses_missing_or_implausible_spacing(tmp_path: Path):
    plain = tmp_path / "zero.nii"
    nib.save(nib.Nifti1Image(body_volume(), np.eye(4)), str(plain))
    refused(_patch_pixdim(plain, [1.0, 0.0, 1.0]), "spacing in the header is zero, negative or missing")
    plain_neg = tmp_path / "neg.nii"
    shutil.copy(plain, plain_neg)
    refused(_patch_pixdim(plain_neg, [1.0, -2.0, 1.0]), "zero, negative or missing")
    nrrd.write(str(tmp_path / "nospacing.nrrd"), body_volume())
    refused(tmp_path / "nospacing.nrrd", "gives no voxel spacing")
    image = sitk.GetImageFromArray(body_volume())
    sitk.WriteImage(image, str(tmp_path / "ok.mha"))
    header, sep, data = (tmp_path / "ok.mha").read_bytes().partition(b"ElementDataFile = LOCAL\n")
    header = b"".join(line + b"\n" for line in header.split(b"\n") if line and not line.startswith(b"ElementSpacing"))
    (tmp_path / "nospacing.mha").write_bytes(header + sep + data)
    refused(tmp_path / "nospacing.mha", "gives no voxel spacing (ElementSpacing)")
    assert read_ct(tmp_path / "ok.mha").GetSize() == (16, 16, 16)
    refused(nifti(tmp_path, "coarse.nii.gz", body_volume(), zooms=(1.0, 1.0, 100.0)), "outside the plausible")


def test_refuses_absurd_sizes(tmp_path: Path):
    refused(nifti(tmp_path, "thin.nii.gz", body_volume((64, 64, 4))), "fewer than 8 voxels")
    huge = np.full((2049, 8, 8), -1000, np.int16)
    refused(nifti(tmp_path, "huge.nii.gz", huge), "beyond the supported 2048")


def test_refuses_unreadable_files(tmp_path: Path):
    refused(tmp_path / "missing.nii.gz", "no such file or folder")
    good = nifti(tmp_path, "good.nii.gz", body_volume((32, 32, 32)))
    data = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.nii.gz", "corrupt or truncated")
    plain = tmp_path / "cut.nii"
    nib.save(nib.Nifti1Image(body_volume((32, 32, 32)), np.eye(4)), str(plain))
    plain.write_bytes(plain.read_bytes()[:-1000])
    refused(plain, "truncated file")
    (tmp_path / "junk.nrrd").write_bytes(b"this is not an image")
    refused(tmp_path / "junk.nrrd", "cannot read junk.nrrd")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    refused(tmp_path / "photo.png", "unsupported format")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "no DICOM series found")


def test_refuses_broken_dicom_series(shared_data: Path, tmp_path: Path):
    import pydicom

    src = sorted((shared_data / TOTALSEG / "example_ct_dicom").iterdir())
    gap = tmp_path / "gap"
    gap.mkdir()
    for i, f in enumerate(src):
        if i != 10:  # one slice missing in the middle
            shutil.copy(f, gap / f.name)
    refused(gap, "unevenly spaced")
    mr = tmp_path / "mr"
    mr.mkdir()
    for f in src:
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(mr / f.name)
    refused(mr, "DICOM modality is MR")
    assert read_ct(mr, force=True).GetSize() == (512, 512, 20)


def test_refuses_mr_stored_with_an_offset(tmp_path: Path):
    """Issue 16 item 7: an MR volume with values -330..1000 passed the old "air or fat" rule (<= -200)."""
    mr = np.random.default_rng(1).integers(-330, 1001, (16, 16, 16)).astype(np.int16)
    refused(nifti(tmp_path, "mr_offset.nii.gz", mr), "not a CT Hounsfield range")
    lung = body_volume()
    lung[lung == -1000] = -600  # lung tissue without free air is still CT
    assert read_ct(nifti(tmp_path, "lung.nii.gz", lung)).GetSize() == (16, 16, 16)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr", ".mhd"])
def test_refuses_voxel_data_shorter_than_the_header(tmp_path: Path, suffix: str):
    """Issue 16 item 3: ITK fills missing voxels with zeros without a word; a complete gzip stream is not enough."""
    import gzip
    import zlib

    from malenia.data.ct_io import data_layout

    image = sitk.GetImageFromArray(body_volume((16, 20, 24)))
    image.SetSpacing((0.8, 0.8, 2.0))
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(path), useCompression=suffix in (".nii.gz", ".nrrd", ".mha"))
    assert read_ct(path).GetSize() == (24, 20, 16)
    layout = data_layout(path)
    raw = layout.file.read_bytes()
    keep = layout.nbytes * 3 // 4
    if layout.compression == "gzip-file":
        short = gzip.compress(gzip.decompress(raw)[: layout.offset + keep])
    elif layout.compression == "gzip":
        short = raw[: layout.offset] + gzip.compress(gzip.decompress(raw[layout.offset:])[:keep])
    elif layout.compression == "zlib":
        short = raw[: layout.offset] + zlib.compress(zlib.decompress(raw[layout.offset:])[:keep])
    else:
        short = raw[: layout.offset + keep]
    layout.file.write_bytes(short)
    refused(path, "shorter than the header says")


def test_two_dicom_series_with_the_same_slice_count_are_named_not_guessed(shared_data: Path, tmp_path: Path):
    import pydicom

    src = sorted((shared_data / TOTALSEG / "example_ct_dicom").iterdir())[:8]
    both = tmp_path / "both"
    both.mkdir()
    for kernel, uid in (("soft", "1.2.826.0.1.3680043.8.498.1"), ("bone", "1.2.826.0.1.3680043.8.498.2")):
        for f in src:
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID, ds.SeriesDescription = uid, f"abdomen {kernel}"
            ds.SOPInstanceUID = f"{uid}.{ds.InstanceNumber}"
            ds.save_as(both / f"{kernel}_{f.name}")
    message = refused(both, "2 DICOM series with 8 slices each")
    assert "1.2.826.0.1.3680043.8.498.1 (abdomen soft" in message and "498.2 (abdomen bone" in message
    assert read_ct(both, series_uid="1.2.826.0.1.3680043.8.498.2").GetSize() == (512, 512, 8)
