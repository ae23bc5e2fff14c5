"""Cross-Modal Knowledge Injection (paper Sec. 3.2, Eq. 3).

Each mask token gets one text embedding t_i: its 8 attribute embeddings (one per aspect)
concatenated and mapped by an MLP. Training uses the matched lesion's ground-truth
descriptions; an aspect with several positives (e.g. two specific features) contributes their
mean, so the concatenation keeps a fixed width; an aspect without a description, and every
slot of an unmatched token, uses t0 ("no lesion"). Inference uses each aspect's best-matching
bank row. Then mask tokens and text embeddings attend to each other (two-way cross-attention)
and to themselves.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from malenia.model.attributes import NUM_SLOTS, slot_aspects
from malenia.model.config import MaleniaConfig
from malenia.model.layers import MLP, AttentionLayer
from malenia.model.matcher import Match
from malenia.model.targets import LesionTargets, from_host


class CMKILayer(nn.Module):
    """One round of Eq. 3. A side whose output no head reads (single-branch ablations) is not built."""

    def __init__(self, cfg: MaleniaConfig, mask_side: bool = True, text_side: bool = True):
        super().__init__()
        c, h, p = cfg.embed_dim, cfg.num_heads, cfg.dropout
        if mask_side:
            self.cross_m = AttentionLayer(c, h, p)  # mask tokens query the text embeddings
            self.self_m = AttentionLayer(c, h, p)
        if text_side:
            self.cross_t = AttentionLayer(c, h, p)  # text embeddings query the mask tokens
            self.self_t = AttentionLayer(c, h, p)
        self.mask_side, self.text_side = mask_side, text_side

    def forward(self, m: torch.Tensor, t: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m_hat = t_hat = None
        if self.mask_side:
            m_cross = self.cross_m(m, t, pos, pos)  # norm(m + CrossAttn(q_m, k_t, v_t))
            m_hat = self.self_m(m_cross, m_cross, pos, pos)
        if self.text_side:
            t_cross = self.cross_t(t, m, pos, pos)  # norm(t + CrossAttn(q_t, k_m, v_m))
            t_hat = self.self_t(t_cross, t_cross, pos, pos)
        return m_hat, t_hat


class KnowledgeInjection(nn.Module):
    """`forward(tokens [B,N,C], slots [B,N,8,C])` → (m̂ [B,N,C], t̂ [B,N,C])."""

    def __init__(self, cfg: MaleniaConfig):
        super().__init__()
        c = cfg.embed_dim
        self.compose = MLP(NUM_SLOTS * c, c, c, 2)
        # Token i and its text embedding t_i share a position code so that each can find the other.
        self.pos = nn.Parameter(torch.randn(cfg.num_tokens, c)) if cfg.use_cmki else None
        n = cfg.cmki_layers if cfg.use_cmki else 0
        last = dict(mask_side=cfg.branches != "text", text_side=cfg.branches != "mask")
        self.layers = nn.ModuleList(CMKILayer(cfg, **(last if i == n - 1 else {})) for i in range(n))

    def forward(self, tokens: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, t = tokens, self.compose(slots.flatten(2))
        for layer in self.layers:
            m, t = layer(m, t, self.pos.unsqueeze(0))
        return m, t


def training_slot_weights(
    matches: list[Match],
    targets: list[LesionTargets],
    bank_aspects: torch.Tensor | list[int],
    num_tokens: int,
    multi_positive: bool,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """[B, N, 8, R+1] weights over [t0, bank] that build each token's slots from its matched lesion.

    Filled in numpy and copied once: per matched lesion and slot a torch index_put costs an operator dispatch on
    the host, a numpy assignment a fraction of it (the step is bound by dispatch on a GPU, docs/training.md).
    `bank_aspects` as a host list (the network keeps one) saves reading the device's copy back at every step;
    `device` defaults to the tensor's."""
    if isinstance(bank_aspects, torch.Tensor):
        device = bank_aspects.device if device is None else device
        bank_aspects = bank_aspects.tolist()
    aspects, r = bank_aspects, len(bank_aspects)
    w = np.zeros((len(targets), num_tokens, NUM_SLOTS, r + 1), np.float32)
    w[..., 0] = 1.0  # t0 unless the token is matched and the aspect described
    slot_of = slot_aspects(multi_positive)
    for b, ((tok, les), tgt) in enumerate(zip(matches, targets)):
        for j, k in zip(tok.tolist(), les.tolist()):
            rows = tgt.positives[k] if multi_positive else [tgt.report_rows[k]]
            for s, aspect in enumerate(slot_of):
                chosen = sorted({row for row in rows if aspects[row] == aspect})
                if chosen:
                    w[b, j, s, 0] = 0.0
                    w[b, j, s, [row + 1 for row in chosen]] = 1.0 / len(chosen)
    return from_host(w, device if device is not None else "cpu")


def inference_slot_weights(best_rows: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """best_rows [B, N, 8] (bank rows, -1 for none) → one-hot weights [B, N, 8, R+1] (t0 where none)."""
    return torch.nn.functional.one_hot(best_rows + 1, num_candidates).float()
