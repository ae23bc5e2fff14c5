"""Dense lesion head with deep supervision: a one-channel "lesion" logit on the backbone decoder.

Not in the paper (config `dense_head_levels = 0` keeps the paper's network). The paper's masks come
only from 16 mask tokens, each supervised on its Hungarian-matched lesion. On the compute here that
signal is too sparse to start learning: a lesion fills ~0.1-0.5 % of a 64³ patch, and the tokens'
masks stayed empty for the first ~400 CPU steps of every run (docs/training.md). nnU-Net learns the
same lesions from a per-voxel head on every decoder resolution with Dice + BCE, the Dice taken over
the whole batch so that lesion-free patches do not pull it to zero. This module is that head: a
1x1x1 convolution on the last `levels` decoder stages (full resolution first), trained on the union
of the lesions. It gives the backbone a dense gradient from the first step; the tokens, CMKI and the
attribute alignment then read features that already separate lesion from background.

At inference (`foreground_source = "dense"`) the full-resolution head is the foreground probability
that lesions are cut from; the tokens still describe each lesion (attributes, disease).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from malenia.model.targets import from_host, stack_lesion_masks


PRIOR = 0.01  # initial lesion probability of every voxel: about the lesion share of a lesion-centred patch


class DenseLesionHead(nn.Module):
    """`forward(decoder_features)` → logits [B, 1, d, h, w] per level, full resolution first."""

    def __init__(self, feature_channels: list[int], levels: int):
        super().__init__()
        if not 1 <= levels <= len(feature_channels):
            raise ValueError(f"dense_head_levels must be in 1..{len(feature_channels)}, got {levels}")
        self.levels = levels
        # feature_channels is coarsest first; the head reads the finest `levels` of them
        self.convs = nn.ModuleList(nn.Conv3d(c, 1, 1) for c in reversed(feature_channels[-levels:]))
        # Start at the lesion prior (RetinaNet's initialisation): with a zero bias every voxel starts at
        # p = 0.5, and the first hundreds of steps only push the background down (the "collapse to
        # background" seen in every earlier run) before any lesion can rise above it.
        with torch.no_grad():
            for conv in self.convs:
                conv.bias.fill_(-math.log((1 - PRIOR) / PRIOR))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        finest = feats[::-1][: self.levels]
        return [conv(f) for conv, f in zip(self.convs, finest)]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by `scale` on its way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` for the forward pass; only `scale` of the gradient flows back into what produced it."""
    if scale == 1.0 or not torch.is_grad_enabled():
        return x
    return x.detach() if scale == 0.0 else _ScaleGrad.apply(x, scale)


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights: 1, 1/2, 1/4, ... normalised to sum 1."""
    w = [0.5**i for i in range(levels)]
    return [v / sum(w) for v in w]


def dense_loss(logits: list[torch.Tensor], union: torch.Tensor) -> torch.Tensor:
    """Deep-supervised BCE + batch Dice of the dense head against the lesion union.

    logits: per level [B, 1, d, h, w] (level 0 at full resolution on the image grid, the others on the
    padded grid at 1/2, 1/4, ...); union: bool/float [B, D, H, W] on the image grid. Coarser targets are
    max-pooled, so a lesion smaller than a coarse voxel still marks it (nnU-Net's nearest-neighbour
    down-sampling would drop the small lesions this head is for).
    """
    gt = union.float()[:, None]
    total = logits[0].new_zeros((), dtype=torch.float32)
    for k, (lg, w) in enumerate(zip(logits, deep_supervision_weights(len(logits)))):
        target = gt
        if k:
            f = 2**k
            pad = [s * f - g for s, g in zip(lg.shape[2:], gt.shape[2:])]
            target = F.max_pool3d(F.pad(gt, (0, pad[2], 0, pad[1], 0, pad[0])), f)
        total = total + w * _bce_batch_dice(lg.float(), target)
    return total


def lesion_dice_loss(logits: torch.Tensor, lesions: list[torch.Tensor],
                     padded: torch.Tensor | None = None) -> torch.Tensor:
    """Blob loss's lesion-wise term (Kofler et al. 2023): 1 - Dice per lesion, averaged over all lesions.

    logits: [B, 1, D, H, W] at full resolution; lesions: per image a bool [K, D, H, W] (K may be 0); `padded`:
    the same masks as malenia.model.targets.stack_lesion_masks gives them, when the caller has them already.
    Lesion k's Dice is taken with the other lesions of its image masked out of the prediction, so a
    found neighbour neither helps nor hurts it, while false positives elsewhere still count. With
    t_k inside the union U: sum(p * (1 - other_k)) = sum(p) - sum(p * U) + sum(p * t_k). All images at once
    (a loop over images was about ten operators each to dispatch); padding rows are left out of the mean.
    """
    counts = [len(t) for t in lesions]
    if not sum(counts):
        return logits.float().sum() * 0.0
    t = stack_lesion_masks(lesions, logits.device) if padded is None else padded  # [B, Kmax, V]
    flat = logits.float().flatten(1).sigmoid()  # [B, V]
    inter = torch.bmm(t, flat[:, :, None])[..., 0]  # [B, Kmax]
    masked_sum = (flat.sum(1) - (t.amax(1) * flat).sum(1))[:, None] + inter
    terms = 1 - (2 * inter + 1) / (masked_sum + t.sum(2) + 1)
    real = from_host(np.arange(t.shape[1])[None, :] < np.array(counts)[:, None], logits.device)
    return (terms * real).sum() / sum(counts)


def _bce_batch_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid()
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice
