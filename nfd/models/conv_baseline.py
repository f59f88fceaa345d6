"""The CNN baseline of T2: a DCGAN-like discriminator of the PointConv discriminator's depth and channels."""

from __future__ import annotations

import torch
from torch import nn

from nfd.config import DiscriminatorConfig


class ConvDiscriminator(nn.Module):
    """The CNN comparison of T2: a DCGAN-like discriminator with the PointConv discriminator's depth and channels.

    Per entry c of ``cfg.channels``: Conv (kernel 4, stride 2, padding 1) -> BatchNorm -> LeakyReLU, so each level
    keeps 1/2^d of the positions like the PointConv pooling; then a 3-wide conv to one channel averaged over the
    remaining positions (the analogue of the final PointConv over all remaining points). Its parameter count does not
    depend on the resolution, its activations grow with the number of pixels (voxels).
    """

    def __init__(self, coord_dim: int, feature_dim: int, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        if coord_dim not in (2, 3):
            raise ValueError(f"the CNN comparison needs 2D or 3D grids, got coord_dim={coord_dim}")
        conv = nn.Conv2d if coord_dim == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if coord_dim == 2 else nn.BatchNorm3d
        layers: list[nn.Module] = []
        width = feature_dim
        for c in cfg.channels:
            layers += [
                conv(width, c, 4, stride=2, padding=1),
                norm(c) if cfg.batchnorm else nn.Identity(),
                nn.LeakyReLU(cfg.leaky_slope),
            ]
            width = c
        self.body = nn.Sequential(*layers)
        self.final = conv(width, 1, 3, padding=1)
        self.coord_dim = coord_dim
        self.levels = len(cfg.channels)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` of images ``[B, k, R, R]`` (volumes ``[B, k, R, R, R]``)."""
        return self.final(self.body(grid)).flatten(1).mean(dim=1)
