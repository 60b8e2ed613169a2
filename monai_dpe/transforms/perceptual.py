"""The paper's degradation model and a radiology family as one transform, array and dictionary.

:class:`SeededPerceptualDegradationd` draws it from the item's id, so validation and evaluation
degrade every image the same way on every run.
"""
from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandAdjustContrast, RandBiasField, RandomizableTransform
from monai.utils import TransformBackends, ensure_tuple_rep

from monai_dpe.transforms.degradation import RandAcquisitionNoise, RandLowBrightness, RandLowContrast
from monai_dpe.transforms.utils import as_range, float_tensor, output_like

__all__ = ["PRESETS", "RandPerceptualDegradation", "RandPerceptualDegradationd", "SeededPerceptualDegradationd"]

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
        gamma_log_uniform: draw the gamma uniformly in log space, so gamma and 1 / gamma are equally
            likely (MONAI draws it uniformly: over (0.5, 2) a darkening curve is twice as likely
            as a brightening one, which teaches a network to brighten images that need nothing).
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
        gamma_log_uniform: bool = False,
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
        self.gamma_log_uniform = bool(gamma_log_uniform)
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
        t = float_tensor(img)
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
        return output_like(t, img)

    def _draw_children(self, img: NdarrayOrTensor) -> None:
        """Draw the chosen family's parameters and noise now, so dictionary keys can share them."""
        if self.family == "paper":
            self.brightness.randomize()
            self.contrast.randomize()
            self.paper_noise.randomize(img)
        elif self.family == "radiology":
            self.gamma.randomize()
            if self.gamma_log_uniform:
                low, high = self.gamma.gamma
                self.gamma.gamma_value = float(np.exp(self.R.uniform(np.log(low), np.log(high))))
            self.bias.randomize(img_size=tuple(img.shape[1:]))
            self.radiology_noise.randomize(img)


class RandPerceptualDegradationd(RandomizableTransform, MapTransform):
    """Degrade ``image`` in place and keep the clean copy under ``target`` (a supervised pair).

    Args:
        keys: keys of the clean images to degrade (default ``"image"``).
        target_keys: where to keep each clean copy (default ``"target"``); ``None`` keeps none.
        allow_missing_keys: skip absent keys.
        params_key: also store the draw's parameters in the item under this key (for reports).
        bits_key: item key of the source's storage depth (:class:`RecordStorageBitsd`); with
            ``display_preset``, an 8-bit source draws from that preset instead.
        display_preset: preset for display (8-bit) sources, e.g. ``"paper"``: a photo or slide
            keeps its full range under gamma, bias and scanner noise, so those pairs look like
            clean images to the network and teach it to alter good ones.
        kwargs: :class:`RandPerceptualDegradation` arguments (``preset``, ranges, ``clean_prob``, ...).

    The draw's parameters are in ``last_params`` and, when ``params_key`` is set, stored in the
    dictionary too (for per-preset reports).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        target_keys: KeysCollection | None = "target",
        allow_missing_keys: bool = False,
        params_key: str | None = None,
        bits_key: str | None = None,
        display_preset: str | None = None,
        **kwargs,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        if display_preset is not None and (bits_key is None or display_preset not in PRESETS):
            raise ValueError(f"display_preset needs bits_key and one of {PRESETS}, got {display_preset!r}.")
        self.target_keys = None if target_keys is None else ensure_tuple_rep(target_keys, len(self.keys))
        self.params_key, self.bits_key, self.display_preset = params_key, bits_key, display_preset
        self.degrade = RandPerceptualDegradation(**kwargs)

    @property
    def last_params(self) -> dict:
        return self.degrade.last_params

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.degrade.set_random_state(state=self.R)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        targets = self.target_keys or (None,) * len(self.keys)
        display = self.display_preset is not None and int(d[self.bits_key]) == 8
        preset = self.display_preset if display else None
        first = True
        for key, target_key in self.key_iterator(d, targets):
            if target_key is not None:
                d[target_key] = d[key].clone() if isinstance(d[key], torch.Tensor) else d[key].copy()
            d[key] = self.degrade(d[key], randomize=first, preset=preset)  # later keys reuse the first draw
            first = False
        if self.params_key is not None:
            d[self.params_key] = dict(self.degrade.last_params)
        return d


class SeededPerceptualDegradationd(MapTransform):
    """Deterministic degradation for validation: the draw depends only on the seed and the item's id.

    Not a ``Randomizable`` (so ``CacheDataset`` caches its result): each item is degraded with a
    random state seeded from ``seed`` and a CRC of ``data[id_key]`` plus its preset, so a
    validation set is the same on every run and machine.

    Args:
        keys: image keys to degrade; the clean copy goes to ``target_keys``.
        seed: base seed.
        id_key: key whose value identifies the item (e.g. the file name).
        preset_key: key holding the preset name for this item; missing -> ``default_preset``.
        params_key: where to store the draw's parameters.
        kwargs: other :class:`RandPerceptualDegradation` arguments.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        target_keys: KeysCollection | None = "target",
        seed: int = 0,
        id_key: str = "image_id",
        preset_key: str = "preset",
        default_preset: str = "paper",
        params_key: str | None = "degradation",
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.target_keys, self.seed, self.id_key = target_keys, int(seed), id_key
        self.preset_key, self.default_preset, self.params_key = preset_key, default_preset, params_key
        self.kwargs = kwargs

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        preset = str(data.get(self.preset_key, self.default_preset))
        item_seed = (self.seed + zlib.crc32(f"{data.get(self.id_key, '')}|{preset}".encode())) % (2**32)
        inner = RandPerceptualDegradationd(
            keys=self.keys,
            target_keys=self.target_keys,
            allow_missing_keys=self.allow_missing_keys,
            params_key=self.params_key,
            preset=preset,
            **self.kwargs,
        )
        inner.set_random_state(item_seed)
        return inner(data)
