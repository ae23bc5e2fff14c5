"""nnU-Net's PlainConvUNet with its decoder features exposed at every resolution.

The library's forward returns only the segmentation logits; Malenia needs the bottleneck
(1/32) and the decoder features at 1/16, 1/8, ... and full resolution. The subclass reuses
the library's encoder, transposed convolutions and conv stages unchanged and only replaces
the forward pass. The library's per-stage 1x1 segmentation layers are dropped: Malenia's own
projections read the features, and unused layers would be dead weights in every checkpoint.
"""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from malenia.model.config import MaleniaConfig


class MultiScaleUNet(PlainConvUNet):
    """`forward(x)` → [bottleneck, decoder stage 1, decoder stage 2, ..., full resolution]."""

    def __init__(self, cfg: MaleniaConfig):
        n = len(cfg.features_per_stage)
        super().__init__(
            input_channels=cfg.backbone_channels,
            n_stages=n,
            features_per_stage=list(cfg.features_per_stage),
            conv_op=nn.Conv3d,
            kernel_sizes=[[cfg.kernel_size] * 3] * n,
            strides=[[s] * 3 for s in cfg.strides],
            n_conv_per_stage=cfg.n_conv_per_stage,
            num_classes=1,
            n_conv_per_stage_decoder=cfg.n_conv_per_stage_decoder,
            conv_bias=False,  # every conv is followed by InstanceNorm, which removes a bias
            # nnU-Net v2 defaults for 3D CT
            norm_op=nn.InstanceNorm3d,
            norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=nn.LeakyReLU,
            nonlin_kwargs={"inplace": True},
        )
        self.decoder.seg_layers = nn.ModuleList()
        self.apply(PlainConvUNet.initialize)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each returned feature map, coarsest first."""
        ch = list(self.encoder.output_channels)
        return [ch[-1]] + ch[-2::-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = self.encoder(x)
        feats = [skips[-1]]
        lres = skips[-1]
        dec = self.decoder
        for s, stage in enumerate(dec.stages):
            lres = stage(torch.cat((dec.transpconvs[s](lres), skips[-(s + 2)]), 1))
            feats.append(lres)
        return feats
