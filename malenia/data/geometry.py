"""Voxel grids: the geometry (size, spacing, origin, direction) that CT I/O and preprocessing keep exact."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

# Header rounding tolerated when two grids are called the same (NIfTI stores float32).
SPACING_RTOL = 1e-4
ORIGIN_ATOL_PER_MM = 1e-3  # times the largest spacing, at least this many mm
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Grid:
    """A voxel grid in SimpleITK order: size and spacing (x, y, z), origin, row-major direction."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @staticmethod
    def of(image: sitk.Image) -> "Grid":
        return Grid(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(reversed(self.size))  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.array(self.direction).reshape(3, 3)

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Physical LPS points (N, 3) of voxel indices (N, 3) given in (z, y, x) order."""
        ijk = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (N, 3) in (z, y, x) order of physical LPS points (N, 3)."""
        rel = np.asarray(points_lps, dtype=float) - np.asarray(self.origin)
        ijk = np.linalg.solve(self.direction_matrix, rel.T).T / np.asarray(self.spacing)
        return ijk[..., ::-1]

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_array(self, array: np.ndarray, vector: bool = False) -> sitk.Image:
        return self.apply_to(sitk.GetImageFromArray(array, isVector=vector))

    def resample(self, image: sitk.Image, interpolator: int, default: float = 0.0) -> sitk.Image:
        """`image` resampled onto this grid in physical space (nearest-neighbour extrapolation at the rim)."""
        f = sitk.ResampleImageFilter()
        f.SetSize(self.size)
        f.SetOutputSpacing(self.spacing)
        f.SetOutputOrigin(self.origin)
        f.SetOutputDirection(self.direction)
        f.SetInterpolator(interpolator)
        f.SetDefaultPixelValue(default)
        f.SetUseNearestNeighborExtrapolator(True)
        f.SetOutputPixelType(image.GetPixelID())
        return f.Execute(image)

    def with_spacing(self, spacing_xyz) -> "Grid":
        """Same origin (first voxel centre) and direction on a grid of `spacing_xyz`, size round(n * s / t)
        per axis: the synthesis bases' grid (the model's preprocessing, Preprocessor.target_grid, takes this
        size and moves the origin to keep the outer corner). Resample onto it with `resample`, whose
        nearest-neighbour extrapolation fills the last half voxel a finer grid can reach past the input's
        last centre."""
        spacing = tuple(float(t) for t in spacing_xyz)
        size = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(self.size, self.spacing, spacing))
        return Grid(size, spacing, self.origin, self.direction)

    def mismatch(self, other: "Grid") -> str:
        """'' when `other` is the same grid up to header rounding, else what differs."""
        if self.size != other.size:
            return f"size {other.size} vs {self.size}"
        spacing = np.array(self.spacing)
        if not np.allclose(other.spacing, spacing, rtol=SPACING_RTOL, atol=1e-5):
            return f"spacing {_fmt(other.spacing)} vs {_fmt(self.spacing)} mm"
        if not np.allclose(other.origin, self.origin, rtol=0, atol=ORIGIN_ATOL_PER_MM * max(1.0, spacing.max())):
            return f"origin {_fmt(other.origin)} vs {_fmt(self.origin)} mm"
        if not np.allclose(other.direction, self.direction, rtol=0, atol=DIRECTION_ATOL):
            return "direction differs"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(obj: dict[str, Any]) -> "Grid":
        return Grid(tuple(obj["size"]), tuple(obj["spacing"]), tuple(obj["origin"]), tuple(obj["direction"]))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
