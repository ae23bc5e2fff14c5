"""Which bank rows a token's attribute slots draw from, and how tokens rank them.

A token has 8 attribute slots, one per aspect (malenia.aspects.ASPECTS order). In the
multi-positive model slot a chooses among the bank rows of aspect a. The single-positive
ablation describes a lesion by its whole report paragraph: those bank rows carry aspect
REPORT_ASPECT (-1) and every slot chooses among them.
"""

from __future__ import annotations

import torch

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
    b, n = sim.shape[:2]
    rows = torch.full((b, n, NUM_SLOTS, k), -1, dtype=torch.int64, device=sim.device)
    scores = torch.zeros((b, n, NUM_SLOTS, k), dtype=sim.dtype, device=sim.device)
    bank_sim = sim[..., 1:]
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for s, aspect in enumerate(slot_aspects(multi_positive)):
        if aspect not in cache:
            cols = (bank_aspects == aspect).nonzero().flatten()
            if cols.numel() == 0:
                continue
            p = bank_sim[..., cols].softmax(-1)
            top = p.topk(min(k, cols.numel()), dim=-1)
            cache[aspect] = (cols[top.indices], top.values)
        r, v = cache[aspect]
        rows[:, :, s, : r.shape[-1]] = r
        scores[:, :, s, : v.shape[-1]] = v
    return rows, scores
