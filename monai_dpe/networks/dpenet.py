"""DPENet: the generator of Deep Perceptual Enhancement (Sharif et al., IEEE JBHI 2022)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from monai_dpe.networks.blocks import DownBlock, GatedConv, ResidualBlock, UpBlock, _make_act, _safe_pad

__all__ = ["DPENet", "EncoderLevel", "DecoderLevel"]

_PRELU = ("prelu", {"num_parameters": 1})
_LEAKY = ("leakyrelu", {"negative_slope": 0.2})


class EncoderLevel(nn.Module):
    """One encoder level: residual block, gated skip of its output, stride-2 conv to the next width."""

    def __init__(self, spatial_dims: int, channels: int, next_channels: int, act, gate_feature_act, gate_act, down_act):
        super().__init__()
        self.res = ResidualBlock(spatial_dims, channels, act=act)
        self.gate = GatedConv(spatial_dims, channels, channels, act=gate_feature_act, gate_act=gate_act)
        self.down = DownBlock(spatial_dims, channels, next_channels, act=down_act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.res(x)
        return self.down(x), self.gate(x)


class DecoderLevel(nn.Module):
    """One decoder step: transposed conv up, add the level's gated skip, optional residual block."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, act, up_act, with_residual: bool):
        super().__init__()
        self.up = UpBlock(spatial_dims, in_channels, channels, act=up_act)
        self.res: nn.Module = ResidualBlock(spatial_dims, channels, act=act) if with_residual else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.res(self.up(x, skip))


class DPENet(nn.Module):
    """The DPE generator: a gated-skip residual U-Net with a global residual and tanh output.

    The network works internally on data in [-1, 1], as the paper does; ``value_range``
    says what range its inputs and outputs use outside (default [0, 1], the range the
    intensity policy produces), so it drops into a MONAI pipeline without extra scaling.
    Any spatial size is accepted: the input is padded (reflection) to the multiple of
    ``2 ** (len(channels) - 1)`` that the depth needs and cropped back.

    Args:
        spatial_dims: 2 for images and slices, 3 for volumetric training.
        in_channels: input channels (the paper uses 3; grey images may be replicated).
        out_channels: output channels.
        channels: widths from the top level to the bottom; the paper's are (64, 96, 128, 160, 192).
            Any length >= 2; the last is the bottom residual block.
        act: activation inside residual blocks (paper: single-parameter PReLU).
        gate_feature_act: activation of the gated convolution's features (paper: LeakyReLU 0.2).
        gate_act: activation of the gate (paper: sigmoid).
        sampling_act: activation after down- and up-sampling convolutions (paper: ReLU).
        output_act: activation applied after the global residual (paper: tanh); ``None`` for none.
        global_residual: add the input to the output before ``output_act``. When the channel
            counts differ, a 1-channel input is broadcast and a 1-channel output takes the
            input's channel mean.
        value_range: the (low, high) range of inputs and outputs outside the network.
        identity_init: zero the output convolution so that, with the global residual and no output
            activation, the untrained network is exactly the identity and training learns only the
            correction (the paper initialises it randomly).
        global_tone: add a per-channel gain and offset of the output, predicted by a small MLP from
            the bottom features averaged over the whole input (zero-initialised: starts as the
            identity). Not in the paper; it gives the network a view of the whole image's tone,
            which a patch-sized receptive field lacks. Off by default.
        level_channels: length of a per-image ``level`` vector that ``forward`` takes and gives the
            first convolution as constant planes (0: none). The intensity policy's stretch hides how
            bright and wide the input was (see :func:`monai_dpe.transforms.input_level`); the level
            gives that back, so the network can keep an image that was already well exposed. With
            0, a ``level`` given to ``forward`` is not used. Not in the paper.
        level_tone: add a per-channel gain and offset of the output predicted by a small MLP from
            the level vector alone (zero-initialised: starts as the identity). It restores the
            global level exactly where convolutions would have to learn a uniform gain, and it
            depends on no pixel, so patches, tiles and whole images of one image get the same
            tone. Needs ``level_channels``. Not in the paper.
        default_level: the level used when ``forward`` gets none (tools that call a network with
            one image tensor, such as ``monai.bundle verify_net_in_out``); ``None`` makes the level
            required. The bundle sets a quantitative image's ``(0, 0, 1)``: keep the stretched frame.
            Without ``level_channels`` it is not used.

    Example::

        net = DPENet(spatial_dims=2, in_channels=3, out_channels=3)
        enhanced = net(torch.rand(1, 3, 100, 120))  # any size; same shape out
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: Sequence[int] = (64, 96, 128, 160, 192),
        act: str | tuple = _PRELU,
        gate_feature_act: str | tuple = _LEAKY,
        gate_act: str | tuple = "sigmoid",
        sampling_act: str | tuple = "relu",
        output_act: str | tuple | None = "tanh",
        global_residual: bool = True,
        value_range: Sequence[float] = (0.0, 1.0),
        identity_init: bool = False,
        global_tone: bool = False,
        level_channels: int = 0,
        level_tone: bool = False,
        default_level: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 widths (one level and the bottom), got {channels}.")
        if global_residual and in_channels != out_channels and 1 not in (in_channels, out_channels):
            raise ValueError(
                f"global_residual needs matching channels or a 1-channel side, got {in_channels} -> {out_channels}; "
                "set global_residual=False."
            )
        if value_range[1] <= value_range[0]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {tuple(value_range)}.")
        if level_channels < 0:
            raise ValueError(f"level_channels must be >= 0, got {level_channels}.")
        if level_tone and not level_channels:
            raise ValueError("level_tone needs level_channels > 0.")
        if not level_channels:  # a network without level inputs has no use for a default one either
            default_level = None
        if default_level is not None and len(default_level) != level_channels:
            raise ValueError(f"default_level needs {level_channels} values, got {len(default_level)}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.level_channels = int(level_channels)
        self.out_channels = out_channels
        self.multiple = 2 ** (len(channels) - 1)
        self.global_residual = global_residual
        self.low = float(value_range[0])
        self.span = float(value_range[1] - value_range[0])

        self.conv_in = Conv[Conv.CONV, spatial_dims](in_channels + self.level_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            EncoderLevel(spatial_dims, channels[i], channels[i + 1], act, gate_feature_act, gate_act, sampling_act)
            for i in range(len(channels) - 1)
        )
        self.bottom = ResidualBlock(spatial_dims, channels[-1], act=act)
        self.decoder = nn.ModuleList(
            DecoderLevel(spatial_dims, channels[i + 1], channels[i], act, sampling_act, with_residual=i > 0)
            for i in reversed(range(len(channels) - 1))
        )
        self.conv_out = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, 1)
        if identity_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)
        self.output_act = _make_act(output_act)
        # global tone: a per-channel gain and offset of the output predicted from the bottom
        # features pooled over the whole input (zero-initialised, so it starts as the identity)
        self.tone = None
        if global_tone:
            self.tone = nn.Sequential(nn.Linear(channels[-1], 32), nn.ReLU(), nn.Linear(32, 2 * out_channels))
            nn.init.zeros_(self.tone[-1].weight)
            nn.init.zeros_(self.tone[-1].bias)
        self.register_buffer(
            "default_level", None if default_level is None else torch.tensor([float(v) for v in default_level]),
            persistent=False,
        )
        self.level_tone = None
        if level_tone:
            self.level_tone = nn.Sequential(nn.Linear(level_channels, 32), nn.ReLU(), nn.Linear(32, 2 * out_channels))
            nn.init.zeros_(self.level_tone[-1].weight)
            nn.init.zeros_(self.level_tone[-1].bias)

    def forward(self, x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"DPENet(spatial_dims={self.spatial_dims}) expects a (B, C, *spatial) tensor with "
                f"{self.spatial_dims} spatial dims, got shape {list(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"DPENet expects {self.in_channels} input channels, got {x.shape[1]}.")
        spatial = x.shape[2:]
        x = (x - self.low) * (2.0 / self.span) - 1.0
        x = self._pad(x)
        rows = self._level_rows(x, level)
        features, pooled = self._unet(self.conv_in(self._with_planes(x, rows)))
        y = self.conv_out(features)
        if self.global_residual:
            y = y + self._residual_source(x)
        if self.tone is not None:
            y = self._apply_tone(y, self.tone(pooled))
        if self.level_tone is not None and rows is not None:
            y = self._apply_tone(y, self.level_tone(rows))
        y = self.output_act(y)
        y = self._crop(y, spatial)
        return (y + 1.0) * (self.span / 2.0) + self.low

    def _level_rows(self, x: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor | None:
        """The level as (1 or B, level_channels) rows in ``x``'s dtype; ``None`` for a network without level inputs."""
        if not self.level_channels:  # a network without level inputs has no use for one
            return None
        if level is None:
            level = self.default_level
        if level is None:
            raise ValueError(
                f"this DPENet takes each image's level ({self.level_channels} values, "
                "monai_dpe.transforms.input_level) as `level`; none was given."
            )
        rows = level.to(device=x.device, dtype=x.dtype).reshape(-1, self.level_channels)
        if not torch.jit.is_tracing() and rows.shape[0] != 1 and rows.shape[0] != x.shape[0]:
            raise ValueError(f"got {rows.shape[0]} level vectors for a batch of {x.shape[0]} images.")
        return rows

    def _with_planes(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """``x`` with the level rows appended as constant planes (as the first convolution takes them)."""
        if rows is None:
            return x
        shape = [rows.shape[0], self.level_channels] + [1] * self.spatial_dims
        planes = rows.reshape(shape).expand([x.shape[0], self.level_channels] + list(x.shape[2:]))
        return torch.cat([x, planes], dim=1)

    def _apply_tone(self, y: torch.Tensor, tone: torch.Tensor) -> torch.Tensor:
        """``y * (1 + gain) + offset`` per image and channel, ``tone`` holding the gains then the offsets."""
        shape = [tone.shape[0], self.out_channels] + [1] * self.spatial_dims
        return y * (1.0 + tone[:, : self.out_channels].reshape(shape)) + tone[:, self.out_channels :].reshape(shape)

    def _unet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The U-Net's top features and its bottom features averaged over space (for the tone)."""
        skips: list[torch.Tensor] = []
        for level in self.encoder:
            x, skip = level(x)
            skips.append(skip)
        x = self.bottom(x)
        pooled = x.flatten(2).mean(dim=2)
        n = len(skips)
        for i, level in enumerate(self.decoder):
            x = level(x, skips[n - 1 - i])
        return x, pooled

    def _residual_source(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == self.out_channels:
            return x
        if self.out_channels == 1:
            return x.mean(dim=1, keepdim=True)
        return x.repeat_interleave(self.out_channels, dim=1)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pad: list[int] = []
        total = 0
        for d in range(x.dim() - 1, 1, -1):  # F.pad lists the last dimension first
            extra = (self.multiple - x.shape[d] % self.multiple) % self.multiple
            pad += [0, extra]
            total += extra
        if total == 0 and not torch.jit.is_tracing():  # a traced (ONNX) graph keeps the pad for other sizes
            return x
        return _safe_pad(x, pad)

    def _crop(self, y: torch.Tensor, spatial: list[int]) -> torch.Tensor:
        if self.spatial_dims == 2:
            return y[:, :, : spatial[0], : spatial[1]]
        return y[:, :, : spatial[0], : spatial[1], : spatial[2]]
