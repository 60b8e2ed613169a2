"""The dictionary twins' two bases: apply an array transform to each key, once drawn for all keys.

They follow MONAI's convention (as ``RandGaussianNoised``): the dictionary transform owns
``prob`` and decides whether to apply; the array transform it wraps is built with ``prob=1``
and only draws its parameters, once from the first present key, so an image and its target,
or several contrasts of one subject, change alike.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform

__all__ = ["ArrayMapd", "RandArrayMapd"]


class ArrayMapd(MapTransform):
    """Apply a deterministic array transform to each key."""

    # not MONAI's Lambdad: it records a "Lambda" in each MetaTensor's applied operations, which Invertd
    # would then meet beside the intensity policy's own entry

    def __init__(self, keys: KeysCollection, transform: Transform, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class RandArrayMapd(RandomizableTransform, MapTransform):
    """Apply a random array transform with one draw for every key; this wrapper owns ``prob``.

    Args:
        keys: keys of the images to transform.
        transform: the array transform, built with ``prob=1.0``; its ``randomize(img)`` draws
            everything (from the first present key's image) and ``__call__(img, randomize=False)``
            applies the draw.
        prob: probability of applying the transform to an item.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, transform: RandomizableTransform, prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if transform.prob != 1.0:
            raise ValueError(f"the wrapped transform must have prob 1.0 (the wrapper owns prob), got {transform.prob}.")
        self.transform = transform
        self._applied = False

    @property
    def last_params(self) -> dict:
        """Parameters of the last item's draw (for reports); empty when that item was left alone."""
        return dict(self.transform.last_params) if self._applied else {}

    def applies_to(self, data: Mapping[Hashable, NdarrayOrTensor]) -> bool:
        """Whether this item is one the transform serves at all (subclasses narrow it, e.g. by modality)."""
        return True

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.transform.set_random_state(state=self.R)  # one stream: a seed reproduces the whole draw
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self._applied = False
        if not self.applies_to(d):
            return d
        keys = list(self.key_iterator(d))
        self.randomize(None)
        if not keys or not self._do_transform:
            return d
        self.transform.randomize(d[keys[0]])
        for key in keys:
            d[key] = self.transform(d[key], randomize=False)
        self._applied = True
        return d
