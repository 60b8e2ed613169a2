"""RandPerceptualDegradation: the paper's degradation model and a radiology family, as one transform."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.config import NdarrayOrTensor
from monai.transforms import RandAdjustContrast, RandBiasField, RandomizableTransform
from monai.utils import TransformBackends

from monai_dpe.transforms.array import (
    RandAcquisitionNoise,
    RandLowBrightness,
    RandLowContrast,
    _float_tensor,
    _output_like,
    as_range,
)

__all__ = ["RandPerceptualDegradation", "PRESETS"]

PRESETS = ("paper", "radiology", "mixed")


class RandPerceptualDegradation(RandomizableTransform):
    """Degrade a clean [0, 1] image the way the paper trains, or the way scanners degrade.

    Presets:
        ``"paper"``: brightness U(0.1, 0.8), contrast U(0.1, 0.8) blended with the mean grey, then weak
        non-negative noise (uniform, strength up to 0.016), as the reference code.
        ``"radiology"``: changes a percentile window does not undo: a gamma curve (MONAI
        ``RandAdjustContrast``), a smooth multiplicative bias field (MONAI ``RandBiasField``) and
        gaussian, rician or poisson noise.
        ``"mixed"``: one of the two families per draw, ``paper`` with probability ``paper_weight``.

    With probability ``clean_prob`` the image is left as it is (clean-to-clean pairs teach the
    network to leave good images alone). The families and parameters of the last draw are in
    ``last_params`` (for reports), and ``set_random_state`` reproduces the whole draw.

    Args:
        preset: ``"paper"``, ``"radiology"`` or ``"mixed"``.
        prob: probability of applying any degradation.
        clean_prob: probability of an identity draw among applied ones.
        paper_weight: probability of the paper family in ``"mixed"``.
        brightness: paper brightness factor range.
        contrast: paper contrast factor range.
        paper_noise_types: paper noise types.
        paper_noise_std: paper noise strength range (on a [0, 1] scale).
        gamma: radiology gamma range.
        bias_coeff: radiology bias field coefficient range (MONAI ``RandBiasField``).
        bias_degree: degree of the bias field polynomial.
        radiology_noise_types: radiology noise types.
        radiology_noise_std: radiology noise strength range.
        clip: clip the result to [0, 1].

    Example::

        degrade = RandPerceptualDegradation(preset="paper")
        degrade.set_random_state(0)
        degraded = degrade(clean)  # degrade.last_params -> {"family": "paper", "brightness": ..., ...}
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        preset: str = "paper",
        prob: float = 1.0,
        clean_prob: float = 0.0,
        paper_weight: float = 0.5,
        brightness: float | Sequence[float] = (0.1, 0.8),
        contrast: float | Sequence[float] = (0.1, 0.8),
        paper_noise_types: str | Sequence[str] = "uniform",
        paper_noise_std: float | Sequence[float] = (0.0, 0.016),
        gamma: float | Sequence[float] = (0.5, 2.0),
        bias_coeff: float | Sequence[float] = (-0.25, 0.25),
        bias_degree: int = 3,
        radiology_noise_types: str | Sequence[str] = ("gaussian", "rician", "poisson"),
        radiology_noise_std: float | Sequence[float] = (0.005, 0.05),
        clip: bool = True,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}.")
        if not 0.0 <= clean_prob <= 1.0 or not 0.0 <= paper_weight <= 1.0:
            raise ValueError("clean_prob and paper_weight must be probabilities in [0, 1].")
        self.preset, self.clean_prob, self.paper_weight, self.clip = preset, clean_prob, paper_weight, clip
        self.brightness = RandLowBrightness(1.0, brightness)
        self.contrast = RandLowContrast(1.0, contrast)
        self.paper_noise = RandAcquisitionNoise(1.0, paper_noise_types, paper_noise_std)
        self.gamma = RandAdjustContrast(prob=1.0, gamma=as_range(gamma, "gamma"))
        self.bias = RandBiasField(degree=bias_degree, coeff_range=as_range(bias_coeff, "bias_coeff"), prob=1.0)
        self.radiology_noise = RandAcquisitionNoise(1.0, radiology_noise_types, radiology_noise_std)
        self.family = "clean"
        self.last_params: dict = {}
        self.set_random_state(state=self.R)

    def _children(self) -> tuple:
        return (self.brightness, self.contrast, self.paper_noise, self.gamma, self.bias, self.radiology_noise)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        for child in self._children():
            child.set_random_state(state=self.R)  # one stream: a seed reproduces the whole chain
        return self

    def randomize(self, data=None, preset: str | None = None) -> None:
        """Choose the family of this draw (clean, paper or radiology); ``preset`` overrides this transform's."""
        super().randomize(None)
        preset = self.preset if preset is None else preset
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}.")
        if not self._do_transform or self.R.uniform() < self.clean_prob:
            self.family = "clean"
        elif preset == "mixed":
            self.family = "paper" if self.R.uniform() < self.paper_weight else "radiology"
        else:
            self.family = preset

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True, preset: str | None = None) -> NdarrayOrTensor:
        """Degrade ``img``; ``preset`` (with ``randomize``) draws from that preset instead of this transform's."""
        if randomize:
            self.randomize(preset=preset)
            self._draw_children(img)
        t = _float_tensor(img)
        params: dict = {"family": self.family}
        if self.family == "paper":
            t = self.paper_noise(self.contrast(self.brightness(t, False), False), False)
            params.update({**self.brightness.last_params, **self.contrast.last_params, **self.paper_noise.last_params})
        elif self.family == "radiology":
            t = self.radiology_noise(self.bias(self.gamma(t, False), False), False)
            params.update(
                {"gamma": float(self.gamma.gamma_value), "bias_coeff": [float(c) for c in self.bias._coeff]}
            )
            params.update(self.radiology_noise.last_params)
        self.last_params = params
        if self.clip:
            t = torch.clamp(t, 0.0, 1.0)
        return _output_like(t, img)

    def _draw_children(self, img: NdarrayOrTensor) -> None:
        """Draw the chosen family's parameters and noise now, so dictionary keys can share them."""
        if self.family == "paper":
            self.brightness.randomize()
            self.contrast.randomize()
            self.paper_noise.randomize(img)
        elif self.family == "radiology":
            self.gamma.randomize()
            self.bias.randomize(img_size=tuple(img.shape[1:]))
            self.radiology_noise.randomize(img)
