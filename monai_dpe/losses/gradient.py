"""GradientDifferenceLoss: the paper's total-variation difference between prediction and target."""
from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

__all__ = ["GradientDifferenceLoss", "check_pair"]


def check_pair(pred: torch.Tensor, target: torch.Tensor, name: str, min_spatial: int = 1) -> None:
    """Raise a ``ValueError`` unless pred and target are same-shape (B, C, *spatial) tensors."""
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {list(pred.shape)} vs {list(target.shape)}.")
    if pred.dim() < 2 + min_spatial:
        raise ValueError(f"{name}: expected (B, C, *spatial) with >= {min_spatial} spatial dims, got {list(pred.shape)}.")


class GradientDifferenceLoss(_Loss):
    """Mean absolute difference of finite differences along every spatial axis, summed over axes.

    For 2D, ``mean|d_h pred - d_h target| + mean|d_w pred - d_w target|`` (the paper's
    TV-difference term); 3D adds the depth axis. It penalises lost or invented edges
    without caring about a constant offset.

    Args:
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (one value per sample, shape (B,)).

    Example::

        loss = GradientDifferenceLoss()
        value = loss(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, "GradientDifferenceLoss")
        per_sample = pred.new_zeros(pred.shape[0])
        for axis in range(2, pred.dim()):
            if pred.shape[axis] < 2:
                continue
            diff = torch.diff(pred, dim=axis) - torch.diff(target, dim=axis)
            per_sample = per_sample + diff.abs().flatten(1).mean(dim=1)
        if self.reduction == LossReduction.MEAN.value:
            return per_sample.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_sample.sum()
        return per_sample
