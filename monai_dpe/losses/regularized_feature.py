"""RegularizedFeatureLoss: the paper's gradient-difference-regularised perceptual term."""
from __future__ import annotations

import os

import torch
import torch.nn as nn
from torch.nn.modules.loss import _Loss

from monai_dpe.losses.features import build_feature_distance
from monai_dpe.losses.gradient import GradientDifferenceLoss, check_pair

__all__ = ["RegularizedFeatureLoss"]


class RegularizedFeatureLoss(_Loss):
    """Gradient difference x feature distance (the reference code's product), or their sum.

    The product makes the perceptual term matter most where edges are wrong; with
    ``combine="sum"`` the two act independently.

    Args:
        feature_network: see :func:`monai_dpe.losses.features.build_feature_distance` (default: the
            paper's ImageNet VGG19 up to conv5_4, which must be cached or given by ``weights_path``).
        weights_path: a local weights file for the feature network.
        combine: ``"product"`` (paper) or ``"sum"``.
        spatial_dims: 2 or 3.
        seed: seed of random feature weights (``"vgg19_random"``).

    Example::

        loss = RegularizedFeatureLoss(feature_network="vgg19_random")
        value = loss(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    """

    def __init__(
        self,
        feature_network: str | nn.Module = "vgg19",
        weights_path: str | os.PathLike | None = None,
        combine: str = "product",
        spatial_dims: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if combine not in ("product", "sum"):
            raise ValueError(f"combine must be 'product' or 'sum', got {combine!r}.")
        self.combine = combine
        self.gradient = GradientDifferenceLoss()
        self.distance = build_feature_distance(feature_network, weights_path, spatial_dims=spatial_dims, seed=seed)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, "RegularizedFeatureLoss", min_spatial=2)
        gradient = self.gradient(pred, target)
        features = self.distance(pred, target)
        return gradient * features if self.combine == "product" else gradient + features
