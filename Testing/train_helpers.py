"""A tiny dataset and a tiny model config for the training and evaluation tests (fast on 1 CPU thread)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.aspects import ASPECTS
from malenia.data.dataset import Case, CaseReport, DatasetIndex, Description, LesionReport, write_case, write_dataset_index

SPACING = 2.5  # mm, = the tiny config's spacing: preprocessing does not resample


def tiny_config():
    from malenia.model.config import OptimConfig, get_config

    return get_config("compact").replace(
        name="tiny",
        target_spacing=(SPACING, SPACING, SPACING),
        patch_size=(32, 32, 32),
        features_per_stage=(4, 8, 8, 16, 16),
        strides=(1, 2, 2, 2, 2),  # bottleneck 2³ on a 32³ patch (instance norm needs > 1 voxel)
        n_conv_per_stage=1,
        embed_dim=16,
        num_heads=2,
        ffn_dim=32,
        num_tokens=4,
        optim=OptimConfig(lr=3e-3, batch_size=2, epochs=10, warmup_epochs=1, iterations_per_epoch=3, grad_clip=12.0,
                          dense_head_lr_scale=10.0),  # 3e-2 for the head, as compact's 3e-4 x 100
    )


def make_tiny_dataset(root: Path, n_cases: int = 4, shape=(36, 40, 40), seed: int = 0,
                      diseases=("liver_tumor", "kidney_cyst"), max_lesions: int = 2) -> Path:
    """Bright or dark spheres in a soft-tissue block, each with a full report drawn from the knowledge table.
    Case i has 1 + i % max_lesions lesions."""
    from malenia.knowledge.table import KnowledgeTable

    table = KnowledgeTable.load()
    vocab = table.vocab
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n_cases):
        hu = rng.normal(40, 8, size=shape).astype(np.float32)
        labels = np.zeros(shape, np.uint8)
        lesions = []
        zz, yy, xx = np.indices(shape)
        for k in range(1 + i % max_lesions):
            disease = diseases[(i + k) % len(diseases)]
            c = rng.integers(8, np.array(shape) - 8)
            r = rng.uniform(3, 5)
            ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
            ball &= labels == 0
            labels[ball] = k + 1
            hu[ball] = 150.0 if disease.endswith("tumor") else -10.0
            attrs = table.sample_attributes(disease, rng)
            lesions.append(LesionReport(k + 1, disease, {a: [Description(vocab.text(x), x) for x in attrs[a]] for a in ASPECTS}))
        img = sitk.GetImageFromArray(hu)
        img.SetSpacing((SPACING,) * 3)
        lab = sitk.GetImageFromArray(labels)
        lab.CopyInformation(img)
        case_id = f"case{i:02d}"
        write_case(root, Case(case_id, img, lab, CaseReport(case_id, lesions, source="test")))
        ids.append(case_id)
    split = {"train": ids[: max(1, n_cases - 1)], "val": ids[-1:], "test": ids[-1:]}
    write_dataset_index(root, DatasetIndex("tiny", ids, split, "tiny test dataset"))
    return root


def train_tiny(root: Path, out: str, **changes):
    """`train()` of the tiny config on root/ds into root/out: 3 steps, a checkpoint after each, float32, no
    validation (the trainer's resume and averaging tests); `changes` override any TrainOptions field."""
    import torch

    from malenia.train.loop import TrainOptions, train

    torch.set_num_threads(1)
    opts = dict(data=root / "ds", out=root / out, config=tiny_config(), steps=3, checkpoint_every=1, val_every=100,
                log_every=1, progress="none", seed=0, precision="fp32", val_split=None) | changes
    return train(TrainOptions(**opts))
