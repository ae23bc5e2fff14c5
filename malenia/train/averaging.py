"""Exponential moving average of the network's weights (`malenia train --ema DECAY`), and frozen parts
(`--freeze PREFIX`).

Why an average: the CPU rounds train at batch 2, so each step's gradient is noisy, and a continuation of a
good model drifts away from what it already did well (docs/training.md, thirty-second round: 70 minutes at
batch 2 lost real nodules that the GPU rounds at batch 24 kept). An average over the last ~1/(1 - decay)
steps is the usual remedy (Polyak averaging; e.g. the mean-teacher and EMA weights of many segmentation
recipes). It does not change the training trajectory: the optimiser steps the raw weights as before; the
average is what validation reads and what the model folder ships.

torch's own `AveragedModel` with `get_ema_multi_avg_fn` keeps the copy (foreach kernels: a few launches a
step on CUDA). Its first update copies the weights, so a fine-tune's average starts from the first step's
weights, near the parent's.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from malenia.errors import InputError


def weight_average(model: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """A running average of `model`'s parameters with the given decay per step (None: no average)."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise InputError(f"--ema must be between 0 and 1 (exclusive), e.g. 0.999, not {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


def averaged_network(average: AveragedModel | None, model: torch.nn.Module) -> torch.nn.Module:
    """The network validation reads and the model folder ships: the average once it holds a step, else `model`."""
    if average is None or int(average.n_averaged) == 0:
        return model
    return average.module


def freeze(model: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    """Stops training the parameters whose names start with one of `prefixes` (e.g. "backbone.encoder."); returns
    how many were frozen. The optimiser skips them and autograd computes no gradient through a frozen part that
    nothing trainable feeds, so a frozen encoder also shortens the backward."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({".".join(n.split(".")[:2]) + "." for n in names})
            raise InputError(f"--freeze {prefix!r} names no parameter; parts of this network: {', '.join(tops)}")
    frozen = 0
    for name, p in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen
