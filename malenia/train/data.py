"""What the training loop consumes: the training attribute bank and a deterministic stream of patch batches.

- `TrainingBank`: the vocabulary's attribute bank (+ rows for free-text descriptions found in the training
  reports) and, for single-positive ablations, one row per distinct whole-report text (aspect -1).
- `PatchStream`: patches from malenia.data.sampler.LesionPatchDataset (lesion-centred oversampling, MONAI
  augmentation; item i of epoch e has its own seed), preprocessed exactly as at inference
  (malenia.data.preprocess.preprocessor_for). The order of items per epoch comes from torch's
  DistributedSampler, each process taking its share of the global batch; so a resumed or a multi-process
  run sees the same patches as an uninterrupted single-process run.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from malenia.aspects import ASPECTS, NOVEL_TYPES


@dataclass
class TrainingBank:
    bank: Any  # AttributeBank (vocabulary + free text)
    report_texts: list[str] = field(default_factory=list)
    report_embeddings: np.ndarray | None = None  # [Q, Dt] whole-report rows (single-positive ablations)
    report_style: str = "paragraph"
    table: Any = None  # KnowledgeTable (disease names for "raw" reports)

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

    def row(self, aspect: str, desc_id: str | None, text: str) -> int:
        """Bank row of a description: its vocabulary id, else the free-text row of its text."""
        if desc_id and desc_id in self.bank.ids:
            return self.bank.row(desc_id)
        return self.bank.row(_free_id(aspect, text))

    def report_row(self, text: str) -> int:
        return len(self.bank) + self.report_texts.index(text)

    def inference_bank(self):
        return self.bank


def _free_id(aspect: str, text: str) -> str:
    """The id AttributeBank.extend gives a free-text description."""
    from malenia.knowledge.bank import FREE_TEXT_PREFIX

    text = " ".join(str(text).split())
    return f"{FREE_TEXT_PREFIX}.{aspect}.{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def report_text(disease: str | None, texts: dict[str, list[str]], style: str, table=None) -> str:
    """The whole-report text of a lesion for single-positive training: its 8 descriptions as one paragraph
    ("paragraph", the paper's S1), or only what a report's impression names, the lesion type ("raw")."""
    from malenia.knowledge.bank import report_paragraph

    if style == "raw":
        name = disease or "lesion"
        if table is not None and disease in table.diseases:
            name = table.name(disease)
        return f"{name[0].upper()}{name[1:]}."
    return report_paragraph({a: list(texts.get(a, [])) for a in ASPECTS})


def build_training_bank(cfg, datasets: list[Path], encoder_name: str | None = None, report_style: str = "paragraph",
                        splits: dict[Path, list[str]] | None = None, init: Path | None = None) -> TrainingBank:
    """Vocabulary bank (cached per encoder and vocabulary, or --init's), extended with the datasets' free-text
    descriptions; plus whole-report rows when the config trains with one positive per lesion. The text encoder
    is loaded only when one of these texts is not in the bank yet (malenia.train.text_bank)."""
    from malenia.errors import InputError
    from malenia.knowledge.table import KnowledgeTable
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.train.text_bank import vocabulary_bank

    bank, encoder = vocabulary_bank(Vocabulary.load(), encoder_name or cfg.text_encoder, init)
    if bank.dim != cfg.text_dim:
        raise InputError(f"text encoder {bank.encoder_id} gives {bank.dim}-d embeddings; config {cfg.name!r} expects {cfg.text_dim}")
    table = KnowledgeTable.load()
    free, reports = _dataset_texts(cfg, datasets, splits, report_style, table)
    for a, texts in free.items():
        if texts:
            bank.extend(sorted(texts), a, encoder)  # embeds only the texts the bank lacks
    out = TrainingBank(bank, report_style=report_style, table=table)
    if not cfg.multi_positive:
        out.report_texts = sorted(reports)
        out.report_embeddings = (encoder.encode(out.report_texts) if out.report_texts
                                 else np.zeros((0, bank.dim), np.float32))
    return out


def _dataset_texts(cfg, datasets, splits, report_style, table) -> tuple[dict[str, set[str]], set[str]]:
    """The free-text descriptions per aspect (those without a vocabulary id) and, for single-positive
    configs, the whole-report texts of the datasets' lesions. InputError for a lesion of a validation-only
    novel type: these are the training cases."""
    from malenia.data.dataset import read_case, read_dataset
    from malenia.errors import InputError
    from malenia.knowledge.vocabulary import Vocabulary

    known = set(Vocabulary.load().ids())
    free: dict[str, set[str]] = {a: set() for a in ASPECTS}
    reports: set[str] = set()
    for ds in datasets:
        ids = (splits or {}).get(ds) or read_dataset(ds).cases
        for case_id in ids:
            rep = read_case(ds, case_id, with_images=False).report
            for les in rep.lesions:
                if les.disease in NOVEL_TYPES:  # trained on, they would no longer measure zero-shot detection
                    raise InputError(f"{ds}: case {case_id} holds a {les.disease}, a validation-only novel type "
                                     "(malenia.aspects.NOVEL_TYPES): train on other cases and validate on it")
                for a in ASPECTS:
                    free[a] |= {d.text for d in les.attributes.get(a, []) if not d.id or d.id not in known}
                if not cfg.multi_positive:
                    texts = {a: [d.text for d in les.attributes.get(a, [])] for a in ASPECTS}
                    reports.add(report_text(les.disease, texts, report_style, table))
    return free, reports


def _read_mined(files: Path | list[Path] | None):
    """The hard-negatives files (malenia.data.hard_negatives) merged case by case; None without any."""
    if not files:
        return None
    from malenia.data.hard_negatives import merge_hard_negatives, read_hard_negatives

    files = [files] if isinstance(files, (str, Path)) else list(files)
    return merge_hard_negatives([read_hard_negatives(f) for f in files])


def _require_matched(mined, case_ids: list[str], option: str) -> None:
    """InputError when no mined case is among `case_ids` (a dataset's training cases): a file mined on other data
    would do nothing. Checked on the dataset index, before the cases are loaded."""
    from malenia.errors import InputError

    if mined is None or not mined.cases:
        return
    if not set(case_ids) & set(mined.cases):
        some = ", ".join(sorted(mined.cases)[:3])
        raise InputError(f"none of the {len(mined.cases)} mined cases ({some}, ...) is a training case of {option}: "
                         "hard negatives mined on another dataset or split?")


class _Mix(torch.utils.data.Dataset):
    """Main dataset followed by replay items; the epoch's shuffle interleaves them."""

    def __init__(self, main, replay=None, replay_items: int = 0):
        self.main, self.replay, self.replay_items = main, replay, replay_items

    def set_epoch(self, epoch: int) -> None:
        self.main.set_epoch(epoch)
        if self.replay is not None:
            self.replay.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.main) + self.replay_items

    def __getitem__(self, i: int):
        return self.main[i] if i < len(self.main) else self.replay[i - len(self.main)]


class PatchStream:
    """Batches of sampler items turned into network inputs and LesionTargets."""

    def __init__(self, data: Path, split: str | None, cfg, bank: TrainingBank, seed: int = 0,
                 augment: "bool | AugmentConfig" = True,
                 samples_per_epoch: int | None = None, replay: Path | None = None, replay_fraction: float = 0.5,
                 lesion_fraction: float | None = None, case_ids: list[str] | None = None,
                 hard_negatives: Path | list[Path] | None = None, hard_negative_fraction: float = 0.5,
                 missed_fraction: float = 0.0, replay_hard_negatives: Path | list[Path] | None = None):
        from malenia.data.preprocess import preprocessor_for
        from malenia.data.sampler import AugmentConfig, LesionPatchDataset
        from malenia.errors import InputError

        self.cfg, self.bank, self.seed = cfg, bank, int(seed)
        pre = preprocessor_for(cfg)
        n = int(samples_per_epoch or cfg.optim.iterations_per_epoch * cfg.optim.batch_size)
        kw = dict(patch_size=cfg.patch_size, preprocessor=pre, seed=seed,
                  augment=augment if isinstance(augment, AugmentConfig) else AugmentConfig() if augment else None)
        if lesion_fraction is not None:
            kw["lesion_fraction"] = lesion_fraction
        # a model's mined mistakes (one file, or several merged) on each dataset: the main one's and the replay's,
        # checked against each dataset's index before its cases are loaded
        from malenia.data.dataset import read_dataset

        if replay_hard_negatives and replay is None:
            raise InputError("hard negatives for a replay dataset were given without --replay")
        shares = dict(hard_negative_fraction=hard_negative_fraction, missed_fraction=missed_fraction)
        mined = _read_mined(hard_negatives)
        _require_matched(mined, case_ids if case_ids is not None else read_dataset(data).split_cases(split), "--data")
        main = LesionPatchDataset(data, split, samples_per_epoch=n, cases=case_ids, hard_negatives=mined, **shares, **kw)
        rep, k = None, 0
        if replay is not None:
            index = read_dataset(replay)
            rsplit = "train" if "train" in index.split else None
            k = int(round(n * replay_fraction / max(1e-6, 1 - replay_fraction)))
            rep_mined = _read_mined(replay_hard_negatives)
            _require_matched(rep_mined, index.split_cases(rsplit), "--replay")
            rep = LesionPatchDataset(replay, rsplit, samples_per_epoch=max(k, 1), hard_negatives=rep_mined, **shares,
                                     **{**kw, "seed": seed + 7919})
        self.dataset = _Mix(main, rep, k)

    @property
    def epoch_size(self) -> int:
        return len(self.dataset)

    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, math.ceil(self.epoch_size / global_batch))

    def batch(self, step: int, batch: int, rank: int = 0, world: int = 1) -> list[dict]:
        """This process's share of global batch `step`: items j*batch .. j*batch+batch-1 of the epoch order
        torch's DistributedSampler gives this rank (the global batch is the same for any world size)."""
        from torch.utils.data.distributed import DistributedSampler

        epoch, j = divmod(step, self.steps_per_epoch(batch * world))
        sampler = DistributedSampler(self.dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                                     drop_last=False)
        sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        order = list(sampler)
        return [self.dataset[order[(j * batch + i) % len(order)]] for i in range(batch)]

    def targets(self, item: dict):
        """LesionTargets of one sampler item (masks in lesion-list order, their bank rows)."""
        from malenia.data.sampler import instance_masks
        from malenia.model.targets import LesionTargets

        masks = instance_masks(item["instances"], item["lesions"])
        positives, reports = [], []
        for les in item["lesions"]:
            rows = []
            for a in ASPECTS:
                for desc_id, text in zip(les["attributes"].get(a, []), les["texts"].get(a, [])):
                    rows.append(self.bank.row(a, desc_id, text))
            positives.append(rows)
            if not self.cfg.multi_positive:
                reports.append(self.bank.report_row(report_text(les["disease"], les["texts"], self.bank.report_style,
                                                                self.bank.table)))
        return LesionTargets(masks, positives, reports if not self.cfg.multi_positive else None)

    def host_batch(self, step: int, batch: int, rank: int = 0, world: int = 1) -> HostBatch:
        """Batch `step` ready to be copied to the device (built in a loader worker): the stacked images and,
        per patch, (lesion masks, positive rows, report rows)."""
        items = self.batch(step, batch, rank, world)
        targets = [self.targets(it) for it in items]
        return torch.stack([it["image"] for it in items]), [(t.masks, t.positives, t.report_rows) for t in targets]


# (images [B,1,D,H,W], per patch (masks bool [K,D,H,W], positives, report rows)): plain tensors and lists, so
# DataLoader workers can send it and its pin-memory thread can pin it.
HostBatch = tuple[torch.Tensor, list[tuple[torch.Tensor, list[list[int]], list[int] | None]]]


def to_device(host: HostBatch, device: torch.device):
    """(images, [LesionTargets]) on `device`; from pinned memory the copies do not wait for the device."""
    from malenia.model.targets import LesionTargets

    nb = device.type == "cuda"
    images, targets = host
    return images.to(device, non_blocking=nb), [LesionTargets(m.to(device, non_blocking=nb), p, r) for m, p, r in targets]


def default_workers(processes_per_node: int = 1) -> int:
    """Loader worker processes per training process: the CPU cores left after the training processes and one
    spare, at most 12 (a 16-core GPU machine keeps a GPU busy with about 12); 0 on a 2-core machine."""
    cores = os.cpu_count() or 1
    return max(0, min(12, cores // max(1, processes_per_node) - 2))


class _Steps(torch.utils.data.Dataset):
    """Item `step` is global batch `step`'s share of this process: any worker builds any step alike."""

    def __init__(self, stream: PatchStream, batch: int, rank: int, world: int):
        self.stream, self.batch, self.rank, self.world = stream, batch, rank, world

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> HostBatch:
        return self.stream.host_batch(step, self.batch, self.rank, self.world)


def _as_is(x):
    return x


def batch_loader(stream: PatchStream, start: int, stop: int | None, batch: int, rank: int = 0, world: int = 1,
                 workers: int = 0, pin_memory: bool = False) -> Iterator[HostBatch]:
    """Host batches of steps start, start+1, ... (stop excluded; None: without end), drawn by `workers` processes
    ahead of the loop (0: in this process). Each step's patches depend only on (seed, step), so they are the same
    for any number of workers, and a resumed run continues exactly."""
    steps = range(start, stop if stop is not None else 2**62)
    # its own generator: creating the workers must not draw from torch's global RNG (the training's)
    loader = torch.utils.data.DataLoader(
        _Steps(stream, batch, rank, world), batch_size=None, sampler=steps, num_workers=workers,
        collate_fn=_as_is, pin_memory=pin_memory, prefetch_factor=2 if workers else None,
        generator=torch.Generator().manual_seed(stream.seed))
    return iter(loader)


def fixed_patches(data: Path, case_ids: list[str], cfg, bank: TrainingBank, n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` lesion-centred validation patches drawn once with a fixed seed: (image [1,D,H,W], foreground [D,H,W])."""
    if not case_ids or n <= 0:
        return []
    stream = PatchStream(data, None, cfg, bank, seed=seed, augment=False, samples_per_epoch=n, lesion_fraction=1.0,
                         case_ids=case_ids)
    stream.dataset.set_epoch(0)
    return [(it["image"], it["instances"] > 0) for it in (stream.dataset[i] for i in range(n))]
