"""Dictionary twins of the degradation transforms and the intensity policy.

Each applies the same random draw to every key (so an image and its mask, or several
contrasts of one subject, are degraded alike), like MONAI's ``RandGaussianNoised``.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from monai_dpe.transforms.array import RandAcquisitionNoise, RandLowBrightness, RandLowContrast
from monai_dpe.transforms.composite import PRESETS, RandPerceptualDegradation
from monai_dpe.transforms.intensity_policy import LEVEL_META_KEY, IntensityPolicy, input_level

__all__ = [
    "RandLowBrightnessd",
    "RandLowContrastd",
    "RandAcquisitionNoised",
    "RandPerceptualDegradationd",
    "IntensityPolicyd",
    "SeededPerceptualDegradationd",
]


class _RandMapd(RandomizableTransform, MapTransform):
    """A dictionary wrapper that draws once from the first present key and applies to all keys."""

    def __init__(self, keys: KeysCollection, transform: RandomizableTransform, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.transform = transform

    @property
    def last_params(self) -> dict:
        """Parameters of the last draw (for reports)."""
        return self.transform.last_params

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.transform.set_random_state(state=self.R)
        return self

    def _draw(self, img) -> None:
        self.transform.randomize(img) if isinstance(self.transform, RandAcquisitionNoise) else self.transform.randomize()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        self._draw(d[keys[0]])
        for key in keys:
            d[key] = self.transform(d[key], randomize=False)
        return d


class RandLowBrightnessd(_RandMapd):
    """Dictionary :class:`RandLowBrightness`: one factor for every key."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, factor=(0.1, 0.8), allow_missing_keys: bool = False):
        super().__init__(keys, RandLowBrightness(prob, factor), allow_missing_keys)


class RandLowContrastd(_RandMapd):
    """Dictionary :class:`RandLowContrast`: one factor for every key."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, factor=(0.1, 0.8), allow_missing_keys: bool = False):
        super().__init__(keys, RandLowContrast(prob, factor), allow_missing_keys)


class RandAcquisitionNoised(_RandMapd):
    """Dictionary :class:`RandAcquisitionNoise`: one noise field for every key (keys must share a shape)."""

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        noise_types=("gaussian", "poisson", "rician"),
        std=(0.0, 0.05),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, RandAcquisitionNoise(prob, noise_types, std), allow_missing_keys)


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


class IntensityPolicyd(MapTransform, InvertibleTransform):
    """Dictionary :class:`IntensityPolicy`, invertible with MONAI's ``Invertd``.

    Args:
        keys: images to stretch.
        reference_key: take the range from this key's image instead (e.g. a whole source image
            whose patches are stretched alike); ``None`` uses each image's own range.
        level_key: also write the first key's level (:func:`input_level`) to this item key, for
            networks that take it (``None``: don't). Traced images always carry it in their meta
            under ``LEVEL_META_KEY``, where the inferer finds it.
        bits_key: item key of the source's storage depth: 8 bits marks a display image for the
            level (training stretches every source in ``"quantitative"`` mode); ``None`` takes the mode.
        allow_missing_keys: skip absent keys.
        kwargs: :class:`IntensityPolicy` arguments (``lower``, ``upper``, ``window``, ``mode``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = None,
        level_key: str | None = None,
        bits_key: str | None = None,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.reference_key, self.level_key, self.bits_key = reference_key, level_key, bits_key
        self.policy = IntensityPolicy(**kwargs)
        self._infos: dict[Hashable, dict] = {}  # each key's last stretch, to invert outputs that carry no trace

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        reference = d[self.reference_key] if self.reference_key is not None else None
        display = None if self.bits_key is None else int(d[self.bits_key]) == 8
        first = True
        for key in self.key_iterator(d):
            d[key] = self.policy(d[key], reference=reference)
            self._infos[key] = self.policy.last_info
            level = input_level(self.policy.last_info, display)
            if isinstance(d[key], MetaTensor):
                d[key].meta[LEVEL_META_KEY] = level
            if self.level_key is not None and first:
                d[self.level_key] = level
            first = False
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            traced = isinstance(d[key], MetaTensor) and bool(d[key].applied_operations)
            if traced or key not in self._infos:
                d[key] = self.policy.inverse(d[key])
            else:  # a numpy array: its own key's range, not the last key's
                d[key] = self.policy.invert_with(d[key], self._infos[key])
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
        import zlib

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
