"""Sliding-window pass of MaleniaNet over a preprocessed volume (model grid, z y x).

MONAI `sliding_window_inference` tiles the volume with the config's patch size (overlap and
window batch configurable) and blends a one-channel foreground probability with Gaussian
weights: per voxel the max over tokens of lesion_score(token) * sigmoid(mask logit), i.e. the
probability that some token claims the voxel as lesion (Mask2Former's semantic inference with
one "lesion" class). Inside each window the network itself runs the paper's inference flow:
tokens find candidate regions, each token is matched to its best bank row per aspect, the
matched tokens and attribute embeddings go through CMKI and the two head branches are ensembled.

Token identities are per window, so per-token masks are not blended. Instead every token of
every window that claims voxels (lesion score and mask above their thresholds, voxels owned by
the token with the highest claim) is kept as a compact `TokenCandidate`: its mask as a bit-packed
crop on the model grid, its scores and its per-aspect distribution over the bank rows. Memory is
the blended probability (one float32 model-grid volume) plus these crops, never N full volumes.

Windows whose input is all air (the normalised background value) cannot hold a lesion and are
not run. Optional mirroring averages the foreground probability over flips (nnU-Net's test-time
augmentation); candidates come from the unflipped pass, since a left-right flip would swap
laterality in the location descriptions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from malenia.aspects import ASPECTS
from malenia.model.precision import Precision, resolve_precision


@dataclass
class TokenCandidate:
    """One token of one window that claims voxels: a candidate lesion (or part of one)."""

    window: int
    token: int
    start: tuple[int, int, int]  # model-grid index (z, y, x) of the crop's first voxel
    shape: tuple[int, int, int]  # crop size
    bits: np.ndarray  # np.packbits of the boolean mask crop (C order)
    voxels: int
    lesion_score: float  # 1 - p(no lesion) of the token
    mean_probability: float  # mean claim (lesion_score * sigmoid) over its voxels
    centrality: float  # mean Gaussian window weight over its voxels (1 = window centre)
    distribution: np.ndarray  # float32 [R]: per-aspect normalised match probability of every bank row

    def mask(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(self.bits, count=n).reshape(self.shape).astype(bool)

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, a + s) for a, s in zip(self.start, self.shape))  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + self.distribution.nbytes)


@dataclass
class WindowPass:
    probability: np.ndarray  # float32 (z, y, x) blended foreground probability on the model grid
    candidates: list[TokenCandidate] = field(default_factory=list)
    windows_total: int = 0
    windows_run: int = 0  # windows that reached the network (all-air windows are skipped)
    forward_passes: int = 0  # network calls on single windows, mirrored ones included


def aspect_columns(bank_aspects: torch.Tensor) -> list[torch.Tensor]:
    """Per aspect (ASPECTS order) the bank rows of that aspect."""
    return [(bank_aspects == a).nonzero().flatten() for a in range(len(ASPECTS))]


def aspect_distribution(sim_logits: torch.Tensor, columns: list[torch.Tensor]) -> torch.Tensor:
    """[..., R+1] similarity logits against [t0, bank] -> [..., R] softmax within each aspect's rows."""
    bank_sim = sim_logits[..., 1:].float()
    out = torch.zeros_like(bank_sim)
    for cols in columns:
        if cols.numel():
            out[..., cols] = bank_sim[..., cols].softmax(-1)
    return out


class WindowRunner:
    """Runs the network window by window; `run(volume)` returns a WindowPass."""

    def __init__(self, net, bank_emb: torch.Tensor, bank_aspects: torch.Tensor, patch_size, device: torch.device,
                 overlap: float = 0.25, sw_batch_size: int = 1, mirror_axes: tuple[int, ...] = (),
                 threshold: float = 0.5, token_threshold: float = 0.5, background: float = 0.0,
                 skip_air: bool = True, on_window: Callable[[int, int], None] | None = None, collect: bool = True,
                 precision: Precision | None = None):
        self.net, self.device = net, device
        self.precision = precision or resolve_precision("fp32", device)
        self.bank_emb, self.bank_aspects = bank_emb, bank_aspects
        self.columns = aspect_columns(bank_aspects)
        self.roi = tuple(int(s) for s in patch_size)
        self.overlap, self.sw_batch_size = float(overlap), int(sw_batch_size)
        self.mirror_axes = tuple(mirror_axes)
        self.threshold, self.token_threshold = float(threshold), float(token_threshold)
        self.background, self.skip_air = float(background), bool(skip_air)
        self.on_window = on_window
        self._offset: tuple[int, ...] = (0, 0, 0)  # the volume's start in the padded input of the current `run`
        self.collect = bool(collect)  # keep token candidates (False: the probability only, e.g. for calibration)
        from monai.data.utils import compute_importance_map

        w = compute_importance_map(self.roi, mode="gaussian", sigma_scale=0.125, device="cpu").float()
        self.centrality = (w / w.max()).numpy()

    def count_windows(self, shape: tuple[int, int, int]) -> int:
        from monai.data.utils import dense_patch_slices
        from monai.inferers.utils import _get_scan_interval

        size = tuple(max(s, r) for s, r in zip(shape, self.roi))
        return len(dense_patch_slices(size, self.roi, _get_scan_interval(size, self.roi, 3, (self.overlap,) * 3)))

    @torch.no_grad()
    def run(self, volume: np.ndarray) -> WindowPass:
        from monai.inferers import sliding_window_inference

        shape = tuple(int(s) for s in volume.shape)
        padded = tuple(max(s, r) for s, r in zip(shape, self.roi))
        offset = self.placement(shape)
        inside = tuple(slice(o, o + n) for o, n in zip(offset, shape))
        x = torch.full((1, 1, *padded), self.background, dtype=torch.float32)
        x[(0, 0, *inside)] = torch.as_tensor(np.ascontiguousarray(volume))
        self._offset = offset
        result = WindowPass(probability=np.zeros(shape, np.float32), windows_total=self.count_windows(shape))
        state = {"seen": 0}

        def predictor(batch: torch.Tensor, coords) -> torch.Tensor:
            out = torch.zeros((batch.shape[0], 1, *batch.shape[2:]), dtype=torch.float32, device=batch.device)
            keep = [i for i in range(batch.shape[0]) if not (self.skip_air and bool((batch[i] <= self.background + 1e-6).all()))]
            if keep:
                out[keep] = self._forward(batch[keep], [coords[i] for i in keep], result, state["seen"], shape)
            state["seen"] += batch.shape[0]
            result.windows_run += len(keep)
            if self.on_window is not None:
                self.on_window(state["seen"], result.windows_total)
            return out

        prob = sliding_window_inference(x, self.roi, self.sw_batch_size, predictor, overlap=self.overlap,
                                        mode="gaussian", sigma_scale=0.125, padding_mode="constant",
                                        cval=self.background, sw_device=self.device, device="cpu", with_coord=True)
        result.probability = np.ascontiguousarray(prob[(0, 0, *inside)].numpy(), dtype=np.float32)
        return result

    def placement(self, shape) -> tuple[int, ...]:
        """Where the volume starts in the padded input, per axis: centred where it is shorter than a window,
        by the training sampler's own rule (malenia.data.sampler.centred_offset). Until 2026-11-30 it sat at
        the window's start with all the air after it, a layout the network never saw in training; centring
        raised validation DSC slightly (docs/training.md, "Third round")."""
        from malenia.data.sampler import centred_offset

        return centred_offset(shape, self.roi)

    def _network(self, batch: torch.Tensor):
        with self.precision.autocast():
            return self.net(self.precision.prepare_input(batch), self.bank_emb, self.bank_aspects)

    def _forward(self, batch: torch.Tensor, coords, result: WindowPass, first_index: int, shape) -> torch.Tensor:
        out = self._network(batch)
        result.forward_passes += batch.shape[0]
        prob = out.foreground().float()  # [B, 1, d, h, w]: token claims, or the dense head (config foreground_source)
        best = prob[:, 0]
        if self.mirror_axes:
            total = prob.clone()
            flips = [c for k in range(1, len(self.mirror_axes) + 1) for c in itertools.combinations(self.mirror_axes, k)]
            for axes in flips:
                dims = [2 + a for a in axes]
                o = self._network(torch.flip(batch, dims))
                p = o.foreground().float()
                total += torch.flip(p, dims)
                result.forward_passes += batch.shape[0]
            prob = total / (len(flips) + 1)
        if not self.collect:
            return prob
        # which token claims each voxel most: only needed for the candidates (not for calibration's pass)
        claim = out.mask_logits.float().sigmoid() * out.lesion_score.float()[..., None, None, None]  # [B, N, d, h, w]
        owner = claim.argmax(dim=1)  # [B, d, h, w]
        dist = aspect_distribution(out.sim_logits[-1], self.columns).cpu().numpy()
        scores = out.lesion_score.float().cpu().numpy()
        for b in range(batch.shape[0]):
            self._collect(b, coords[b], best[b], owner[b], scores[b], dist[b], result, first_index + b, shape)
        return prob

    def _collect(self, b: int, coord, best: torch.Tensor, owner: torch.Tensor, scores: np.ndarray, dist: np.ndarray,
                 result: WindowPass, window: int, shape) -> None:
        """Candidates of one window: voxels each confident token owns (claim above threshold)."""
        # the window's first voxel in volume indices (negative where the volume is centred in padding),
        # and the part of the window inside the (unpadded) volume
        start = [int(s.start) - o for s, o in zip(coord[2:], self._offset)]
        valid = tuple(slice(max(0, -s), max(0, min(r, n - s))) for r, n, s in zip(self.roi, shape, start))
        claimed = (best >= self.threshold)[valid]
        if not bool(claimed.any()):
            return
        owner = owner[valid]
        best_np = best[valid].cpu().numpy()
        weights = self.centrality[valid]
        for n in np.flatnonzero(scores >= self.token_threshold):
            mask = (claimed & (owner == int(n))).cpu().numpy()
            if not mask.any():
                continue
            nz = np.nonzero(mask)
            lo = [int(a.min()) for a in nz]
            hi = [int(a.max()) + 1 for a in nz]
            crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            result.candidates.append(TokenCandidate(
                window=window, token=int(n),
                start=tuple(s + v.start + a for s, v, a in zip(start, valid, lo)),  # type: ignore[arg-type]
                shape=tuple(int(v) for v in crop.shape),  # type: ignore[arg-type]
                bits=np.packbits(crop.ravel()),
                voxels=int(crop.sum()),
                lesion_score=float(scores[n]),
                mean_probability=float(best_np[mask].mean()),
                centrality=float(weights[mask].mean()),
                distribution=dist[n].astype(np.float32),
            ))

    @torch.no_grad()
    def describe_at(self, volume: np.ndarray, component: np.ndarray) -> TokenCandidate | None:
        """One window centred on a component (model grid): the token whose mask covers it best.

        The fallback for a component no candidate claimed (possible with mirroring, where the
        averaged probability can exceed the threshold without any single unflipped claim)."""
        nz = np.nonzero(component)
        if not len(nz[0]):
            return None
        roi = np.array(self.roi)
        centre = np.array([(a.min() + a.max()) / 2 for a in nz])
        start = np.clip(np.round(centre - roi / 2).astype(int), 0, np.maximum(np.array(volume.shape) - roi, 0))
        offset = np.array(self.placement(volume.shape))  # short axes: the volume centred, as in `run`
        win = tuple(slice(int(a), int(a + r)) for a, r in zip(start, roi))
        crop = volume[win]
        at = tuple(slice(int(o), int(o) + s) for o, s in zip(offset, crop.shape))
        patch = np.full(tuple(roi), self.background, np.float32)
        patch[at] = crop
        comp = np.zeros(tuple(roi), bool)
        comp[at] = component[win]
        out = self._network(torch.as_tensor(patch, device=self.device)[None, None])
        masks = out.mask_logits[0].float().sigmoid().flatten(1)  # [N, P]
        g = torch.as_tensor(comp, device=masks.device).flatten().float()
        dice = (2 * masks @ g + 1) / (masks.sum(1) + g.sum() + 1)
        tok = int(torch.argmax(dice * out.lesion_score[0].float()))
        dist = aspect_distribution(out.sim_logits[-1][0, tok], self.columns).cpu().numpy()
        inside = comp[at]
        return TokenCandidate(window=-1, token=tok, start=tuple(int(s) for s in start),  # type: ignore[arg-type]
                              shape=tuple(int(s) for s in inside.shape),  # type: ignore[arg-type]
                              bits=np.packbits(inside.ravel()), voxels=int(inside.sum()),
                              lesion_score=float(out.lesion_score[0, tok]), mean_probability=float(dice[tok]),
                              centrality=1.0, distribution=dist.astype(np.float32))
