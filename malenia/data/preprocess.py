"""Model-space preprocessing of a CT volume and its exact inverse for outputs.

Steps, in order:
  1. reorient to the canonical orientation LPS (sitk.DICOMOrient): an exact axis permutation /
     flip, so the array (z, y, x) has x growing toward the patient's left, y toward posterior,
     z toward superior (ITK's native frame; an axial slice `array[z]` shows the patient's right
     on the image's left, as radiologists view it). Oblique scans keep their small obliquity in
     the grid's direction; nothing is interpolated for it;
  2. resample to the model spacing (linear for HU after a Gaussian anti-aliasing blur when an
     axis gets coarser; nearest neighbour for labels). The new grid covers the same field of
     view: its outer voxel corners coincide with the input's at the first corner and the size is
     round(extent / spacing);
  3. clip HU to a window and normalise: "zscore" (x - mean) / std, as nnU-Net's CT scheme with the
     dataset's foreground statistics, or "window" mapping the clip window linearly to [0, 1].

`PreparedVolume` remembers both grids; `to_original` resamples a model output (labels: nearest
neighbour; probabilities: linear) from the model grid straight onto the input's exact grid, so
orientation and spacing are undone in one interpolation and the input's origin, spacing and
direction are copied bit for bit. When the model spacing equals the input's, prepare followed by
to_original returns the identical voxels.

Spacing tuples in this module are (z, y, x) like the arrays, as in nnU-Net plans; SimpleITK's
own getters are (x, y, z).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import SimpleITK as sitk

from malenia.data.geometry import Grid
from malenia.errors import InputError

CANONICAL_ORIENTATION = "LPS"
NORMALIZATIONS = ("zscore", "window")


@dataclass(frozen=True)
class Preprocessor:
    """Target spacing (z, y, x) mm, HU clip window and normalisation; the model config supplies them."""

    target_spacing: tuple[float, float, float]
    clip: tuple[float, float] = (-1000.0, 1000.0)
    normalization: str = "zscore"
    mean: float = 0.0  # zscore only: dataset foreground HU mean / std (after clipping)
    std: float = 1.0
    anti_alias: bool = True

    def __post_init__(self) -> None:
        spacing = self.target_spacing
        if isinstance(spacing, (int, float)):
            spacing = (float(spacing),) * 3
        spacing = tuple(float(v) for v in spacing)
        object.__setattr__(self, "target_spacing", spacing)
        object.__setattr__(self, "clip", tuple(float(v) for v in self.clip))
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"target_spacing must be three positive numbers (z, y, x), got {self.target_spacing}")
        if self.clip[0] >= self.clip[1]:
            raise ValueError(f"clip window must be (low, high) with low < high, got {self.clip}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.normalization == "zscore" and not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @staticmethod
    def from_dict(obj: dict[str, Any]) -> "Preprocessor":
        return Preprocessor(**obj)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- intensity ---------------------------------------------------------------------------

    def normalize(self, hu: np.ndarray) -> np.ndarray:
        lo, hi = self.clip
        x = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
        if self.normalization == "zscore":
            return ((x - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32, copy=False)
        return ((x - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """HU from normalised values (exact inside the clip window)."""
        x = np.asarray(values, dtype=np.float32)
        if self.normalization == "zscore":
            return x * np.float32(self.std) + np.float32(self.mean)
        lo, hi = self.clip
        return x * np.float32(hi - lo) + np.float32(lo)

    @property
    def background_value(self) -> float:
        """The normalised value of air (the clip window's low end): padding for patches."""
        return float(self.normalize(np.array([self.clip[0]]))[0])

    # -- geometry ----------------------------------------------------------------------------

    def target_grid(self, oriented: Grid) -> Grid:
        new_spacing = np.array(list(reversed(self.target_spacing)))
        old_spacing = np.array(oriented.spacing)
        if np.allclose(new_spacing, old_spacing, rtol=1e-6, atol=0):
            return oriented
        # the synthesis bases' size, round(extent / spacing); the origin moves so that the outer corner stays put
        origin = np.array(oriented.origin) + oriented.direction_matrix @ ((new_spacing - old_spacing) / 2.0)
        return replace(oriented.with_spacing(new_spacing), origin=tuple(float(v) for v in origin))

    def prepare(self, image: sitk.Image) -> "PreparedVolume":
        """Canonical orientation, model spacing, clipped and normalised float32 array (z, y, x)."""
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("preprocessing needs a 3D scalar image")
        original = Grid.of(image)
        oriented = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
        grid = self.target_grid(Grid.of(oriented))
        if grid != Grid.of(oriented):
            source = sitk.Cast(oriented, sitk.sitkFloat32)
            if self.anti_alias:
                source = _anti_alias(source, grid)
            oriented = grid.resample(source, sitk.sitkLinear, default=self.clip[0])
        array = self.normalize(sitk.GetArrayViewFromImage(oriented))
        return PreparedVolume(array=np.ascontiguousarray(array), grid=grid, original=original, preprocessor=self)


def preprocessor_for(cfg) -> Preprocessor:
    """The preprocessing a model config (malenia.model.config) defines: its spacing, its HU window
    mapped to [0, 1]. Training and inference both take it from here."""
    return Preprocessor(target_spacing=tuple(cfg.target_spacing), clip=tuple(cfg.hu_window), normalization="window")


@dataclass
class PreparedVolume:
    """A normalised array on the model grid, and what is needed to map results back."""

    array: np.ndarray  # float32 (z, y, x), canonical orientation, model spacing
    grid: Grid  # geometry of `array`
    original: Grid  # geometry of the input image
    preprocessor: Preprocessor | None = field(default=None, repr=False)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.grid.spacing_zyx

    def image(self) -> sitk.Image:
        """The prepared array as a SimpleITK image on the model grid."""
        return self.grid.image_from_array(self.array)

    def to_original(self, array: np.ndarray, is_label: bool = True) -> sitk.Image:
        """A model-grid array (z, y, x) or (C, z, y, x) back on the input's exact grid.

        Labels use nearest neighbour and keep their integer type; anything else is linearly
        interpolated as float32 (C channels come back as a vector image).
        """
        array = np.asarray(array)
        vector = array.ndim == 4
        spatial = array.shape[1:] if vector else array.shape
        if spatial != self.grid.shape_zyx:
            raise ValueError(f"array shape {array.shape} does not match the model grid {self.grid.shape_zyx} (z, y, x)")
        if vector:
            array = np.moveaxis(array, 0, -1)
        if is_label:
            if vector:
                raise ValueError("label maps are single-channel")
            if array.dtype == bool:
                array = array.astype(np.uint8)
            if array.dtype.kind not in "iu":
                raise ValueError(f"label array must be integer, got {array.dtype}")
            if array.dtype.itemsize == 8:
                array = array.astype(np.int32)
        else:
            array = array.astype(np.float32, copy=False)
        source = self.grid.image_from_array(np.ascontiguousarray(array), vector=vector)
        out = self.original.resample(source, sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
        return self.original.apply_to(out)  # bit-exact header, not the resampler's float round trip

    def to_prepared(self, image: sitk.Image, is_label: bool = True) -> np.ndarray:
        """An image on the input's grid (e.g. its lesion or organ labels) as a model-grid array."""
        mismatch = self.original.mismatch(Grid.of(image))
        if mismatch:
            raise InputError(f"image does not lie on the prepared volume's input grid ({mismatch})")
        if is_label:
            out = self.grid.resample(image, sitk.sitkNearestNeighbor)
        else:
            source = sitk.Cast(image, sitk.sitkFloat32)
            if self.preprocessor is None or self.preprocessor.anti_alias:
                source = _anti_alias(source, self.grid)
            out = self.grid.resample(source, sitk.sitkLinear)
        return sitk.GetArrayFromImage(out)

    def to_dict(self) -> dict[str, Any]:
        """The geometry (not the array), e.g. to undo preprocessing in another process."""
        return {
            "grid": self.grid.to_dict(),
            "original": self.original.to_dict(),
            "preprocessor": self.preprocessor.to_dict() if self.preprocessor else None,
        }


def _anti_alias(image: sitk.Image, grid: Grid) -> sitk.Image:
    """Gaussian blur before downsampling: sigma = (factor - 1) / 2 input voxels per coarser axis."""
    old = np.array(image.GetSpacing())
    factor = np.array(grid.spacing) / old
    sigma_mm = np.where(factor > 1.0 + 1e-6, (factor - 1.0) / 2.0 * old, 0.0)
    if not np.any(sigma_mm > 0):
        return image
    return sitk.DiscreteGaussian(image, [float(s * s) for s in sigma_mm], 32, 0.01, True)
