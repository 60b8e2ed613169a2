"""Transforms that prepare clean training and validation images: unit range, size limit, slicing, grey to RGB.

They turn a corpus of 2D images and 3D volumes of any dtype into 2D [0, 1] images the
2D generator trains on, and are cheap enough to run per sample on a CPU.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import convert_to_tensor

from monai_dpe.transforms.intensity_policy import is_display_item, robust_range
from monai_dpe.transforms.wrappers import ArrayMapd

__all__ = [
    "UnitRange",
    "UnitRanged",
    "LimitSize",
    "LimitSized",
    "RandSliced",
    "CenterSliced",
    "SingleSliceToPlaned",
    "GreyToRGB",
    "GreyToRGBd",
]


class UnitRange(Transform):
    """Scale a clean image to [0, 1]: 8-bit display pixels by 255 (absolute, as displayed), others by robust
    percentiles.

    The clean image scaled this way is the training and evaluation target, so 8-bit photographs keep
    their true brightness and colours, and quantitative images (whose outputs go back to their own units,
    so their level is whatever their stretch makes it) their relative intensities. ``display`` says which
    an image is, as :func:`~monai_dpe.transforms.intensity_policy.is_display_item` decides it for the
    network's input (so a display image resized to float is still scaled by 255); ``None`` takes any
    uint8 image as a display image.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5) -> None:
        self.lower, self.upper = lower, upper

    def __call__(self, img: NdarrayOrTensor, display: bool | None = None) -> torch.Tensor:
        t = convert_to_tensor(img, track_meta=get_track_meta())
        if display or (display is None and t.dtype == torch.uint8):
            return t.float() / 255.0
        low, high = robust_range(t, self.lower, self.upper)
        scale = 1.0 / (high - low) if high > low else 1.0
        return torch.clamp((t.float() - low) * scale, 0.0, 1.0)


class LimitSize(Transform):
    """Downscale a 2D image (anti-aliased area averaging) so its longest side is at most ``max_size``.

    Volumes and images already small enough pass unchanged. Big radiographs are reduced to a
    working size once (and cached), which keeps per-sample degradation cheap on a CPU. A 2D
    image read as a one-slice volume (ITK reads a DICOM radiograph as (C, H, W, 1)) counts as
    2D and keeps its trailing axis.
    """

    def __init__(self, max_size: int = 512) -> None:
        self.max_size = int(max_size)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        t = convert_to_tensor(img, track_meta=get_track_meta())
        one_slice = t.dim() == 4 and t.shape[-1] == 1
        plane = t[..., 0] if one_slice else t
        spatial = plane.shape[1:]
        if len(spatial) != 2 or max(spatial) <= self.max_size:
            return img
        scale = self.max_size / max(spatial)
        size = [max(1, int(round(s * scale))) for s in spatial]
        out = F.interpolate(plane.float()[None], size=size, mode="area")[0]
        out = out[..., None] if one_slice else out
        return MetaTensor(out, meta=t.meta) if isinstance(t, MetaTensor) else out


def _slice(img: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    out = img.select(1 + axis, index)
    return MetaTensor(out.as_tensor(), meta=img.meta) if isinstance(img, MetaTensor) else out


class RandSliced(RandomizableTransform, MapTransform):
    """Take one random 2D slice of 3D volumes (same axis and index for all keys); 2D images pass.

    Args:
        keys: images to slice.
        axes: spatial axes to choose the slicing axis from.
        min_size: only axes whose slices are at least this large on both sides are chosen
            (a 2-frame series is sliced through its frames, not across them); if none qualifies,
            the axis giving the largest slice is used.
        restretch: rescale each slice to [0, 1] by its own robust percentiles (:class:`UnitRange`
            of the float slice). Training needs it: the degraded slice is stretched by its own
            range, so a target left in the volume's range asks the network for a brightness change
            that no input shows (a dim slice of a bright volume teaches it to darken). A display
            volume (an 8-bit DICOM series or TIFF stack, with ``bits_key``) keeps its absolute level,
            as evaluation scores it: its level reaches the network.
        lower: lower percentile of ``restretch``.
        upper: upper percentile of ``restretch``.
        bits_key: item key of the storage depth, for the display decision
            (:func:`~monai_dpe.transforms.intensity_policy.is_display_item`); ``None``: every volume.
        display_file_key: item key that says whether the original file is a display format.
    """

    def __init__(
        self,
        keys: KeysCollection,
        axes: Sequence[int] = (0, 1, 2),
        min_size: int = 32,
        restretch: bool = False,
        lower: float = 0.5,
        upper: float = 99.5,
        bits_key: str | None = None,
        display_file_key: str | None = "display_file",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.axes = tuple(axes)
        self.min_size = int(min_size)
        self.unit_range = UnitRange(lower, upper) if restretch else None
        self.bits_key, self.display_file_key = bits_key, display_file_key
        self.last_params: dict = {}

    def _usable_axes(self, spatial: Sequence[int]) -> list[int]:
        def side(axis: int) -> int:
            return min(s for i, s in enumerate(spatial) if i != axis)

        usable = [a for a in self.axes if side(a) >= self.min_size]
        return usable or [max(self.axes, key=side)]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        keys = [k for k in self.key_iterator(d) if len(d[k].shape) == 4]
        self.last_params = {}
        if not keys:
            return d
        axes = self._usable_axes(d[keys[0]].shape[1:])
        axis = axes[int(self.R.randint(len(axes)))]
        index = int(self.R.randint(d[keys[0]].shape[1 + axis]))
        self.last_params = {"slice_axis": axis, "slice_index": index}
        for key in keys:
            restretch = self.unit_range is not None and not (
                self.bits_key is not None and is_display_item(d, key, self.bits_key, self.display_file_key))
            d[key] = _slice(convert_to_tensor(d[key], track_meta=get_track_meta()), axis, index)
            if restretch:
                d[key] = self.unit_range(d[key].float())
        return d


class CenterSliced(MapTransform):
    """Take the middle slice of 3D volumes along ``axis`` (deterministic, for validation); 2D passes."""

    def __init__(self, keys: KeysCollection, axis: int = 2, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.axis = axis

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if len(d[key].shape) == 4:
                t = convert_to_tensor(d[key], track_meta=get_track_meta())
                d[key] = _slice(t, self.axis, t.shape[1 + self.axis] // 2)
        return d


class SingleSliceToPlaned(MapTransform):
    """A volume one slice thick along its last axis (ITK reads a DICOM radiograph as (C, H, W, 1)) becomes its
    2D image; anything else passes. Evaluation degrades such a file as the 2D picture it is (a 2D bias field)."""

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            # MONAI's SqueezeDimd refuses an axis longer than one, so it cannot let a real volume pass
            if len(d[key].shape) == 4 and d[key].shape[-1] == 1:
                t = convert_to_tensor(d[key], track_meta=get_track_meta())
                d[key] = _slice(t, 2, 0)
        return d


class GreyToRGB(Transform):
    """Replicate a 1-channel image to 3 channels (the paper's one model for grey and colour)."""

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.shape[0] != 1:
            return img
        if isinstance(img, np.ndarray):
            return np.repeat(img, 3, axis=0)
        return img.repeat(3, *([1] * (img.dim() - 1)))


class UnitRanged(MapTransform):
    """Dictionary :class:`UnitRange`.

    Args:
        keys: images to scale.
        lower: lower percentile of the robust range.
        upper: upper percentile.
        bits_key: item key of the storage depth (:class:`~monai_dpe.transforms.RecordStorageBitsd`): with it,
            only a display image (8 bits in a photo, slide or DICOM file, as the network's level says it) is
            scaled by 255, and an 8-bit NIfTI volume, a quantitative image, by its percentiles. ``None``:
            every 8-bit image is scaled by 255.
        display_file_key: item key that says whether the original file is a display format (the
            datalist's ``display_file``); items without it are decided by their own file name.
    """

    def __init__(self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5, bits_key: str | None = None,
                 display_file_key: str | None = "display_file", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.transform = UnitRange(lower, upper)
        self.bits_key, self.display_file_key = bits_key, display_file_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            display = None if self.bits_key is None else is_display_item(d, key, self.bits_key, self.display_file_key)
            d[key] = self.transform(d[key], display)
        return d


class LimitSized(ArrayMapd):
    """Dictionary :class:`LimitSize`."""

    def __init__(self, keys: KeysCollection, max_size: int = 512, allow_missing_keys: bool = False):
        super().__init__(keys, LimitSize(max_size), allow_missing_keys)


class GreyToRGBd(ArrayMapd):
    """Dictionary :class:`GreyToRGB`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False):
        super().__init__(keys, GreyToRGB(), allow_missing_keys)
