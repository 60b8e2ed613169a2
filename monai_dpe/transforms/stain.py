"""Stain augmentation of clean brightfield slides in haematoxylin-eosin-DAB optical density space.

The corpus's colour slides are all H&E, so a generator trained on them learns to restore pink
and purple tissue only; an immunohistochemistry slide (haematoxylin and brown DAB) is a
different palette with the same physics. Brightfield colour follows Beer-Lambert: each pixel's
optical density ``-log(I)`` is a sum of stain concentrations times fixed stain vectors.
:class:`RandStainJitter` rescales and shifts each stain's concentration (the HED jitter of
Tellez et al., 2018, Medical Image Analysis 51) and can swap which stain vector a
concentration is rendered with (eosin re-rendered as DAB turns an H&E slide into an
H-DAB-like one). Stain vectors are scikit-image's (Ruifrok and Johnston, 2001). It works on
the clean image before degradation, so target and degraded input share the new stains. With
gains 1, shifts 0 and no swap it returns the image unchanged (to float rounding; pixels darker
than 1e-4 come back as 1e-4): the conversion is an exact matrix inverse, without the clipping
of ``skimage.color.rgb2hed``.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import RandomizableTransform
from monai.utils import convert_to_tensor
from skimage.color import hed_from_rgb, rgb_from_hed

from monai_dpe.transforms.wrappers import RandArrayMapd

__all__ = ["RandStainJitter", "RandStainJitterd"]

_MIN_INTENSITY = 1e-4  # optical density of a black pixel is capped at -log(1e-4) = 9.2


class RandStainJitter(RandomizableTransform):
    """Randomly re-stain a channel-first RGB brightfield image in [0, 1] (other channel counts pass).

    Each stain concentration ``c_s`` (haematoxylin, eosin, DAB) becomes ``gain_s * c_s + shift_s``
    with ``gain_s`` uniform in ``1 ± max_gain`` and ``shift_s`` uniform in ``± max_shift``
    (optical density units), and with ``swap_prob`` the concentrations are rendered with a random
    permutation of the three stain vectors.

    Args:
        prob: probability of re-staining an image.
        max_gain: largest relative change of a stain's amount.
        max_shift: largest added optical density of a stain (tints the background too).
        swap_prob: probability of permuting which stain renders which concentration.
    """

    def __init__(self, prob: float = 0.5, max_gain: float = 0.3, max_shift: float = 0.05, swap_prob: float = 0.5) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= max_gain < 1.0:
            raise ValueError(f"max_gain must be in [0, 1), got {max_gain}")
        if max_shift < 0.0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        if not 0.0 <= swap_prob <= 1.0:
            raise ValueError(f"swap_prob must be in [0, 1], got {swap_prob}")
        self.max_gain, self.max_shift, self.swap_prob = float(max_gain), float(max_shift), float(swap_prob)
        self._gains = np.ones(3)
        self._shifts = np.zeros(3)
        self._order = np.arange(3)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self._gains = 1.0 + self.R.uniform(-self.max_gain, self.max_gain, size=3)
        self._shifts = self.R.uniform(-self.max_shift, self.max_shift, size=3)
        self._order = self.R.permutation(3) if self.R.rand() < self.swap_prob else np.arange(3)

    @property
    def last_params(self) -> dict:
        """The last draw (for reports): per-stain gains and shifts, and the stain order (H, E, DAB = 0, 1, 2)."""
        if not self._do_transform:
            return {}
        return {"stain_gains": self._gains.tolist(), "stain_shifts": self._shifts.tolist(), "stain_order": self._order.tolist()}

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        t = convert_to_tensor(img, track_meta=get_track_meta())
        if not self._do_transform or t.shape[0] != 3:
            return img
        base = (t.as_tensor() if isinstance(t, MetaTensor) else t).float()
        out = self._restain(base)
        return MetaTensor(out, meta=t.meta) if isinstance(t, MetaTensor) else out

    def _restain(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB -> optical density -> stain concentrations, jittered and re-rendered -> RGB (in float64)."""
        work = rgb.double()
        density = -torch.log(work.clamp(_MIN_INTENSITY, 1.0))
        to_stains = torch.as_tensor(hed_from_rgb, dtype=work.dtype)
        to_rgb = torch.as_tensor(rgb_from_hed, dtype=work.dtype)
        stains = torch.einsum("c...,cs->s...", density, to_stains)
        shape = (3,) + (1,) * (stains.ndim - 1)
        gains = torch.as_tensor(self._gains, dtype=work.dtype).reshape(shape)
        shifts = torch.as_tensor(self._shifts, dtype=work.dtype).reshape(shape)
        stains = (gains * stains + shifts)[torch.as_tensor(self._order)]
        restained = torch.exp(-torch.einsum("s...,sc->c...", stains, to_rgb))
        return restained.clamp(0.0, 1.0).to(rgb.dtype)


class RandStainJitterd(RandArrayMapd):
    """Dictionary version of :class:`RandStainJitter`: the same re-staining for every key.

    Only items whose ``modality_key`` value is in ``modalities`` are re-stained (by default
    ``"histology"``: fundus photographs and fluorescence are not stained slides); with
    ``modalities=None`` every RGB item is.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        max_gain: float = 0.3,
        max_shift: float = 0.05,
        swap_prob: float = 0.5,
        modality_key: str = "modality",
        modalities: Sequence[str] | None = ("histology",),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, RandStainJitter(1.0, max_gain, max_shift, swap_prob), prob, allow_missing_keys)
        self.modality_key = modality_key
        self.modalities = None if modalities is None else frozenset(modalities)

    def applies_to(self, data: Mapping[Hashable, NdarrayOrTensor]) -> bool:
        return self.modalities is None or data.get(self.modality_key) in self.modalities
