"""ChannelAdapter: serve a 3-channel enhancement network on grey, RGB and alpha-carrying images."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ChannelAdapter"]


class ChannelAdapter(nn.Module):
    """Wrap an RGB enhancement network so it takes 1, 2 (grey + alpha), 3 or 4 (RGBA) channels.

    Grey is replicated to RGB (as the paper trains one model for both) and the output is
    averaged back to one channel; an alpha channel is passed through untouched. With
    ``keep_out_of_range`` the part of the input outside [0, 1] (values beyond the robust
    window, e.g. bone and metal above a CT's 99.5th percentile) is added back to the output, so
    the window's exact inverse returns them instead of clipping them at the window's edge.

    Args:
        network: a network mapping (B, 3, ...) to (B, 3, ...).
        network_channels: channels the wrapped network takes (1 or 3).
        keep_out_of_range: pass values outside [0, 1] through around the network.

    Example::

        enhancer = ChannelAdapter(DPENet(channels=(32, 48, 64, 80, 96)))
        y = enhancer(torch.rand(1, 1, 256, 256))  # grey in, grey out
    """

    def __init__(self, network: nn.Module, network_channels: int = 3, keep_out_of_range: bool = True) -> None:
        super().__init__()
        if network_channels not in (1, 3):
            raise ValueError(f"network_channels must be 1 or 3, got {network_channels}.")
        self.network = network
        self.network_channels = network_channels
        self.keep_out_of_range = keep_out_of_range

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Enhance ``x``; keyword arguments (a per-image ``level``) go to the network unchanged."""
        channels = x.shape[1]
        if channels not in (1, 2, 3, 4):
            raise ValueError(f"images must have 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels, got {channels}.")
        colour = 3 if channels >= 3 else 1
        image, alpha = x[:, :colour], x[:, colour:]
        inside = image.clamp(0.0, 1.0)
        out = self._enhance(inside, **kwargs)
        if self.keep_out_of_range:
            out = out + (image - inside)
        return torch.cat([out, alpha], dim=1) if alpha.shape[1] else out

    def _enhance(self, image: torch.Tensor, **kwargs) -> torch.Tensor:
        if image.shape[1] == self.network_channels:
            return self.network(image, **kwargs)
        if image.shape[1] == 1:  # grey through an RGB network
            return self.network(image.repeat_interleave(3, dim=1), **kwargs).mean(dim=1, keepdim=True)
        # RGB through a grey network: each channel on its own
        return torch.cat([self.network(image[:, c : c + 1], **kwargs) for c in range(image.shape[1])], dim=1)
