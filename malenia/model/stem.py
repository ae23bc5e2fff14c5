"""The network's input channels: HU windows cut from the one normalised CT channel.

Preprocessing maps `hu_window` linearly to [0, 1] (malenia.data.preprocess). With `input_windows`, a fixed,
parameter-free stem turns that channel into one channel per window, each that window clipped and mapped to
[0, 1], as radiologists read a chest CT in a soft-tissue and a lung window. A channel is an affine function
of the input clamped to [0, 1], so the stem is exact inside `hu_window`, and air (0, also the padding) stays 0
in every channel whose window starts at or above the window's low end (MaleniaConfig allows no other).
"""

from __future__ import annotations

import torch
from torch import nn

from malenia.model.config import MaleniaConfig


class WindowStem(nn.Module):
    """[B, 1, D, H, W] in hu_window's [0, 1] scale → [B, len(input_windows), D, H, W]."""

    def __init__(self, cfg: MaleniaConfig):
        super().__init__()
        lo, hi = cfg.hu_window
        width = torch.tensor([w_hi - w_lo for w_lo, w_hi in cfg.input_windows], dtype=torch.float64)
        start = torch.tensor([w_lo for w_lo, _ in cfg.input_windows], dtype=torch.float64)
        # channel c = clamp((hu - start_c) / width_c, 0, 1) with hu = lo + x (hi - lo)
        shape = (1, len(cfg.input_windows), 1, 1, 1)
        self.register_buffer("scale", ((hi - lo) / width).float().view(shape), persistent=False)
        self.register_buffer("shift", ((lo - start) / width).float().view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.scale.to(x.dtype) + self.shift.to(x.dtype), 0.0, 1.0)
