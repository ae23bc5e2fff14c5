"""Ground truth for one image of a batch: lesion masks and the bank rows that describe each lesion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def from_host(values: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """What the host built from the matches (slot weights, positive sets, matched pairs), on `device`. On CUDA it
    goes through pinned memory without waiting: a copy from pageable memory would make the host wait until the
    GPU has worked through its queue."""
    host = torch.as_tensor(values)
    if torch.device(device).type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def stack_lesion_masks(masks: list[torch.Tensor], device: torch.device | str) -> torch.Tensor:
    """float [B, Kmax, P]: each image's lesion masks (bool [K, D, H, W], K may differ and be 0) flattened and padded
    with empty masks to the most lesions of the batch (at least 1). One concatenation and one indexed copy, however
    many images: a pad per image was two operators per image to dispatch (48 at batch 24, and this runs in the
    matching and the losses)."""
    counts = [len(m) for m in masks]
    kmax, points = max(max(counts), 1), int(np.prod(masks[0].shape[1:]))
    out = torch.zeros(len(masks) * kmax, points, dtype=torch.bool, device=device)
    if sum(counts):
        slots = np.concatenate([b * kmax + np.arange(k) for b, k in enumerate(counts)])
        out[from_host(slots, device)] = torch.cat([m.flatten(1) for m in masks if len(m)]).to(device)
    return out.view(len(masks), kmax, points).float()
