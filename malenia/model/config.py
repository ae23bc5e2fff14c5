"""Model configurations as data: `paper` (nnU-Net scale, GPUs) and `compact` (same architecture, 2 CPU cores).

A config holds everything that must agree between training, preprocessing and inference:
the network's shape, the input geometry and intensity scheme, the loss weights, the ablation
switches and the optimisation hyper-parameters. It is saved with every checkpoint
(`to_dict`) and read back with `from_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from malenia.errors import InputError, ModelError

BRANCHES = ("both", "mask", "text")
# Loss weights, matching costs, optimiser and name: a fine-tuning run (--init) may set them anew.
TRAINING_ONLY_FIELDS = frozenset({
    "name", "optim", "match_cost_bce", "match_cost_dice", "num_points", "match_stride",
    "lambda_deep", "lambda_sim", "lambda_seg", "alpha_bce", "alpha_dice", "lambda_fg", "background_token_weight",
    "lambda_dense", "dense_lesion_weight", "dense_backbone_grad", "train_stage",
})
TRAIN_STAGES = ("full", "dense")
FOREGROUND_SOURCES = ("tokens", "dense", "mean")
# A fine-tune (--init) may add a dense head to a model trained without one: the parent's weights load,
# the head starts from its prior.
HEAD_FIELDS = frozenset({"dense_head_levels", "foreground_source"})
# Fields a fine-tune may change over its parent's weights: the inference foreground is a choice of map, and the
# model grid a choice of resampling (no weight's shape depends on it; nnU-Net's pretrained-weights path, too,
# loads across plans of another spacing). The fine-tune's own config records the grid it was trained and ships on.
FREE_OVER_WEIGHTS = frozenset({"foreground_source", "target_spacing"})
# The intensity fields: a fine-tune may add input channels after its parent's (MaleniaConfig.extends_windows_of).
WINDOW_FIELDS = frozenset({"hu_window", "input_windows"})


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (paper Sec. 4.1)."""

    lr: float = 1e-4
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)  # the paper's "momentum 0.9" is AdamW's beta1
    batch_size: int = 2  # per device
    epochs: int = 4000
    warmup_epochs: int = 40
    iterations_per_epoch: int = 250  # nnU-Net's epoch definition
    grad_clip: float = 12.0  # nnU-Net clips the gradient norm at 12
    dense_head_lr_scale: float = 1.0  # the dense lesion head's learning rate, as a multiple of lr (train/schedule.py)
    # A fine-tune that adds input windows (--init of a network with fewer): the added channels' first-convolution
    # weights learn at lr * this, while the parent's channels there stay fixed (train/loop.py, "widening").
    new_window_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        problems = field_type_problems(self) or [
            f"{name} must be {rule}, got {getattr(self, name)!r}" for name, rule, ok in (
                ("lr", "above 0", self.lr > 0), ("weight_decay", ">= 0", self.weight_decay >= 0),
                ("betas", "two numbers in [0, 1)", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)),
                ("batch_size", "at least 1", self.batch_size >= 1), ("epochs", "at least 1", self.epochs >= 1),
                ("warmup_epochs", ">= 0", self.warmup_epochs >= 0),
                ("iterations_per_epoch", "at least 1", self.iterations_per_epoch >= 1),
                ("grad_clip", "above 0", self.grad_clip > 0),
                ("dense_head_lr_scale", "above 0", self.dense_head_lr_scale > 0),
                ("new_window_lr_scale", "above 0", self.new_window_lr_scale > 0)) if not ok]
        if problems:
            raise ModelError("invalid optimiser settings (optim.*): " + "; ".join(problems))


def field_type_problems(config) -> list[str]:
    """The fields of a config dataclass whose value is not of their default's kind (a flag, a whole number, a
    finite number, numbers in a tuple; fields whose default is None are the caller's to check): JSON files and `--set` hand over whatever was written, and a string where
    a number belongs would otherwise fail deep inside the network or the optimiser."""
    problems = []
    for f in dataclasses.fields(config):
        default, value = f.default, getattr(config, f.name)
        if isinstance(default, tuple) and default and all(_is_number(v) for v in default):
            whole = all(isinstance(v, int) for v in default)
            ok = isinstance(value, tuple) and all(_is_number(v) and (not whole or isinstance(v, int)) for v in value)
            kind = "whole numbers" if whole else "numbers"
        elif isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif isinstance(default, float):
            ok, kind = _is_number(value), "a finite number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            problems.append(f"{f.name} must be {kind}, got {value!r}")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class MaleniaConfig:
    name: str

    # --- input geometry and intensities (read by preprocessing, sampler and inference) ---
    target_spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)  # mm, (z, y, x), isotropic (App. B.3)
    patch_size: tuple[int, int, int] = (96, 96, 96)  # (z, y, x) voxels
    # HU are clipped to this window then mapped linearly to [0, 1] (0 = air, so zero padding is air).
    hu_window: tuple[float, float] = (-200.0, 400.0)
    # Not in the paper (empty = its single intensity channel, the hu_window itself): the network's input channels
    # as HU windows inside hu_window, each clipped and mapped to [0, 1] by a fixed stem (malenia/model/stem.py).
    # A soft-tissue window hides what lies below its low end: most real lung nodules' voxels are under -200 HU
    # (docs/model.md, "Input windows"); a second, lung window shows them without changing the first channel.
    input_windows: tuple[tuple[float, float], ...] = ()

    # --- backbone: nnU-Net PlainConvUNet ---
    in_channels: int = 1
    features_per_stage: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
    strides: tuple[int, ...] = (1, 2, 2, 2, 2, 2)  # bottleneck at 1/32
    kernel_size: int = 3
    n_conv_per_stage: int = 2
    n_conv_per_stage_decoder: int = 2

    # --- mask tokens and transformer decoder (Mask2Former style) ---
    embed_dim: int = 256  # C
    num_tokens: int = 16  # N
    num_blocks: int = 3  # block i attends to the decoder features at 1/32, 1/16, 1/8
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.0
    masked_attention: bool = True

    # --- text side ---
    text_encoder: str | None = None  # None: the project default (all-MiniLM-L6-v2); else a name or path
    text_dim: int = 384  # Dt: 384 for MiniLM, 768 for Clinical-BERT
    temperature_init: float = 0.07

    # --- CMKI and heads ---
    cmki_layers: int = 1
    beta_mask: float = 0.5
    beta_text: float = 0.5

    # --- matching and losses (paper Sec. 3.3) ---
    match_cost_bce: float = 1.0
    match_cost_dice: float = 1.0
    num_points: int | None = None  # None: match and supervise proposals densely; else voxels sampled per block
    # Not in the paper (1 = its dense matching): the matching costs of every token are computed on a grid this many
    # times coarser than the image (proposals up-sampled to it, lesion masks averaged over its cells); the losses
    # stay on the image grid. At 2 the costs take a quarter of the time and 89 % of the assignments of a trained
    # model's proposals are identical, the rest near-ties (docs/training.md, ninth round).
    match_stride: int = 1
    lambda_deep: float = 1.0
    lambda_sim: float = 1.0
    lambda_seg: float = 1.0
    alpha_bce: float = 2.0
    alpha_dice: float = 2.0
    # Not in the paper (0 = the paper's objective): BCE + Dice on the map inference thresholds, the
    # per-voxel max over tokens of lesion score x mask probability, against the union of the lesions.
    # Hungarian matching supervises each token only on its own lesion, so this map, and the false
    # positives it holds, are otherwise never trained directly; with a CPU-sized budget it is what
    # makes the compact model converge (docs/training.md).
    lambda_fg: float = 0.0
    # Weight of a background token's term in the L_sim average (matched tokens weigh 1). The paper
    # averages plainly (1.0); Mask2Former weighs its no-object class 0.1 for the same reason as here:
    # with 16 tokens and one or two lesions per patch, background terms otherwise dominate, and the
    # compact model's lesion tokens learned their descriptions poorly (docs/training.md).
    background_token_weight: float = 1.0
    # Not in the paper (0 = the paper's network): a dense lesion head (1x1x1 conv) on the finest
    # `dense_head_levels` decoder stages, trained with deep-supervised BCE + batch Dice on the lesion
    # union (weight `lambda_dense`); see malenia/model/dense.py and docs/model.md for why.
    dense_head_levels: int = 0
    lambda_dense: float = 0.0
    # Not in the paper (0 = off): weight of a lesion-wise Dice term in the dense loss (blob loss, Kofler et
    # al. 2023): each lesion's own Dice, the other lesions masked out, averaged over lesions. The batch Dice
    # weighs a lesion by its voxels, so a 40-voxel gallstone beside a 5 000-voxel liver tumour teaches the
    # head almost nothing, and half of the small lesions stayed silent (docs/training.md).
    dense_lesion_weight: float = 0.0
    # Share of the dense loss's gradient that reaches the shared backbone (1: all; 0: the head learns on
    # features shaped by the token objective alone). A fast head fine-tuned onto a trained model at full
    # share degraded its tokens (docs/training.md); a small share keeps them.
    dense_backbone_grad: float = 1.0
    # "dense": train the backbone and the dense head alone (no tokens, matching or text; about half the
    # step's work), a first stage whose model folder a "full" run (--init) then continues with the paper's
    # objective added. nnU-Net-style lesion features first, the open-set stage on top (docs/training.md).
    train_stage: str = "full"
    # Which map inference cuts lesions from: "tokens" (the paper: max over tokens of lesion score x
    # mask probability), "dense" (the dense head's probability; tokens still describe each lesion) or
    # "mean" (the average of the two maps: an ensemble of two heads on one backbone).
    foreground_source: str = "tokens"

    # --- ablation switches (paper Tables 3 and 4) ---
    multi_scale_alignment: bool = True  # False: L_sim at the last block only
    multi_positive: bool = True  # False: one positive per lesion, the whole-report row
    use_cmki: bool = True  # False: no two-way attention ("deep fusion") in CMKI
    branches: str = "both"  # which head branches form the final mask: both, mask or text

    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        # JSON and --set give input_windows as nested lists; hashable, comparable tuples from here on
        object.__setattr__(self, "input_windows", tuple(
            tuple(float(v) if isinstance(v, (int, float)) else v for v in w) if isinstance(w, (list, tuple)) else w
            for w in self.input_windows))
        problems = field_type_problems(self)
        if not isinstance(self.optim, OptimConfig):
            problems.append(f"optim must be the optimiser settings (change one as optim.lr=...), got {self.optim!r}")
        problems = problems or self._size_problems()
        if problems:  # the checks below compute with these values
            raise ModelError(f"invalid model config {self.name!r}: " + "; ".join(problems))
        n = len(self.features_per_stage)
        if len(self.strides) != n:
            problems.append(f"strides has {len(self.strides)} entries for {n} stages")
        if n < 5:
            problems.append("the backbone needs at least 5 stages (features at 1/32, 1/16, 1/8 and full resolution)")
        if self.strides and self.strides[0] != 1:
            problems.append("the first stage must keep full resolution (stride 1)")
        if self.num_blocks < 1 or self.num_blocks > n - 2:
            problems.append(f"num_blocks must be in 1..{n - 2}")
        if self.embed_dim % self.num_heads:
            problems.append("embed_dim must be divisible by num_heads")
        if self.foreground_source not in FOREGROUND_SOURCES:
            problems.append(f"foreground_source must be one of {FOREGROUND_SOURCES}, got {self.foreground_source!r}")
        if self.foreground_source != "tokens" and not self.dense_head_levels:
            problems.append(f"foreground_source {self.foreground_source!r} needs a dense head (dense_head_levels >= 1)")
        if self.train_stage not in TRAIN_STAGES:
            problems.append(f"train_stage must be one of {TRAIN_STAGES}, got {self.train_stage!r}")
        if self.train_stage == "dense" and (self.foreground_source != "dense" or not self.lambda_dense):
            problems.append("train_stage 'dense' needs foreground_source 'dense' and lambda_dense > 0")
        if self.dense_lesion_weight < 0:
            problems.append("dense_lesion_weight must be >= 0")
        if self.kernel_size % 2 == 0:
            problems.append(f"kernel_size must be odd (a centred convolution), got {self.kernel_size}")
        if self.match_stride < 1:
            problems.append("match_stride must be >= 1")
        if not 0.0 <= self.dense_backbone_grad <= 1.0:
            problems.append("dense_backbone_grad must be in [0, 1]")
        if not 0 <= self.dense_head_levels <= n - 1:
            problems.append(f"dense_head_levels must be in 0..{n - 1}")
        if self.branches not in BRANCHES:
            problems.append(f"branches must be one of {BRANCHES}, got {self.branches!r}")
        if any(p % self.stride for p in self.patch_size):
            problems.append(f"patch_size {self.patch_size} must be a multiple of the network stride {self.stride}")
        if self.hu_window[0] >= self.hu_window[1]:
            problems.append("hu_window must be (low, high) with low < high")
        problems += self._window_problems()
        if problems:
            raise ModelError(f"invalid model config {self.name!r}: " + "; ".join(problems))

    def _size_problems(self) -> list[str]:
        """Sizes, counts and weights out of their range (zero tokens, a 0-voxel patch, a negative loss weight)."""
        at_least_one = ("in_channels", "kernel_size", "n_conv_per_stage", "n_conv_per_stage_decoder", "embed_dim",
                        "num_tokens", "num_heads", "ffn_dim", "text_dim")
        problems = [f"{k} must be at least 1, got {getattr(self, k)}" for k in at_least_one if getattr(self, k) < 1]
        for k, size in (("features_per_stage", None), ("strides", None), ("patch_size", 3), ("target_spacing", 3)):
            value = getattr(self, k)
            if not value or len(value) != (size or len(value)) or not all(v > 0 for v in value):
                problems.append(f"{k} must be {size or 'one or more'} positive values, got {value}")
        weights = ("match_cost_bce", "match_cost_dice", "lambda_deep", "lambda_sim", "lambda_seg", "alpha_bce",
                   "alpha_dice", "lambda_fg", "background_token_weight", "lambda_dense", "cmki_layers")
        problems += [f"{k} must be >= 0, got {getattr(self, k)}" for k in weights if getattr(self, k) < 0]
        if self.num_points is not None and not (isinstance(self.num_points, int) and self.num_points >= 1):
            problems.append(f"num_points must be at least 1 (or null: dense), got {self.num_points}")
        if not self.temperature_init > 0:
            problems.append(f"temperature_init must be above 0, got {self.temperature_init}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        return problems

    def _window_problems(self) -> list[str]:
        windows = self.input_windows
        lo, hi = self.hu_window
        bad = [w for w in windows if not (isinstance(w, tuple) and len(w) == 2
                                          and all(isinstance(v, (int, float)) for v in w) and lo <= w[0] < w[1] <= hi)]
        problems = [f"input_windows must be (low, high) pairs inside hu_window {self.hu_window}, got {bad}"] if bad else []
        if windows and self.in_channels != 1:
            problems.append("input_windows split a single CT channel (in_channels 1)")
        return problems

    @property
    def network_windows(self) -> tuple[tuple[float, float], ...]:
        """The HU window of each channel the backbone sees, in order."""
        return self.input_windows or (tuple(self.hu_window),)

    @property
    def backbone_channels(self) -> int:
        return len(self.input_windows) or self.in_channels

    @property
    def stride(self) -> int:
        """Total down-sampling of the bottleneck: inputs are padded to a multiple of it."""
        return math.prod(self.strides)

    @property
    def block_strides(self) -> tuple[int, ...]:
        """Down-sampling of the features each transformer block attends to (32, 16, 8 by default)."""
        return tuple(self.stride // 2**i for i in range(self.num_blocks))

    def replace(self, **changes: Any) -> "MaleniaConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def architecture(self) -> dict[str, Any]:
        """The fields that weights and inference depend on: fine-tuning may change only the others."""
        return {k: v for k, v in self.to_dict().items() if k not in TRAINING_ONLY_FIELDS}

    def loads_weights_of(self, parent: "MaleniaConfig") -> bool:
        """True when `parent`'s weights initialise this network (--init): the same architecture up to the
        fields in FREE_OVER_WEIGHTS and input windows that extend the parent's, or `parent`'s plus a dense head."""
        def weights(c: "MaleniaConfig") -> dict[str, Any]:
            return {k: v for k, v in c.architecture().items() if k not in FREE_OVER_WEIGHTS | WINDOW_FIELDS}
        return (weights(self) == weights(parent) and self.extends_windows_of(parent)) or self.adds_dense_head_to(parent)

    def extends_windows_of(self, parent: "MaleniaConfig") -> bool:
        """True when the parent's input channels are this network's first ones: its weights then load, the
        first convolution's weights of the added channels start at zero, and the network computes what the
        parent did until training moves them (malenia.model.folder.load_weights)."""
        mine, theirs = self.network_windows, parent.network_windows
        return self.in_channels == parent.in_channels and mine[: len(theirs)] == theirs

    def adds_dense_head_to(self, parent: "MaleniaConfig") -> bool:
        """True when this architecture is `parent`'s plus a dense head (so --init can load the parent)."""
        free = HEAD_FIELDS | FREE_OVER_WEIGHTS | WINDOW_FIELDS
        mine = {k: v for k, v in self.architecture().items() if k not in free}
        theirs = {k: v for k, v in parent.architecture().items() if k not in free}
        return (mine == theirs and self.extends_windows_of(parent) and parent.dense_head_levels == 0
                and self.dense_head_levels > 0)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "MaleniaConfig":
        """Inverse of `to_dict` (JSON lists become tuples again); unknown keys are refused."""
        data = dict(data)
        names = {f.name: f for f in dataclasses.fields(MaleniaConfig)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ModelError(f"model config has unknown keys {unknown}; written by a newer malenia?")
        optim = data.pop("optim", None) or {}
        o_names = {f.name for f in dataclasses.fields(OptimConfig)}
        if set(optim) - o_names:
            raise ModelError(f"model config 'optim' has unknown keys {sorted(set(optim) - o_names)}")
        optim = {k: tuple(v) if isinstance(v, list) else v for k, v in optim.items()}
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return MaleniaConfig(**data, optim=OptimConfig(**optim))


def paper() -> MaleniaConfig:
    """nnU-Net 3d_fullres scale at 96³ and 1.5 mm, C = 256 as in Mask2Former; for GPUs."""
    return MaleniaConfig(name="paper")


def compact() -> MaleniaConfig:
    """Same architecture with ~1/8 of the channels, 64³ patches at 2.5 mm: trains on 2 CPU cores."""
    return MaleniaConfig(
        name="compact",
        target_spacing=(2.5, 2.5, 2.5),
        patch_size=(64, 64, 64),
        features_per_stage=(8, 16, 32, 64, 128, 128),
        embed_dim=96,
        num_heads=4,
        ffn_dim=384,
        lambda_fg=1.0,
        background_token_weight=0.1,
        dense_head_levels=3,
        lambda_dense=1.0,
        dense_lesion_weight=1.0,
        foreground_source="dense",
        match_stride=2,
        optim=OptimConfig(lr=3e-4, batch_size=2, epochs=200, warmup_epochs=5, iterations_per_epoch=50,
                          dense_head_lr_scale=100.0),
    )


CONFIGS = {"paper": paper, "compact": compact}


def get_config(name: str) -> MaleniaConfig:
    try:
        return CONFIGS[name]()
    except KeyError:
        raise InputError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}") from None
