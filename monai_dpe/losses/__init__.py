"""DPE losses: gradient difference, regularised feature, CIEDE2000, adversarial and the combined objective."""
from __future__ import annotations

from monai_dpe.losses.adversarial import DiscriminatorLoss, GeneratorAdversarialLoss, discriminator_score
from monai_dpe.losses.delta_e import DeltaELoss
from monai_dpe.losses.dpe_loss import DPELoss
from monai_dpe.losses.features import FeatureDistance, VGG19Features, build_feature_distance
from monai_dpe.losses.gradient import GradientDifferenceLoss
from monai_dpe.losses.regularized_feature import RegularizedFeatureLoss

__all__ = [
    "GradientDifferenceLoss",
    "RegularizedFeatureLoss",
    "DeltaELoss",
    "DPELoss",
    "GeneratorAdversarialLoss",
    "DiscriminatorLoss",
    "discriminator_score",
    "VGG19Features",
    "FeatureDistance",
    "build_feature_distance",
]
