"""A real chest CT to plant lung nodules in: its HU, a lung mask in parts, and the lesions it already has.

Three kinds of base (docs/data.md, "LIDC nodules"):
  * a synthesis base with TotalSegmentator lung-lobe labels (`bases.load_base`, e.g. the shared
    TotalSegmentator example, whose lung bases are labelled): the parts are the lobes, so a
    planted nodule's location is a vocabulary id (`location.lung.right_lower`, ...);
  * any CT file, optionally with a lesion label on its grid (a file whose name holds "label" or
    "mask", e.g. pyradiomics lung1): the lung is found by thresholding (below -400 HU),
    dropping air connected to the in-plane border (outside the body), keeping the two largest
    remaining components (the lungs; when they touch, split at the body's midline), and filling
    vessels and nodules slice by slice. The parts are the left and right lung: no lobe id;
  * the procedural phantom (`phantom_lung_base`): its lung bases carry lobe labels like the first
    kind, and each draw is a new body, so training nodules are not all pasted into one patient's
    120 ml of lung.
Existing lesions (the label file) are kept labelled and planted nodules keep away from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from malenia.data.geometry import Grid
from malenia.errors import InputError

AIR_HU = -400.0
LESION_NAME_HINTS = ("label", "mask", "lesion")


@dataclass
class LungPart:
    name: str
    side: str  # "left" | "right"
    location_id: str | None  # a vocabulary id where the part is a lobe


@dataclass
class LungBase:
    source: str
    hu: np.ndarray  # float32 (z, y, x)
    lung: np.ndarray  # uint8 part codes (0 = not lung), keys of `parts`
    parts: dict[int, LungPart]
    lesions: np.ndarray  # uint16 existing lesion instances
    reference: sitk.Image  # geometry (a 1-voxel-deep copy is not enough: full size, no pixels used)
    phase: str = "non_contrast"
    info: dict = field(default_factory=dict)

    @property
    def spacing_zyx(self) -> np.ndarray:
        return np.array(self.reference.GetSpacing()[::-1], float)


def load_lung_base(folder: str | Path, spacing_xyz: tuple[float, float, float] | None = None) -> LungBase:
    """Reads a base folder (module doc); `spacing_xyz` resamples it first (linear HU, nearest labels)."""
    from malenia.data.synthesis.bases import load_base

    folder = Path(folder)
    try:
        anat = load_base(folder)
    except InputError:
        anat = None
    if anat is not None and spacing_xyz is not None:
        from malenia.data.synthesis.bases import resample

        anat = resample(anat, spacing_xyz)
    base = _from_lobes(anat) if anat is not None else _from_threshold(folder, spacing_xyz)
    if not base.lung.any():
        raise InputError(f"{folder}: no lung found in this base")
    return base


def phantom_lung_base(rng: np.random.Generator, spacing_xyz: tuple[float, float, float] | None = None,
                      name: str = "phantom") -> LungBase:
    """A freshly drawn phantom (random phase) as a lung base; `spacing_xyz` keeps the field of view."""
    from malenia.data.synthesis.generate import DEFAULT_SIZE, DEFAULT_SPACING
    from malenia.data.synthesis.phantom import make_phantom

    spacing = tuple(float(v) for v in (spacing_xyz or DEFAULT_SPACING))
    size = tuple(int(round(n * d / s)) for n, d, s in zip(DEFAULT_SIZE, DEFAULT_SPACING, spacing))
    phase = "contrast" if rng.random() < 0.5 else "non_contrast"
    anat = make_phantom(rng, size, spacing, phase)
    anat.source = name
    base = _from_lobes(anat)
    base.info["lung_from"] = "phantom lobe labels"
    return base


def _from_lobes(anat) -> LungBase:
    from malenia.data.synthesis.anatomy import LUNG_LOBES

    lung = np.zeros(anat.shape, np.uint8)
    parts: dict[int, LungPart] = {}
    for code, (region, name) in enumerate(LUNG_LOBES.items(), start=1):
        m = anat.mask(name)
        if m.any():
            lung[m] = code
            side = "left" if name.endswith("_left") else "right"
            parts[code] = LungPart(name, side, f"location.{region}")
    ref = sitk.Image([int(v) for v in anat.shape[::-1]], sitk.sitkUInt8)
    ref.SetSpacing(anat.spacing)
    ref.SetOrigin(anat.origin)
    ref.SetDirection(anat.direction)
    return LungBase(anat.source, anat.image.astype(np.float32), lung, parts, np.zeros(anat.shape, np.uint16), ref,
                    anat.phase, {"lung_from": "TotalSegmentator lobe labels"})


def _from_threshold(folder: Path, spacing_xyz) -> LungBase:
    from malenia.data.contrast import detect_phase
    from malenia.data.ct_io import read_ct, read_label
    from malenia.data.synthesis.bases import IMAGE_SUFFIXES

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
    labels = [p for p in files if any(h in p.name.lower() for h in LESION_NAME_HINTS)]
    cts = [p for p in files if p not in labels]
    if len(cts) != 1:
        raise InputError(f"{folder}: expected one CT (and optionally a lesion label file), found {[p.name for p in cts]}")
    image = read_ct(cts[0])
    lesion_img = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    lesion_img.CopyInformation(image)
    if labels:
        lesion_img = read_label(labels[0], image)
    if spacing_xyz is not None:
        image, lesion_img = _resampled(image, lesion_img, spacing_xyz)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    lesions, _ = ndi.label(sitk.GetArrayViewFromImage(lesion_img) > 0, structure=np.ones((3, 3, 3), bool))
    lung, parts = threshold_lungs(hu, image)
    phase = detect_phase(image).phase or "non_contrast"
    return LungBase(str(folder), hu, lung, parts, lesions.astype(np.uint16), image, phase,
                    {"lung_from": "threshold + connected components", "lesion_file": labels[0].name if labels else None})


def _resampled(image: sitk.Image, labels: sitk.Image, spacing_xyz) -> tuple[sitk.Image, sitk.Image]:
    grid = Grid.of(image).with_spacing(spacing_xyz)
    return grid.resample(image, sitk.sitkLinear, -1024.0), grid.resample(labels, sitk.sitkNearestNeighbor, 0)


def threshold_lungs(hu: np.ndarray, image: sitk.Image) -> tuple[np.ndarray, dict[int, LungPart]]:
    """Lung mask (1 right, 2 left) of a chest CT by threshold and connected components (module doc)."""
    air = hu < AIR_HU
    comp, n = ndi.label(air)
    border = np.zeros(n + 1, bool)
    for face in (comp[:, 0, :], comp[:, -1, :], comp[:, :, 0], comp[:, :, -1]):
        border[np.unique(face)] = True
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    sizes[border] = 0
    sizes[0] = 0
    keep = [int(i) for i in np.argsort(sizes)[::-1][:2] if sizes[i] > 0.1 * sizes.max()]
    lung = np.isin(comp, keep)
    for z in range(lung.shape[0]):  # vessels and nodules inside the lung are lung
        lung[z] = ndi.binary_fill_holes(ndi.binary_closing(lung[z], iterations=2))
    x_lps = _x_lps(image, lung.shape)
    midline = float(np.mean(x_lps[np.nonzero(hu > -300)[2]])) if (hu > -300).any() else float(x_lps.mean())
    out = np.zeros(hu.shape, np.uint8)
    left = x_lps[None, None, :] > midline
    out[lung & ~left] = 1
    out[lung & left] = 2
    return out, {1: LungPart("lung_right", "right", None), 2: LungPart("lung_left", "left", None)}


def _x_lps(image: sitk.Image, shape) -> np.ndarray:
    """LPS x of each array column (axis-aligned scans; an oblique one uses its first row's values)."""
    idx = np.zeros((shape[2], 3))
    idx[:, 0] = np.arange(shape[2])
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return (np.array(image.GetOrigin()) + (idx * np.array(image.GetSpacing())) @ direction.T)[:, 0]
