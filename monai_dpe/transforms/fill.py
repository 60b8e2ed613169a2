"""Fill values ("no data" markers such as -99999 or ±FLT_MAX) kept out of the enhancement and kept as they are.

A float volume whose background is a no-data value far from the tissue would otherwise set one
end of the intensity policy's range: the tissue is squeezed into a sliver of [0, 1], the network's
float32 rounding scrambles it, and the inverse stretch magnifies the error (tissue 100..600 came
back as -1683..1581) or overflows to inf. ``MaskFillValuesd`` finds such values, records where
they are, and hands the policy and the network the tissue only; ``RestoreFillValuesd`` puts the
original values back into the enhanced image. The pair mirrors ``SplitAlphad``/``MergeAlphad``.
Values that float arithmetic cannot carry through the stretch and its inverse are refused.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["MaskFillValuesd", "RestoreFillValuesd", "fill_values", "FILL_GAP"]

#: a minimum or maximum is a fill value when it lies further from all other values than this many
#: times their own range (tissue 100..600 under a -99999 background: 200 times)
FILL_GAP = 10.0
_SLAB = 1 << 22  # elements per pass: the scans need no whole-volume temporary


def _slabs(t: torch.Tensor):
    flat = t.reshape(-1)
    for start in range(0, flat.numel(), _SLAB):
        yield flat[start : start + _SLAB]


def fill_values(img: torch.Tensor, gap: float = FILL_GAP) -> tuple[float | None, float | None]:
    """(low fill, high fill): the image's minimum and maximum where each is a detached "no data"
    value, else ``None``.

    A candidate is detached when the distance from it to the nearest other value exceeds ``gap``
    times the range of the values strictly between the minimum and the maximum. A zero background
    beside tissue 100..600 is not detached (gap 100 against a range of 500); -99999 is.
    """
    lo, hi = float(img.min()), float(img.max())
    inner_lo, inner_hi = np.inf, -np.inf
    for part in _slabs(img):
        inner = part[(part > lo) & (part < hi)]
        if inner.numel():
            inner_lo, inner_hi = min(inner_lo, float(inner.min())), max(inner_hi, float(inner.max()))
    if inner_lo > inner_hi:  # two values at most: nothing lies between them to tell a fill from the data
        return None, None
    width = inner_hi - inner_lo
    if width == 0.0:
        width = max(abs(inner_lo), 1.0) * 1e-6  # a flat interior: any clear gap detaches
    low = lo if inner_lo - lo > gap * width else None
    high = hi if hi - inner_hi > gap * width else None
    return low, high


def _check_carried(img: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Refuse values whose stretch and inverse would overflow the image's float type."""
    if not img.is_floating_point():
        return
    values = img[~mask] if mask is not None else img
    lo, hi = float(values.min()), float(values.max())
    limit = float(torch.finfo(img.dtype).max)
    # the inverse maps the network's output back as low + y * (high - low); y may leave [0, 1] a little
    reach = max(abs(lo), abs(hi)) + 4.0 * (hi - lo)
    if not np.isfinite(reach) or reach > limit:
        raise ValueError(f"values from {lo:.4g} to {hi:.4g} are beyond what {str(img.dtype).replace('torch.', '')} "
                         "can carry through the enhancement and back (its limit is "
                         f"{limit:.4g}); rescale the image")


class MaskFillValuesd(MapTransform):
    """Keep detached "no data" values (:func:`fill_values`) out of the intensity policy and the network.

    Fill voxels are set to the nearest remaining value, so that the policy's range and the
    network see the tissue only; where they were and what they held go to ``{key}_fill_mask``
    (uint8: 1 where the low fill was, 2 where the high fill was) and ``{key}_fill_values``
    (low, high; NaN for none). Images of 8 bits are left alone: their extremes are black and
    white, not markers. Float images whose remaining values the stretch and its inverse cannot
    carry (an overflow to inf) are refused with a ``ValueError``.

    Args:
        keys: images to check (channel first).
        gap: see :func:`fill_values`.
    """

    def __init__(self, keys: KeysCollection = "image", gap: float = FILL_GAP, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.gap = float(gap)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            t = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            if t.element_size() == 1 or t.dtype == torch.bool:
                continue
            low, high = fill_values(t, self.gap)
            mask = None
            if low is not None or high is not None:
                mask = torch.zeros(t.shape, dtype=torch.uint8)
                if low is not None:
                    mask[t == low] = 1
                if high is not None:
                    mask[t == high] = 2
                rest = t[mask == 0]
                filled = t.clone()
                filled[mask == 1] = rest.min()
                filled[mask == 2] = rest.max()
                d[key] = MetaTensor(filled, meta=img.meta, applied_operations=img.applied_operations) \
                    if isinstance(img, MetaTensor) else filled
                d[f"{key}_fill_mask"] = mask
                d[f"{key}_fill_values"] = torch.tensor([np.nan if low is None else low,
                                                        np.nan if high is None else high], dtype=torch.float64)
            _check_carried(t, None if mask is None else mask.bool())
        return d


class RestoreFillValuesd(MapTransform):
    """Put the fill values :class:`MaskFillValuesd` set aside back into the enhanced image, unchanged.

    Args:
        keys: the enhanced images (channel first, in the source's units, as ``Invertd`` returns them).
        source_key: the key ``MaskFillValuesd`` ran on.
    """

    def __init__(self, keys: KeysCollection = "pred", source_key: str = "image", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.mask_key, self.values_key = f"{source_key}_fill_mask", f"{source_key}_fill_values"

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if d.get(self.mask_key) is None:
            return d
        mask = torch.as_tensor(d[self.mask_key])
        values = torch.as_tensor(d[self.values_key], dtype=torch.float64).reshape(-1)
        for key in self.key_iterator(d):
            img = d[key]
            t = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            t = t.clone()
            for code, value in ((1, float(values[0])), (2, float(values[1]))):
                if not np.isnan(value):
                    t[mask.to(t.device) == code] = torch.tensor(value, dtype=torch.float64).to(t.dtype)
            d[key] = MetaTensor(t, meta=img.meta, applied_operations=img.applied_operations) \
                if isinstance(img, MetaTensor) else t
        return d
