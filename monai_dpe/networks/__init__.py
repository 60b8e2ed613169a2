"""DPE networks: the generator, its blocks and the discriminator."""
from __future__ import annotations

from monai_dpe.networks.adapters import ChannelAdapter
from monai_dpe.networks.backends import (
    BACKENDS,
    OnnxNetwork,
    backend_autocast,
    backend_file,
    export_onnx,
    load_backend,
    resolve_backend,
)
from monai_dpe.networks.blocks import DownBlock, GatedConv, ResidualBlock, UpBlock
from monai_dpe.networks.discriminator import DPEDiscriminator
from monai_dpe.networks.dpenet import DecoderLevel, DPENet, EncoderLevel
from monai_dpe.networks.router import ModalityRouter, experts_for, load_router
from monai_dpe.networks.weights import (
    WeightsError,
    export_path,
    load_initial_weights,
    load_weights,
    record_large_files,
    record_retrained_weights,
    recorded_sha256,
    sha256_of,
    verify_sha256,
    warm_start,
)

__all__ = [
    "DPENet",
    "ModalityRouter",
    "load_router",
    "experts_for",
    "load_weights",
    "load_initial_weights",
    "warm_start",
    "load_backend",
    "backend_file",
    "resolve_backend",
    "backend_autocast",
    "export_onnx",
    "OnnxNetwork",
    "BACKENDS",
    "sha256_of",
    "verify_sha256",
    "recorded_sha256",
    "record_large_files",
    "record_retrained_weights",
    "export_path",
    "WeightsError",
    "ChannelAdapter",
    "DPEDiscriminator",
    "ResidualBlock",
    "GatedConv",
    "DownBlock",
    "UpBlock",
    "EncoderLevel",
    "DecoderLevel",
]
