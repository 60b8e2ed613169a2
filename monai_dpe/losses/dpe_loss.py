"""DPELoss: the paper's multi-term generator objective with every weight configurable."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai.losses import SSIMLoss
from monai_dpe.losses.adversarial import GeneratorAdversarialLoss
from monai_dpe.losses.delta_e import DeltaELoss
from monai_dpe.losses.gradient import GradientDifferenceLoss, check_pair
from monai_dpe.losses.regularized_feature import RegularizedFeatureLoss

__all__ = ["DPELoss"]


class DPELoss(nn.Module):
    """L1 + regularised feature + adversarial (+ optional gradient-difference, SSIM and DeltaE) generator loss.

    Defaults are the paper's: ``l1_weight=1``, ``feature_weight=1``, ``adversarial_weight=1e-3``,
    ``gradient_weight=0``, ``ssim_weight=0``, ``delta_e_weight=0``. The paper's gradient term only
    scales the feature distance (``RegularizedFeatureLoss``), so without features nothing rewards
    edges and texture; ``gradient_weight`` adds :class:`GradientDifferenceLoss` on its own. A term whose weight is 0 is not built or computed
    (so no feature network is needed with ``feature_weight=0``).

    ``forward`` returns ``(total, terms)`` where ``terms`` maps each active term's name
    (``"l1"``, ``"feature"``, ``"adversarial"``, ``"gradient"``, ``"ssim"``, ``"delta_e"``) to its unweighted value,
    detached, for logging.

    Args:
        l1_weight: weight of the mean absolute error.
        feature_weight: weight of :class:`RegularizedFeatureLoss`.
        adversarial_weight: weight of BCE(D(G(x)), 1).
        gradient_weight: weight of :class:`GradientDifferenceLoss` alone (structure: edges, noise, banding).
        ssim_weight: weight of MONAI's ``SSIMLoss`` (1 - SSIM).
        delta_e_weight: weight of :class:`DeltaELoss` (CIEDE2000).
        feature_network: feature network of the regularised term (see ``build_feature_distance``).
        feature_weights_path: local weights file for the feature network.
        feature_combine: ``"product"`` (paper) or ``"sum"``.
        adversarial_logits: the discriminator returns logits rather than probabilities.
        spatial_dims: 2 or 3.
        data_range: value range of the images, for SSIM and DeltaE (which scores sRGB in [0, 1]).

    Example::

        loss = DPELoss(feature_network="vgg19_random")
        total, terms = loss(pred, target, fake_output=discriminator(pred))
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        feature_weight: float = 1.0,
        adversarial_weight: float = 1e-3,
        gradient_weight: float = 0.0,
        ssim_weight: float = 0.0,
        delta_e_weight: float = 0.0,
        feature_network: str | nn.Module = "vgg19",
        feature_weights_path: str | os.PathLike | None = None,
        feature_combine: str = "product",
        adversarial_logits: bool = False,
        spatial_dims: int = 2,
        data_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.weights = {
            "l1": float(l1_weight),
            "feature": float(feature_weight),
            "adversarial": float(adversarial_weight),
            "gradient": float(gradient_weight),
            "ssim": float(ssim_weight),
            "delta_e": float(delta_e_weight),
        }
        for name, value in self.weights.items():
            if value < 0:
                raise ValueError(f"DPELoss: {name} weight must be >= 0, got {value}.")
        if not any(self.weights.values()):
            raise ValueError("DPELoss: every term's weight is 0; give at least one (l1_weight, feature_weight, ...) "
                             "a positive weight.")
        self.feature = (
            RegularizedFeatureLoss(feature_network, feature_weights_path, feature_combine, spatial_dims)
            if feature_weight > 0
            else None
        )
        self.adversarial = GeneratorAdversarialLoss(logits=adversarial_logits)
        self.data_range = float(data_range)
        self.gradient = GradientDifferenceLoss() if gradient_weight > 0 else None
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=data_range) if ssim_weight > 0 else None
        self.delta_e = DeltaELoss() if delta_e_weight > 0 else None

    @property
    def needs_discriminator(self) -> bool:
        """Whether the adversarial term is active (the trainer then runs the discriminator)."""
        return self.weights["adversarial"] > 0

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        fake_output: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        check_pair(pred, target, "DPELoss")
        pred, target = pred.float(), target.float()
        terms: dict[str, torch.Tensor] = {}
        if self.weights["l1"] > 0:
            terms["l1"] = F.l1_loss(pred, target)
        if self.feature is not None:
            terms["feature"] = self.feature(pred, target)
        if self.needs_discriminator:
            if fake_output is None:
                raise ValueError("DPELoss: adversarial_weight > 0 needs fake_output, the discriminator's output on pred.")
            terms["adversarial"] = self.adversarial(fake_output)
        if self.gradient is not None:
            terms["gradient"] = self.gradient(pred, target)
        if self.ssim is not None:
            terms["ssim"] = self.ssim(pred, target)
        if self.delta_e is not None:
            terms["delta_e"] = self.delta_e(pred / self.data_range, target / self.data_range)  # sRGB in [0, 1]
        total = torch.stack([self.weights[name] * value for name, value in terms.items()]).sum()
        return total, {name: value.detach() for name, value in terms.items()}
