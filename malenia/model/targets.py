"""Ground truth for one image of a batch: lesion masks and the bank rows that describe each lesion."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from malenia.errors import InputError


@dataclass
class LesionTargets:
    """K lesions of one image (K may be 0).

    masks: bool [K, D, H, W] on the image grid (before padding).
    positives: per lesion, the attribute-bank rows of its descriptions, normally one per aspect
        ("specific_features" may contribute several).
    report_rows: per lesion, the bank row of its whole report paragraph; needed only by the
        single-positive ablation (config.multi_positive = False).
    """

    masks: torch.Tensor
    positives: list[list[int]]
    report_rows: list[int] | None = None

    def __post_init__(self) -> None:
        if self.masks.ndim != 4 or self.masks.dtype != torch.bool:
            raise InputError(f"lesion masks must be a bool tensor [K, D, H, W], got {self.masks.dtype} {tuple(self.masks.shape)}")
        k = self.masks.shape[0]
        if len(self.positives) != k:
            raise InputError(f"{k} lesion masks but positives for {len(self.positives)} lesions")
        if self.report_rows is not None and len(self.report_rows) != k:
            raise InputError(f"{k} lesion masks but report rows for {len(self.report_rows)} lesions")

    @property
    def num_lesions(self) -> int:
        return self.masks.shape[0]

    def to(self, device: torch.device | str) -> "LesionTargets":
        return LesionTargets(self.masks.to(device), self.positives, self.report_rows)
