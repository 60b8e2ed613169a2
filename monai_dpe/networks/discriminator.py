"""DPEDiscriminator: the paper's VGG-style discriminator, for 2D and 3D."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool

from monai_dpe.networks.blocks import _make_act

__all__ = ["DPEDiscriminator"]


class DPEDiscriminator(nn.Module):
    """Eight 3x3 conv layers with alternating strides, BatchNorm from the second, swish, 1x1 conv to one score.

    The score map is averaged globally and passed through ``output_act`` (the paper: sigmoid),
    so the output is one probability per image, shape (B, 1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: widths of the conv layers (paper: 64, 64, 128, 128, 256, 256, 512, 512).
        strides: stride of each conv layer (paper: 1, 2, 1, 2, ...).
        act: activation after each conv layer (paper: swish).
        norm: normalisation from the second layer on (paper: batch norm).
        output_act: final activation; ``None`` returns logits (use with a with-logits loss).

    Example::

        disc = DPEDiscriminator(spatial_dims=2, in_channels=3)
        p_real = disc(torch.rand(4, 3, 128, 128))  # (4, 1) in (0, 1)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 64, 128, 128, 256, 256, 512, 512),
        strides: Sequence[int] | None = None,
        act: str | tuple = "swish",
        norm: str | tuple = "batch",
        output_act: str | tuple | None = "sigmoid",
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        strides = tuple(strides) if strides is not None else tuple(1 + (i % 2) for i in range(len(channels)))
        if len(strides) != len(channels):
            raise ValueError(f"strides ({len(strides)}) and channels ({len(channels)}) must have the same length.")
        layers = []
        prev = in_channels
        for i, (width, stride) in enumerate(zip(channels, strides)):
            layers.append(
                Convolution(
                    spatial_dims, prev, width, strides=stride, kernel_size=3, act=act, norm=norm if i > 0 else None
                )
            )
            prev = width
        self.features = nn.Sequential(*layers)
        self.score = Conv[Conv.CONV, spatial_dims](prev, 1, 1)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.output_act = _make_act(output_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_act(torch.flatten(self.pool(self.score(self.features(x))), 1))
