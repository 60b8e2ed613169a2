"""Small helpers shared by the transforms: value ranges and keeping the input's container type."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = ["as_range", "float_tensor", "output_like"]


def as_range(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """A (low, high) range from a pair, or a fixed value from a single number (TorchIO's convention)."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"{name} range must be (low, high) with low <= high, got {(low, high)}.")
    return low, high


def float_tensor(img: NdarrayOrTensor) -> torch.Tensor:
    """The image as a floating tensor (MetaTensor when tracking), integer inputs promoted to float32."""
    t = convert_to_tensor(img, track_meta=get_track_meta())
    return t if t.is_floating_point() else t.float()


def output_like(out: torch.Tensor, img: NdarrayOrTensor) -> NdarrayOrTensor:
    """Return ``out`` in the input's container type, floating dtype kept (integers become float32)."""
    dtype = img.dtype if (isinstance(img, torch.Tensor) and img.is_floating_point()) else None
    if isinstance(img, np.ndarray):
        dtype = img.dtype if np.issubdtype(img.dtype, np.floating) else np.float32
    result, *_ = convert_to_dst_type(out, img, dtype=dtype)
    return result
