"""Building blocks of the DPE generator: residual and gated convolutions for 2D and 3D."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv

__all__ = ["ResidualBlock", "GatedConv", "DownBlock", "UpBlock"]


def _conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
    """A plain biased convolution from MONAI's factory (no norm, as in the paper)."""
    return Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size, stride=stride, padding=padding)


class ResidualBlock(nn.Module):
    """conv3x3 -> activation -> conv3x3, plus identity; no normalisation (the paper's block).

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        act: activation between the convolutions; the paper uses a single-parameter PReLU.

    Example::

        block = ResidualBlock(spatial_dims=2, channels=64)
        y = block(torch.rand(1, 64, 32, 32))
    """

    def __init__(self, spatial_dims: int, channels: int, act: str | tuple = ("prelu", {"num_parameters": 1})) -> None:
        super().__init__()
        self.conv1 = _conv(spatial_dims, channels, channels, 3, padding=1)
        self.act = _make_act(act)
        self.conv2 = _conv(spatial_dims, channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class GatedConv(nn.Module):
    """Gated convolution: act(conv(x)) * sigmoid(mask_conv(x)) on a reflection-padded input.

    The gate lets each skip connection learn where to pass encoder detail to the decoder
    (the paper's "gated skip").

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size; padding keeps the spatial size.
        act: feature activation; the paper uses LeakyReLU(0.2).
        gate_act: gate activation; the paper uses a sigmoid.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
        gate_act: str | tuple = "sigmoid",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}.")
        self.pad = kernel_size // 2
        self.conv = _conv(spatial_dims, in_channels, out_channels, kernel_size)
        self.mask_conv = _conv(spatial_dims, in_channels, out_channels, kernel_size)
        self.act = _make_act(act)
        self.gate_act = _make_act(gate_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad > 0:
            x = _safe_pad(x, [self.pad] * (2 * (x.dim() - 2)))
        return self.act(self.conv(x)) * self.gate_act(self.mask_conv(x))


class DownBlock(nn.Module):
    """3x3 stride-2 convolution to the next width, then activation (the paper's downsampling)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, act: str | tuple = "relu") -> None:
        super().__init__()
        self.conv = _conv(spatial_dims, in_channels, out_channels, 3, stride=2, padding=1)
        self.act = _make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class UpBlock(nn.Module):
    """2x2 stride-2 transposed convolution to the level's width, activation, then add the gated skip."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, act: str | tuple = "relu") -> None:
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, kernel_size=2, stride=2)
        self.act = _make_act(act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.act(self.up(x)) + skip


def _make_act(act: str | tuple | None) -> nn.Module:
    """Build an activation from MONAI's factory; ``None`` means identity."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        return Act[act]()
    name, kwargs = act
    return Act[name](**kwargs)


def _safe_pad(x: torch.Tensor, pad: list[int]) -> torch.Tensor:
    """Reflection pad where the input is large enough, replicate otherwise (reflect needs pad < size)."""
    spatial = x.shape[2:]
    ok = True
    for i in range(len(spatial)):
        # F.pad lists pads from the last dimension backwards
        if max(pad[2 * i], pad[2 * i + 1]) >= spatial[len(spatial) - 1 - i]:
            ok = False
    if ok:
        return F.pad(x, pad, mode="reflect")
    return F.pad(x, pad, mode="replicate")
