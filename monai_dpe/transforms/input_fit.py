"""Blend the network's output with the global affine map of its own input that matches it best.

On sources the network has never seen, its global level and contrast are right more often than its
local changes: those can alter detail that was already right. ``a * image + b``, fitted by least
squares to the output, takes only the level and contrast from the network and keeps every detail of
the input; ``network_weight`` says how much of the network's own output stays. The bundle's
validation split chooses that weight (``bundle/docs/README.md``).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = ["input_fit", "BlendInputFit", "BlendInputFitd"]


def input_fit(image: torch.Tensor, pred: torch.Tensor) -> tuple[float, float]:
    """``(a, b)`` minimising ``|a * image + b - pred|^2`` over all elements and channels together.

    One pair for all channels: per-channel pairs would take the network's colour balance, which
    is what the blend is meant to temper. A flat image gives ``a = 0`` and ``b = mean(pred)``.
    Sums are taken in float64, so a 4096x4096 slice fits as exactly as a small one.
    """
    x, y = image.detach(), pred.detach()
    n = x.numel()
    mean_x, mean_y = float(x.sum(dtype=torch.float64)) / n, float(y.sum(dtype=torch.float64)) / n
    var_x = float((x * x).sum(dtype=torch.float64)) / n - mean_x * mean_x
    cov = float((x * y).sum(dtype=torch.float64)) / n - mean_x * mean_y
    slope = cov / var_x if var_x > 1e-12 else 0.0
    return slope, mean_y - slope * mean_x


class BlendInputFit(Transform):
    """``network_weight * pred + (1 - network_weight) * (a * image + b)`` with ``(a, b)`` from :func:`input_fit`.

    ``pred`` and ``image`` are the network's output and input in the same [0, 1] space (before the
    intensity policy is inverted), channel first. A volume (three spatial dimensions) is fitted
    slice by slice along ``slice_axis``, as the slice-wise inferer enhances it; a 2D image is fitted
    whole. ``pred`` is changed in place, one slice at a time, so no volume-sized copy is made.

    Args:
        network_weight: share of the network's own output, in [0, 1]; 1 returns ``pred`` unchanged.
        slice_axis: spatial axis of a volume's slices (``-1``: the last, the inferer's default).

    Example::

        blend = BlendInputFit(network_weight=0.5)
        enhanced = blend(pred, image)
    """

    def __init__(self, network_weight: float = 1.0, slice_axis: int = -1) -> None:
        if not 0.0 <= network_weight <= 1.0:
            raise ValueError(f"network_weight must lie in [0, 1], got {network_weight}.")
        self.network_weight, self.slice_axis = float(network_weight), int(slice_axis)

    def __call__(self, pred: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if pred.shape != image.shape:
            raise ValueError(f"BlendInputFit: pred {list(pred.shape)} and image {list(image.shape)} differ in shape.")
        if self.network_weight == 1.0:
            return pred
        # an output made under inference mode (as the engines make it) can only be changed in place there
        with torch.inference_mode(pred.is_inference()):
            if pred.ndim == 4:  # channel + three spatial dimensions: one fit per slice
                axis = 1 + (self.slice_axis % 3)
                for index in range(pred.shape[axis]):
                    self._blend(pred.select(axis, index), image.select(axis, index))
            else:
                self._blend(pred, image)
        return pred

    def _blend(self, pred: torch.Tensor, image: torch.Tensor) -> None:
        slope, offset = input_fit(image, pred)
        share = 1.0 - self.network_weight
        pred.mul_(self.network_weight).add_(image.to(pred.dtype), alpha=share * slope).add_(share * offset)


class BlendInputFitd(MapTransform):
    """Dictionary :class:`BlendInputFit`: blends ``keys`` (the network outputs) with ``image_key`` (its input).

    Args:
        keys: the outputs to blend (``"pred"``).
        image_key: the item's network input in the same space (``"image"``).
        network_weight: share of the network's own output.
        slice_axis: spatial axis of a volume's slices.
    """

    def __init__(self, keys: KeysCollection = "pred", image_key: str = "image", network_weight: float = 1.0,
                 slice_axis: int = -1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.blend = BlendInputFit(network_weight, slice_axis)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.blend(d[key], d[self.image_key])
        return d
