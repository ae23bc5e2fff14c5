"""Optimiser and learning-rate schedule: AdamW with linear warm-up then cosine decay (paper Sec. 4.1).

The schedule is MONAI's `WarmupCosineSchedule` (a LambdaLR whose state is plain numbers, so it is
checkpointed as JSON).
"""

from __future__ import annotations

import torch


def build_optimizer(params, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    # The paper's "momentum 0.9" is AdamW's beta1.
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay, betas=betas)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    end_lr_fraction: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    from monai.optimizers import WarmupCosineSchedule

    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps - 1) if total_steps > 1 else 0
    base_lr = optimizer.param_groups[0]["lr"]
    return WarmupCosineSchedule(optimizer, warmup_steps=warmup_steps, t_total=total_steps,
                                end_lr=base_lr * end_lr_fraction, warmup_multiplier=0.0)
