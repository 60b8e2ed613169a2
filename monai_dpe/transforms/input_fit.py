"""Blend the network's output with the global affine map of its own input that matches it best.

On sources the network has never seen, its global level and contrast are right more often than its
local changes: those can alter detail that was already right. ``a * image + b``, fitted by least
squares to the output, takes only the level and contrast from the network and keeps every detail of
the input; ``network_weight`` says how much of the network's own output stays. That share can follow
the input's noise (``noise_range``, :func:`input_noise`): a clean input keeps its own detail, a
noisy one takes the network's denoising. Or the detail can be decided coefficient by coefficient
(``wiener_noise_scale``): the input is Wiener-filtered in sliding DCT patches with the network's
output, mapped onto the input's units, as the pilot (:func:`~monai_dpe.transforms.dct_wiener`), so
the input's detail stays wherever the network's output holds detail too, and what the network took
for noise is shrunk by how far it rises above the input's noise. The level itself can stay the
input's own where the input is already well exposed (``level_range``, :func:`level_weight`): a
display image whose robust white reaches most of full scale is rarely the dark, flat picture the
network restores, and on sources it has never seen the network's guess at its level is worse than
the level it already has; a quantitative image (a CT or MR volume in its scanner's units) keeps its
units' level, so only its detail changes. A volume is decided once, from its whole range. A dark
colour image can take part of its level from its own stretch instead (``colour_stretch_share``,
:func:`is_colour`): the network learnt colour levels from few collections. The line that gives a
display image's output its level can be kept from sending what the input resolves past black or
white (``range_margin``, :func:`line_within_range`). A display image's level can come, in part
(``level_prior_weight``) or whole, from a prior fitted to the training split instead of the network's
output (``level_prior``, :class:`~monai_dpe.transforms.LevelPrior`): the network's detail stays.
The bundle's validation split chooses these settings (``bundle/docs/README.md``).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scipy import optimize

from monai_dpe.transforms.intensity_policy import LEVEL_META_KEY
from monai_dpe.transforms.wiener import dct_wiener

if TYPE_CHECKING:  # the prior reads this module's noise estimate; at run time any object with .line serves
    from monai_dpe.transforms.level_prior import LevelPrior

__all__ = ["input_fit", "input_noise", "noise_weight", "level_weight", "line_within_range", "BlendInputFit",
           "BlendInputFitd"]

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

    Donoho's robust estimate, the median absolute finest diagonal wavelet coefficient / 0.6745, on
    the channel mean of a 2D image; a volume (three spatial dimensions) gives the median over up to
    16 evenly spaced slices along ``slice_axis``, so every slice of one volume is blended alike.
    A blank picture reads 0.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"input_noise expects a channel-first 2D image or volume, got shape {list(image.shape)}.")
    if image.ndim == 3:
        return _diagonal_sigma(_channel_mean(image))
    axis = 1 + slice_axis % 3
    picks = np.unique(np.linspace(0, image.shape[axis] - 1, min(_NOISE_SLICES, image.shape[axis])).round().astype(int))
    return float(np.median([_diagonal_sigma(_channel_mean(image.select(axis, int(i)))) for i in picks]))


def _channel_mean(picture: torch.Tensor) -> np.ndarray:
    """The channels' mean in float64, one plane at a time (no float64 copy of the whole image)."""
    total = np.zeros(picture.shape[1:], dtype=np.float64)
    for channel in picture.detach():
        total += channel.cpu().double().numpy()
    return total / picture.shape[0]


def _diagonal_sigma(picture: np.ndarray) -> float:
    """Median |HH| / 0.6745 of the finest Haar level over the 2x2 blocks that are not constant.

    scikit-image's ``estimate_sigma`` needs PyWavelets (not in MONAI Label's environment), returns
    NaN on a blank image and counts flat areas as noise-free unless they are exactly 0; here every
    constant block (a flat background at any value) is left out, and a picture of them reads 0.
    """
    height, width = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2
    a, b = picture[0:height:2, 0:width:2], picture[0:height:2, 1:width:2]
    c, d = picture[1:height:2, 0:width:2], picture[1:height:2, 1:width:2]
    varying = (a != b) | (a != c) | (a != d)
    diagonal = np.abs((a - b - c + d)[varying]) / 2.0
    return float(np.median(diagonal) / 0.6745) if diagonal.size else 0.0


def noise_weight(sigma: float, noise_range: Sequence[float]) -> float:
    """The network's share for an input of noise ``sigma``: 0 up to ``noise_range[0]``, 1 from
    ``noise_range[1]``, linear between."""
    return _ramp(sigma, noise_range)


def level_weight(level: Sequence[float] | torch.Tensor | None, level_range: Sequence[float] | None) -> float:
    """How much of the output's level is the input's own, from the input's level vector.

    ``level`` is :func:`~monai_dpe.transforms.input_level`'s ``(display, low, high)``: a display image
    whose robust white ``high`` (absolute, 1 = full scale) is at most ``level_range[0]`` takes the
    network's level (0), one from ``level_range[1]`` keeps its own (1), linear between (the wider the
    range, the smaller the change of output for a small change of input). A quantitative image
    (``display`` 0) keeps its own (1): its output goes back to its units (Hounsfield units, a scanner's
    intensities), whose level a viewer's window sets, and a line of the network's per slice would move
    them slice by slice. An unknown level or no range gives 0 (the network's level).
    """
    if level is None or level_range is None:
        return 0.0
    display, _, high = _level_values(level)
    return _ramp(high, level_range) if display >= 0.5 else 1.0


def _written_in_unit_range(level: Sequence[float] | torch.Tensor | None) -> bool:
    """Whether the output is written in [0, 1]: a display image's, or one whose level is not known."""
    return level is None or _level_values(level)[0] >= 0.5


def _level_values(level: Sequence[float] | torch.Tensor) -> tuple[float, float, float]:
    """``(display, low, high)`` as floats, from a list or a (3,) or (1, 3) tensor (one collated item)."""
    values = torch.as_tensor(level, dtype=torch.float64).reshape(-1)
    if values.numel() != 3:
        raise ValueError(f"a level is (display, low, high), got {values.numel()} values.")
    return float(values[0]), float(values[1]), float(values[2])


def _ramp(value: float, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


class BlendInputFit(Transform):
    """``w * (pred - fit) + (1 - v) * fit + v * own`` with ``fit = a * image + b`` from :func:`input_fit`.

    ``pred`` and ``image`` are the network's output and input in the same [0, 1] space (before the
    intensity policy is inverted), channel first. ``fit`` is the level and contrast the network gave
    the input; ``pred - fit`` is the detail it changed, of which the share ``w`` stays (1: all of
    it). ``own = low + (high - low) * image`` is the input's own level, which a well-exposed display
    image keeps by the share ``v`` (:func:`level_weight`; 0 without ``level_range``). With ``v = 0``
    this is ``w * pred + (1 - w) * fit``. With ``wiener_noise_scale`` (and no fixed ``w``), there is
    no detail term; the input itself is Wiener-filtered first, for ``wiener_noise_scale`` times its
    noise (:func:`input_noise`), with the network's output mapped onto the input's units,
    ``(pred - b) / a``, as the pilot (:func:`~monai_dpe.transforms.wiener.dct_wiener`), and the fit and
    own-level lines are applied to the filtered input. With ``v = 0`` that is the fit filtered with
    ``pred`` as the pilot. A volume (three spatial dimensions) is fitted slice by
    slice along ``slice_axis``, as the slice-wise inferer enhances it; a 2D image is fitted whole.
    ``pred`` is changed in place, one slice at a time, so no volume-sized copy is made.

    Args:
        network_weight: fixed share ``w`` of the network's own detail, in [0, 1]; 1 (and ``v = 0``)
            returns ``pred`` unchanged. ``None``: the detail follows the input's noise
            (``wiener_noise_scale``, or else ``noise_range``).
        slice_axis: spatial axis of a volume's slices (``-1``: the last, the inferer's default).
        noise_range: ``(low, high)`` noise levels of ``image`` (:func:`input_noise`) between which the
            share rises from 0 to 1 (:func:`noise_weight`); used when ``network_weight`` and
            ``wiener_noise_scale`` are ``None``.
        level_range: ``(low, high)`` robust whites of a display input between which it goes from the
            network's level to its own (:func:`level_weight`); a quantitative input keeps its own.
            ``None``: always the network's.
        wiener_noise_scale: the Wiener filter's noise as a multiple of the input's estimated noise
            (> 0); used when ``network_weight`` is ``None``.
        colour_stretch_share: share ``s`` in [0, 1] of a colour input's level taken from its stretch
            (the network input's own frame) rather than from the network's fit. The network learnt
            colour levels from few colour collections and does not carry them to others; grey inputs
            and inputs that keep their own level are not affected. 0: the network's level.
        range_margin: with ``wiener_noise_scale``, the line is brought to the nearest one that maps the
            filtered input's range, narrowed at each end by this many times its estimated noise, into
            [0, 1] (:func:`line_within_range`): what the input resolves is not clipped. Only for a display
            image (or an unknown level): a quantitative output goes back to its own units. ``None``: off.
        level_prior: a :class:`~monai_dpe.transforms.LevelPrior` whose line gives a display image (with a
            known level) its level in place of the fit to the network's output; the own-level share,
            ``colour_stretch_share`` and ``range_margin`` apply to it as they would to the fit. ``None``:
            the network's level.
        level_prior_weight: share in [0, 1] of the level taken from the prior's line, the rest from the
            fit to the network's output (``level_prior`` only): between two estimates of the same line,
            whose errors on an unseen source are not the same. 1: the prior's line alone.

    Example::

        # the bundle's settings
        blend = BlendInputFit(network_weight=None, wiener_noise_scale=0.2, level_range=(0.55, 0.56))
        enhanced = blend(pred, image, level)  # level: (display, low, high), as IntensityPolicyd records it
        # colour photographs and slides, unlike the blood smears the network learnt colour from
        photo_blend = BlendInputFit(network_weight=None, wiener_noise_scale=0.2, level_range=(0.55, 0.56),
                                    colour_stretch_share=0.5)
    """

    def __init__(self, network_weight: float | None = 1.0, slice_axis: int = -1,
                 noise_range: Sequence[float] | None = None, level_range: Sequence[float] | None = None,
                 wiener_noise_scale: float | None = None, colour_stretch_share: float = 0.0,
                 range_margin: float | None = None, level_prior: LevelPrior | None = None,
                 level_prior_weight: float = 1.0) -> None:
        if not 0.0 <= float(colour_stretch_share) <= 1.0:
            raise ValueError(f"colour_stretch_share must lie in [0, 1], got {colour_stretch_share}.")
        if not 0.0 <= float(level_prior_weight) <= 1.0:
            raise ValueError(f"level_prior_weight must lie in [0, 1], got {level_prior_weight}.")
        if range_margin is not None and not 0.0 <= float(range_margin) < float("inf"):
            raise ValueError(f"range_margin must be finite and >= 0, or None; got {range_margin}.")
        if wiener_noise_scale is not None and not 0.0 < float(wiener_noise_scale) < float("inf"):
            raise ValueError(f"wiener_noise_scale must be positive and finite, got {wiener_noise_scale}.")
        if network_weight is None and wiener_noise_scale is None and not _valid_range(noise_range):
            raise ValueError(f"a share that follows the noise needs noise_range (low, high), 0 <= low < high, "
                             f"or wiener_noise_scale; got {noise_range}.")
        if network_weight is not None and not 0.0 <= network_weight <= 1.0:
            raise ValueError(f"network_weight must lie in [0, 1], got {network_weight}.")
        if level_range is not None and not _valid_range(level_range):
            raise ValueError(f"level_range must be (low, high) with 0 <= low < high, got {level_range}.")
        self.network_weight = None if network_weight is None else float(network_weight)
        self.noise_range = None if noise_range is None else (float(noise_range[0]), float(noise_range[1]))
        self.level_range = None if level_range is None else (float(level_range[0]), float(level_range[1]))
        self.wiener_noise_scale = None if wiener_noise_scale is None else float(wiener_noise_scale)
        self.colour_stretch_share = float(colour_stretch_share)
        self.range_margin = None if range_margin is None else float(range_margin)
        self.slice_axis = int(slice_axis)
        self.level_prior = level_prior
        self.level_prior_weight = float(level_prior_weight)

    @property
    def filters(self) -> bool:
        """Whether the detail is Wiener-filtered (no fixed share and a ``wiener_noise_scale``)."""
        return self.network_weight is None and self.wiener_noise_scale is not None

    def weight(self, image: torch.Tensor) -> float | None:
        """The network's share for this input: the fixed one, or the one its noise gives; ``None``
        where the detail is Wiener-filtered instead (:attr:`filters`)."""
        if self.network_weight is not None:
            return self.network_weight
        if self.filters:
            return None
        return noise_weight(input_noise(image, self.slice_axis), self.noise_range)

    def __call__(self, pred: torch.Tensor, image: torch.Tensor,
                 level: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
        if pred.shape != image.shape:
            raise ValueError(f"BlendInputFit: pred {list(pred.shape)} and image {list(image.shape)} differ in shape.")
        own = level_weight(level, self.level_range)
        weight = self.weight(image)
        sigma = input_noise(image, self.slice_axis) if weight is None else 0.0
        noise = self.wiener_noise_scale * sigma if weight is None else 0.0
        # only a display image's output is written in [0, 1]; a quantitative one goes back to its own units
        limited = weight is None and self.range_margin is not None and _written_in_unit_range(level)
        margin = self.range_margin * sigma if limited else None
        share = self.colour_stretch_share if own < 1.0 and self.colour_stretch_share and is_colour(image) else 0.0
        prior = None
        if self.level_prior is not None and own < 1.0 and level is not None and _level_values(level)[0] >= 0.5:
            prior = self.level_prior.line(image, level)  # one line for a whole volume, as its level is one
        if weight == 1.0 and own == 0.0 and not share and prior is None:
            return pred
        own_line = (0.0, 1.0)
        if own:
            _, low, high = _level_values(level)
            own_line = (low, high - low)
        # an output made under inference mode (as the engines make it) can only be changed in place there
        with torch.inference_mode(pred.is_inference()):
            if pred.ndim == 4:  # channel + three spatial dimensions: one fit per slice
                axis = 1 + (self.slice_axis % 3)
                for index in range(pred.shape[axis]):
                    _blend(pred.select(axis, index), image.select(axis, index), weight, noise, own, own_line, share,
                           margin, prior, self.level_prior_weight)
            else:
                _blend(pred, image, weight, noise, own, own_line, share, margin, prior, self.level_prior_weight)
        return pred


def is_colour(image: torch.Tensor) -> bool:
    """Whether a channel-first image or volume holds colour: more than one channel, not all equal
    (grey replicated to RGB, as the network takes it, is not colour)."""
    return image.shape[0] > 1 and any(not torch.equal(image[0], channel) for channel in image[1:])


def line_within_range(image: torch.Tensor | Sequence[torch.Tensor], gain: float, constant: float,
                      margin: float = 0.0) -> tuple[float, float]:
    """The line nearest ``gain * image + constant`` (in mean squared difference over ``image``) that maps
    the range of ``image``, narrowed by ``margin`` at each end, into [0, 1].

    The degradations are affine in level and contrast, so the true line maps the clean input into the
    displayable range; a line that sends part of the input's own range past black or white clips
    detail the input holds. Noise and filter ringing reach past the clean input's extremes, so
    ``[low, high]`` is ``[min + margin, max - margin]`` over all channels (``margin`` in the image's
    units: a few times its noise). A line is fixed by its values at ``low`` and ``high``; both must lie
    in [0, 1] (a box), and the mean squared difference is a quadratic form in them, so the nearest line
    is a bounded least-squares problem in two unknowns. A line already inside is returned as it is; a
    range narrowed to nothing (or a flat image) constrains only the output's mean. An image with
    values that are not finite is returned with its line unchanged. ``image`` is a channel-first tensor
    or its channels as a sequence; its statistics are summed in float64, one channel at a time.
    """
    planes = [plane.detach() for plane in image]
    count = sum(plane.numel() for plane in planes)
    mean = sum(float(plane.sum(dtype=torch.float64)) for plane in planes) / count
    second = sum(float(plane.double().square().sum()) for plane in planes) / count
    variance = max(second - mean * mean, 0.0)
    low = min(float(plane.min()) for plane in planes) + margin
    high = max(float(plane.max()) for plane in planes) - margin
    if not all(np.isfinite((mean, variance, low, high, gain, constant))):
        return gain, constant
    if variance <= 0.0 or high <= low:
        return gain, float(np.clip(gain * mean + constant, 0.0, 1.0)) - gain * mean
    ends = np.array([gain * low + constant, gain * high + constant])
    if np.all((ends >= 0.0) & (ends <= 1.0)):
        return gain, constant
    # the line's value at x is ends @ (high - x, x - low) / (high - low); its mean squared difference
    # from the given line is a quadratic form in the two ends, whose Cholesky factor stands in for the pixels
    width, to_high, from_low = high - low, high - mean, mean - low
    form = np.array([[to_high ** 2 + variance, to_high * from_low - variance],
                     [to_high * from_low - variance, from_low ** 2 + variance]]) / width ** 2
    # the small guard keeps a nearly flat image's form, all but singular, factorisable
    factor = np.linalg.cholesky(form + 1e-15 * np.eye(2)).T
    at_low, at_high = optimize.lsq_linear(factor, factor @ ends, bounds=(0.0, 1.0), tol=1e-12).x
    new_gain = float(at_high - at_low) / width
    return new_gain, float(at_low) - new_gain * low


def _valid_range(bounds) -> bool:
    try:
        low, high = (float(v) for v in bounds)
    except (TypeError, ValueError):
        return False
    return 0.0 <= low < high


def _blend(pred: torch.Tensor, image: torch.Tensor, weight: float | None, noise: float, own: float,
           own_line: tuple[float, float], share: float = 0.0, margin: float | None = None,
           prior: tuple[float, float] | None = None, prior_weight: float = 1.0) -> None:
    """``pred`` becomes ``weight * (pred - fit) + (1 - own) * line + own * (offset + scale * image)``, in place.

    ``line`` is the fit (or, where a ``prior`` line is given, ``prior_weight`` of it and the rest of the
    fit) moved by ``share`` toward ``image`` itself. With ``weight`` None, ``image`` is
    Wiener-filtered first (noise ``noise`` in its units, pilot ``(pred - b) / a``) and the detail term
    is left out: what stays of the input's detail is the filter's. With a ``margin``, the line then
    keeps the filtered input's range, narrowed by it at each end, within [0, 1] (:func:`line_within_range`).
    """
    slope, offset = input_fit(image, pred)
    level_slope, level_offset = slope, offset
    if prior is not None:
        level_slope = prior_weight * prior[0] + (1.0 - prior_weight) * slope
        level_offset = prior_weight * prior[1] + (1.0 - prior_weight) * offset
    line_slope, line_offset = (1.0 - share) * level_slope + share, (1.0 - share) * level_offset
    own_offset, own_scale = own_line
    if weight is None:
        # the input filtered in its own units (the pilot: the output mapped back onto them), then
        # taken by the line the blend gives the input: the fit's, the input's own, or between
        gain = (1.0 - own) * line_slope + own * own_scale
        constant = (1.0 - own) * line_offset + own * own_offset
        filtered = []  # with a margin, every channel's filtered plane is needed before the line is known
        for channel, plane in zip(pred, image):  # one channel at a time
            plane = plane.as_subclass(torch.Tensor).float()[None]
            if slope != 0.0:  # a flat fit (output unrelated to the input) gives no pilot in its units
                plane = dct_wiener(plane, (channel.as_subclass(torch.Tensor).float()[None] - offset) / slope, noise)
            if margin is None:
                channel.copy_(plane[0] * gain + constant)
            else:
                filtered.append(plane[0])
        if margin is not None:
            gain, constant = line_within_range(filtered, gain, constant, margin)
            for channel, plane in zip(pred, filtered):
                channel.copy_(plane * gain + constant)
        return
    image_gain = (1.0 - own) * line_slope - weight * slope + own * own_scale
    constant = (1.0 - own) * line_offset - weight * offset + own * own_offset
    pred.mul_(weight).add_(image.to(pred.dtype), alpha=image_gain).add_(constant)


class BlendInputFitd(MapTransform):
    """Dictionary :class:`BlendInputFit`: blends ``keys`` (the network outputs) with ``image_key`` (its input).

    Args:
        keys: the outputs to blend (``"pred"``).
        image_key: the item's network input in the same space (``"image"``).
        network_weight: fixed share of the network's own output; ``None`` follows the noise.
        slice_axis: spatial axis of a volume's slices.
        noise_range: noise levels between which the share rises from 0 to 1.
        level_range: robust whites of a display input between which it keeps its own level.
        level_key: item key of the input's level (:class:`~monai_dpe.transforms.IntensityPolicyd`'s
            ``level_key``); where the item has none, the level in ``image_key``'s meta is used.
        wiener_noise_scale: the Wiener filter's noise as a multiple of the input's (no fixed share).
        colour_stretch_share: share of a colour input's level taken from its stretch.
        range_margin: the filtered input's range, less this many times its noise, is kept within [0, 1].
        level_prior: a :class:`~monai_dpe.transforms.LevelPrior` that gives a display image its level.
        level_prior_weight: share of that level taken from the prior's line, the rest from the network's.
        blend: a :class:`BlendInputFit` to apply instead of one built from the settings above (the
            bundle configs name theirs once, as ``blend``, and every user of it takes that one).
    """

    def __init__(self, keys: KeysCollection = "pred", image_key: str = "image", network_weight: float | None = 1.0,
                 slice_axis: int = -1, noise_range: Sequence[float] | None = None,
                 level_range: Sequence[float] | None = None, level_key: str = "level",
                 wiener_noise_scale: float | None = None, blend: BlendInputFit | None = None,
                 colour_stretch_share: float = 0.0, range_margin: float | None = None,
                 level_prior: LevelPrior | None = None, level_prior_weight: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.level_key = image_key, level_key
        self.blend = blend if blend is not None else BlendInputFit(
            network_weight, slice_axis, noise_range, level_range, wiener_noise_scale, colour_stretch_share, range_margin,
            level_prior, level_prior_weight)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.image_key]
        level = d.get(self.level_key)
        if level is None and isinstance(image, MetaTensor):
            level = image.meta.get(LEVEL_META_KEY)
        for key in self.key_iterator(d):
            d[key] = self.blend(d[key], image, level)
        return d
