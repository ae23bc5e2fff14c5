"""Small building blocks shared by the transformer decoder, CMKI and heads (Mask2Former's layer forms)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (Mask2Former's MLP)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class AttentionLayer(nn.Module):
    """Post-norm residual attention: norm(x + Attn(x + x_pos, kv + kv_pos, kv))."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor,
        x_pos: torch.Tensor | None = None,
        kv_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = x if x_pos is None else x + x_pos
        k = kv if kv_pos is None else kv + kv_pos
        out = self.attn(q, k, kv, attn_mask=attn_mask, need_weights=False)[0]
        return self.norm(x + self.dropout(out))


class FFNLayer(nn.Module):
    """Post-norm residual feed-forward layer."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.net(x)))


def sine_position_3d(shape: tuple[int, int, int], dim: int, device: torch.device) -> torch.Tensor:
    """DETR's normalised sine position encoding extended to (z, y, x): [z*y*x, dim].

    Each axis gets an equal even share of the channels; any remainder stays zero. Positions
    are normalised to [0, 2π] so the encoding means "where in the patch", whatever its size.
    """
    per_axis = (dim // 6) * 2
    out = torch.zeros(*shape, dim, device=device)
    if per_axis == 0:
        return out.reshape(-1, dim)
    freqs = 10000 ** (2 * (torch.arange(per_axis, device=device) // 2) / per_axis)
    for axis, n in enumerate(shape):
        pos = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n * 2 * math.pi
        enc = pos[:, None] / freqs
        enc = torch.stack((enc[:, 0::2].sin(), enc[:, 1::2].cos()), dim=2).flatten(1)
        view = [1, 1, 1, per_axis]
        view[axis] = n
        out[..., axis * per_axis : (axis + 1) * per_axis] = enc.view(view).expand(*shape, per_axis)
    return out.reshape(-1, dim)


def token_masks(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mask logits q [B, N, C] · k [B, C, D, H, W] → [B, N, D, H, W], computed in k's memory layout.

    With k channels-last (the layout `--precision auto` trains in), its memory is [B, D·H·W, C]: the product runs
    on that view, [B, P, C] @ [B, C, N], and comes out channels-last itself, so neither k nor the result is
    converted. An einsum over the channels-first view made autograd turn k's gradient ([B, 96, 64³] at full
    resolution) back into channels-last in every backward, 300 ms of a bfloat16 CPU step at batch 2 in the
    profile; the step is about 10 % shorter without it (docs/training.md, "What a step dispatches"). The values
    are the einsum's up to rounding."""
    b, c, d, h, w = k.shape
    if c > 1 and k.is_contiguous(memory_format=torch.channels_last_3d):
        flat = k.permute(0, 2, 3, 4, 1).reshape(b, d * h * w, c)  # a view, no copy
        return torch.bmm(flat, q.transpose(1, 2)).view(b, d, h, w, -1).permute(0, 4, 1, 2, 3)
    return torch.einsum("bnc,bczyx->bnzyx", q, k)
