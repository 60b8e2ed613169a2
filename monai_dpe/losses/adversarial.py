"""Binary cross-entropy adversarial terms, with the paper's noisy labels for the discriminator."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GeneratorAdversarialLoss", "DiscriminatorLoss", "discriminator_score"]


def discriminator_score(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The final score of a discriminator: a tensor, or the last item of a list (MONAI ``PatchDiscriminator``)."""
    if isinstance(output, (list, tuple)):
        output = output[-1]
    return output.float()


def _bce(score: torch.Tensor, labels: torch.Tensor, logits: bool) -> torch.Tensor:
    # computed in float32 outside autocast: BCE on bf16 probabilities is unstable
    with torch.autocast(device_type=score.device.type, enabled=False):
        if logits:
            return F.binary_cross_entropy_with_logits(score.float(), labels.float())
        # written out because the paper's noisy real labels exceed 1, which F.binary_cross_entropy refuses
        p = score.float().clamp(1e-7, 1 - 1e-7)
        y = labels.float()
        return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()


class GeneratorAdversarialLoss(nn.Module):
    """BCE(D(G(x)), 1): the generator's term for fooling the discriminator.

    Args:
        logits: the discriminator returns logits (``PatchDiscriminator``, or ``output_act=None``)
            instead of probabilities (the paper's sigmoid).
    """

    def __init__(self, logits: bool = False) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, fake_output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        score = discriminator_score(fake_output)
        return _bce(score, torch.ones_like(score), self.logits)


class DiscriminatorLoss(nn.Module):
    """BCE of real (clean targets) against fake (enhanced) with noisy labels, as the paper trains D.

    Real labels are drawn from U(0.7, 1.2) and fake ones from U(0, 0.3) at every call, which
    keeps the discriminator from becoming over-confident early.

    Args:
        real_label_range: range of the noisy "real" labels.
        fake_label_range: range of the noisy "fake" labels.
        logits: the discriminator returns logits.
    """

    def __init__(
        self,
        real_label_range: Sequence[float] = (0.7, 1.2),
        fake_label_range: Sequence[float] = (0.0, 0.3),
        logits: bool = False,
    ) -> None:
        super().__init__()
        self.real_label_range = tuple(real_label_range)
        self.fake_label_range = tuple(fake_label_range)
        self.logits = logits

    def _labels(self, score: torch.Tensor, bounds: tuple) -> torch.Tensor:
        low, high = bounds
        return low + (high - low) * torch.rand(score.shape, device=score.device)

    def forward(
        self, real_output: torch.Tensor | Sequence[torch.Tensor], fake_output: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        real, fake = discriminator_score(real_output), discriminator_score(fake_output)
        real_loss = _bce(real, self._labels(real, self.real_label_range), self.logits)
        fake_loss = _bce(fake, self._labels(fake, self.fake_label_range), self.logits)
        return 0.5 * (real_loss + fake_loss)
