"""Real CT bases for synthesis: a CT with organ labels (TotalSegmentator names) read into an Anatomy.

A base folder holds one of these layouts (first match wins):

    TotalSegmentator multi-label   <any CT image> + <*seg*.nii[.gz] | organs.nii[.gz]> + <*classes*.json | organs.json>
                                   (the shared example: example_ct_sm.nii.gz, example_seg.nii.gz,
                                   example_seg_classes.json); the CT is the image whose grid matches
                                   the labels. The json maps label value -> name; without one,
                                   TotalSegmentator v2 "total" numbering is assumed.
    TotalSegmentator per-organ     <CT image> + segmentations/<name>.nii.gz (binary masks)
    Malenia case                   image.nii.gz + organs.nii.gz + report.json (extra.organ_labels)

A folder holding no image but sub-folders is a collection: each sub-folder is a base.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.data.dataset import IMAGE_FILE, ORGANS_FILE, REPORT_FILE
from malenia.data.geometry import Grid
from malenia.data.synthesis.anatomy import TOTALSEG_IDS, Anatomy
from malenia.errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _is_image(p: Path) -> bool:
    return p.is_file() and any(p.name.endswith(s) for s in IMAGE_SUFFIXES)


def find_bases(path: str | Path) -> list[Path]:
    """The base folders under `path` (itself, or its sub-folders when it is a collection)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"base folder not found: {path}")
    if any(_is_image(p) for p in path.iterdir()):
        return [path]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and any(_is_image(q) for q in p.iterdir()))
    if not subs:
        raise InputError(f"{path}: no CT image found (expected a CT and its organ labels, see docs/data.md)")
    return subs


def load_base(folder: str | Path) -> Anatomy:
    """Reads one base folder (layouts in the module docstring) into an Anatomy."""
    from malenia.data.contrast import detect_phase
    from malenia.data.ct_io import read_ct, read_label

    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if _is_image(p))
    seg_dir = folder / "segmentations"
    names: dict[int, str]
    if (folder / ORGANS_FILE).exists() and (folder / REPORT_FILE).exists():
        ct_path, seg_path = folder / IMAGE_FILE, folder / ORGANS_FILE
        extra = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8")).get("extra", {})
        names = {int(k): str(v) for k, v in (extra.get("organ_labels") or {}).items()} or _totalseg_names()
        image = read_ct(ct_path)
        organs = sitk.GetArrayFromImage(read_label(seg_path, image)).astype(np.int16)
    elif seg_dir.is_dir():
        masks = sorted(p for p in seg_dir.iterdir() if _is_image(p))
        if not images or not masks:
            raise InputError(f"{folder}: a 'segmentations' folder needs a CT beside it and masks inside it")
        image = read_ct(_pick_ct(images, sitk.ReadImage(str(masks[0]))))
        organs = np.zeros(image.GetSize()[::-1], np.int16)
        names = {}
        ts = TOTALSEG_IDS
        for i, m in enumerate(masks):
            name = m.name.split(".")[0]
            value = ts.get(name, 200 + i)
            organs[sitk.GetArrayViewFromImage(read_label(m, image)) > 0] = value
            names[value] = name
    else:
        segs = [p for p in images if "seg" in p.name.lower() or p.name.startswith("organs.")]
        if not segs:
            raise InputError(f"{folder}: no organ label file (*seg*.nii.gz, organs.nii.gz or segmentations/); see docs/data.md")
        seg_path = segs[0]
        classes = sorted(folder.glob("*classes*.json")) + sorted(folder.glob("organs.json"))
        if classes:
            try:
                raw = json.loads(classes[0].read_text(encoding="utf-8"))
                names = {int(k): str(v) for k, v in raw.items()}
            except (ValueError, AttributeError) as err:
                raise InputError(f"{classes[0]}: expected a json object label value -> organ name ({err})") from None
        else:
            names = _totalseg_names()
        label_img = sitk.ReadImage(str(seg_path))
        image = read_ct(_pick_ct([p for p in images if p not in segs], label_img))
        organs = sitk.GetArrayFromImage(read_label(seg_path, image)).astype(np.int16)
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    phase = detect_phase(image, organs, names)
    anat = Anatomy(arr, organs, names, image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                   phase=phase.phase or "non_contrast", source=str(folder))
    anat.info["phase_detection"] = {"method": phase.method, "aorta_hu": phase.aorta_hu, "ivc_hu": phase.ivc_hu}
    return anat


def _totalseg_names() -> dict[int, str]:
    return {v: k for k, v in TOTALSEG_IDS.items()}


def _pick_ct(candidates: list[Path], labels: sitk.Image) -> Path:
    size = labels.GetSize()
    fitting = []
    for p in candidates:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue
        if tuple(reader.GetSize()) == tuple(size):
            fitting.append(p)
    if not fitting:
        raise InputError(f"no CT image in {candidates[0].parent if candidates else '?'} has the organ labels' grid {size}")
    fitting.sort(key=lambda p: (not ("ct" in p.name.lower() or "image" in p.name.lower()), p.name))
    return fitting[0]


def resample(anat: Anatomy, spacing_xyz: tuple[float, float, float]) -> Anatomy:
    """The base on a grid of `spacing_xyz` (same origin, direction and extent)."""
    img = sitk.GetImageFromArray(anat.image)
    img.SetSpacing(anat.spacing)
    img.SetOrigin(anat.origin)
    img.SetDirection(anat.direction)
    lab = sitk.GetImageFromArray(anat.organs)
    lab.CopyInformation(img)
    grid = Grid.of(img).with_spacing(spacing_xyz)
    new_img = grid.resample(img, sitk.sitkLinear, -1024.0)
    new_lab = grid.resample(lab, sitk.sitkNearestNeighbor, 0)
    out = Anatomy(sitk.GetArrayFromImage(new_img).astype(np.float32), sitk.GetArrayFromImage(new_lab).astype(np.int16),
                  dict(anat.names), grid.spacing, anat.origin, anat.direction, anat.phase, anat.source,
                  info=dict(anat.info))
    return out


def fit_size(anat: Anatomy, size_xyz: tuple[int, int, int]) -> Anatomy:
    """Crops or pads (air, no label) the base to `size_xyz`, centred on its organs."""
    shape_zyx = np.array(size_xyz[::-1])
    idx = np.argwhere(anat.organs > 0)
    centre = (idx.min(0) + idx.max(0)) // 2 if len(idx) else np.array(anat.shape) // 2
    start = centre - shape_zyx // 2
    img = np.full(tuple(shape_zyx), -1024.0, np.float32)
    lab = np.zeros(tuple(shape_zyx), np.int16)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + shape_zyx, anat.shape)
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    s = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
    d = tuple(slice(int(a), int(b)) for a, b in zip(dst_lo, dst_hi))
    img[d] = anat.image[s]
    lab[d] = anat.organs[s]
    origin = anat.index_to_lps(start[None].astype(float))[0]
    return Anatomy(img, lab, dict(anat.names), anat.spacing, tuple(float(v) for v in origin), anat.direction,
                   anat.phase, anat.source, info=dict(anat.info))
