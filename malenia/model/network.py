"""MaleniaNet: backbone → transformer decoder → attribute alignment → CMKI → mask heads (paper Fig. 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from malenia.errors import InputError, ModelError
from malenia.model.attributes import NUM_SLOTS, REPORT_ASPECT, rank_slots
from malenia.model.backbone import MultiScaleUNet
from malenia.model.cmki import KnowledgeInjection, inference_slot_weights, training_slot_weights
from malenia.model.config import MaleniaConfig
from malenia.model.decoder import TokenDecoder
from malenia.model.dense import DenseLesionHead, scale_grad
from malenia.model.heads import MaskHeads
from malenia.model.matcher import BlockSupervision, HungarianMatcher
from malenia.model.stem import WindowStem
from malenia.model.targets import LesionTargets
from malenia.model.text import TextProjection


@dataclass
class MaleniaOutput:
    mask_logits: torch.Tensor  # [B, N, D, H, W] final masks on the input grid
    proposals: list[torch.Tensor]  # per block [B, N, d, h, w] logits on the padded grid at the block's scale
    tokens: list[torch.Tensor]  # per block [B, N, C] (layer-normalised)
    sim_logits: list[torch.Tensor]  # per block [B, N, R+1] S(m, t) against [t0, bank] (column 0 is t0)
    lesion_score: torch.Tensor  # [B, N] 1 - p(t0) at the last block
    aspect_rows: torch.Tensor  # [B, N, 8] best bank row per aspect slot (-1: no row of that aspect)
    aspect_scores: torch.Tensor  # [B, N, 8] its probability among the aspect's rows
    image_shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    supervision: list[BlockSupervision] | None = None  # per block matching (training only)
    # dense lesion head (config dense_head_levels > 0): logits [B, 1, ...] per level, full resolution
    # (image grid) first, then 1/2, 1/4 ... of the padded grid
    dense_logits: list[torch.Tensor] | None = None
    foreground_source: str = "tokens"

    def foreground(self) -> torch.Tensor:
        """[B, 1, D, H, W] probability that a voxel is lesion: the map inference thresholds."""
        claim = None
        if self.foreground_source != "dense" or self.dense_logits is None:
            claim = self.mask_logits.float().sigmoid() * self.lesion_score.float()[..., None, None, None]
            claim = claim.amax(dim=1, keepdim=True)
        if self.dense_logits is None or self.foreground_source == "tokens":
            return claim
        dense = self.dense_logits[0].float().sigmoid()
        return dense if claim is None else (dense + claim) / 2


@dataclass
class ImagePrediction:
    """Inference result for one image: what the segment command turns into lesions and reports."""

    mask_logits: torch.Tensor  # [N, D, H, W]
    lesion_score: torch.Tensor  # [N] 1 - p("no lesion")
    aspect_rows: torch.Tensor  # [N, 8] best bank row per aspect (-1: the bank has none)
    aspect_scores: torch.Tensor  # [N, 8] normalised over the aspect's rows
    topk_rows: torch.Tensor  # [N, 8, k] best k rows per aspect, best first (-1 padding)
    topk_scores: torch.Tensor  # [N, 8, k]


class MaleniaNet(nn.Module):
    def __init__(self, cfg: MaleniaConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = WindowStem(cfg) if cfg.input_windows else None
        self.backbone = MultiScaleUNet(cfg)
        channels = self.backbone.feature_channels
        self.decoder = TokenDecoder(cfg, channels)
        self.text = TextProjection(cfg)
        self.cmki = KnowledgeInjection(cfg)
        self.heads = MaskHeads(cfg, channels[-1])
        self.dense = DenseLesionHead(channels, cfg.dense_head_levels) if cfg.dense_head_levels else None
        self.matcher = HungarianMatcher(cfg.match_cost_bce, cfg.match_cost_dice, cfg.num_points, cfg.match_stride)

    # ------------------------------------------------------------------ checks
    def _check(self, image, bank, bank_aspects, targets) -> None:
        cfg = self.cfg
        if image.ndim != 5 or image.shape[1] != cfg.in_channels:
            raise InputError(f"image must be [B, {cfg.in_channels}, D, H, W], got {tuple(image.shape)}")
        if bank.ndim != 2 or bank.shape[1] != cfg.text_dim:
            raise InputError(
                f"attribute bank must be [R, {cfg.text_dim}] text-encoder embeddings, got {tuple(bank.shape)}; "
                "was it built with a different text encoder?"
            )
        if bank_aspects.shape != (bank.shape[0],):
            raise InputError(f"bank_aspects must have one entry per bank row ({bank.shape[0]})")
        self._check_aspect_values(bank_aspects)
        if targets is None:
            return
        if len(targets) != image.shape[0]:
            raise InputError(f"{image.shape[0]} images but targets for {len(targets)}")
        r = bank.shape[0]
        for t in targets:
            if tuple(t.masks.shape[1:]) != tuple(image.shape[2:]):
                raise InputError(f"lesion masks {tuple(t.masks.shape[1:])} do not match image {tuple(image.shape[2:])}")
            rows = [x for p in t.positives for x in p] if cfg.multi_positive else (t.report_rows or [])
            if not cfg.multi_positive and t.report_rows is None and t.num_lesions:
                raise InputError("the single-positive model (multi_positive=False) needs report_rows in the targets")
            if any(x < 0 or x >= r for x in rows):
                raise InputError(f"target description rows must be in 0..{r - 1}")

    def _check_aspect_values(self, bank_aspects: torch.Tensor) -> None:
        """Checked, and kept on the host for the slot weights, once per aspects tensor, not at every step: reading
        its values back is a device synchronisation, and training passes the same tensor each time (an in-place
        change is checked again)."""
        key = (bank_aspects.device, bank_aspects.data_ptr(), bank_aspects.numel(), bank_aspects._version)
        if key == getattr(self, "_checked_aspects", None):
            return
        host = bank_aspects.tolist()
        if host and (min(host) < REPORT_ASPECT or max(host) >= NUM_SLOTS):
            raise InputError(f"bank_aspects must index the {NUM_SLOTS} aspects (or be {REPORT_ASPECT} for reports)")
        self._checked_aspects, self._aspects_host = key, host

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        image: torch.Tensor,
        bank: torch.Tensor,
        bank_aspects: torch.Tensor,
        targets: list[LesionTargets] | None = None,
        dense_only: bool = False,
    ) -> MaleniaOutput | list[torch.Tensor]:
        """image [B,1,D,H,W] (any size; normalised per the config), bank [R,Dt], bank_aspects [R].

        With targets (training), each block is matched to the lesions and CMKI uses the matched
        lesions' descriptions; without, CMKI uses each token's best bank row per aspect.
        `dense_only` (the dense training stage): the backbone and the dense head alone, whose logits per
        level are returned (full resolution first), as in `MaleniaOutput.dense_logits`.
        """
        cfg = self.cfg
        self._check(image, bank, bank_aspects, targets)
        image_shape = tuple(image.shape[2:])
        # a multiple of the stride, and at least 2 bottleneck voxels per axis (InstanceNorm needs > 1)
        padded_shape = tuple(max(-(-s // cfg.stride), 2) * cfg.stride for s in image_shape)
        pad = [p - s for s, p in zip(image_shape, padded_shape)]
        x = F.pad(image, (0, pad[2], 0, pad[1], 0, pad[0]))  # zero = air in the config's intensity scale
        if self.stem is not None:
            x = self.stem(x)

        feats = self.backbone(x)
        if dense_only:
            if self.dense is None:
                raise ModelError("dense_only needs a dense head (config dense_head_levels >= 1)")
            return self._dense_logits(feats, image_shape)
        tokens, proposals = self.decoder(feats[: cfg.num_blocks])
        candidates = self.text(bank)
        sims = [self.text.similarity(t, candidates) for t in tokens]
        with torch.no_grad():
            best_rows, best_scores = rank_slots(sims[-1], bank_aspects, 1, cfg.multi_positive)
            lesion_score = 1 - sims[-1].softmax(-1)[..., 0]

        supervision = None
        if targets is not None:
            supervision = self.matcher.supervise(proposals, targets, padded_shape, image_shape)
            weights = training_slot_weights(
                supervision[-1].matches, targets, self._aspects_host, cfg.num_tokens, cfg.multi_positive, image.device
            )
        else:
            weights = inference_slot_weights(best_rows[..., 0], candidates.shape[0])
        slots = weights.to(candidates.dtype) @ candidates  # [B, N, 8, C]
        m_hat, t_hat = self.cmki(tokens[-1], slots)
        d, h, w = image_shape
        masks = self.heads(m_hat, t_hat, feats[-1])[..., :d, :h, :w]
        dense = self._dense_logits(feats, image_shape) if self.dense is not None else None
        return MaleniaOutput(
            mask_logits=masks,
            proposals=proposals,
            tokens=tokens,
            sim_logits=sims,
            lesion_score=lesion_score,
            aspect_rows=best_rows[..., 0],
            aspect_scores=best_scores[..., 0],
            image_shape=image_shape,
            padded_shape=padded_shape,
            supervision=supervision,
            dense_logits=dense,
            foreground_source=cfg.foreground_source,
        )

    def _dense_logits(self, feats: list[torch.Tensor], image_shape: tuple[int, int, int]) -> list[torch.Tensor]:
        d, h, w = image_shape
        dense = self.dense([scale_grad(f, self.cfg.dense_backbone_grad) for f in feats])
        dense[0] = dense[0][..., :d, :h, :w]
        return dense

    @torch.no_grad()
    def predict(
        self, image: torch.Tensor, bank: torch.Tensor, bank_aspects: torch.Tensor, topk: int = 3
    ) -> list[ImagePrediction]:
        """Inference on a batch of patches or volumes; one ImagePrediction per image."""
        out = self.forward(image, bank, bank_aspects)
        rows, scores = rank_slots(out.sim_logits[-1], bank_aspects, topk, self.cfg.multi_positive)
        return [
            ImagePrediction(
                mask_logits=out.mask_logits[b],
                lesion_score=out.lesion_score[b],
                aspect_rows=rows[b, ..., 0],
                aspect_scores=scores[b, ..., 0],
                topk_rows=rows[b],
                topk_scores=scores[b],
            )
            for b in range(image.shape[0])
        ]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per part (the text encoder is not part of the network)."""
        return {
            "backbone": list(self.backbone.parameters()),
            "transformer_decoder": list(self.decoder.parameters()),
            "text_projection": list(self.text.parameters()),
            "cmki": list(self.cmki.parameters()),
            "heads": list(self.heads.parameters()),
        } | ({"dense_head": list(self.dense.parameters())} if self.dense is not None else {})
