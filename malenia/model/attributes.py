"""Which bank rows a token's attribute slots draw from, and how tokens rank them.

A token has 8 attribute slots, one per aspect (malenia.aspects.ASPECTS order). In the
multi-positive model slot a chooses among the bank rows of aspect a. The single-positive
ablation describes a lesion by its whole report paragraph: those bank rows carry aspect
REPORT_ASPECT (-1) and every slot chooses among them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from malenia.aspects import ASPECTS

NUM_SLOTS = len(ASPECTS)
REPORT_ASPECT = -1  # bank_aspects value of whole-report rows (single-positive ablation)


def slot_aspects(multi_positive: bool) -> list[int]:
    return list(range(NUM_SLOTS)) if multi_positive else [REPORT_ASPECT] * NUM_SLOTS


def rank_slots(
    sim: torch.Tensor, bank_aspects: torch.Tensor, k: int, multi_positive: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k bank rows per slot and their scores.

    sim: [B, N, R+1] similarity logits against [t0, bank]; the score of a row is its softmax
    probability among the rows of the slot's aspect (so a slot's scores sum to 1).
    Returns rows [B, N, 8, k] (bank row indices, -1 where the aspect has fewer than k rows)
    and scores [B, N, 8, k] (0 there).
    """
    slots = (torch.arange(NUM_SLOTS, device=sim.device) if multi_positive  # made on the device: no copy from the host
             else torch.full((NUM_SLOTS,), REPORT_ASPECT, device=sim.device))
    member = bank_aspects[None, :] == slots[:, None]  # [8, R]: the bank rows each slot chooses among
    bank_sim = sim[..., 1:].unsqueeze(-2)  # [B, N, 1, R]
    # one masked softmax over all slots (a loop over aspects looked up each one's rows with nonzero, a device
    # synchronisation per aspect); rows outside the slot's aspect get probability 0 and are never chosen
    p = bank_sim.masked_fill(~member, float("-inf")).softmax(-1)
    top = p.topk(min(k, p.shape[-1]), dim=-1)
    chosen = member.expand(p.shape).gather(-1, top.indices)  # False where the aspect has fewer rows (or none: NaN)
    rows = torch.where(chosen, top.indices, -1)
    scores = torch.where(chosen, top.values, 0)
    if rows.shape[-1] < k:  # a bank of fewer than k rows
        pad = (0, k - rows.shape[-1])
        rows, scores = F.pad(rows, pad, value=-1), F.pad(scores, pad, value=0)
    return rows, scores
