"""A model for the `malenia segment` tests, trained in the test session itself.

The tiny config of train_helpers (32^3 patches at 2.5 mm), trained STEPS steps on synthesised
cases: bright spheres (150 HU, liver-tumour reports drawn from the knowledge table) planted in
the soft tissue of the shared real CTs, resampled to 2.5 mm, plus spheres in a soft-tissue block.
About 25 s on one CPU thread. It finds such spheres wherever they are planted (tests plant them
in the real inputs, so that every output path has lesions to write, measure and align) and
knows nothing else. Trained once per test session and shared by the test files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "ct"
STEPS = 300
# After a few hundred steps the test model's masks are sharp but its lesion scores (1 - p(no lesion))
# stay around 0.6, so lesion probabilities peak near 0.5: the tests segment at this threshold.
THRESHOLD = "0.25"
REAL_CTS = ("pyradiomics-lung1/lung1_image.nrrd", "totalseg-example/example_ct.nii.gz", "totalseg-example/example_ct_dicom")


def tiny_trained_model(tmp_path_factory) -> Path:
    import torch

    # One thread for the whole session: the cores are shared, and torch imported here already fixed its
    # OpenMP settings (spinning threads on a busy machine make in-process runs many times slower).
    torch.set_num_threads(1)
    root = tmp_path_factory.getbasetemp() / "segment-tiny-model"
    model = root / "run" / "model"
    if (model / "manifest.json").is_file():
        return model
    from malenia.train.loop import TrainOptions, train
    from train_helpers import tiny_config

    make_planted_dataset(root / "ds")
    train(TrainOptions(data=root / "ds", out=root / "run", config=tiny_config(), steps=STEPS, progress="none",
                       val_split=None, checkpoint_every=10**6, seed=0))
    return model


def sphere_ct(shape_zyx=(40, 44, 48), spacing=(2.5, 2.5, 2.5), centre_zyx=(20, 22, 24), radius_vox=4.5,
              hu=150.0, seed=0) -> tuple[sitk.Image, np.ndarray]:
    """A soft-tissue block (40 HU) with one bright sphere and an air border: (CT image, truth mask)."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(40, 8, shape_zyx).astype(np.float32)
    ct[:, :2], ct[:, -2:] = -1000, -1000  # some air: a plausible CT range for read_ct
    zz, yy, xx = np.indices(shape_zyx)
    ball = (zz - centre_zyx[0]) ** 2 + (yy - centre_zyx[1]) ** 2 + (xx - centre_zyx[2]) ** 2 <= radius_vox ** 2
    ct[ball] = hu + rng.normal(0, 8, int(ball.sum()))
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing(tuple(float(s) for s in spacing))
    return img, ball


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * float(np.logical_and(a, b).sum()) / s if s else 1.0


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def malenia(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `malenia` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "malenia.cli", *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def plant_sphere(hu_zyx: np.ndarray, spacing_xyz, radius_mm: float = 11.0, value: float = 150.0, seed: int = 0) -> np.ndarray:
    """Plants a bright sphere (like the test model's training lesions) in the most uniform soft tissue.

    Returns the sphere mask; `hu_zyx` is changed in place. The centre is the voxel whose
    surrounding box (1.5 radii) holds the most soft-tissue voxels (0..100 HU)."""
    from scipy import ndimage

    sz, sy, sx = spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]
    soft = ((hu_zyx > 0) & (hu_zyx < 100)).astype(np.float32)
    size = [max(1, int(round(3 * radius_mm / s))) for s in (sz, sy, sx)]
    score = ndimage.uniform_filter(soft, size=size, mode="constant")
    margin = [min(s // 2, n // 2) for s, n in zip(size, hu_zyx.shape)]
    inner = np.full(score.shape, -1.0, np.float32)
    inner[tuple(slice(m, n - m) for m, n in zip(margin, score.shape))] = score[tuple(slice(m, n - m) for m, n in zip(margin, score.shape))]
    c = np.unravel_index(int(np.argmax(inner)), inner.shape)
    zz, yy, xx = np.ogrid[: hu_zyx.shape[0], : hu_zyx.shape[1], : hu_zyx.shape[2]]
    ball = ((zz - c[0]) * sz) ** 2 + ((yy - c[1]) * sy) ** 2 + ((xx - c[2]) * sx) ** 2 <= radius_mm ** 2
    rng = np.random.default_rng(seed)
    hu_zyx[ball] = (value + rng.normal(0, 8, int(ball.sum()))).astype(hu_zyx.dtype)
    return ball


def make_planted_dataset(root: Path, per_ct: int = 2, seed: int = 0) -> Path:
    """Training cases: each real CT at 2.5 mm with two planted spheres (random soft-tissue spots), and
    two soft-tissue blocks with one sphere each."""
    from malenia.aspects import ASPECTS
    from malenia.data.ct_io import read_ct
    from malenia.data.dataset import Case, CaseReport, DatasetIndex, Description, LesionReport, write_case, write_dataset_index
    from malenia.knowledge.table import KnowledgeTable
    from scipy import ndimage

    table = KnowledgeTable.load()
    rng = np.random.default_rng(seed)
    ids = []

    def report(case_id, n):
        lesions = []
        for k in range(1, n + 1):
            attrs = table.sample_attributes("liver_tumor", rng)
            lesions.append(LesionReport(k, "liver_tumor", {a: [Description(table.vocab.text(x), x) for x in attrs[a]] for a in ASPECTS}))
        return CaseReport(case_id, lesions, source="planted spheres (test)")

    def add(case_id, image, labels, n):
        lab = sitk.GetImageFromArray(labels.astype(np.uint8))
        lab.CopyInformation(image)
        write_case(root, Case(case_id, image, lab, report(case_id, n)))
        ids.append(case_id)

    for name in REAL_CTS:
        src = read_ct(SHARED / name)
        ref = sitk.Image([max(8, int(round(n * s / 2.5))) for n, s in zip(src.GetSize(), src.GetSpacing())], sitk.sitkFloat32)
        ref.SetSpacing((2.5, 2.5, 2.5))
        ref.SetOrigin(src.GetOrigin())
        ref.SetDirection(src.GetDirection())
        base = sitk.GetArrayFromImage(sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, -1024.0))
        soft = ndimage.uniform_filter(((base > 0) & (base < 100)).astype(np.float32), size=9, mode="constant")
        spots = np.argwhere(soft > 0.8 * soft.max())
        for i in range(per_ct):
            hu, labels = base.copy(), np.zeros(base.shape, np.uint8)
            zz, yy, xx = np.indices(base.shape)
            for k in (1, 2):
                c = spots[rng.integers(len(spots))]
                r = rng.uniform(3.0, 4.5)
                ball = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r) & (labels == 0)
                labels[ball] = k
                hu[ball] = 150.0 + rng.normal(0, 8, int(ball.sum()))
            img = sitk.GetImageFromArray(hu.astype(np.float32))
            img.CopyInformation(ref)
            add(f"{Path(name).name.split('.')[0]}_{i}", img, labels, int(labels.max()))
    for i in range(2):
        img, ball = sphere_ct(centre_zyx=tuple(int(v) for v in rng.integers(10, 30, 3)), radius_vox=float(rng.uniform(3, 5)), seed=i)
        add(f"block_{i}", img, ball.astype(np.uint8), 1)
    write_dataset_index(root, DatasetIndex("planted", ids, {"train": ids}, "spheres planted in real CTs (tests)"))
    return root


def planted_image_copy(src: Path, dst: Path) -> np.ndarray:
    """The image file `src` with a planted sphere, written to `dst` with the same grid; returns the sphere mask."""
    from malenia.data.ct_io import read_ct

    img = read_ct(src)
    arr = sitk.GetArrayFromImage(img)
    ball = plant_sphere(arr, img.GetSpacing())
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(dst), useCompression=True)
    return ball


def planted_dicom_copy(src: Path, dst: Path) -> tuple[np.ndarray, list[Path]]:
    """The DICOM series in `src` with a planted sphere, every other attribute (UIDs included) kept.
    Returns the sphere mask (z, y, x in slice-position order) and the written files in that order."""
    import pydicom

    from malenia.infer.pipeline import read_input

    img, files = read_input(src)
    arr = sitk.GetArrayFromImage(img)
    ball = plant_sphere(arr, img.GetSpacing())
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()  # explicit VR little endian: the pixels can be edited in place
        slope, intercept = float(getattr(ds, "RescaleSlope", 1)), float(getattr(ds, "RescaleIntercept", 0))
        stored = ds.pixel_array.copy()
        if ball[k].any():
            stored[ball[k]] = np.round((arr[k][ball[k]] - intercept) / slope).astype(stored.dtype)
            ds.PixelData = stored.tobytes()
        out = dst / Path(f).name
        ds.save_as(out)
        written.append(out)
    return ball, written


def constructed_map(prob: np.ndarray, spacing: float = 2.0):
    """A ProbabilityMap of `prob` whose model grid is the input grid (2 mm voxels: 8 mm³)."""
    from malenia.data.preprocess import Preprocessor
    from malenia.infer.postprocess import ProbabilityMap

    image = sitk.GetImageFromArray(np.zeros(prob.shape, np.float32))
    image.SetSpacing((spacing,) * 3)
    prepared = Preprocessor((spacing,) * 3, normalization="window").prepare(image)
    return ProbabilityMap(prob.astype(np.float32), prepared, image)


def assert_fine_tune_inherits(model: Path, data: Path, tmp_path: Path, file: str, manifest_key: str) -> None:
    """A one-step fine-tune of `model` (`train --init`, no --config: the parent's own config.json) carries `file`
    over unchanged, marked in its manifest as inherited from the parent."""
    import json

    train = malenia("train", "--data", data, "--split", "all", "--steps", "1", "--init", model,
                    "--out", tmp_path / "run", "--threads", "1", "--progress", "none", "--workers", "0")
    assert train.returncode == 0, train.stderr[-2000:]
    child = tmp_path / "run" / "model"
    assert (child / file).read_bytes() == (model / file).read_bytes()
    parent = json.loads((model / "manifest.json").read_text())
    manifest = json.loads((child / "manifest.json").read_text())
    assert manifest[manifest_key]["inherited_from"].endswith(parent["version"])
    # named after its parent, so that its reports say what it descends from
    assert (manifest["name"], manifest["version"]) == (parent["name"], parent["version"] + "+ft")


def segment_report(image: sitk.Image, model: Path, out: Path, *args: str) -> dict:
    """`malenia segment` of `image` with `model` at threshold 0.05 and no minimum volume (the tiny test
    model's lesions are faint), one thread; its report.json."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(out / "ct.nii.gz"))
    seg = malenia("segment", out / "ct.nii.gz", "--out", out / "result", "--model", model, "--threshold", "0.05",
                  "--min-volume", "0", "--threads", "1", *args)
    assert seg.returncode == 0, seg.stderr[-2000:]
    return json.loads((out / "result" / "report.json").read_text())
