"""Text side of the model: attribute-bank embeddings → C, the "no lesion" embedding t0, the temperature.

The text encoder itself is not part of the network: the model receives the bank's raw
encoder embeddings [R, Dt] (cached at training time, stored with the model for inference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from malenia.model.config import MaleniaConfig
from malenia.model.layers import MLP

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: keeps the learnable temperature from collapsing


class TextProjection(nn.Module):
    def __init__(self, cfg: MaleniaConfig):
        super().__init__()
        self.mlp = MLP(cfg.text_dim, cfg.embed_dim, cfg.embed_dim, 2)
        self.t0 = nn.Parameter(torch.randn(cfg.embed_dim) * cfg.embed_dim**-0.5)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature_init)))

    @property
    def logit_scale(self) -> torch.Tensor:
        """1/τ of the similarity S(m, t) = m·t / τ."""
        return self.log_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(self, bank: torch.Tensor) -> torch.Tensor:
        """[R, Dt] → candidates [R+1, C]: row 0 is t0, row r+1 is bank row r."""
        return torch.cat((self.t0.unsqueeze(0), self.mlp(bank)), 0)

    def similarity(self, tokens: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Cosine similarity over τ: tokens [B,N,C] × candidates [R+1,C] → logits [B,N,R+1]."""
        return self.logit_scale * F.normalize(tokens, dim=-1) @ F.normalize(candidates, dim=-1).T
