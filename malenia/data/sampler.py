"""Training patches: lesion-centred oversampling and augmentation over a Malenia dataset.

`LesionPatchDataset(dataset_dir, split, patch_size, preprocessor)` is a map-style torch Dataset:
item i of epoch e is drawn from its own generator seeded by (seed, e, i), so a run is
reproducible whatever the number of DataLoader workers. Every case of the split is read once,
prepared with the model's `Preprocessor` (canonical LPS orientation, model spacing, normalised)
and kept in memory; DataLoader workers share the cache copy-on-write.

Sampling. With probability `lesion_fraction` (default 2/3) a patch holds a random voxel of a random
lesion, placed uniformly within the central `lesion_offset` (default 0.7) share of the patch so
that lesions are seen off-centre too: a case with lesions is drawn uniformly, then one of its lesions uniformly (so
small lesions are drawn as often as large ones), then one of its voxels. Otherwise the patch sits
centred on a random body voxel (denser than -300 HU: soft tissue, fat, bowel, bone; `background_in_body`) of
a uniformly drawn case, or, with `background_in_body=False`, uniformly anywhere in it. A patch of air
outside the patient teaches nothing, while fat, bowel and bone outside the organs are where the false
positives of earlier models sat: these hard negatives are what the background patches are for.
With `hard_negatives` (a model's mined false positives, malenia.data.hard_negatives), a
`hard_negative_fraction` share of the background patches is placed on one of them instead, off-centre
like a lesion, and a `missed_fraction` share of the lesion patches is drawn among the lesions the mining
model missed (the file's "missed" labels: a lesion a model keeps missing would otherwise get no more
patches than one it always finds). nnU-Net forces foreground in a third of its patches
(oversample_foreground_percent 0.33) because random crops of its organ-sized targets already hold
foreground; lesions are small and every matched lesion gives the contrastive loss eight positive
pairs, so here two thirds of the patches are lesion-centred. The patch stays inside the volume
when the volume is larger than the patch; smaller volumes are padded with air (image) and 0.

Augmentation (`AugmentConfig`, MONAI transforms, all optional):
  * spatial: with `affine_prob`, a rotation (default up to 15 deg in the axial plane and 5 deg
    about the other axes) and scaling (0.85-1.15, per axis or, with `scale_isotropic`, one factor
    for all three) around the patch centre (monai Affine, bilinear
    for the image, nearest neighbour for the instance labels), from a region large enough that
    no padding enters the patch;
  * no mirroring by default. A left-right flip shows situs inversus, which real scans never do,
    and makes location descriptions such as "left kidney" false. If `flip_axes` includes 2 (x,
    left-right) the side-named location ids are swapped (`LR_SWAP`) and patches holding a lesion
    without a mirror id (right middle lobe) are not flipped; flips about z or y keep the ids;
  * intensity (monai RandScaleIntensity / RandShiftIntensity / RandAdjustContrast /
    RandGaussianNoise, each with probability 0.15, small ranges): global changes keep a lesion's
    density relative to its organ, which is what the density aspect describes; ranges stay small
    so that the absolute blood HU that tells contrast from non-contrast scans is not washed out.

An item: {"image": float32 (1, D, H, W), "instances": int64 (D, H, W) with the case's lesion
labels (0 background), "lesions": [{"label", "disease", "attributes": {aspect: [ids]}, "texts":
{aspect: [texts]}, "voxels"}, ...] for the lesions with at least `min_visible_voxels` voxels in the
patch (after augmentation), "case_id", "centre" (z, y, x on the model grid), "lesion_centred", "target_label" (the lesion
it was centred on, 0 for random patches), "enhancement" (scan-level id or None)}. `collate_patches` stacks tensors and keeps the lesion
lists per item. `diseases` restricts training to some diseases (e.g. the seen ones): lesions of
other diseases, and lesions without a disease, are erased to background (their annotation is not
available to zero-shot training, as in the paper's protocol).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from malenia.aspects import ASPECTS
from malenia.data.preprocess import Preprocessor
from malenia.errors import InputError

LR_SWAP = {
    "location.kidney.left": "location.kidney.right",
    "location.liver.left_lobe": "location.liver.right_lobe",
    "location.lung.left_upper": "location.lung.right_upper",
    "location.lung.left_lower": "location.lung.right_lower",
    "location.colon.ascending": "location.colon.descending",
}
LR_SWAP.update({v: k for k, v in list(LR_SWAP.items())})
NO_LR_MIRROR = {"location.lung.right_middle"}
MAX_LOCATIONS_PER_LESION = 10000  # as nnU-Net's class locations: enough to draw centres from


@dataclass(frozen=True)
class AugmentConfig:
    affine_prob: float = 0.3
    rotate_deg: tuple[float, float, float] = (15.0, 5.0, 5.0)  # about the z, y, x axes (z: in the axial plane)
    scale: tuple[float, float] = (0.85, 1.15)  # > 1 reads a larger region: the content shrinks
    scale_isotropic: bool = False  # one factor for all three axes (nnU-Net's default): a round lesion stays round
    flip_axes: tuple[int, ...] = ()  # array axes 0 (z), 1 (y), 2 (x = left-right, swaps side-named ids)
    flip_prob: float = 0.5
    intensity_prob: float = 0.15
    intensity_scale: float = 0.1  # multiplies by 1 +- this
    intensity_shift: float = 0.1  # adds +- this (normalised units)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.05  # normalised units


def augment_config(changes: dict[str, Any] | None) -> AugmentConfig:
    """AugmentConfig with `changes` (field -> value; lists become tuples) applied; an unknown field or a
    value of the wrong shape is an InputError naming the fields there are."""
    import dataclasses

    from malenia.errors import InputError

    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in (changes or {}).items()}
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise InputError(f"unknown augmentation field(s) {unknown}; known: {sorted(fields)}")
    aug = dataclasses.replace(AugmentConfig(), **changes)
    for name, value in changes.items():
        default = getattr(AugmentConfig(), name)
        if isinstance(default, tuple) and name != "flip_axes" and (not isinstance(value, tuple) or len(value) != len(default)):
            raise InputError(f"augmentation {name} needs {len(default)} numbers, got {value!r}")
        if not isinstance(default, tuple) and not isinstance(value, (int, float)):
            raise InputError(f"augmentation {name} needs a number, got {value!r}")
    if not set(aug.flip_axes) <= {0, 1, 2}:
        raise InputError(f"augmentation flip_axes must be among 0, 1, 2, got {aug.flip_axes!r}")
    if aug.scale[0] <= 0 or aug.scale[0] > aug.scale[1]:
        raise InputError(f"augmentation scale must be (low, high) with 0 < low <= high, got {aug.scale!r}")
    for name in ("affine_prob", "flip_prob", "intensity_prob"):
        if not 0.0 <= getattr(aug, name) <= 1.0:
            raise InputError(f"augmentation {name} must be between 0 and 1, got {getattr(aug, name)!r}")
    return aug


@dataclass
class _Lesion:
    label: int
    disease: str | None
    attributes: dict[str, list[str | None]]
    texts: dict[str, list[str]]
    locations: np.ndarray  # flat voxel indices on the model grid (a random subset for big lesions)


@dataclass
class _CachedCase:
    case_id: str
    image: np.ndarray  # float32 (z, y, x), normalised, model grid
    instances: np.ndarray  # int16/int32 (z, y, x)
    lesions: dict[int, _Lesion] = field(default_factory=dict)
    enhancement: str | None = None
    body: np.ndarray | None = None  # flat indices of (a random subset of) body voxels: background patch centres
    negatives: np.ndarray | None = None  # [K, 3] mined false positives (z, y, x): hard-negative patch centres
    missed: list[int] = field(default_factory=list)  # labels of its lesions the mining model missed


class LesionPatchDataset(Dataset):
    """Lesion-centred training patches of a Malenia dataset (see the module doc)."""

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str | None = "train",
        patch_size: Sequence[int] = (96, 96, 96),
        preprocessor: Preprocessor | None = None,
        samples_per_epoch: int = 250,
        lesion_fraction: float = 2 / 3,
        lesion_offset: float = 0.7,
        augment: AugmentConfig | None = AugmentConfig(),
        diseases: Iterable[str] | None = None,
        seed: int = 0,
        min_visible_voxels: int = 1,
        cases: Sequence[str] | None = None,
        progress: bool = False,
        background_in_body: bool = True,
        hard_negatives=None,
        hard_negative_fraction: float = 0.5,
        missed_fraction: float = 0.0,
    ):
        from malenia.data.dataset import read_dataset

        if preprocessor is None:
            raise ValueError("a Preprocessor (the model's spacing and intensity settings) is required")
        self.patch_size = tuple(int(v) for v in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive integers (D, H, W), got {patch_size}")
        if not 0.0 <= lesion_fraction <= 1.0:
            raise ValueError(f"lesion_fraction must be in [0, 1], got {lesion_fraction}")
        self.dataset_dir = Path(dataset_dir)
        self.preprocessor = preprocessor
        self.samples_per_epoch = int(samples_per_epoch)
        self.lesion_fraction = float(lesion_fraction)
        if not 0.0 <= lesion_offset < 1.0:
            raise ValueError(f"lesion_offset must be in [0, 1), got {lesion_offset}")
        self.lesion_offset = float(lesion_offset)
        self.augment = augment
        self.diseases = None if diseases is None else frozenset(diseases)
        self.seed = int(seed)
        self.min_visible_voxels = int(min_visible_voxels)
        self.background_in_body = bool(background_in_body)
        if not 0.0 <= hard_negative_fraction <= 1.0:
            raise ValueError(f"hard_negative_fraction must be in [0, 1], got {hard_negative_fraction}")
        self.hard_negative_fraction = float(hard_negative_fraction)
        if not 0.0 <= missed_fraction <= 1.0:
            raise ValueError(f"missed_fraction must be in [0, 1], got {missed_fraction}")
        self.missed_fraction = float(missed_fraction)
        # body = denser than -300 HU, in the preprocessor's normalised units (air, lung and padding are not)
        self._body_level = float(preprocessor.normalize(np.array([-300.0]))[0])
        self.epoch = 0
        index = read_dataset(self.dataset_dir)
        case_ids = list(cases) if cases is not None else index.split_cases(split)
        if not case_ids:
            raise InputError(f"{self.dataset_dir}: split {split!r} has no cases")
        self.cases = self._load(case_ids, progress)
        self._with_lesions = [i for i, c in enumerate(self.cases) if c.lesions]
        self._with_negatives = self._attach_negatives(hard_negatives) if hard_negatives is not None else []
        self._with_missed = [i for i, c in enumerate(self.cases) if c.missed]
        self._intensity = _intensity_transforms(augment) if augment else None

    # -- cache -------------------------------------------------------------------------------

    def _load(self, case_ids: list[str], progress: bool) -> list[_CachedCase]:
        from concurrent.futures import ThreadPoolExecutor

        from malenia.data.dataset import read_case

        def read(case_id: str):
            case = read_case(self.dataset_dir, case_id)
            prepared = self.preprocessor.prepare(case.image)
            return case, prepared, prepared.to_prepared(case.lesions, is_label=True)

        # Reading and resampling run in threads (SimpleITK and zlib work outside the GIL: hundreds of cases
        # on a many-core GPU machine load in a fraction of the time); the bookkeeping below stays in case order.
        with ThreadPoolExecutor(max(1, min(8, (os.cpu_count() or 1) - 1))) as pool:
            iterator: Iterable = pool.map(read, case_ids)
            if progress:
                from tqdm import tqdm

                iterator = tqdm(iterator, total=len(case_ids), desc="prepare cases", unit="case")
            return [self._cache_case(case_id, case, prepared, instances, k)
                    for k, (case_id, (case, prepared, instances)) in enumerate(zip(case_ids, iterator))]

    def _cache_case(self, case_id: str, case, prepared, instances: np.ndarray, index: int) -> _CachedCase:
        """One read case in the cache: its model-grid image and lesion instances, each described lesion's voxel
        locations (a sample of them, seeded by the case's place), the body voxels for background patches."""
        instances = instances.astype(np.int16 if instances.max(initial=0) < 32768 else np.int32)
        cached = _CachedCase(case_id, prepared.array, instances,
                             enhancement=case.report.enhancement.id if case.report.enhancement else None)
        rng = np.random.default_rng([self.seed, index])
        flat = cached.instances.reshape(-1)  # a view: erasing below edits the cache
        voxels = np.flatnonzero(flat)
        voxels = voxels[np.argsort(flat[voxels], kind="stable")]  # lesion voxels grouped by label
        labels, starts = np.unique(flat[voxels], return_index=True)
        ends = np.append(starts[1:], len(voxels))
        spans = {int(lab): voxels[s:e] for lab, s, e in zip(labels, starts, ends)}
        for report in case.report.lesions:
            if report.label not in spans:
                continue  # no voxel left at the model spacing
            if self.diseases is not None and report.disease not in self.diseases:
                continue  # erased below, like lesions without a report entry
            locations = spans[report.label]
            if len(locations) > MAX_LOCATIONS_PER_LESION:
                locations = np.sort(rng.choice(locations, MAX_LOCATIONS_PER_LESION, replace=False))
            cached.lesions[report.label] = _Lesion(
                report.label,
                report.disease,
                {a: [d.id for d in report.attributes.get(a, [])] for a in ASPECTS},
                {a: [d.text for d in report.attributes.get(a, [])] for a in ASPECTS},
                locations.astype(np.int64),
            )
        for label, where in spans.items():
            if label not in cached.lesions:  # filtered out, or not a described lesion: background
                flat[where] = 0
        if self.background_in_body:
            body = np.flatnonzero(cached.image.reshape(-1) > self._body_level)
            if len(body) > MAX_LOCATIONS_PER_LESION:
                body = np.sort(rng.choice(body, MAX_LOCATIONS_PER_LESION, replace=False))
            cached.body = body if len(body) else None
        return cached

    def _attach_negatives(self, negatives) -> list[int]:
        """Mined false-positive centres and missed lesions (malenia.data.hard_negatives) onto the cached cases;
        the cases that have false positives."""
        spacing = tuple(self.preprocessor.target_spacing)
        if not np.allclose(negatives.spacing, spacing):
            raise InputError(f"hard negatives were mined on a {negatives.spacing} mm grid, this model's is {spacing} mm")
        with_negatives = []
        for i, case in enumerate(self.cases):
            found = negatives.cases.get(case.case_id)
            if found is None:
                continue
            if tuple(found.shape) != case.image.shape:
                raise InputError(f"hard negatives of {case.case_id} were mined on a {found.shape} grid, "
                                 f"the sampler's is {case.image.shape}: mined from another dataset?")
            case.missed = [label for label in found.missed if label in case.lesions]  # not those filtered out
            if not len(found.centres):
                continue
            case.negatives = found.centres
            with_negatives.append(i)
        return with_negatives

    # -- sampling ----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        lesion_centred = bool(self._with_lesions) and rng.random() < self.lesion_fraction
        target = 0
        if lesion_centred:
            case, target = self._draw_lesion(rng)
            lesion = case.lesions[target]
            voxel = np.array(np.unravel_index(int(lesion.locations[rng.integers(len(lesion.locations))]), case.image.shape))
            # The voxel lands anywhere in the central `lesion_offset` share of the patch, not always at its
            # centre: a model that only ever sees lesions in the patch centre misses them elsewhere in a
            # sliding window.
            start = self._start_near(voxel, case.image.shape, rng)
        elif self._with_negatives and self.hard_negative_fraction > 0 and rng.random() < self.hard_negative_fraction:
            # a mined false positive, placed off-centre like a lesion (the model must learn it anywhere)
            case = self.cases[self._with_negatives[rng.integers(len(self._with_negatives))]]
            voxel = case.negatives[rng.integers(len(case.negatives))]
            start = self._start_near(voxel, case.image.shape, rng)
        else:
            case = self.cases[rng.integers(len(self.cases))]
            room = np.array(case.image.shape) - np.array(self.patch_size)
            if case.body is not None:  # hard negatives: centred on a body voxel, moved inside the volume
                voxel = np.array(np.unravel_index(int(case.body[rng.integers(len(case.body))]), case.image.shape))
                half = np.array(self.patch_size) // 2
                start = np.where(room >= 0, np.clip(voxel - half, 0, np.maximum(room, 0)), 0)
            else:
                start = np.array([rng.integers(r + 1) if r >= 0 else 0 for r in room])
            start = start - np.array(centred_offset(case.image.shape, self.patch_size))
        centre = start + np.array(self.patch_size) // 2
        image, instances = self._extract(case, centre, rng)
        image, instances, swap_lr = self._flip(image, instances, case, rng)
        if self._intensity is not None:
            self._intensity.set_random_state(seed=int(rng.integers(2**31)))
            image = _numpy(self._intensity(torch.from_numpy(np.ascontiguousarray(image))[None]))[0]
        present, counts = np.unique(instances[instances > 0], return_counts=True)
        lesions = []
        for label, count in zip(present.tolist(), counts.tolist()):
            if count < self.min_visible_voxels:
                continue
            les = case.lesions[label]
            attributes = {a: list(v) for a, v in les.attributes.items()}
            texts = {a: list(v) for a, v in les.texts.items()}
            if swap_lr:
                attributes["location"] = [LR_SWAP.get(v, v) if v else v for v in attributes["location"]]
                texts["location"] = _swapped_texts(attributes["location"], texts["location"], les.attributes["location"])
            lesions.append({"label": label, "disease": les.disease, "attributes": attributes, "texts": texts, "voxels": count})
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
            "instances": torch.from_numpy(np.ascontiguousarray(instances).astype(np.int64)),
            "lesions": lesions,
            "case_id": case.case_id,
            "centre": tuple(int(v) for v in centre),
            "lesion_centred": lesion_centred,
            "target_label": int(target),  # the lesion the patch was centred on (0: a random patch)
            "enhancement": case.enhancement,
        }

    def _draw_lesion(self, rng: np.random.Generator) -> tuple[_CachedCase, int]:
        """A case, then one of its lesions, uniformly; or, with `missed_fraction`, among the missed ones (no extra
        draw without any: runs without mined misses sample as before)."""
        if self._with_missed and self.missed_fraction > 0 and rng.random() < self.missed_fraction:
            case = self.cases[self._with_missed[rng.integers(len(self._with_missed))]]
            labels = case.missed
        else:
            case = self.cases[self._with_lesions[rng.integers(len(self._with_lesions))]]
            labels = sorted(case.lesions)
        return case, labels[rng.integers(len(labels))]

    def _start_near(self, voxel: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
        """A patch start that puts `voxel` anywhere in the central `lesion_offset` share of the patch, then moved
        inside the volume where it fits (the voxel stays in the patch); a volume smaller than the patch is centred."""
        room = np.array(shape) - np.array(self.patch_size)
        half = np.array(self.patch_size) // 2
        reach = np.floor(half * self.lesion_offset).astype(int)
        shift = np.array([rng.integers(-r, r + 1) for r in reach])
        start = np.where(room >= 0, np.clip(voxel - half + shift, 0, np.maximum(room, 0)), 0)
        return start - np.array(centred_offset(shape, self.patch_size))

    def _extract(self, case: _CachedCase, centre: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        aug = self.augment
        if aug is None or rng.random() >= aug.affine_prob:
            start = centre - np.array(self.patch_size) // 2
            return (_crop(case.image, start, self.patch_size, self.preprocessor.background_value),
                    _crop(case.instances, start, self.patch_size, 0))
        from monai.transforms import Affine
        from monai.transforms.utils import create_rotate

        angles = [math.radians(float(rng.uniform(-d, d))) if d > 0 else 0.0 for d in aug.rotate_deg]
        scales = [float(rng.uniform(*aug.scale)) for _ in range(1 if aug.scale_isotropic else 3)]
        scales = scales * 3 if aug.scale_isotropic else scales
        # the region the rotated, scaled patch reads from: Affine maps output to input coordinates
        matrix = np.asarray(create_rotate(3, angles))[:3, :3] @ np.diag(scales)
        half = np.abs(matrix) @ ((np.array(self.patch_size) - 1) / 2.0)
        region = tuple(int(2 * math.ceil(h) + 3 + (p % 2 == 0)) for h, p in zip(half, self.patch_size))
        region = tuple(r + (r - p) % 2 for r, p in zip(region, self.patch_size))  # same parity keeps the centre
        start = centre - np.array(region) // 2
        image = _crop(case.image, start, region, self.preprocessor.background_value)
        labels = _crop(case.instances, start, region, 0)
        common = dict(rotate_params=angles, scale_params=scales, spatial_size=self.patch_size, image_only=True)
        image = _numpy(Affine(mode="bilinear", padding_mode="border", **common)(torch.from_numpy(image)[None]))[0]
        labels = _numpy(Affine(mode="nearest", padding_mode="zeros", **common)(torch.from_numpy(labels.astype(np.float32))[None]))[0]
        return image, labels.round().astype(case.instances.dtype)

    def _flip(self, image, instances, case: _CachedCase, rng: np.random.Generator):
        swap_lr = False
        if self.augment is None:
            return image, instances, swap_lr
        for axis in self.augment.flip_axes:
            if rng.random() >= self.augment.flip_prob:
                continue
            if axis == 2:
                present = set(np.unique(instances).tolist()) - {0}
                if any(loc in NO_LR_MIRROR for lab in present for loc in case.lesions[lab].attributes["location"]):
                    continue
                swap_lr = not swap_lr
            image, instances = np.flip(image, axis), np.flip(instances, axis)
        return image, instances, swap_lr


def centred_offset(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Per axis, where a volume starts inside a patch: centred (air on both sides) where the volume is
    shorter than the patch, else 0. Training patches and inference windows (malenia.infer.windows) both
    place short volumes by this one rule, so the network sees the same layout in both."""
    return tuple((int(p) - int(n) + 1) // 2 if n < p else 0 for n, p in zip(shape, patch))


def _numpy(t) -> np.ndarray:
    t = t.as_tensor() if hasattr(t, "as_tensor") else t  # monai MetaTensor -> Tensor
    return t.detach().cpu().numpy()


def _swapped_texts(new_ids: list[str | None], old_texts: list[str], old_ids: list[str | None]) -> list[str]:
    from malenia.data.importers.common import vocabulary_text

    return [vocabulary_text(n) if n and n != o else t for n, o, t in zip(new_ids, old_ids, old_texts)]


def _crop(array: np.ndarray, start: np.ndarray, size: Sequence[int], fill: float) -> np.ndarray:
    """array[start:start+size] with `fill` where the box leaves the array."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src = tuple(slice(max(0, s), min(n, s + p)) for s, p, n in zip(start, size, array.shape))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
    if all(sl.stop > sl.start for sl in src):
        out[dst] = array[src]
    return out


def _intensity_transforms(aug: AugmentConfig):
    from monai.transforms import Compose, RandAdjustContrast, RandGaussianNoise, RandScaleIntensity, RandShiftIntensity

    p = aug.intensity_prob
    return Compose([
        RandScaleIntensity(factors=aug.intensity_scale, prob=p),
        RandShiftIntensity(offsets=aug.intensity_shift, prob=p),
        RandAdjustContrast(prob=p, gamma=aug.gamma),
        RandGaussianNoise(prob=p, std=aug.noise_std),
    ])


def collate_patches(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks images (B, 1, D, H, W) and instances (B, D, H, W); lesion lists stay per item."""
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "instances": torch.stack([b["instances"] for b in batch]),
        "lesions": [b["lesions"] for b in batch],
        "case_id": [b["case_id"] for b in batch],
        "centre": [b["centre"] for b in batch],
        "lesion_centred": torch.tensor([b["lesion_centred"] for b in batch]),
        "enhancement": [b["enhancement"] for b in batch],
    }


def instance_masks(instances: torch.Tensor, lesions: list[dict[str, Any]]) -> torch.Tensor:
    """Boolean masks [K, D, H, W], one per listed lesion, in list order (for the matcher's targets)."""
    if not lesions:
        return torch.zeros((0, *instances.shape), dtype=torch.bool)
    labels = torch.tensor([les["label"] for les in lesions], dtype=instances.dtype)
    return instances[None] == labels.view(-1, *([1] * instances.dim()))


def _benchmark(argv: list[str] | None = None) -> int:
    """python -m malenia.data.sampler DATASET: seconds to cache the split and per patch (one thread)."""
    import argparse
    import resource
    import time

    p = argparse.ArgumentParser(prog="python -m malenia.data.sampler", description=_benchmark.__doc__)
    p.add_argument("dataset")
    p.add_argument("--split", default="train")
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--spacing", type=float, default=1.5)
    p.add_argument("--items", type=int, default=40)
    p.add_argument("--no-augment", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import monai.transforms  # noqa: F401  (a one-off import of several seconds, not part of the figures)

    t0 = time.perf_counter()
    data = LesionPatchDataset(args.dataset, args.split, (args.patch,) * 3, Preprocessor((args.spacing,) * 3, clip=(-1000, 1000),
                              normalization="window"), samples_per_epoch=args.items,
                              augment=None if args.no_augment else AugmentConfig())
    t1 = time.perf_counter()
    data[0]
    t2 = time.perf_counter()
    centred = sum(data[i]["lesion_centred"] for i in range(1, args.items))
    t3 = time.perf_counter()
    shapes = sorted({c.image.shape for c in data.cases})
    print(f"cases {len(data.cases)} (model-grid shapes {shapes[0]}..{shapes[-1]}); cache {t1 - t0:.2f} s "
          f"({(t1 - t0) / len(data.cases):.2f} s/case); first item {t2 - t1:.2f} s; "
          f"per {args.patch}^3 patch {(t3 - t2) / max(1, args.items - 1) * 1000:.1f} ms; "
          f"lesion-centred {centred}/{args.items - 1}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(_benchmark())
