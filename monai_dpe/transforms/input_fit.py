"""Blend the network's output with the global affine map of its own input that matches it best.

On sources the network has never seen, its global level and contrast are right more often than its
local changes: those can alter detail that was already right. ``a * image + b``, fitted by least
squares to the output, takes only the level and contrast from the network and keeps every detail of
the input; ``network_weight`` says how much of the network's own output stays. That share can follow
the input's noise (``noise_range``): a clean input keeps its own detail, a noisy one takes the
network's denoising. The bundle's validation split chooses the range (``bundle/docs/README.md``).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from skimage.restoration import estimate_sigma

__all__ = ["input_fit", "input_noise", "noise_weight", "BlendInputFit", "BlendInputFitd"]

_NOISE_SLICES = 16  # a volume's noise is the median of this many evenly spaced slices' estimates


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


def input_noise(image: torch.Tensor, slice_axis: int = -1) -> float:
    """Standard deviation of the noise in a channel-first image or volume, in its own units.

    scikit-image's wavelet estimate (``estimate_sigma``) on the channel mean of a 2D image; a volume
    (three spatial dimensions) gives the median over up to 16 evenly spaced slices along
    ``slice_axis``, so every slice of one volume is blended alike.
    """
    def sigma(picture: torch.Tensor) -> float:  # float64 before the channel mean: the median is sensitive to rounding
        return float(estimate_sigma(picture.detach().cpu().double().mean(dim=0).numpy()))

    if image.ndim == 3:
        return sigma(image)
    axis = 1 + slice_axis % 3
    picks = np.unique(np.linspace(0, image.shape[axis] - 1, min(_NOISE_SLICES, image.shape[axis])).round().astype(int))
    return float(np.median([sigma(image.select(axis, int(i))) for i in picks]))


def noise_weight(sigma: float, noise_range: Sequence[float]) -> float:
    """The network's share for an input of noise ``sigma``: 0 up to ``noise_range[0]``, 1 from ``noise_range[1]``, linear between."""
    low, high = float(noise_range[0]), float(noise_range[1])
    return float(np.clip((sigma - low) / (high - low), 0.0, 1.0))


class BlendInputFit(Transform):
    """``w * pred + (1 - w) * (a * image + b)`` with ``(a, b)`` from :func:`input_fit` and ``w`` the network's share.

    ``pred`` and ``image`` are the network's output and input in the same [0, 1] space (before the
    intensity policy is inverted), channel first. A volume (three spatial dimensions) is fitted
    slice by slice along ``slice_axis``, as the slice-wise inferer enhances it; a 2D image is fitted
    whole. ``pred`` is changed in place, one slice at a time, so no volume-sized copy is made.

    Args:
        network_weight: fixed share ``w`` of the network's own output, in [0, 1]; 1 returns ``pred``
            unchanged. ``None``: the share follows the input's noise (``noise_range``).
        slice_axis: spatial axis of a volume's slices (``-1``: the last, the inferer's default).
        noise_range: ``(low, high)`` noise levels of ``image`` (:func:`input_noise`) between which the
            share rises from 0 to 1 (:func:`noise_weight`); used when ``network_weight`` is ``None``.

    Example::

        blend = BlendInputFit(network_weight=None, noise_range=(0.01, 0.02))
        enhanced = blend(pred, image)
    """

    def __init__(self, network_weight: float | None = 1.0, slice_axis: int = -1,
                 noise_range: Sequence[float] | None = None) -> None:
        if network_weight is None:
            if noise_range is None or len(noise_range) != 2 or not 0.0 <= noise_range[0] < noise_range[1]:
                raise ValueError(f"a share that follows the noise needs noise_range (low, high), 0 <= low < high; got {noise_range}.")
        elif not 0.0 <= network_weight <= 1.0:
            raise ValueError(f"network_weight must lie in [0, 1], got {network_weight}.")
        self.network_weight = None if network_weight is None else float(network_weight)
        self.noise_range = None if noise_range is None else (float(noise_range[0]), float(noise_range[1]))
        self.slice_axis = int(slice_axis)

    def weight(self, image: torch.Tensor) -> float:
        """The network's share for this input: the fixed one, or the one its noise gives."""
        if self.network_weight is not None:
            return self.network_weight
        return noise_weight(input_noise(image, self.slice_axis), self.noise_range)

    def __call__(self, pred: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if pred.shape != image.shape:
            raise ValueError(f"BlendInputFit: pred {list(pred.shape)} and image {list(image.shape)} differ in shape.")
        weight = self.weight(image)
        if weight == 1.0:
            return pred
        # an output made under inference mode (as the engines make it) can only be changed in place there
        with torch.inference_mode(pred.is_inference()):
            if pred.ndim == 4:  # channel + three spatial dimensions: one fit per slice
                axis = 1 + (self.slice_axis % 3)
                for index in range(pred.shape[axis]):
                    _blend(pred.select(axis, index), image.select(axis, index), weight)
            else:
                _blend(pred, image, weight)
        return pred


def _blend(pred: torch.Tensor, image: torch.Tensor, weight: float) -> None:
    slope, offset = input_fit(image, pred)
    share = 1.0 - weight
    pred.mul_(weight).add_(image.to(pred.dtype), alpha=share * slope).add_(share * offset)


class BlendInputFitd(MapTransform):
    """Dictionary :class:`BlendInputFit`: blends ``keys`` (the network outputs) with ``image_key`` (its input).

    Args:
        keys: the outputs to blend (``"pred"``).
        image_key: the item's network input in the same space (``"image"``).
        network_weight: fixed share of the network's own output; ``None`` follows the noise.
        slice_axis: spatial axis of a volume's slices.
        noise_range: noise levels between which the share rises from 0 to 1.
    """

    def __init__(self, keys: KeysCollection = "pred", image_key: str = "image", network_weight: float | None = 1.0,
                 slice_axis: int = -1, noise_range: Sequence[float] | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.blend = BlendInputFit(network_weight, slice_axis, noise_range)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.blend(d[key], d[self.image_key])
        return d
