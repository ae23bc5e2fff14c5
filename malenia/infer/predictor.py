"""Whole-volume prediction with a loaded model folder: the minimal, reusable inference core.

1. Preprocess (malenia.data.preprocess: canonical orientation, model spacing, HU window) with the
   model config's geometry.
2. Foreground probability by MONAI `sliding_window_inference` (Gaussian-weighted windows of the config's
   patch size): per voxel max over tokens of lesion_score(token) * sigmoid(mask logit(token)), i.e. the
   probability that some token claims the voxel as a lesion (Mask2Former's semantic inference with a
   one-class "lesion vs no lesion" score).
3. Lesions = connected components of probability >= threshold (at least `min_voxels` on the model grid).
4. Attributes per lesion: one forward pass on a window centred on the lesion; the token whose mask best
   covers the lesion (soft Dice weighted by its lesion score) gives the best description per aspect and
   the normalised scores over that aspect's descriptions (what disease inference consumes).
5. Labels back onto the input's exact grid (nearest neighbour).

The `malenia segment` pipeline builds reports and files on top of `Predictor.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from malenia.aspects import ASPECTS


def preprocessor_for(cfg):
    """The preprocessing the model config defines: its spacing and HU window mapped to [0, 1]."""
    from malenia.data.preprocess import Preprocessor

    return Preprocessor(target_spacing=tuple(cfg.target_spacing), clip=tuple(cfg.hu_window), normalization="window")


def foreground_probability(output) -> torch.Tensor:
    """[B, 1, D, H, W]: max over tokens of lesion_score * sigmoid(mask logits) (what L_fg trains)."""
    from malenia.model.losses import foreground_map

    return foreground_map(output.mask_logits, output.lesion_score)[:, None]


def bank_tensors(bank, extra_rows: np.ndarray | None = None, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings [R, Dt], aspect index [R]) for the network; `extra_rows` are whole-report rows (aspect -1)."""
    from malenia.model.attributes import REPORT_ASPECT

    emb, asp = np.asarray(bank.embeddings, np.float32), bank.aspect_indices()
    if extra_rows is not None and len(extra_rows):
        emb = np.concatenate([emb, np.asarray(extra_rows, np.float32)])
        asp = np.concatenate([asp, np.full(len(extra_rows), REPORT_ASPECT, np.int64)])
    return torch.as_tensor(emb, device=device), torch.as_tensor(asp, dtype=torch.int64, device=device)


@dataclass
class PredictedLesion:
    label: int  # value in CasePrediction.labels
    voxels: int  # on the input grid
    score: float  # mean foreground probability inside the lesion (model grid)
    token: int  # the token that describes it
    lesion_score: float  # that token's 1 - p(no lesion)
    attributes: dict[str, list[tuple[str, float]]]  # aspect -> [(description id, score)], best first
    matches: dict[str, dict[str, float]]  # aspect -> {description id: normalised score} (all descriptions)
    disease: str | None = None
    disease_probability: float | None = None
    disease_alternatives: list[tuple[str, float]] = field(default_factory=list)
    unclassified: bool = False
    centroid_zyx: tuple[float, float, float] | None = None  # model grid, voxels


@dataclass
class CasePrediction:
    labels: np.ndarray  # int32 (z, y, x) on the input image's exact grid, 0 = background
    lesions: list[PredictedLesion]
    label_image: Any = None  # the same as a SimpleITK image with the input's geometry
    probability: np.ndarray | None = None  # float32 foreground probability on the model grid
    prepared: Any = None  # malenia.data.preprocess.PreparedVolume (model grid <-> input grid)
    model_labels: np.ndarray | None = None  # int32 labels on the model grid


class Predictor:
    def __init__(self, model, device: str | torch.device = "cpu", threshold: float | None = None,
                 min_volume_mm3: float | None = None, overlap: float = 0.25, sw_batch_size: int = 1, topk: int = 3,
                 table=None, report_rows: np.ndarray | None = None, max_lesions: int = 32):
        """`model` is a LoadedModel (malenia.model.folder); `table` a KnowledgeTable (default: the model's).
        `threshold` and `min_volume_mm3` default to the model's calibrated values (MODEL/inference.json)."""
        import math

        self.model = model
        self.cfg = model.config
        self.device = torch.device(device)
        self.net = model.network.to(self.device).eval()
        defaults = model.inference_defaults()
        self.threshold = float(defaults.threshold if threshold is None else threshold)
        self.min_volume_mm3 = float(defaults.min_volume_mm3 if min_volume_mm3 is None else min_volume_mm3)
        voxel_mm3 = float(np.prod(self.cfg.target_spacing))
        self.min_voxels = max(1, math.ceil(self.min_volume_mm3 / voxel_mm3 - 1e-9))
        self.overlap = float(overlap)
        self.sw_batch_size, self.topk, self.max_lesions = int(sw_batch_size), int(topk), int(max_lesions)
        if report_rows is None and hasattr(model, "report_rows"):
            report_rows = model.report_rows()
        self.bank = model.bank
        self.bank_emb, self.bank_aspects = bank_tensors(model.bank, report_rows, self.device)
        self._table = table
        self.preprocessor = preprocessor_for(self.cfg)

    @property
    def table(self):
        if self._table is None:
            self._table = self.model.knowledge_table()
        return self._table

    # -- stages ---------------------------------------------------------------------------------
    @torch.no_grad()
    def probability(self, volume: np.ndarray) -> np.ndarray:
        """Foreground probability of a preprocessed volume (z, y, x) by sliding windows."""
        from monai.inferers import sliding_window_inference

        x = torch.as_tensor(np.ascontiguousarray(volume), dtype=torch.float32, device=self.device)[None, None]
        roi = tuple(int(s) for s in self.cfg.patch_size)

        def forward(patch: torch.Tensor) -> torch.Tensor:
            return foreground_probability(self.net(patch, self.bank_emb, self.bank_aspects))

        prob = sliding_window_inference(x, roi, self.sw_batch_size, forward, overlap=self.overlap, mode="gaussian",
                                        padding_mode="constant", cval=0.0)
        return prob[0, 0].float().cpu().numpy()

    def components(self, prob: np.ndarray) -> np.ndarray:
        """Connected lesions (26-connectivity) of at least `min_voxels`; at most `max_lesions`, the ones with the
        largest summed probability (a guard against a flood of specks from a poor model), numbered in that order."""
        from scipy import ndimage

        labels, n = ndimage.label(prob >= self.threshold, structure=np.ones((3, 3, 3), bool))
        if n == 0:
            return labels.astype(np.int32)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        mass = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n + 1)
        candidates = [lab for lab in range(1, n + 1) if sizes[lab] >= self.min_voxels]
        candidates = sorted(candidates, key=lambda lab: -mass[lab])[: self.max_lesions]
        keep = np.zeros(n + 1, np.int32)
        for new, lab in enumerate(candidates, start=1):
            keep[lab] = new
        return keep[labels]

    @torch.no_grad()
    def describe(self, volume: np.ndarray, labels: np.ndarray, prob: np.ndarray) -> list[PredictedLesion]:
        """Attributes and disease of every lesion in `labels` (model grid)."""
        from scipy import ndimage

        from malenia.knowledge.inference import infer_disease
        from malenia.model.attributes import rank_slots

        out: list[PredictedLesion] = []
        n = int(labels.max())
        if n == 0:
            return out
        roi = np.array(self.cfg.patch_size)
        slices = ndimage.find_objects(labels)
        k_all = int(torch.unique(self.bank_aspects, return_counts=True)[1].max())
        for lab, sl in enumerate(slices, start=1):
            if sl is None:
                continue
            centre = np.array([(s.start + s.stop - 1) / 2 for s in sl])
            start = np.round(centre - roi / 2).astype(int)
            start = np.clip(start, 0, np.maximum(np.array(volume.shape) - roi, 0))
            win = tuple(slice(int(a), int(a + r)) for a, r in zip(start, roi))
            patch = np.zeros(tuple(roi), np.float32)  # 0 = air in the window normalisation
            crop = volume[win]
            patch[tuple(slice(0, s) for s in crop.shape)] = crop
            comp = np.zeros(tuple(roi), bool)
            comp_crop = labels[win] == lab
            comp[tuple(slice(0, s) for s in comp_crop.shape)] = comp_crop
            res = self.net(torch.as_tensor(patch, device=self.device)[None, None], self.bank_emb, self.bank_aspects)
            masks = res.mask_logits[0].float().sigmoid().flatten(1)  # [N, P]
            g = torch.as_tensor(comp, device=self.device).flatten().float()
            dice = (2 * masks @ g + 1) / (masks.sum(1) + g.sum() + 1)
            tok = int(torch.argmax(dice * res.lesion_score[0].float()))
            rows, scores = rank_slots(res.sim_logits[-1].float(), self.bank_aspects, k_all, self.cfg.multi_positive)
            attributes: dict[str, list[tuple[str, float]]] = {}
            matches: dict[str, dict[str, float]] = {}
            for s, aspect in enumerate(ASPECTS):
                ranked = [(self._row_id(int(r)), float(v)) for r, v in zip(rows[0, tok, s].tolist(), scores[0, tok, s].tolist()) if r >= 0]
                attributes[aspect] = ranked[: self.topk]
                matches[aspect] = dict(ranked)
            lesion = PredictedLesion(
                label=lab, voxels=0, score=float(prob[labels == lab].mean()), token=tok,
                lesion_score=float(res.lesion_score[0, tok]), attributes=attributes, matches=matches,
                centroid_zyx=tuple(float(c) for c in ndimage.center_of_mass(labels == lab)),
            )
            if self.cfg.multi_positive:
                post = infer_disease({a: {i: v for i, v in m.items() if i in self.table.vocab} for a, m in matches.items()}, self.table)
                lesion.disease, lesion.disease_probability = post.name, float(post.probability)
                lesion.disease_alternatives, lesion.unclassified = list(post.alternatives), bool(post.unclassified)
            out.append(lesion)
        return out

    def _row_id(self, row: int) -> str:
        return self.bank.ids[row] if row < len(self.bank.ids) else f"report.{row - len(self.bank.ids)}"

    # -- whole case -------------------------------------------------------------------------------
    def predict(self, image) -> CasePrediction:
        """A SimpleITK CT image in HU -> lesions on its own grid, with attributes and disease."""
        import SimpleITK as sitk

        prepared = self.preprocessor.prepare(image)
        prob = self.probability(prepared.array)
        model_labels = self.components(prob)
        lesions = self.describe(prepared.array, model_labels, prob)
        label_image = prepared.to_original(model_labels.astype(np.int32), is_label=True)
        labels = sitk.GetArrayFromImage(label_image).astype(np.int32)
        # A lesion can vanish when mapped to a coarser input grid: keep only what is there.
        counts = np.bincount(labels.ravel(), minlength=len(lesions) + 1)
        kept = []
        for les in lesions:
            les.voxels = int(counts[les.label]) if les.label < len(counts) else 0
            if les.voxels:
                kept.append(les)
        return CasePrediction(labels, kept, label_image, prob, prepared, model_labels)
