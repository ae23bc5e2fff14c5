"""Tiny configurations of the real architecture for fast model tests."""

from __future__ import annotations

from malenia.model.config import MaleniaConfig

TEXT_DIM = 8


def tiny_config(stages: int = 6, **changes) -> MaleniaConfig:
    """The real architecture with a handful of channels; 5 stages (stride 16) keep 32³ inputs unpadded."""
    if stages == 6:
        shape = dict(patch_size=(64, 64, 64), features_per_stage=(4, 8, 8, 16, 16, 16))
    elif stages == 5:
        shape = dict(patch_size=(32, 32, 32), features_per_stage=(4, 8, 16, 16, 16), strides=(1, 2, 2, 2, 2))
    else:
        raise ValueError(f"tiny configs have 5 or 6 stages, not {stages}")
    base = dict(
        name="tiny",
        n_conv_per_stage=1,
        n_conv_per_stage_decoder=1,
        embed_dim=16,
        num_heads=2,
        ffn_dim=32,
        text_dim=TEXT_DIM,
        **shape,
    )
    return MaleniaConfig(**{**base, **changes})
