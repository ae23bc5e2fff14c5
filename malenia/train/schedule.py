"""Optimiser and learning-rate schedule: AdamW with linear warm-up then cosine decay (paper Sec. 4.1).

The schedule is MONAI's `WarmupCosineSchedule` (a LambdaLR whose state is plain numbers, so it is
checkpointed as JSON).
"""

from __future__ import annotations

import math

import torch


def build_optimizer(params, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over parameters, or over parameter groups (dicts with "params" and optionally "lr")."""
    params = list(params)
    if params and isinstance(params[0], dict):
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
    else:
        groups = [{"params": [p for p in params if p.requires_grad]}]
    groups = [g for g in groups if g["params"]]
    # torch's fused AdamW, one kernel per parameter group and device, where it runs: on the CPU (single-tensor
    # otherwise, an operator per parameter and update term: 1 900 of a batch-2 step's 5 500) 20.6 -> 11.1 ms a step
    # here; on CUDA it replaces the multi-tensor path's launches. The same update up to rounding.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    # The paper's "momentum 0.9" is AdamW's beta1.
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused or None)


def parameter_groups(model: torch.nn.Module, lr: float, dense_head_lr_scale: float = 1.0,
                     own_rates: dict[str, float] | None = None) -> list[dict]:
    """One group at `lr`, the dense lesion head (if any) at `lr * dense_head_lr_scale`, and each parameter named
    in `own_rates` in a group of its own at `lr *` its factor.

    Why a faster head: Adam moves a weight by about the learning rate per step whatever the gradient, and
    the head must swing its logits by several units (from the lesion prior, p = 0.01, to above 0.5) on
    features of order one; at the network's rate that took hundreds of steps in which nothing was found.
    """
    own = [(model.get_parameter(name), factor) for name, factor in (own_rates or {}).items()]
    ids = {id(p) for p, _ in own}
    dense = [p for n, p in model.named_parameters() if n.startswith("dense.") and id(p) not in ids]
    ids |= {id(p) for p in dense}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": lr}]
    if dense:
        groups.append({"params": dense, "lr": lr * dense_head_lr_scale})
    groups += [{"params": [p], "lr": lr * factor} for p, factor in own]
    return groups


def freeze_input_channels(weight: torch.nn.Parameter, channels: int) -> None:
    """Zeroes the gradient of a convolution's first `channels` input channels (a gradient hook), so the optimiser
    leaves them where they are: a widening fine-tune adds input windows beside converged ones, and the new
    channels, starting at zero, need a rate (`new_window_lr_scale`) the old ones would not survive. Adam moves a
    weight by about its rate per step, so at the network's fine-tuning rate (1e-4) the new channels stayed under
    2 % of the old ones' size after 2 400 steps (docs/training.md, twenty-third round)."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:, :channels] = 0
        return grad

    weight.register_hook(hook)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    end_lr_fraction: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    from monai.optimizers import WarmupCosineSchedule

    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps - 1) if total_steps > 1 else 0
    base_lr = optimizer.param_groups[0]["lr"]
    return WarmupCosineSchedule(optimizer, warmup_steps=warmup_steps, t_total=total_steps,
                                end_lr=base_lr * end_lr_fraction, warmup_multiplier=0.0)


class WallClockSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Warm-up then cosine laid over a wall-time budget (`malenia train --minutes`): the learning rate is a
    function of the elapsed fraction of the budget, so a run ends annealed whatever its speed.

    The loop sets `fraction` (elapsed / budget, over every launch of a resumed run) before each `step()`.
    Warm-up: the first `warmup_steps` steps when given, else the first `warmup_fraction` of the time; the
    cosine then runs from the end of the warm-up time to 0 when the time is up. Its state is plain numbers
    (checkpointed as JSON).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_fraction: float = 0.0, warmup_steps: int | None = None):
        self.warmup_fraction = min(max(float(warmup_fraction), 0.0), 0.99)
        self.warmup_steps = int(warmup_steps) if warmup_steps else None
        self.fraction = 0.0
        super().__init__(optimizer)

    def factor(self) -> float:
        f = min(max(self.fraction, 0.0), 1.0)
        if self.warmup_steps:
            ramp, w = min(1.0, (self.last_epoch + 1) / self.warmup_steps), 0.0
        else:
            w = self.warmup_fraction
            if f < w:
                return f / w
            ramp = 1.0
        return ramp * 0.5 * (1.0 + math.cos(math.pi * (f - w) / (1.0 - w)))

    def get_lr(self) -> list[float]:
        return [base * self.factor() for base in self.base_lrs]
