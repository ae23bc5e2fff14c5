"""Bipartite matching of mask proposals to ground-truth lesions (Mask2Former's Hungarian matcher).

Proposals of block i live on the 1/32, 1/16 or 1/8 grid. They are compared with the lesions
on the image grid: the proposal logits are trilinearly up-sampled (paper: "upsampled binary
mask proposals"), not the masks down-sampled, because a small lesion vanishes on a 1/32 grid
(3³ voxels for a 96³ patch) and could then never be matched. With `num_points` set, the
comparison uses that many random voxels instead of all (Mask2Former's point sampling): the
up-sampled logits are evaluated only there, which is exactly the dense up-sampling's value. With
`stride` s > 1 (config `match_stride`) the costs are computed on a grid s times coarser than the image,
each lesion as the share of every cell it covers (an average, so a one-voxel lesion is still there):
s³ times fewer points for the assignment, while the losses still compare the matched proposals with
the lesions voxel by voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from malenia.model.targets import LesionTargets, from_host, stack_lesion_masks

Match = tuple[torch.Tensor, torch.Tensor]  # (token indices, lesion indices), int64, same length


def dice_cost(logits: torch.Tensor, gt: torch.Tensor, voxels: float = 1.0) -> torch.Tensor:
    """1 - soft Dice between every proposal [..., N, P] (logits) and every lesion [..., K, P] (0/1, or the share of
    a coarse cell) → [..., N, K] (leading dimensions: a batch). `voxels`: image voxels per point."""
    p = logits.sigmoid()
    inter = p @ gt.mT
    return 1 - (2 * voxels * inter + 1) / (voxels * (p.sum(-1)[..., :, None] + gt.sum(-1)[..., None, :]) + 1)


def bce_cost(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every proposal [..., N, P] against every lesion [..., K, P] → [..., N, K].

    Σ_p y·softplus(-x) + (1-y)·softplus(x) = Σ_p softplus(x) - Σ_p y·x, because softplus(-x) = softplus(x) - x:
    one softplus and one product per proposal instead of two of each (the matching was a fifth of a bfloat16
    CPU step, docs/training.md, eighth round)."""
    return (F.softplus(logits).sum(-1)[..., :, None] - logits @ gt.mT) / logits.shape[-1]


def hungarian(cost: torch.Tensor | np.ndarray) -> Match:
    """Minimum-cost one-to-one assignment of rows (tokens) to columns (lesions).

    With more lesions than tokens, the surplus lesions stay unmatched; with none, nothing matches. A numpy
    cost (the matcher reads all of a batch's costs back at once) costs no torch operator on the host.
    """
    if isinstance(cost, torch.Tensor):
        cost = cost.detach().float().cpu().numpy()
    rows, cols = linear_sum_assignment(cost) if cost.size else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))


@dataclass
class BlockSupervision:
    """What one transformer block is matched and supervised with (training only)."""

    logits: torch.Tensor  # [B, N, P'] proposal logits at the points the costs compared (no gradient): the
    #                       supervised voxels, or the coarse grid's cells when the matcher has a stride
    gt: list[torch.Tensor]  # per image, float [K, P'] lesion masks (or cell shares) at the same points
    matches: list[Match]  # per image (on the host)
    pairs: torch.Tensor | None = None  # [M, 3] (image, token, lesion) of every match, on the logits' device
    masks: torch.Tensor | None = None  # float [B, Kmax, P]: lesion masks at the supervised voxels, padded with empty ones
    matched_logits: torch.Tensor | None = None  # [M, P]: the matched tokens' proposals at the supervised voxels, with gradient

    def matched(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The matched (proposal, lesion) rows of the batch: [M, P] each, in match order, gathered on the device."""
        b, tok, les = self.pairs.unbind(-1)
        return self.matched_logits, self.masks[b, les]


def padded_masks(targets: list[LesionTargets], device) -> torch.Tensor:
    """float [B, Kmax, P]: every image's lesion masks, flattened, padded with empty masks to the most lesions."""
    return stack_lesion_masks([t.masks for t in targets], device)


def match_pairs(matches: list[Match]) -> torch.Tensor:
    """int64 [M, 3] (image, token, lesion) of a batch's matches, on the host (built in numpy: torch operators on
    host tensors cost a dispatch each, three per image here)."""
    rows = [np.stack([np.full(len(tok), b), tok.numpy(), les.numpy()], -1) for b, (tok, les) in enumerate(matches)]
    return torch.from_numpy(np.concatenate(rows).astype(np.int64)) if rows else torch.zeros(0, 3, dtype=torch.int64)


def proposals_on_image_grid(
    logits: torch.Tensor, padded_shape: tuple[int, ...], image_shape: tuple[int, ...], index: torch.Tensor | None
) -> torch.Tensor:
    """Up-sample proposals [B,N,d,h,w] (on the padded grid) to the image grid → [B, N, P].

    index: flat voxel indices into the image grid to evaluate, or None for all voxels.
    """
    b, n = logits.shape[:2]
    if index is None:
        up = F.interpolate(logits, size=padded_shape, mode="trilinear", align_corners=False)
        d, h, w = image_shape
        return up[..., :d, :h, :w].reshape(b, n, -1)
    # Voxel centres in the padded grid's normalised coordinates (x, y, z order for grid_sample);
    # align_corners=False and border padding reproduce F.interpolate's values exactly.
    zyx = torch.stack(torch.unravel_index(index, image_shape), -1).to(logits.dtype)
    size = torch.tensor(padded_shape, dtype=logits.dtype, device=logits.device)
    grid = ((zyx + 0.5) / size * 2 - 1).flip(-1)
    grid = grid.view(1, 1, 1, -1, 3).expand(b, -1, -1, -1, -1)
    return F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False).view(b, n, -1)


class HungarianMatcher:
    def __init__(self, cost_bce: float = 1.0, cost_dice: float = 1.0, num_points: int | None = None, stride: int = 1):
        self.cost_bce = cost_bce
        self.cost_dice = cost_dice
        self.num_points = num_points
        self.stride = int(stride)

    def cost(self, logits: torch.Tensor, gt: torch.Tensor, voxels: float = 1.0) -> torch.Tensor:
        """[N, P] proposal logits × [K, P] lesion masks → [N, K] matching cost. `voxels`: image voxels per compared
        point (a coarse grid's cell), so that Dice's smoothing term weighs as on the image grid."""
        logits, gt = logits.float(), gt.float()
        return self.cost_bce * bce_cost(logits, gt) + self.cost_dice * dice_cost(logits, gt, voxels)

    @torch.no_grad()
    def match(self, logits: torch.Tensor, gt: torch.Tensor) -> Match:
        return hungarian(self.cost(logits, gt))

    def _block_costs(self, logits: torch.Tensor, supervised: torch.Tensor, padded_shape, image_shape,
                     index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(compared logits [B, N, P'], compared masks [B, Kmax, P'], costs [B, N, Kmax]) of one block, without
        gradient: at the supervised voxels (the sampled ones, `index`, or the image grid; `supervised`: the lesion
        masks there), or on the grid `stride` times coarser than the image."""
        with torch.no_grad():
            if index is None and self.stride > 1:
                s = proposals_on_coarse_grid(logits, padded_shape, image_shape, self.stride)
                gt = coarse_masks(supervised, image_shape, self.stride)
                return s, gt, self.cost(s, gt, float(self.stride ** 3))
            s = proposals_on_image_grid(logits, padded_shape, image_shape, index)
            return s, supervised, self.cost(s, supervised)

    def supervise(
        self,
        proposals: list[torch.Tensor],
        targets: list[LesionTargets],
        padded_shape: tuple[int, ...],
        image_shape: tuple[int, ...],
    ) -> list[BlockSupervision]:
        """Match every block's proposals to the lesions; keeps the compared voxels for the losses.

        The costs of all blocks and images are computed on the device in one batch and copied to the host once;
        the matches go back to the device once (pinned, non-blocking): one synchronisation per step. Every
        token is up-sampled for the costs, without gradient (on the coarse grid when `stride` > 1); only the
        matched tokens, which are all the deep supervision reads, are up-sampled again with it, on the image
        grid (or at the sampled voxels). Up-sampling all 16 tokens of three blocks with gradient made the
        matching and its backward a third of a bfloat16 CPU step (docs/training.md, ninth round); the values
        are the same, the interpolation being per channel."""
        n_vox = int(np.prod(image_shape))
        device = proposals[0].device
        masks = padded_masks(targets, device)  # [B, Kmax, P]
        counts = [t.num_lesions for t in targets]
        compared, indices, supervised = [], [], []
        for logits in proposals:
            index = None
            if self.num_points is not None and self.num_points < n_vox:
                index = torch.randperm(n_vox, device=device)[: self.num_points]
            supervised.append(masks if index is None else masks[:, :, index])
            compared.append(self._block_costs(logits, supervised[-1], padded_shape, image_shape, index))
            indices.append(index)
        host = torch.stack([c for _, _, c in compared]).float().cpu().numpy()  # [blocks, B, N, Kmax]
        matches = [[hungarian(c[:, :k]) for c, k in zip(block, counts)] for block in host]
        pairs = [match_pairs(m) for m in matches]
        pairs = from_host(torch.cat(pairs), device).split([len(p) for p in pairs])
        out = []
        for logits, (s, gt, _), m, p, index, sup in zip(proposals, compared, matches, pairs, indices, supervised):
            out.append(BlockSupervision(s, [g[:k] for g, k in zip(gt, counts)], m, p, sup,
                                        matched_proposals(logits, p, padded_shape, image_shape, index)))
        return out


def proposals_on_coarse_grid(logits: torch.Tensor, padded_shape: tuple[int, ...], image_shape: tuple[int, ...],
                             stride: int) -> torch.Tensor:
    """Proposals [B, N, d, h, w] up-sampled to the grid `stride` times coarser than the padded one, cropped to
    the image's cells → [B, N, P']. Cell centres are the centres of the image voxels they average."""
    coarse = tuple(-(-p // stride) for p in padded_shape)
    cells = tuple(-(-d // stride) for d in image_shape)
    up = F.interpolate(logits, size=coarse, mode="trilinear", align_corners=False)
    return up[..., : cells[0], : cells[1], : cells[2]].flatten(2)


def coarse_masks(masks: torch.Tensor, image_shape: tuple[int, ...], stride: int) -> torch.Tensor:
    """Lesion masks [B, K, P] on the image grid → the share of each coarse cell they cover, [B, K, P']."""
    b, k = masks.shape[:2]
    grid = masks.view(b, k, *image_shape)
    pad = [x for d in reversed(image_shape) for x in (0, -(-d // stride) * stride - d)]
    return F.avg_pool3d(F.pad(grid, pad), stride).flatten(2)


def matched_proposals(logits: torch.Tensor, pairs: torch.Tensor, padded_shape: tuple[int, ...],
                      image_shape: tuple[int, ...], index: torch.Tensor | None) -> torch.Tensor:
    """[M, P]: the matched tokens' proposals [B, N, d, h, w] (rows `pairs` [M, 3]) on the image grid, with gradient."""
    b, tok, _ = pairs.unbind(-1)
    rows = logits[b, tok][None]  # [1, M, d, h, w]
    if not len(pairs):
        n = int(np.prod(image_shape)) if index is None else len(index)
        return rows.new_zeros(0, n)
    return proposals_on_image_grid(rows, padded_shape, image_shape, index)[0]
