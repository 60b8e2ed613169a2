"""Colour augmentation of clean training images: random tints of grey images and colour shifts of RGB ones.

The corpus has few colour training images (H&E) beside many grey ones, so a generator trained
on it learns that channels are nearly equal and pulls saturated colours (a fundus photograph's
red) towards grey. Tinting grey images with random per-channel gamma and gain curves, and
permuting and re-weighting the channels of RGB images, shows it many palettes and teaches it
to keep each channel's level while it removes noise and restores tone. It is applied to the
clean image before degradation, so target and degraded input share the colours.
"""
from __future__ import annotations


import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import RandomizableTransform
from monai.utils import convert_to_tensor

from monai_dpe.transforms.wrappers import RandArrayMapd

__all__ = ["RandColourJitter", "RandColourJitterd"]


class RandColourJitter(RandomizableTransform):
    """Randomly recolour a channel-first [0, 1] image; grey (1 channel) images become 3-channel tints.

    Each channel ``c`` becomes ``gain_c * x_c ** gamma_c`` with ``log(gamma_c)`` uniform in
    ``±log(max_gamma)`` and ``gain_c`` uniform in ``min_gain..1`` (then scaled so the largest gain
    is 1, keeping the brightest channel's range); RGB channels are also permuted with
    ``permute_prob``. Images with other channel counts pass unchanged.

    Args:
        prob: probability of recolouring an image.
        min_gain: smallest per-channel gain (lower gives more saturated tints).
        max_gamma: largest per-channel gamma factor (and its inverse the smallest).
        permute_prob: probability of shuffling the channels of an RGB image.
    """

    def __init__(self, prob: float = 0.5, min_gain: float = 0.2, max_gamma: float = 2.0, permute_prob: float = 0.5) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0.0 < min_gain <= 1.0:
            raise ValueError(f"min_gain must be in (0, 1], got {min_gain}")
        if max_gamma < 1.0:
            raise ValueError(f"max_gamma must be >= 1, got {max_gamma}")
        self.min_gain, self.max_gamma, self.permute_prob = float(min_gain), float(max_gamma), float(permute_prob)
        self._gains = np.ones(3)
        self._gammas = np.ones(3)
        self._order = np.arange(3)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        gains = self.R.uniform(self.min_gain, 1.0, size=3)
        self._gains = gains / gains.max()
        self._gammas = np.exp(self.R.uniform(-np.log(self.max_gamma), np.log(self.max_gamma), size=3))
        self._order = self.R.permutation(3) if self.R.rand() < self.permute_prob else np.arange(3)

    @property
    def last_params(self) -> dict:
        """The last draw (for reports): per-channel gains and gammas, and the channel order."""
        if not self._do_transform:
            return {}
        return {"colour_gains": self._gains.tolist(), "colour_gammas": self._gammas.tolist(),
                "colour_order": self._order.tolist()}

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        t = convert_to_tensor(img, track_meta=get_track_meta())
        if not self._do_transform or t.shape[0] not in (1, 3):
            return img
        base = t.as_tensor() if isinstance(t, MetaTensor) else t
        base = base.float().clamp(0.0, 1.0)
        if base.shape[0] == 1:
            base = base.expand(3, *base.shape[1:])
        else:
            base = base[torch.as_tensor(self._order)]
        shape = (3,) + (1,) * (base.ndim - 1)
        gains = torch.as_tensor(self._gains, dtype=base.dtype).reshape(shape)
        gammas = torch.as_tensor(self._gammas, dtype=base.dtype).reshape(shape)
        out = gains * base.pow(gammas)
        return MetaTensor(out, meta=t.meta) if isinstance(t, MetaTensor) else out


class RandColourJitterd(RandArrayMapd):
    """Dictionary version of :class:`RandColourJitter`: the same recolouring for every key."""

    backend = RandColourJitter.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        min_gain: float = 0.2,
        max_gamma: float = 2.0,
        permute_prob: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, RandColourJitter(1.0, min_gain, max_gamma, permute_prob), prob, allow_missing_keys)
