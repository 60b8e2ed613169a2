"""CappedPSNRMetric: PSNR per image with a ceiling, so that choosing a checkpoint weighs the degraded inputs."""
from __future__ import annotations

import torch
from monai.metrics import PSNRMetric
from monai.utils import MetricReduction

__all__ = ["CappedPSNRMetric"]


class CappedPSNRMetric(PSNRMetric):
    """MONAI's PSNR with each image's value capped at ``cap`` dB before the reduction.

    Validation scores clean inputs beside degraded ones. A clean image that comes back nearly as
    it went in scores 50 to 70 dB (``inf`` when untouched), so in an uncapped mean a network close
    to the identity outranks one that restores the degraded presets it exists for. Above the
    clean-fidelity target (40 dB) an output counts as faithful, and no further dB count.

    Args:
        max_val: the value of white.
        cap: the ceiling per image, in dB.
        reduction: MONAI metric reduction over the (B, 1) per-image values.
        get_not_nans: also return the count of non-NaN values from ``aggregate``.
    """

    def __init__(self, max_val: float = 1.0, cap: float = 40.0,
                 reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__(max_val=max_val, reduction=reduction, get_not_nans=get_not_nans)
        self.cap = float(cap)

    def _compute_metric(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super()._compute_metric(y_pred, y).clamp(max=self.cap)
