"""DeltaELoss: differentiable CIEDE2000 colour difference for training."""
from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction
from monai_dpe.losses.gradient import check_pair
from monai_dpe.metrics.colour import delta_e_map

__all__ = ["DeltaELoss"]


class DeltaELoss(_Loss):
    """Mean CIEDE2000 difference between RGB images in [0, 1]; grey inputs are compared on lightness.

    Args:
        reduction: ``"mean"``, ``"sum"`` (over the batch of per-image means) or ``"none"`` (shape (B,)).
        eps: keeps square-root gradients finite where two colours coincide.

    Example::

        loss = DeltaELoss()
        value = loss(torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32))
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN, eps: float = 1e-8) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, "DeltaELoss")
        if pred.shape[1] not in (1, 3):
            raise ValueError(f"DeltaELoss needs 1 or 3 channels, got {pred.shape[1]}.")
        per_image = delta_e_map(pred.float(), target.float(), eps=self.eps).flatten(1).mean(dim=1)
        if self.reduction == LossReduction.MEAN.value:
            return per_image.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_image.sum()
        return per_image
