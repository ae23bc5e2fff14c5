"""The network (nnU-Net backbone, transformer decoder, CMKI, heads), matcher, losses and configs."""
