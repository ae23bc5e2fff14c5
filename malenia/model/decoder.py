"""Transformer decoder: N mask tokens refined against the backbone's coarse-to-fine features (paper Eq. 1).

Block i attends to the features at 1/32, 1/16, 1/8 (round robin over the first three decoder
scales): masked cross-attention (Mask2Former), self-attention, feed-forward. After each block
the tokens give mask proposals at that block's own scale (sigmoid of token · feature), which
the criterion matches to the lesions and which mask the next block's cross-attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from malenia.model.config import MaleniaConfig
from malenia.model.layers import MLP, AttentionLayer, FFNLayer, sine_position_3d


class DecoderBlock(nn.Module):
    def __init__(self, cfg: MaleniaConfig):
        super().__init__()
        self.cross = AttentionLayer(cfg.embed_dim, cfg.num_heads, cfg.dropout)
        self.self_attn = AttentionLayer(cfg.embed_dim, cfg.num_heads, cfg.dropout)
        self.ffn = FFNLayer(cfg.embed_dim, cfg.ffn_dim, cfg.dropout)

    def forward(self, tokens, token_pos, memory, memory_pos, allowed=None):
        tokens = self.cross(tokens, memory, token_pos, memory_pos, allowed)
        tokens = self.self_attn(tokens, tokens, token_pos, token_pos)
        return self.ffn(tokens)


class TokenDecoder(nn.Module):
    """`forward(features)` → (tokens per block [B,N,C], proposal logits per block [B,N,d,h,w])."""

    def __init__(self, cfg: MaleniaConfig, feature_channels: list[int]):
        super().__init__()
        c = cfg.embed_dim
        self.masked_attention = cfg.masked_attention
        # Mask2Former's input projections: scale i features (C^i channels) to C for keys and proposals.
        self.proj = nn.ModuleList(nn.Conv3d(ch, c, 1) for ch in feature_channels[: cfg.num_blocks])
        self.level_embed = nn.Parameter(torch.zeros(cfg.num_blocks, c))
        self.query_feat = nn.Parameter(torch.zeros(cfg.num_tokens, c))
        self.query_pos = nn.Parameter(torch.zeros(cfg.num_tokens, c))
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.num_blocks))
        self.norm = nn.LayerNorm(c)
        self.mask_embed = MLP(c, c, c, 3)
        for p in (self.level_embed, self.query_feat, self.query_pos):
            nn.init.normal_(p, std=1.0)

    def predict(self, tokens: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised tokens and their mask logits on `feat`'s grid."""
        tokens = self.norm(tokens)
        logits = torch.einsum("bnc,bczyx->bnzyx", self.mask_embed(tokens), feat)
        return tokens, logits

    def _attention_mask(self, logits: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Masked attention: each token sees only the voxels its previous proposal covers ([B, N, L], True: seen).

        A token whose proposal is empty sees everything (Mask2Former), so it can still find a lesion. Written
        without boolean indexing, which would read the mask back to the host (a device synchronisation).
        """
        logits = F.interpolate(logits.detach(), size=shape, mode="trilinear", align_corners=False)
        allowed = (logits.sigmoid() >= 0.5).flatten(2)
        return allowed | ~allowed.any(-1, keepdim=True)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b = features[0].shape[0]
        feats = [proj(f) for proj, f in zip(self.proj, features)]
        tokens = self.query_feat.unsqueeze(0).expand(b, -1, -1)
        token_pos = self.query_pos.unsqueeze(0).expand(b, -1, -1)
        logits = self.predict(tokens, feats[0])[1] if self.masked_attention else None
        out_tokens, out_logits = [], []
        for i, (block, feat) in enumerate(zip(self.blocks, feats)):
            shape = tuple(feat.shape[2:])
            memory = feat.flatten(2).transpose(1, 2)
            memory_pos = (sine_position_3d(shape, feat.shape[1], feat.device) + self.level_embed[i]).unsqueeze(0)
            mask = self._attention_mask(logits, shape) if self.masked_attention else None
            tokens = block(tokens, token_pos, memory, memory_pos, mask)
            normed, logits = self.predict(tokens, feat)
            out_tokens.append(normed)
            out_logits.append(logits)
        return out_tokens, out_logits
