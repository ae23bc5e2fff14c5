"""`malenia segment` as a command: bad inputs exit with their code and one line, interrupts leave nothing."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from malenia.cli import main
from malenia.errors import EXIT_BAD_INPUT, EXIT_BAD_MODEL, EXIT_INTERRUPTED, EXIT_OUTPUT
from segment_helpers import REPO, THRESHOLD, cli_env, malenia, planted_image_copy, sphere_ct, tiny_trained_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_trained_model(tmp_path_factory)


@pytest.fixture(scope="module")
def good_ct(tmp_path_factory):
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    sitk.WriteImage(sphere_ct()[0], str(path))
    return path


def _run(capsys, *args):
    code = main(["segment", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return code, err


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing[: img.GetDimension()])
    sitk.WriteImage(img, str(path))
    return path


def _bad_inputs(tmp):
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 300, (20, 20, 20)).astype(np.float32)
    nan = ct.copy()
    nan[3, 4, 5] = np.nan
    corrupt = tmp / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    empty_dir = tmp / "not_dicom"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("no images here")
    return {
        "2d": (_write(tmp / "slice.nii.gz", ct[0]), "image is 2D; a CT volume must be 3D"),
        "mr_range": (_write(tmp / "mr.nii.gz", rng.uniform(0, 1200, (20, 20, 20)).astype(np.float32)), "not a CT Hounsfield range"),
        "nan": (_write(tmp / "nan.nii.gz", nan), "NaN or infinite"),
        "corrupt": (corrupt, "cannot read corrupt.nii.gz"),
        "missing": (tmp / "nowhere.nii.gz", "no such file or folder"),
        "no_series": (empty_dir, "no DICOM series found"),
        "format": (_write_text(tmp / "scan.png"), "unsupported format"),
    }


def _write_text(path):
    path.write_bytes(b"\x89PNG not really")
    return path


@pytest.mark.parametrize("case", ["2d", "mr_range", "nan", "corrupt", "missing", "no_series", "format"])
def test_refused_inputs_exit_3_with_one_line_and_write_nothing(case, model, tmp_path, capsys):
    path, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    code, err = _run(capsys, path, "--out", out, "--model", model)
    assert code == EXIT_BAD_INPUT == 3
    assert message in err and err.startswith("malenia segment: error:") and len(err.splitlines()) == 1
    assert not out.exists()


def test_existing_outputs_are_refused_without_overwrite_and_replaced_with_it(model, good_ct, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    code, err = _run(capsys, good_ct, "--out", out, "--model", model)
    assert code == EXIT_OUTPUT == 5 and "outputs already exist" in err and "--overwrite" in err
    assert (out / "report.json").read_text() == "{}"
    code, err = _run(capsys, good_ct, "--out", out, "--model", model, "--overwrite", "--progress", "none", "--threshold", THRESHOLD)
    assert code == 0, err
    assert json.loads((out / "report.json").read_text())["format"] == "malenia-segment-report"
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone


def test_unwritable_output_folder_exits_5(model, good_ct, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, err = _run(capsys, good_ct, "--out", a_file / "out", "--model", model)
    assert code == EXIT_OUTPUT and "cannot create output folder" in err
    code, err = _run(capsys, good_ct, "--out", a_file, "--model", model)
    assert code == EXIT_OUTPUT and "is a file" in err


@pytest.mark.parametrize("damage", ["sha256", "manifest", "missing"])
def test_damaged_or_missing_model_exits_4(damage, model, good_ct, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "model"
    shutil.copytree(model, bad)
    if damage == "sha256":
        data = bytearray((bad / "weights.safetensors").read_bytes())
        data[-3] ^= 0x55
        (bad / "weights.safetensors").write_bytes(bytes(data))
        args, message = ["--model", bad], "sha256 mismatch for weights.safetensors"
    elif damage == "manifest":
        (bad / "manifest.json").write_text("{broken")
        args, message = ["--model", bad], "not valid JSON"
    else:  # no --model and no built-in model in these Resources
        res = tmp_path / "resources"
        shutil.copytree(REPO / "Resources", res, ignore=shutil.ignore_patterns("model"))
        monkeypatch.setenv("MALENIA_RESOURCES", str(res))
        args, message = [], "the built-in model is not installed"
    code, err = _run(capsys, good_ct, "--out", tmp_path / "out", *args)
    assert code == EXIT_BAD_MODEL == 4 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("roi,message", [
    ("10,0,0,20,10,10", "does not overlap the image"),
    ("1,2,3", "six"),
    ("0,0,0,-1,5,5", "maximum corner must exceed"),
])
def test_bad_roi_exits_3(roi, message, model, good_ct, tmp_path, capsys):
    code, err = _run(capsys, good_ct, "--out", tmp_path / "out", "--model", model, "--roi", roi)
    assert code == EXIT_BAD_INPUT and message in err
    assert not (tmp_path / "out").exists()


def test_mirroring_a_model_trained_without_mirrored_patches_exits_3(model, good_ct, tmp_path, capsys):
    code, err = _run(capsys, good_ct, "--out", tmp_path / "out", "--model", model, "--mirror")
    assert code == EXIT_BAD_INPUT and "trained without mirrored patches" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_real_command_prints_its_error_and_exit_code(tmp_path, model):
    r = malenia("segment", tmp_path / "nowhere.nrrd", "--out", tmp_path / "out", "--model", model)
    assert r.returncode == EXIT_BAD_INPUT and "no such file or folder" in r.stderr and "Traceback" not in r.stderr


# --- interrupting a real run ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lung_input(shared_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("lung") / "lung1.nrrd"
    planted_image_copy(shared_data / "ct" / "pyradiomics-lung1" / "lung1_image.nrrd", path)
    return path


def _interrupt(cmd, sig, when) -> tuple[int, str, list[dict]]:
    """Starts `cmd`, sends `sig` once a progress line satisfies `when`, returns (exit code, stderr, lines seen)."""
    # A suite started in the background (`nohup make test &`) passes SIGINT on as ignored, and Python then
    # never raises KeyboardInterrupt: the child gets the default disposition back, as from a terminal.
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    try:
        for line in proc.stdout:
            obj = json.loads(line)
            seen.append(obj)
            if when(obj):
                proc.send_signal(sig)
                break
        proc.stdout.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, proc.stderr.read(), seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_the_windows_leaves_no_outputs(sig, model, lung_input, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "malenia.cli", "segment", str(lung_input), "--out", str(out), "--model", str(model),
           "--progress", "json", "--threshold", THRESHOLD, "--overlap", "0.5"]
    # --overlap 0.5: about 8 times the ~100 windows, so the tiny model cannot finish them while a busy machine
    # keeps this process from sending the signal (it once did, and the run ended with its outputs written)
    code, err, seen = _interrupt(cmd, sig, lambda o: o["stage"] == "windows" and "window 1/" in o["message"])
    assert seen and seen[-1]["stage"] == "windows"
    assert code == EXIT_INTERRUPTED == 130 and "interrupted; nothing was written" in err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == []


def test_sigterm_while_writing_keeps_the_previous_outputs_untouched(model, lung_input, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = {}
    for name in ("lesions.nii.gz", "lesions.seg.nrrd", "report.json", "report.html"):
        (out / name).write_bytes(name.encode() * 10)
        before[name] = (out / name).read_bytes()
    cmd = [sys.executable, "-m", "malenia.cli", "segment", str(lung_input), "--out", str(out), "--model", str(model),
           "--progress", "json", "--overwrite", "--threshold", THRESHOLD]
    code, err, seen = _interrupt(cmd, signal.SIGTERM, lambda o: o["stage"] == "outputs")
    assert seen[-1]["stage"] == "outputs"  # the lesions were found; the files were being written
    assert code == EXIT_INTERRUPTED and "nothing was written" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no stray staging folder either
