"""A tilted-gantry (sheared) DICOM series is refused when read, with one line, before any work.

ITK reads such a series as an upright box (slice spacing = distance between positions, no shear): every slice
but the first lands out of place, and `malenia segment` ran the whole CT, then crashed writing the DICOM SEG
(traceback, exit 1, nothing written). Small synthetic series written with SimpleITK.
"""

import locale
import time

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.cli import main
from malenia.data.ct_io import read_ct
from malenia.errors import EXIT_BAD_INPUT, InputError

SLICES = 12
STEP_MM = 3.0


def _write_series(folder, sideways_per_slice=(0.0, 0.0), jitter_mm=0.0, pixel=1.5, slices=SLICES, prefix="s",
                  description=None):
    """A 24 x 20 x `slices` CT series; each slice's position moves by `sideways_per_slice` (x, y mm) on top of
    STEP_MM along z: a gantry tilted about x gives a y shift of tan(tilt) x STEP_MM per slice."""
    folder.mkdir(exist_ok=True)
    hu = np.full((slices, 20, 24), -1000, np.int16)
    hu[:, 4:16, 4:20] = 40
    rng = np.random.default_rng(0)
    uid = f"1.2.826.0.1.3680043.2.1125.66.{time.time_ns()}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(slices):
        s = sitk.GetImageFromArray(hu[k])
        s.SetSpacing((pixel, pixel))
        pos = np.array([-20.0 + sideways_per_slice[0] * k, 10.0 + sideways_per_slice[1] * k, 100.0 + STEP_MM * k])
        pos[:2] += rng.uniform(-jitter_mm, jitter_mm, 2)  # in-plane rounding (the slice step has its own check)
        for tag, value in (("0008|0060", "CT"), ("0020|000e", uid), ("0020|000d", uid + ".1"),
                           ("0008|0018", f"{uid}.2.{k}"), ("0020|0032", "\\".join(f"{v:.4f}" for v in pos)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(k + 1)), ("0028|0030", f"{pixel}\\{pixel}"),
                           ("0028|1052", "0"), ("0028|1053", "1")):
            s.SetMetaData(tag, value)
        if description:
            s.SetMetaData("0008|103e", description)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(s)
    # GDCM's writer leaves the process in the "C" locale (LC_CTYPE): every later subprocess.run(text=True) in this
    # test process would then decode as ASCII; the environment's locale is put back
    locale.setlocale(locale.LC_ALL, "")
    return folder


def test_an_upright_series_is_read_with_its_slice_step(tmp_path):
    image = read_ct(_write_series(tmp_path / "upright"))
    assert image.GetSize() == (24, 20, SLICES)
    assert image.GetSpacing()[2] == pytest.approx(STEP_MM, abs=1e-3)


def test_header_rounding_of_the_positions_is_not_a_tilt(tmp_path):
    image = read_ct(_write_series(tmp_path / "rounded", jitter_mm=0.02))
    assert image.GetSize() == (24, 20, SLICES)


@pytest.mark.parametrize("tilt_degrees, axis", [(20.0, 1), (5.0, 1), (2.0, 0)])
def test_a_tilted_series_is_refused_with_its_tilt(tmp_path, tilt_degrees, axis):
    shift = [0.0, 0.0]
    shift[axis] = np.tan(np.radians(tilt_degrees)) * STEP_MM
    folder = _write_series(tmp_path / "tilted", sideways_per_slice=tuple(shift))
    with pytest.raises(InputError, match=rf"not stacked along their normal \(gantry tilt or shear of "
                                         rf"{tilt_degrees:.1f} degrees"):
        read_ct(folder)


def test_segment_refuses_a_tilted_series_before_any_work(tmp_path, capsys):
    folder = _write_series(tmp_path / "tilted", sideways_per_slice=(0.0, np.tan(np.radians(20.0)) * STEP_MM))
    code = main(["segment", str(folder), "--out", str(tmp_path / "out"), "--progress", "none", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT
    assert len(err) == 1 and err[0].startswith("malenia segment: error: tilted: DICOM slices are not stacked")
    assert not (tmp_path / "out").exists()


def test_the_other_series_of_a_folder_are_named(tmp_path):
    """read_ct takes the series with most slices; the others are named in report.json and on the terminal."""
    from malenia.infer.pipeline import read_input, series_warnings

    folder = _write_series(tmp_path / "study", description="venous")
    image, files = read_input(folder)
    assert len(files) == SLICES and series_warnings(folder, files) == []
    _write_series(folder, slices=9, prefix="arterial", description="arterial 1.0")
    image, files = read_input(folder)
    assert image.GetSize()[2] == SLICES and all("/s0" in f for f in files)
    [warning] = series_warnings(folder, files)
    assert warning.startswith(f"study holds 2 DICOM series; read the one with most slices ({SLICES}), not: 1.2.826.")
    assert warning.endswith("(9 slices, arterial 1.0) (put the one you want in a folder of its own)")
