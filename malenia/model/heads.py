"""Segmentation heads (paper Eqs. 4-5): Q_m, Q_t, K projections and the ensembled final masks.

Mask = MLP(β1·Mask_m + β2·Mask_t). The paper writes Mask as an [H·W·D, N] map and applies
the MLP to it; here the MLP acts per voxel across the N token channels (1x1x1 convolutions),
so a token's mask can be refined by what the other tokens claim at that voxel (e.g. two
tokens competing for one lesion). It is residual, x + MLP(x), with a small last layer, so
training starts from the plain ensemble.
"""

from __future__ import annotations

import torch
from torch import nn

from malenia.model.config import MaleniaConfig
from malenia.model.layers import token_masks


class MaskHeads(nn.Module):
    """`forward(m̂ [B,N,C], t̂ [B,N,C], F4 [B,C4,D,H,W])` → final mask logits [B, N, D, H, W]."""

    def __init__(self, cfg: MaleniaConfig, full_res_channels: int):
        super().__init__()
        c, n = cfg.embed_dim, cfg.num_tokens
        self.branches = cfg.branches
        self.beta_mask, self.beta_text = cfg.beta_mask, cfg.beta_text
        self.phi_k = nn.Conv3d(full_res_channels, c, 1)
        self.phi_m = nn.Linear(c, c) if cfg.branches in ("both", "mask") else None
        self.phi_t = nn.Linear(c, c) if cfg.branches in ("both", "text") else None
        self.scale = c**-0.5
        self.ensemble = nn.Sequential(nn.Conv3d(n, n, 1), nn.GELU(), nn.Conv3d(n, n, 1))
        with torch.no_grad():
            self.ensemble[2].weight.mul_(0.1)
            self.ensemble[2].bias.zero_()

    def _masks(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return token_masks(q * self.scale, k)

    def forward(self, m_hat: torch.Tensor, t_hat: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        k = self.phi_k(f4)
        if self.branches == "mask":
            x = self._masks(self.phi_m(m_hat), k)
        elif self.branches == "text":
            x = self._masks(self.phi_t(t_hat), k)
        else:
            # one einsum over the weighted query sum: β1·Q_m·K + β2·Q_t·K = (β1·Q_m + β2·Q_t)·K
            x = self._masks(self.beta_mask * self.phi_m(m_hat) + self.beta_text * self.phi_t(t_hat), k)
        return x + self.ensemble(x)
