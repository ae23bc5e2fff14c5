"""Small building blocks shared by the transformer decoder, CMKI and heads (Mask2Former's layer forms)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
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
    """Post-norm residual attention: norm(x + Attn(x + x_pos, kv + kv_pos, kv)).

    `allowed` [B, Nq, Nk] (True: the query may attend to that key) masks the attention; every row needs one True.
    The parameters are nn.MultiheadAttention's (`attn`, so model folders keep their keys); `multi_head_attention`
    computes its batch-first forward in fewer operators."""

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
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = x if x_pos is None else x + x_pos
        if kv is x and kv_pos is x_pos:  # self-attention: the keys are the queries, projected once
            k = q
        else:
            k = kv if kv_pos is None else kv + kv_pos
        out = multi_head_attention(self.attn, q, k, kv, allowed)
        return self.norm(x + self.dropout(out))


def multi_head_attention(mha: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         allowed: torch.Tensor | None = None) -> torch.Tensor:
    """`mha(q, k, v, attn_mask=~allowed, need_weights=False)[0]` for batch-first q [B, Nq, C], k and v [B, Nk, C],
    equal up to rounding, in about a third of the operators.

    Why not nn.MultiheadAttention itself: for distinct q, k and v it projects with slices of its packed weight, and
    autocast casts a parameter to bfloat16 once per forward but a slice of one at every use: 11 casts a call, 108
    of the 911 operators a bfloat16 training step's forward dispatched at batch 2 (with its mask handling, 224).
    Here the packed weight, its bias and each distinct input (self-attention's queries and keys are one) are cast
    once, and the projections use views of the cast weight; the mask broadcasts over the heads instead of being
    repeated for each."""
    b, nq, c = q.shape
    h = mha.num_heads
    w, bias = mha.in_proj_weight, mha.in_proj_bias

    if torch.is_autocast_enabled(q.device.type):  # cast once what autocast would cast at every use
        dtype = torch.get_autocast_dtype(q.device.type)
        w, bias = w.to(dtype), bias.to(dtype)
        same = k is q
        q, v = q.to(dtype), v.to(dtype)
        k = q if same else k.to(dtype)
    ws, bs = w.chunk(3), bias.chunk(3)  # views of the packed weight

    def heads(x: torch.Tensor, part: int) -> torch.Tensor:  # [B, L, C] -> [B, h, L, C/h]
        return F.linear(x, ws[part], bs[part]).unflatten(-1, (h, c // h)).transpose(1, 2)

    mask = None if allowed is None else allowed.unsqueeze(1)
    out = F.scaled_dot_product_attention(heads(q, 0), heads(k, 1), heads(v, 2), attn_mask=mask,
                                         dropout_p=mha.dropout if mha.training else 0.0)
    return F.linear(out.transpose(1, 2).reshape(b, nq, c), mha.out_proj.weight, mha.out_proj.bias)


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
    A constant of its arguments, made once per shape and device (about 100 operators each time otherwise);
    the tensor is shared, so callers must not modify it in place.
    """
    return _sine_position_3d(tuple(int(n) for n in shape), int(dim), torch.device(device))


@functools.lru_cache(maxsize=32)
def _sine_position_3d(shape: tuple[int, int, int], dim: int, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():  # an ordinary tensor, whichever mode asked first
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
