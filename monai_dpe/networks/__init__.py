"""DPE networks: the generator, its blocks and the discriminator."""
from __future__ import annotations

from monai_dpe.networks.blocks import DownBlock, GatedConv, ResidualBlock, UpBlock
from monai_dpe.networks.discriminator import DPEDiscriminator
from monai_dpe.networks.dpenet import DecoderLevel, DPENet, EncoderLevel

__all__ = [
    "DPENet",
    "DPEDiscriminator",
    "ResidualBlock",
    "GatedConv",
    "DownBlock",
    "UpBlock",
    "EncoderLevel",
    "DecoderLevel",
]
