"""Training objective (paper Eq. 6): λ1·L_deep + λ2·L_sim + λ3·(α1·BCE + α2·Dice).

- L_sim: multi-positive NCE (Eq. 2) of every token of every block against [t0, bank], averaged
  over tokens (background tokens weighted by `background_token_weight`, 1 in the paper) and then over blocks (the paper's leading minus sign in the block average is a
  typo: each term is already a negative log-likelihood).
- L_deep: Dice loss of each block's matched proposals, averaged over matched tokens, then blocks.
- L_seg: on the final masks, with the last block's matching (the one CMKI was fed with):
  BCE over all tokens (unmatched tokens learn an empty mask) plus Dice over matched tokens
  (Dice against an empty mask is degenerate; Mask2Former also restricts it to matched masks).
- L_fg (not in the paper; weight `lambda_fg`, 0 in the `paper` config): BCE + Dice of the map that
  inference thresholds, max over tokens of (1 - p(t0)) * sigmoid(mask), against the union of the
  lesions; it trains the no-lesion score and the masks together where false positives arise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from malenia.model.config import MaleniaConfig
from malenia.model.dense import dense_loss, lesion_dice_loss
from malenia.model.matcher import BlockSupervision, HungarianMatcher, Match, padded_masks
from malenia.model.targets import LesionTargets, from_host


def dice_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per row: logits [M, P], gt [M, P] → [M]."""
    p = logits.sigmoid()
    return 1 - (2 * (p * gt).sum(-1) + 1) / (p.sum(-1) + gt.sum(-1) + 1)


def sparse_target_bce(logits: torch.Tensor, matched: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean BCE of every proposal `logits` [B, N, P] against its matched lesion (`matched` [M, P], the matched
    rows of `logits`, and their lesions `gt` [M, P]) and against an empty mask elsewhere.

    softplus(x) - x·y is the BCE of a logit x against y, so the mean is (Σ softplus(logits) - Σ matched·gt) / size:
    no dense target tensor (16 tokens × 64³ per patch) is built or filled, and one softplus replaces
    binary_cross_entropy_with_logits' log-sigmoid, which at batch 16 was most of the losses' time (docs/training.md,
    ninth round)."""
    return (F.softplus(logits).sum() - (matched * gt).sum()) / logits.numel()


def foreground_map(mask_logits: torch.Tensor, lesion_score: torch.Tensor) -> torch.Tensor:
    """[B, D, H, W]: max over tokens of lesion_score [B, N] * sigmoid(mask_logits [B, N, D, H, W])."""
    p = mask_logits.float().sigmoid() * lesion_score.float()[..., None, None, None]
    return p.max(dim=1).values


def foreground_loss(prob: torch.Tensor, targets: list[LesionTargets],
                    padded: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + soft Dice (over the batch, so lesion-free patches count) of a probability map vs the lesion union.
    `padded`: the lesion masks as padded_masks gives them, when the caller has them already."""
    padded = padded_masks(targets, prob.device) if padded is None else padded
    gt = padded.amax(1).view(prob.shape)
    p = prob.clamp(1e-6, 1 - 1e-6)
    bce = F.binary_cross_entropy(p, gt)
    dice = 1 - (2 * (p * gt).sum() + 1) / (p.sum() + gt.sum() + 1)
    return bce + dice


def mp_nce(sim: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Multi-positive NCE (Lee et al. 2022; paper Eq. 2) per token.

    sim: [M, R+1] logits S(m_j, t_k); positive: bool [M, R+1], at least one True per row.
    Each positive competes with the negatives only (not with the token's other positives):
    loss_j = mean_{k ∈ P_j} -log( e^{s_k} / (e^{s_k} + Σ_{n ∈ N_j} e^{s_n}) ).
    """
    neg = torch.logsumexp(sim.masked_fill(positive, float("-inf")), dim=-1, keepdim=True)
    per_pair = torch.logaddexp(sim, neg) - sim
    return (per_pair * positive).sum(-1) / positive.sum(-1)


def positive_sets(
    matches: list[Match], targets: list[LesionTargets], num_tokens: int, num_rows: int, multi_positive: bool, device
) -> torch.Tensor:
    """bool [B, N, R+1] over [t0, bank]: a matched token's positives are its lesion's rows, others t0. Filled in
    numpy (a torch index_put per lesion is an operator dispatch on the host; malenia.model.cmki)."""
    host = np.zeros((len(targets), num_tokens, num_rows + 1), bool)
    host[..., 0] = True
    for b, ((tok, les), tgt) in enumerate(zip(matches, targets)):
        for j, k in zip(tok.tolist(), les.tolist()):
            rows = tgt.positives[k] if multi_positive else [tgt.report_rows[k]]
            host[b, j, 0] = False  # a lesion without descriptions leaves its token out of L_sim
            host[b, j, [r + 1 for r in rows]] = True
    return from_host(host, device)


class MaleniaCriterion(nn.Module):
    """`criterion(output, targets)` → {"deep", "sim", "seg_bce", "seg_dice", "seg", "fg", "total"} (scalars)."""

    def __init__(self, cfg: MaleniaConfig):
        super().__init__()
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.match_cost_bce, cfg.match_cost_dice, cfg.num_points, cfg.match_stride)

    def forward(self, output, targets: list[LesionTargets]) -> dict[str, torch.Tensor]:
        # The losses run in float32 whatever the network's autocast dtype: bfloat16 sums over a 64³ patch lose
        # the Dice terms' precision, and index_put needs one dtype on both sides.
        with torch.autocast(output.mask_logits.device.type, enabled=False):
            return self._losses(output, targets)

    def dense_stage(self, dense_logits: list[torch.Tensor], targets: list[LesionTargets]) -> dict[str, torch.Tensor]:
        """The loss of the dense stage (config train_stage "dense"): the dense head's term alone."""
        with torch.autocast(dense_logits[0].device.type, enabled=False):
            l_dense = self._dense(dense_logits, targets)
        return {"dense": l_dense, "total": self.cfg.lambda_dense * l_dense}

    def _dense(self, dense_logits: list[torch.Tensor], targets: list[LesionTargets],
               padded: torch.Tensor | None = None) -> torch.Tensor:
        """The dense head's loss: deep-supervised BCE + batch Dice on the union, plus the lesion-wise term.
        `padded`: the batch's lesion masks as padded_masks gives them, when the caller has them already."""
        padded = padded_masks(targets, dense_logits[0].device) if padded is None else padded  # [B, Kmax, P]
        union = padded.amax(1).view(len(targets), *dense_logits[0].shape[2:])
        loss = dense_loss(dense_logits, union)
        if self.cfg.dense_lesion_weight:
            lesions = [t.masks for t in targets]
            loss = loss + self.cfg.dense_lesion_weight * lesion_dice_loss(dense_logits[0], lesions, padded)
        return loss

    def _losses(self, output, targets: list[LesionTargets]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        sup: list[BlockSupervision] = output.supervision or self.matcher.supervise(
            output.proposals, targets, output.padded_shape, output.image_shape
        )
        zero = output.mask_logits.float().sum() * 0.0  # keeps the graph connected when nothing is matched

        deep = []
        for block in sup:
            pred, gt = block.matched()
            deep.append(dice_loss(pred.float(), gt).mean() if len(pred) else zero)
        l_deep = torch.stack(deep).mean()

        blocks = range(len(sup)) if cfg.multi_scale_alignment else [len(sup) - 1]
        sims = []
        for i in blocks:
            sim = output.sim_logits[i].float()
            pos = positive_sets(sup[i].matches, targets, sim.shape[1], sim.shape[2] - 1, cfg.multi_positive, sim.device)
            sim, pos = sim.flatten(0, 1), pos.flatten(0, 1)
            keep = pos.any(-1)
            # background tokens (positive: t0 only) weigh cfg.background_token_weight, lesion tokens 1
            weight = torch.where(pos[:, 0], cfg.background_token_weight, 1.0).to(sim.dtype)[keep]
            sims.append((mp_nce(sim[keep], pos[keep]) * weight).sum() / weight.sum())
        l_sim = torch.stack(sims).mean()

        final = output.mask_logits.float()
        b, n = final.shape[:2]
        final = final.reshape(b, n, -1)
        gt_full = sup[-1].masks  # [B, Kmax, P]: the matcher's, when it supervised every voxel (no point sampling)
        if gt_full is None or gt_full.shape[-1] != final.shape[-1]:
            gt_full = padded_masks(targets, final.device)
        img, tok, les = sup[-1].pairs.unbind(-1)  # the last block's matching, on the device
        pred, gt = final[img, tok], gt_full[img, les]
        l_bce = sparse_target_bce(final, pred, gt)
        l_dice = dice_loss(pred, gt).mean() if len(pred) else zero
        l_seg = cfg.alpha_bce * l_bce + cfg.alpha_dice * l_dice

        total = cfg.lambda_deep * l_deep + cfg.lambda_sim * l_sim + cfg.lambda_seg * l_seg
        if cfg.lambda_fg:
            # the lesion score with its gradient (MaleniaOutput.lesion_score is detached)
            score = 1 - output.sim_logits[-1].float().softmax(-1)[..., 0]
            l_fg = foreground_loss(foreground_map(output.mask_logits, score), targets, gt_full)
            total = total + cfg.lambda_fg * l_fg
        else:
            l_fg = zero
        l_dense = zero
        if cfg.lambda_dense and output.dense_logits is not None:
            l_dense = self._dense(output.dense_logits, targets, gt_full)
            total = total + cfg.lambda_dense * l_dense
        return {"deep": l_deep, "sim": l_sim, "seg_bce": l_bce, "seg_dice": l_dice, "seg": l_seg, "fg": l_fg,
                "dense": l_dense, "total": total}
