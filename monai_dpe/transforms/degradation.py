"""The paper's elementary degradations, array and dictionary: low brightness, low contrast, acquisition noise.

Each array transform is a ``RandomizableTransform``: ``randomize`` draws every parameter from
``self.R`` (so ``set_random_state(seed)`` reproduces a draw), ``__call__`` applies them, the
drawn values are kept in ``last_params``, and the output has the input's type (numpy, torch or
MetaTensor). Inputs are channel-first images in [0, 1]. The dictionary twins apply one draw to
every key (an image and its mask, or several contrasts of one subject, are degraded alike).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import RandGaussianNoise, RandomizableTransform, RandRicianNoise
from monai.utils import TransformBackends

from monai_dpe.transforms.utils import as_range, float_tensor, output_like
from monai_dpe.transforms.wrappers import RandArrayMapd

__all__ = [
    "NOISE_TYPES",
    "RandLowBrightness",
    "RandLowContrast",
    "RandAcquisitionNoise",
    "RandLowBrightnessd",
    "RandLowContrastd",
    "RandAcquisitionNoised",
]

NOISE_TYPES = ("gaussian", "uniform", "poisson", "rician")
_MAX_POISSON_MEAN = 1e12  # photon counts above this are drawn from the normal limit of the Poisson law
# ITU-R BT.601 luma weights: the grey a colour image is blended towards
_LUMA = (0.299, 0.587, 0.114)


class _RandFactor(RandomizableTransform):
    """A degradation by one factor drawn from a range, reported in ``last_params[name]``."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    name = "factor"

    def __init__(self, prob: float = 1.0, factor: float | Sequence[float] = (0.1, 0.8)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.factor = as_range(factor, "factor")
        self.last_params: dict = {}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.last_params = {self.name: float(self.R.uniform(*self.factor))} if self._do_transform else {}

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return output_like(self.apply(float_tensor(img), self.last_params[self.name]), img)

    def apply(self, t: torch.Tensor, factor: float) -> torch.Tensor:
        """The degradation of float image ``t`` by the drawn ``factor``."""
        raise NotImplementedError


class RandLowBrightness(_RandFactor):
    """Darken an image by a random factor: ``img * f``, f ~ U(factor) (paper: U(0.1, 0.8)).

    Args:
        prob: probability of applying the transform.
        factor: (low, high) range of the multiplicative factor, or a fixed factor.

    Example::

        t = RandLowBrightness(prob=1.0, factor=(0.1, 0.8))
        dark = t(image)  # t.last_params["brightness"] holds the factor drawn
    """

    name = "brightness"

    def apply(self, t: torch.Tensor, factor: float) -> torch.Tensor:
        return t * factor


class RandLowContrast(_RandFactor):
    """Reduce contrast by blending with the image's mean grey: ``mean + f * (img - mean)``.

    The mean grey is the image's mean luma (BT.601 weights) for 3-channel images and its mean
    value otherwise, as the paper's colour-jitter contrast does.

    Args:
        prob: probability of applying the transform.
        factor: (low, high) range of the blend factor (paper: U(0.1, 0.8)), or a fixed factor.
    """

    name = "contrast"

    def apply(self, t: torch.Tensor, factor: float) -> torch.Tensor:
        if t.shape[0] == 3:
            weights = torch.tensor(_LUMA, dtype=t.dtype, device=t.device).view(3, *([1] * (t.dim() - 1)))
            mean = (t * weights).sum(0).mean()
        else:
            mean = t.mean()
        return mean + factor * (t - mean)


class RandAcquisitionNoise(RandomizableTransform):
    """Add acquisition noise of a randomly chosen type and strength.

    Types: ``"gaussian"`` (MONAI ``RandGaussianNoise``), ``"rician"`` (MONAI ``RandRicianNoise``,
    magnitude MR), ``"poisson"`` (photon counting: ``Poisson(img / s^2) * s^2``, so the standard
    deviation at value 1 is ``s``) and ``"uniform"`` (non-negative ``U(0, s)``, the paper's
    reference code).

    Args:
        prob: probability of applying the transform.
        noise_types: one type or a sequence to choose from uniformly.
        std: (low, high) range of the noise strength ``s`` on a [0, 1] scale, or a fixed value.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        prob: float = 1.0,
        noise_types: str | Sequence[str] = ("gaussian", "poisson", "rician"),
        std: float | Sequence[float] = (0.0, 0.05),
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.noise_types = (noise_types,) if isinstance(noise_types, str) else tuple(noise_types)
        unknown = [n for n in self.noise_types if n not in NOISE_TYPES]
        if unknown or not self.noise_types:
            raise ValueError(f"noise_types must be among {NOISE_TYPES}, got {self.noise_types}.")
        self.std = as_range(std, "std")
        if self.std[0] < 0:
            raise ValueError(f"std must be non-negative, got {self.std}.")
        self._gaussian = RandGaussianNoise(prob=1.0, sample_std=False)
        self._rician = RandRicianNoise(prob=1.0, sample_std=False)
        self.noise: torch.Tensor | None = None
        self.last_params: dict = {}

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self._gaussian.set_random_state(state=self.R)
        self._rician.set_random_state(state=self.R)
        return self

    def randomize(self, img: NdarrayOrTensor) -> None:
        """Draw the type and strength, then the noise field itself for an image of ``img``'s shape."""
        super().randomize(None)
        self.noise = None
        if not self._do_transform:
            self.last_params = {}
            return
        kind = self.noise_types[int(self.R.randint(len(self.noise_types)))]
        std = float(self.R.uniform(*self.std))
        self.last_params = {"noise": kind, "noise_std": std}
        t = float_tensor(img)
        if kind == "uniform":
            self.noise = torch.as_tensor(self.R.uniform(0.0, std, size=t.shape), dtype=t.dtype)
        elif kind == "poisson":
            self.noise = self._poisson_residual(t, std)
        elif kind == "gaussian":
            self._gaussian.set_random_state(state=self.R)
            self._gaussian.std = std
            self._gaussian.dtype = torch.float32
            self.noise = torch.as_tensor(self._gaussian(torch.zeros_like(t.as_tensor() if hasattr(t, "as_tensor") else t)))
        else:  # rician: keep MONAI's draw and express it as an additive residual on this image
            self._rician.set_random_state(state=self.R)
            self._rician.std = std
            plain = t.as_tensor() if hasattr(t, "as_tensor") else t
            self.noise = torch.as_tensor(self._rician(plain)) - plain

    def _poisson_residual(self, t: torch.Tensor, std: float) -> torch.Tensor:
        if std == 0:
            return torch.zeros_like(t.as_tensor() if hasattr(t, "as_tensor") else t)
        values = np.clip(t.detach().cpu().numpy(), 0, None)
        if values.max(initial=0.0) >= _MAX_POISSON_MEAN * std * std:
            # a tiny std means astronomic photon counts (numpy refuses means above ~9e18 and 1 / std**2
            # overflows): there Poisson(lam) - lam is sqrt(lam) * N(0, 1), i.e. std * sqrt(value) * N(0, 1)
            return torch.as_tensor(std * np.sqrt(values) * self.R.standard_normal(values.shape), dtype=t.dtype)
        photons = 1.0 / std**2
        lam = values * photons
        counts = self.R.poisson(lam)
        return torch.as_tensor(counts / photons - lam / photons, dtype=t.dtype)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(img)
        if not self._do_transform:
            return img
        if self.noise is None:
            raise RuntimeError("call randomize(img) before applying with randomize=False.")
        t = float_tensor(img)
        if tuple(self.noise.shape) != tuple(t.shape):
            raise ValueError(f"drawn noise has shape {tuple(self.noise.shape)}, image has {tuple(t.shape)}.")
        return output_like(t + self.noise.to(device=t.device, dtype=t.dtype), img)


class RandLowBrightnessd(RandArrayMapd):
    """Dictionary :class:`RandLowBrightness`: one factor for every key."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, factor=(0.1, 0.8), allow_missing_keys: bool = False):
        super().__init__(keys, RandLowBrightness(1.0, factor), prob, allow_missing_keys)


class RandLowContrastd(RandArrayMapd):
    """Dictionary :class:`RandLowContrast`: one factor for every key."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, factor=(0.1, 0.8), allow_missing_keys: bool = False):
        super().__init__(keys, RandLowContrast(1.0, factor), prob, allow_missing_keys)


class RandAcquisitionNoised(RandArrayMapd):
    """Dictionary :class:`RandAcquisitionNoise`: one noise field for every key (keys must share a shape)."""

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        noise_types=("gaussian", "poisson", "rician"),
        std=(0.0, 0.05),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, RandAcquisitionNoise(1.0, noise_types, std), prob, allow_missing_keys)
