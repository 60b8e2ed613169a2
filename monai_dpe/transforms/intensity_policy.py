"""IntensityPolicy: the invertible stretch every image goes through before and after the network.

Forward: stretch the image to [0, 1] by its own robust range (whole-image percentiles) or by a
fixed window (a CT HU window, say), so a global brightness or contrast change is undone before
the network. Inverse (``Invertd``-compatible): ``"quantitative"`` images go back through the
exact inverse to their units and dtype; ``"display"`` images stay in absolute [0, 1] (brightness
restored, as the paper) and are written back in their dtype's full range.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TransformBackends, convert_to_dst_type

from monai_dpe.formats import is_display_format

__all__ = ["IntensityPolicy", "IntensityPolicyd", "LEVEL_META_KEY", "POLICY_MODES", "input_level", "is_display_item",
           "robust_range"]

POLICY_MODES = ("quantitative", "display", "auto")
_WIDE_DTYPES = ("float64", "int32", "uint32", "int64", "uint64")  # stretched in float64, not float32
_MAX_SAMPLES = 2_000_000  # percentiles from a strided subsample: bounded time and memory on big volumes
LEVEL_META_KEY = "input_level"  # where an image's meta holds its level for the inferer
_SLAB_ELEMENTS = 1 << 22  # element-wise maps run slab by slab: their temporaries stay ~32 MB on any volume


def robust_range(img: NdarrayOrTensor, lower: float, upper: float) -> tuple[float, float]:
    """(low, high) percentiles of all finite values of ``img`` (across channels), on a strided subsample.

    Where one value fills more than the percentile margins (a sparse lesion on a zero background),
    the other end comes from the remaining values' percentiles instead of collapsing onto it.
    """
    flat = torch.as_tensor(np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img)).reshape(-1)
    step = max(1, flat.numel() // _MAX_SAMPLES)
    sample = flat[::step].double()
    sample = sample[torch.isfinite(sample)]
    if sample.numel() == 0:
        raise ValueError("image has no finite values.")
    low, high = _quantiles(sample, lower, upper)
    if high <= low:  # over 99% of the image holds one value (a background): the range is that of the rest
        rest = flat[torch.isfinite(flat) & (flat != low)]  # all of it: the subsample may miss a tiny lesion
        if rest.numel():
            rest = rest[:: max(1, rest.numel() // _MAX_SAMPLES)].double()
            rest_low, rest_high = _quantiles(rest, lower, upper)
            low, high = min(low, rest_low), max(low, rest_high)
    return low, high


def _quantiles(values: torch.Tensor, lower: float, upper: float) -> tuple[float, float]:
    q = torch.quantile(values, torch.tensor([lower / 100.0, upper / 100.0], dtype=torch.float64))
    return float(q[0]), float(q[1])


def input_level(info: dict, display: bool | None = None) -> torch.Tensor:
    """What the stretch in ``info`` took away, as the network's level vector ``(display, low, high)``.

    A display image (whose output is absolute [0, 1]) gives ``(1, low, high)`` with its robust range
    in absolute [0, 1]: a well-exposed image spans most of it, a dark or flat one does not, and the
    stretch alone makes the two look alike. A quantitative image gives ``(0, 0, 1)``: its output is
    inverted to its own units, so the stretched frame is the level it keeps.

    Args:
        info: the stretch, as :attr:`IntensityPolicy.last_info` holds it (``low``, ``high``, ``dtype``, ``mode``).
        display: whether the image is a display image; ``None`` takes ``info["mode"]``. Training, which
            stretches every source in ``"quantitative"`` mode, says it from the source's storage depth.
    """
    display = info["mode"] == "display" if display is None else bool(display)
    if not display:
        return torch.tensor([0.0, 0.0, 1.0])
    dtype = np.dtype(info["dtype"])
    scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    return torch.tensor([1.0, float(info["low"]) / scale, float(info["high"]) / scale])


def is_display_item(data: Mapping[Hashable, Any], key: Hashable | None, bits_key: str,
                    display_file_key: str | None = "display_file") -> bool:
    """Whether item ``data`` is a display image, as inference resolves it: 8-bit pixels (``bits_key``) of a
    photo, slide or DICOM file. The file's kind is the item's ``display_file_key`` where the datalist says
    it (an 8-bit DICOM stored as NIfTI), else the file name in ``key``'s meta (no name: a display image)."""
    told = data.get(display_file_key) if display_file_key is not None else None
    if told is None:
        told = _display_source(_source_of(data[key]) if key is not None else None)
    return int(data[bits_key]) == 8 and bool(told)


def _display_source(source: str | None) -> bool:
    """Whether 8-bit pixels of ``source`` are display values: a photo, slide or DICOM file, or no file name."""
    return not source or is_display_format(str(source))


def _source_of(img) -> str | None:
    """The file ``img`` was read from (its meta's ``filename_or_obj``), if it says."""
    return img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None


def map_slabs(src: torch.Tensor, dtype: torch.dtype, fn) -> torch.Tensor:
    """``fn(src)`` as a new ``dtype`` tensor, computed slab by slab along the last axis.

    A whole-volume expression such as ``(x.float() - low) * scale`` holds several full-size
    temporaries at once (a 512x512x300 volume is 315 MB per float32 copy); slabs bound them to
    ``_SLAB_ELEMENTS`` elements, so the stretch and its inverse cost one output copy and no more.
    """
    out = torch.empty(src.shape, dtype=dtype, device=src.device)
    if src.dim() == 0:
        return out.copy_(fn(src))
    step = max(1, _SLAB_ELEMENTS // max(1, src[..., 0].numel()))
    for start in range(0, src.shape[-1], step):
        out[..., start : start + step] = fn(src[..., start : start + step])
    return out


def _plain(img: NdarrayOrTensor) -> torch.Tensor:
    """The pixel data as a plain tensor, sharing memory where possible."""
    if isinstance(img, np.ndarray):
        return torch.as_tensor(np.ascontiguousarray(img) if any(s < 0 for s in img.strides) else img)
    return img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)


def _dtype_name(img: NdarrayOrTensor) -> str:
    if isinstance(img, np.ndarray):
        return str(img.dtype)
    return str(img.dtype).replace("torch.", "")


class IntensityPolicy(InvertibleTransform):
    """Stretch an image to [0, 1] by its robust range, invertibly.

    Args:
        lower: lower percentile of the robust range (whole image, all channels together).
        upper: upper percentile.
        window: a fixed (low, high) window in input units instead of percentiles (e.g. CT (-1000, 1000)).
        mode: ``"quantitative"`` (inverse returns units and dtype), ``"display"`` (inverse keeps
            absolute [0, 1], scaled to the dtype's full range for integers) or ``"auto"``
            (display for 8-bit images, quantitative otherwise).
        clip_output: clip [0, 1] before a display inverse (display values cannot exceed white).

    The range used is in ``last_range`` and, for MetaTensors, in the applied-operations trace, so
    ``Invertd`` can undo it on a prediction.

    Example::

        policy = IntensityPolicy(mode="quantitative")
        x01 = policy(ct_hu)              # float32 (float64 for float64, int32, int64), robust range -> [0, 1]
        hu = policy.inverse(x01)         # back to int16 HU
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        lower: float = 0.5,
        upper: float = 99.5,
        window: Sequence[float] | None = None,
        mode: str = "auto",
        clip_output: bool = True,
    ) -> None:
        if mode not in POLICY_MODES:
            raise ValueError(f"mode must be one of {POLICY_MODES}, got {mode!r}.")
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}.")
        if window is not None and float(window[1]) <= float(window[0]):
            raise ValueError(f"window must be (low, high) with low < high, got {tuple(window)}.")
        self.lower, self.upper, self.mode, self.clip_output = lower, upper, mode, clip_output
        self.window = None if window is None else (float(window[0]), float(window[1]))
        self.last_info: dict | None = None

    @property
    def last_range(self) -> tuple[float, float] | None:
        """The (low, high) of the last call (from :attr:`last_info`, the one record of it)."""
        return None if self.last_info is None else (self.last_info["low"], self.last_info["high"])

    def resolve_mode(self, dtype: str, source: str | None = None) -> str:
        """The concrete mode for an input dtype and file (``auto``: display for 8-bit photo formats and DICOM).

        A uint8 NIfTI, NRRD or MetaImage volume holds scanner values stored in 8 bits, so it is
        quantitative like any volume; int8 data is quantitative too (a display mapping would drop
        its negatives). Without a file name, uint8 counts as display.
        """
        if self.mode != "auto":
            return self.mode
        if dtype != "uint8":
            return "quantitative"
        return "display" if _display_source(source) else "quantitative"

    def display_range(self, img: NdarrayOrTensor) -> tuple[float, float] | None:
        """The (low, high) that a display image is stretched by, whose output keeps that stretch;
        ``None`` for a quantitative image, whose output goes back to its own units."""
        if self.resolve_mode(_dtype_name(img), _source_of(img)) != "display":
            return None
        return self.compute_range(img)

    def compute_range(self, img: NdarrayOrTensor) -> tuple[float, float]:
        """The (low, high) that maps to (0, 1) for this image."""
        return self.window if self.window is not None else robust_range(img, self.lower, self.upper)

    def __call__(self, img: NdarrayOrTensor, reference: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        """Stretch ``img``; with ``reference``, use that image's range (training patches use their source's)."""
        dtype = _dtype_name(img)
        low, high = self.compute_range(img if reference is None else reference)
        scale = 1.0 / (high - low) if high > low else 1.0  # a constant image maps to 0, invertibly
        # float64 and 32/64-bit integer inputs keep their precision: float32 holds integers exactly only
        # to 2**24, so an int32 image stretched in float32 came back off by up to hundreds of units
        work = torch.float64 if dtype in _WIDE_DTYPES else torch.float32
        stretched = map_slabs(_plain(img), work, lambda x: (x.to(work) - low) * scale)
        source = _source_of(img)
        info = {"low": low, "high": high, "dtype": dtype, "mode": self.resolve_mode(dtype, source)}
        self.last_info = info
        if isinstance(img, np.ndarray):
            return stretched.detach().cpu().numpy()
        if not (isinstance(img, MetaTensor) and get_track_meta()):
            return stretched
        out, *_ = convert_to_dst_type(stretched, img, dtype=work)
        self.push_transform(out, extra_info=info)
        return out

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        """Undo the stretch recorded on ``data``: a MetaTensor's trace, else this object's last call."""
        if isinstance(data, MetaTensor) and data.applied_operations:
            return self.invert_with(data, self.pop_transform(data)["extra_info"])
        if self.last_info is None:
            raise RuntimeError("IntensityPolicy.inverse: nothing to invert (no trace on the data and no previous call).")
        return self.invert_with(data, self.last_info)

    def invert_with(self, data: NdarrayOrTensor, info: dict) -> NdarrayOrTensor:
        """Apply the inverse described by ``info`` (``low``, ``high``, ``dtype``, ``mode``)."""
        low, high, mode = float(info["low"]), float(info["high"]), info["mode"]
        dtype = np.dtype(info["dtype"])
        work = torch.float64  # slab by slab, so the exact float64 arithmetic costs no whole-volume copy
        integer = np.issubdtype(dtype, np.integer)
        limits = np.iinfo(dtype) if integer else None

        def invert(x: torch.Tensor) -> torch.Tensor:
            x = x.to(work)
            if mode == "display":
                x = x.clamp(0.0, 1.0) if self.clip_output else x
                x = x * float(limits.max) if integer else x
            else:
                x = x * (high - low if high > low else 1.0) + low
            return torch.round(x).clamp(float(limits.min), float(limits.max)) if integer else x

        target = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        restored = map_slabs(_plain(data), target, invert)
        if isinstance(data, np.ndarray):
            return restored.cpu().numpy()
        if not (isinstance(data, MetaTensor) and get_track_meta()):
            return restored
        out, *_ = convert_to_dst_type(restored, data, dtype=target)
        return out


class IntensityPolicyd(MapTransform, InvertibleTransform):
    """Dictionary :class:`IntensityPolicy`, invertible with MONAI's ``Invertd``.

    Args:
        keys: images to stretch.
        reference_key: take the range from this key's image instead (e.g. a whole source image
            whose patches are stretched alike); ``None`` uses each image's own range.
        level_key: also write the first key's level (:func:`input_level`) to this item key, for
            networks that take it (``None``: don't). Traced images always carry it in their meta
            under ``LEVEL_META_KEY``, where the inferer finds it.
        bits_key: item key of the source's storage depth: 8 bits in a photo, slide or DICOM file (or an
            image with no file name) marks a display image for the level, as ``"auto"`` mode decides
            at inference (training stretches every source in ``"quantitative"`` mode, so it cannot
            tell); an 8-bit NIfTI, NRRD or MetaImage volume stays quantitative. ``None`` takes the mode.
        display_file_key: item key that says whether the image's original file is a display format,
            where its corpus file's format does not (a DICOM file or TIFF stack stored as NIfTI: the
            datalist's ``display_file``); items without it are decided by their own file name.
        allow_missing_keys: skip absent keys.
        kwargs: :class:`IntensityPolicy` arguments (``lower``, ``upper``, ``window``, ``mode``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = None,
        level_key: str | None = None,
        bits_key: str | None = None,
        display_file_key: str | None = "display_file",
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.reference_key, self.level_key, self.bits_key = reference_key, level_key, bits_key
        self.display_file_key = display_file_key
        self.policy = IntensityPolicy(**kwargs)
        self._infos: dict[Hashable, dict] = {}  # each key's last stretch, to invert outputs that carry no trace

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        reference = d[self.reference_key] if self.reference_key is not None else None
        display = self._display(d)
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

    def _display(self, d: Mapping[Hashable, Any]) -> bool | None:
        """Whether the item is a display image, as inference resolves it: 8-bit pixels of a photo, slide or
        DICOM file (``None`` without ``bits_key``: the policy's mode decides)."""
        if self.bits_key is None:
            return None
        return is_display_item(d, next(iter(self.key_iterator(d)), None), self.bits_key, self.display_file_key)

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            traced = isinstance(d[key], MetaTensor) and bool(d[key].applied_operations)
            if traced or key not in self._infos:
                d[key] = self.policy.inverse(d[key])
            else:  # a numpy array: its own key's range, not the last key's
                d[key] = self.policy.invert_with(d[key], self._infos[key])
        return d
