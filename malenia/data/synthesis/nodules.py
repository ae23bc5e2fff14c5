"""Pasting a real nodule (its CT voxels and mask) into the lung of a real base scan.

Steps, each its own function:
  1. `nodule_patch`: the crop and its mask resampled onto a patch of the base's grid (spacing and
     direction), centred on the mask's centroid. Axes that get coarser are blurred first
     (Gaussian, sigma = (factor - 1) / 2 voxels, as the preprocessing does), the image linearly
     interpolated, the mask interpolated as a fraction and thresholded at 0.5 (at least its peak
     voxel survives). A `valid` map marks patch voxels that lie inside the crop.
  2. `blend_weight`: 1 on the mask, falling smoothly (smoothstep) to 0 over RAMP_MM outside it, so
     the crop's lung around the nodule fades into the base's lung: no seam. Outside the mask,
     crop voxels denser than SOLID_HU (the chest wall or mediastinum a juxtapleural nodule
     touched in its own scan) get no weight, and nothing outside the crop is used.
  3. `find_centre`: a random lung voxel where the nodule and its ramp fit inside the lung of
     one part (a lobe, or one lung) and which is at least CLEARANCE_MM from every lesion already
     in the scan (the base's own lesions and the nodules planted before).
  4. `paste`: image = w * crop + (1 - w) * base; the mask becomes a new lesion label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

RAMP_MM = 3.0
SOLID_HU = -300.0
CLEARANCE_MM = 10.0
PLACEMENT_TRIES = 60
INSIDE_FRACTION = 0.98


@dataclass
class NodulePatch:
    hu: np.ndarray  # float32 (z, y, x), base spacing and direction
    mask: np.ndarray  # bool
    weight: np.ndarray  # float32 blend weight in [0, 1]
    centre: np.ndarray  # (3,) voxel index of the patch centre (the mask centroid)


@dataclass
class Placement:
    centre: np.ndarray  # voxel index (z, y, x) in the base
    part: int  # the lung part code it lies in
    box: tuple[slice, ...]  # where the patch lands in the base
    patch_box: tuple[slice, ...]  # the part of the patch that lands


def _blurred(image: sitk.Image, target_spacing_xyz) -> np.ndarray:
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    factors = np.array(target_spacing_xyz[::-1]) / np.array(image.GetSpacing()[::-1])
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    return ndi.gaussian_filter(arr, sigma) if sigma.any() else arr


def _as_image(arr: np.ndarray, like: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.CopyInformation(like)
    return img


def nodule_patch(image: sitk.Image, mask: sitk.Image, spacing_xyz, direction) -> NodulePatch:
    """Step 1 (module doc): the nodule on a patch of the base's grid."""
    m = sitk.GetArrayViewFromImage(mask) > 0
    centroid_zyx = np.array(ndi.center_of_mass(m))
    centre_lps = np.array(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in centroid_zyx[::-1]]))
    extent_mm = np.array(image.GetSize()) * np.array(image.GetSpacing())
    half = np.ceil((extent_mm.max() / 2 + RAMP_MM) / np.array(spacing_xyz)).astype(int)  # x, y, z
    size = [int(2 * h + 1) for h in half]
    d = np.array(direction, float).reshape(3, 3)
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing([float(s) for s in spacing_xyz])
    ref.SetDirection([float(v) for v in direction])
    ref.SetOrigin([float(v) for v in centre_lps - d @ (half * np.array(spacing_xyz))])
    ones = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(image)
    hu = sitk.Resample(_as_image(_blurred(image, spacing_xyz), image), ref, sitk.Transform(), sitk.sitkLinear, -1000.0)
    frac = sitk.Resample(_as_image(_blurred(sitk.Cast(mask > 0, sitk.sitkFloat32), spacing_xyz), image), ref,
                         sitk.Transform(), sitk.sitkLinear, 0.0)
    valid = sitk.Resample(ones, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    frac_a = sitk.GetArrayFromImage(frac)
    mask_a = frac_a >= 0.5
    if not mask_a.any():  # a nodule smaller than a base voxel: keep its peak voxel
        mask_a[np.unravel_index(int(np.argmax(frac_a)), frac_a.shape)] = True
    hu_a = sitk.GetArrayFromImage(hu)
    weight = blend_weight(mask_a, hu_a, sitk.GetArrayFromImage(valid) > 0.999, np.array(spacing_xyz[::-1], float))
    return NodulePatch(hu_a, mask_a, weight, half[::-1].astype(int))


def blend_weight(mask: np.ndarray, hu: np.ndarray, valid: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """Step 2 (module doc): 1 on the mask, a smoothstep ramp outside it, 0 on dense tissue and off the crop."""
    dist = ndi.distance_transform_edt(~mask, sampling=spacing_zyx)
    t = np.clip(1.0 - dist / RAMP_MM, 0.0, 1.0)
    ramp = t * t * (3.0 - 2.0 * t)
    ramp[~mask & (hu > SOLID_HU)] = 0.0
    ramp = ndi.gaussian_filter(ramp, 0.5) if ramp.size > 1 else ramp  # no hard step where dense tissue was cut
    w = np.where(mask, 1.0, np.minimum(ramp, 0.999))
    w[(~valid & ~mask) | (w < 1e-3)] = 0.0  # the blur's far tails are not part of the footprint
    return w.astype(np.float32)


def boxes(centre: np.ndarray, patch: NodulePatch, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where a patch centred at `centre` lands in a volume of `shape`, and the part of the patch that does."""
    lo = np.asarray(centre, int) - patch.centre
    hi = lo + np.array(patch.hu.shape)
    clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(clo, chi))
    pbox = tuple(slice(int(a - l), int(b - l)) for a, b, l in zip(clo, chi, lo))
    return box, pbox


def part_depth(lung: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """Per lung voxel, the distance (mm) to the nearest voxel outside its own part (lobe or lung)."""
    depth = np.zeros(lung.shape, np.float32)
    for code in np.unique(lung[lung > 0]):
        inside = lung == code
        depth[inside] = ndi.distance_transform_edt(inside, sampling=spacing_zyx)[inside]
    return depth


def patch_radius_mm(patch: NodulePatch, which: np.ndarray, spacing_zyx: np.ndarray) -> float:
    idx = np.argwhere(which)
    return float(np.sqrt((((idx - patch.centre) * spacing_zyx) ** 2).sum(1)).max()) if len(idx) else 0.0


def find_centre(lung: np.ndarray, depth: np.ndarray, patch: NodulePatch, spacing_zyx: np.ndarray,
                occupied: list[tuple[np.ndarray, float]], rng: np.random.Generator) -> Placement | None:
    """Step 3 (module doc); `occupied` holds (centre voxel, radius mm) of the lesions already there."""
    r_mask = patch_radius_mm(patch, patch.mask, spacing_zyx)
    r_all = patch_radius_mm(patch, patch.weight > 0, spacing_zyx)
    candidates = np.argwhere(depth >= max(r_mask, 0.5 * r_all))
    if not len(candidates):
        return None
    for _ in range(PLACEMENT_TRIES):
        c = candidates[int(rng.integers(len(candidates)))]
        if any(np.linalg.norm((c - oc) * spacing_zyx) < r_all + r + CLEARANCE_MM for oc, r in occupied):
            continue
        box, pbox = boxes(c, patch, lung.shape)
        if patch.mask[pbox].sum() < patch.mask.sum():
            continue  # the nodule would be cut by the scan's edge
        part = int(lung[tuple(c)])
        footprint = patch.weight[pbox] > 0
        if (lung[box][footprint] == part).mean() >= INSIDE_FRACTION:
            return Placement(c, part, box, pbox)
    return None


def paste(hu: np.ndarray, lesions: np.ndarray, patch: NodulePatch, where: Placement, label: int) -> None:
    """Step 4 (module doc), in place."""
    w = patch.weight[where.patch_box]
    hu[where.box] = w * patch.hu[where.patch_box] + (1.0 - w) * hu[where.box]
    lesions[where.box][patch.mask[where.patch_box]] = label
