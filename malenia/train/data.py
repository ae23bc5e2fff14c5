"""What the training loop consumes: the training attribute bank and a deterministic stream of patches.

- `TrainingBank`: the vocabulary's attribute bank (+ rows for free-text descriptions found in the training
  reports) and, for single-positive ablations, one row per distinct whole-report text (aspect -1).
- `PatchStream`: cases preprocessed exactly as at inference (malenia.infer.predictor.preprocessor_for) and
  cached in memory; patch k of epoch e is drawn with its own seed (seed, e, k), so a resumed or a
  multi-process run sees the same patches as an uninterrupted single-process run. The order of cases per
  epoch comes from torch's DistributedSampler (each process takes its share of the global batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from malenia.aspects import ASPECTS
from malenia.errors import InputError

# Share of patches centred on a lesion (the rest: anywhere). 1.0 for now: the model's matcher cannot yet take
# a patch without lesions (reshape of an empty mask stack); voxels around the lesion and unmatched tokens
# still teach "no lesion".
FOREGROUND_FRACTION = 1.0


@dataclass
class TrainingBank:
    bank: Any  # AttributeBank (vocabulary + free text)
    report_texts: list[str] = field(default_factory=list)
    report_embeddings: np.ndarray | None = None  # [Q, Dt] whole-report rows (single-positive ablations)

    @property
    def embeddings(self) -> np.ndarray:
        if self.report_embeddings is None or not len(self.report_embeddings):
            return self.bank.embeddings
        return np.concatenate([self.bank.embeddings, self.report_embeddings])

    @property
    def aspect_index(self) -> np.ndarray:
        asp = self.bank.aspect_indices()
        if self.report_embeddings is None or not len(self.report_embeddings):
            return asp
        return np.concatenate([asp, np.full(len(self.report_embeddings), -1, np.int64)])

    def report_row(self, text: str) -> int:
        return len(self.bank) + self.report_texts.index(text)

    def inference_bank(self):
        return self.bank


def report_text(lesion, style: str, table=None) -> str:
    """The whole-report text of a lesion for single-positive training: its 8 descriptions as a paragraph
    ("paragraph", the paper's S1) or only what a report's impression names, the lesion type ("raw")."""
    from malenia.knowledge.bank import report_paragraph

    if style == "raw":
        name = lesion.disease or "lesion"
        if table is not None and lesion.disease in table.diseases:
            name = table.name(lesion.disease)
        return f"{name[0].upper()}{name[1:]}."
    return report_paragraph({a: [d.text for d in lesion.attributes.get(a, [])] for a in ASPECTS})


def build_training_bank(cfg, datasets: list[Path], encoder_name: str | None = None, report_style: str = "paragraph",
                        splits: dict[Path, list[str]] | None = None) -> TrainingBank:
    """Vocabulary bank (cached per encoder and vocabulary), extended with the datasets' free-text descriptions;
    plus whole-report rows when the config trains with one positive per lesion."""
    from malenia.data.dataset import read_dataset, read_report
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary

    encoder = load_text_encoder(encoder_name or cfg.text_encoder)
    if encoder.dim != cfg.text_dim:
        raise InputError(f"text encoder {encoder.encoder_id} gives {encoder.dim}-d embeddings; config {cfg.name!r} expects {cfg.text_dim}")
    bank = AttributeBank.build_or_load(Vocabulary.load(), encoder)
    table = KnowledgeTable.load()
    free: dict[str, list[str]] = {a: [] for a in ASPECTS}
    reports: list[str] = []
    for ds in datasets:
        ids = (splits or {}).get(ds) or read_dataset(ds).cases
        for case_id in ids:
            rep = read_report(Path(ds) / "cases" / case_id / "report.json")
            for les in rep.lesions:
                for a in ASPECTS:
                    free[a] += [d.text for d in les.attributes.get(a, []) if not d.id or d.id not in bank._index]
                if not cfg.multi_positive:
                    reports.append(report_text(les, report_style, table))
    for a, texts in free.items():
        if texts:
            bank.extend(sorted(set(texts)), a, encoder)
    out = TrainingBank(bank)
    if not cfg.multi_positive:
        out.report_texts = sorted(set(reports))
        out.report_embeddings = encoder.encode(out.report_texts) if out.report_texts else np.zeros((0, encoder.dim), np.float32)
    out.report_style = report_style  # type: ignore[attr-defined]
    out.table = table  # type: ignore[attr-defined]
    return out


@dataclass
class CachedCase:
    image: np.ndarray  # float32 (z, y, x), model grid, normalised
    labels: np.ndarray  # int (z, y, x), model grid, lesion instance labels
    positives: dict[int, list[int]]  # lesion label -> bank rows
    report_rows: dict[int, int]  # lesion label -> whole-report row (single-positive only)
    lesion_voxels: dict[int, np.ndarray]  # lesion label -> voxel indices [M, 3] (for lesion-centred crops)


@dataclass
class PatchItem:
    image: torch.Tensor  # [1, D, H, W]
    masks: torch.Tensor  # bool [K, D, H, W]
    positives: list[list[int]]
    report_rows: list[int] | None


class PatchStream:
    def __init__(self, data: Path, case_ids: list[str], cfg, bank: TrainingBank, seed: int = 0, augment: bool = True,
                 replay: Path | None = None, replay_fraction: float = 0.5):
        from malenia.infer.predictor import preprocessor_for

        self.cfg, self.bank, self.seed, self.augment = cfg, bank, int(seed), augment
        self.sources = [(Path(data), list(case_ids))]
        if replay is not None:
            from malenia.data.dataset import read_dataset

            self.sources.append((Path(replay), read_dataset(replay).split_cases("train") if "train" in read_dataset(replay).split else read_dataset(replay).cases))
        self.replay_fraction = float(replay_fraction)
        self.preprocessor = preprocessor_for(cfg)
        self.patch = np.array(cfg.patch_size)
        self._cache: dict[tuple[int, str], CachedCase] = {}
        self.epoch_size = len(self.sources[0][1])

    # -- cases ----------------------------------------------------------------------------------
    def case(self, source: int, case_id: str) -> CachedCase:
        key = (source, case_id)
        if key not in self._cache:
            self._cache[key] = self._load(self.sources[source][0], case_id)
        return self._cache[key]

    def _load(self, root: Path, case_id: str) -> CachedCase:
        from scipy import ndimage

        from malenia.data.dataset import read_case

        case = read_case(root, case_id)
        prepared = self.preprocessor.prepare(case.image)
        labels = prepared.to_prepared(case.lesions, is_label=True).astype(np.int32)
        positives, report_rows, voxels = {}, {}, {}
        style = getattr(self.bank, "report_style", "paragraph")
        table = getattr(self.bank, "table", None)
        for les in case.report.lesions:
            rows = []
            for a in ASPECTS:
                for d in les.attributes.get(a, []):
                    rid = d.id if d.id and d.id in self.bank.bank._index else None
                    if rid is None:
                        from malenia.knowledge.bank import FREE_TEXT_PREFIX
                        import hashlib

                        text = " ".join(d.text.split())
                        rid = f"{FREE_TEXT_PREFIX}.{a}.{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"
                    rows.append(self.bank.bank.row(rid))
            positives[les.label] = rows
            if not self.cfg.multi_positive:
                report_rows[les.label] = self.bank.report_row(report_text(les, style, table))
        present = [int(v) for v in np.unique(labels) if v != 0]
        for lab in present:
            if lab not in positives:
                raise InputError(f"case {case_id}: lesion label {lab} has no entry in report.json")
            voxels[lab] = np.argwhere(labels == lab).astype(np.int32)
        return CachedCase(np.ascontiguousarray(prepared.array, dtype=np.float32), labels, positives, report_rows, voxels)

    # -- sampling -------------------------------------------------------------------------------
    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, math.ceil(self.epoch_size / global_batch))

    def batch(self, step: int, batch: int, rank: int = 0, world: int = 1) -> list[PatchItem]:
        """This process's share of global batch `step`: items (epoch, k) with k = step's slice of the
        epoch order that torch's DistributedSampler gives this rank."""
        from torch.utils.data.distributed import DistributedSampler

        spe = self.steps_per_epoch(batch * world)
        epoch, j = divmod(step, spe)
        sampler = DistributedSampler(range(self.epoch_size), num_replicas=world, rank=rank, shuffle=True,
                                     seed=self.seed, drop_last=False)
        sampler.set_epoch(epoch)
        order = list(sampler)
        picks = [order[(j * batch + i) % len(order)] for i in range(batch)]
        return [self.item(epoch, k, j * batch * world + i * world + rank) for i, k in enumerate(picks)]

    def item(self, epoch: int, index: int, slot: int) -> PatchItem:
        rng = np.random.default_rng([self.seed, epoch, slot])
        source = 0
        if len(self.sources) > 1 and rng.random() < self.replay_fraction:
            source = 1
            index = int(rng.integers(len(self.sources[1][1])))
        case = self.case(source, self.sources[source][1][index])
        return self.crop(case, rng)

    def crop(self, case: CachedCase, rng: np.random.Generator, lesion_centred: bool | None = None) -> PatchItem:
        shape = np.array(case.image.shape)
        if lesion_centred is None:
            lesion_centred = rng.random() < FOREGROUND_FRACTION
        if lesion_centred and case.lesion_voxels:
            labs = sorted(case.lesion_voxels)
            vox = case.lesion_voxels[labs[int(rng.integers(len(labs)))]]
            centre = vox[int(rng.integers(len(vox)))] + rng.integers(-self.patch // 4, self.patch // 4 + 1)
        else:
            centre = np.array([rng.integers(0, s) for s in shape])
        start = centre - self.patch // 2
        # Patches may hang over the border (padding = air, 0 in the window normalisation).
        src = tuple(slice(max(0, a), min(s, a + p)) for a, s, p in zip(start, shape, self.patch))
        dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, start))
        image = np.zeros(tuple(self.patch), np.float32)
        labels = np.zeros(tuple(self.patch), np.int32)
        image[dst] = case.image[src]
        labels[dst] = case.labels[src]
        if self.augment:
            image = self._intensity(image, rng)
        present = [int(v) for v in np.unique(labels) if v != 0]
        masks = np.stack([labels == v for v in present]) if present else np.zeros((0, *self.patch), bool)
        return PatchItem(
            image=torch.from_numpy(image)[None],
            masks=torch.from_numpy(masks),
            positives=[case.positives[v] for v in present],
            report_rows=[case.report_rows[v] for v in present] if not self.cfg.multi_positive else None,
        )

    @staticmethod
    def _intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Mild: absolute density carries attributes (enhancement, hypo/hyperdense), and no flips:
        # left/right is an attribute (location). Scale, shift and noise as nnU-Net/MONAI do, smaller.
        scale = rng.uniform(0.95, 1.05)
        shift = rng.uniform(-0.02, 0.02)
        noise = rng.normal(0, 0.01, size=image.shape).astype(np.float32)
        inside = image > 0  # keep padding/air at 0
        return np.where(inside, image * scale + shift + noise, image).astype(np.float32)


def collate(items: list[PatchItem], device: torch.device):
    from malenia.model.targets import LesionTargets

    images = torch.stack([it.image for it in items]).to(device)
    targets = [LesionTargets(it.masks.to(device), it.positives, it.report_rows) for it in items]
    return images, targets


def fixed_patches(data: Path, case_ids: list[str], cfg, bank: TrainingBank, n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` lesion-centred validation patches drawn once with a fixed seed: (image [1,D,H,W], foreground [D,H,W])."""
    if not case_ids or n <= 0:
        return []
    stream = PatchStream(data, case_ids, cfg, bank, seed=seed, augment=False)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        case = stream.case(0, case_ids[i % len(case_ids)])
        item = stream.crop(case, rng, lesion_centred=True)
        fg = item.masks.any(0) if len(item.masks) else torch.zeros(item.image.shape[1:], dtype=torch.bool)
        out.append((item.image, fg))
    return out
