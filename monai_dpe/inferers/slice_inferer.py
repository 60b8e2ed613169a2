"""SliceWiseInferer: serve 2D networks on 2D images and, slice by slice, on 3D volumes."""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm


__all__ = ["SliceWiseInferer", "hold_channels_last"]

_NATIVE_MAX_NUMEL = 20480  # PyTorch's size up to which one image may take its native convolution kernel
_CONV_ARGS = {
    torch.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    torch.conv_transpose2d: ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
}


def _pair(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _single_image_takes_onednn(x: torch.Tensor, weight: torch.Tensor, stride, dilation, groups: int) -> bool:
    """PyTorch's ``use_mkldnn`` rule (aten/src/ATen/native/Convolution.cpp) for a batch of one ``x[0]``."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    kernel = list(weight.shape[-2:])
    fast_1x1 = stride != [1, 1] or dilation != [1, 1] or kernel != [1, 1] or torch.get_num_threads() > 1
    return fast_1x1 and (groups > 1 or min(kernel) > 3 or x[0].numel() > _NATIVE_MAX_NUMEL)


class _BatchInvariantConvolutions(TorchFunctionMode):
    """Run each CPU float32 2D (transposed) convolution on the kernel PyTorch picks for one image.

    PyTorch picks a convolution kernel per call from the whole batch: oneDNN for two or more
    images, but its native kernel for one image whose input is small (C*H*W <= 20480: the deep
    levels of a U-Net on small slices) and, on one thread, for 1x1 kernels below 16 images
    (NNPACK from 16 images when oneDNN is off). The kernels sum in different orders, so a
    slice's output depended on how many slices shared its call (by ~2e-7). Where one image would
    take the native kernel, each image of the batch is sent to it alone (in (N, C, H, W) layout):
    a slice gets the same bits for every ``sw_batch_size``, the bits a batch of one (the bundle's
    default) always got. Grouped convolutions are left to PyTorch.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        names = _CONV_ARGS.get(func)
        if names is None:
            return func(*args, **kwargs)
        call = {**dict(zip(names, args)), **kwargs}
        x, weight, bias, groups = call["input"], call["weight"], call.get("bias"), int(call.get("groups", 1))
        padding = call.get("padding", 0)
        cpu_float = x.device.type == "cpu" and x.dtype == torch.float32 and x.layout == torch.strided
        if not cpu_float or x.dim() != 4 or not x.shape[0] or groups != 1 or isinstance(padding, str):
            return func(*args, **kwargs)
        stride, padding, dilation = _pair(call.get("stride", 1)), _pair(padding), _pair(call.get("dilation", 1))
        if _single_image_takes_onednn(x, weight, stride, dilation, groups):
            return func(*args, **kwargs)  # then PyTorch takes oneDNN for every batch size
        # the native kernels take (N, C, H, W)-contiguous tensors; they run a batch's images in parallel,
        # each on a one-thread GEMM, but one image alone on a multi-threaded GEMM, which on some BLAS
        # builds (MKL on a 2-core Xeon with AMX) sums in another order: so one call per image
        x, weight, kernel = x.contiguous(), weight.contiguous(), list(weight.shape[-2:])
        if func is torch.conv_transpose2d:
            extra = _pair(call.get("output_padding", 0))
            native = partial(torch.ops.aten.slow_conv_transpose2d, weight=weight, kernel_size=kernel, bias=bias,
                             stride=stride, padding=padding, output_padding=extra, dilation=dilation)
        elif dilation != [1, 1]:
            native = partial(torch.ops.aten.slow_conv_dilated2d, weight=weight, kernel_size=kernel, bias=bias,
                             stride=stride, padding=padding, dilation=dilation)
        else:
            native = partial(torch.ops.aten.thnn_conv2d, weight=weight, kernel_size=kernel, bias=bias, stride=stride,
                             padding=padding)
        return torch.cat([native(x[i : i + 1]) for i in range(x.shape[0])])


def _weights_dtype(network) -> torch.dtype | None:
    """The dtype of a module's first floating parameter; ``None`` for other callables and parameter-free modules."""
    if not isinstance(network, nn.Module):
        return None
    return next((p.dtype for p in network.parameters() if p.is_floating_point()), None)


def tile_spans(size: int, tile: int, overlap: float, align: int = 32) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis of ``size``: ``(start, stop, keep_start, keep_stop)`` each.

    Tiles of ``min(tile, size)`` overlap by at least ``overlap`` of a tile and are spread evenly;
    each keeps the part nearer its own centre than its neighbours' centres, which lies at least
    half an overlap inside it (or reaches the axis's own end). Starts are multiples of ``align``,
    so a U-Net's downsampling grid falls on the same pixels as in the whole slice; the last tile
    runs to the end (up to ``align - 1`` pixels longer).
    """
    tile = min(int(tile), size)
    step = max(1, int(tile * (1.0 - overlap)))
    count = 1 + -(-(size - tile) // step)  # ceil: enough tiles to reach the end
    even = [i * (size - tile) / (count - 1) for i in range(count)] if count > 1 else [0.0]
    starts = sorted({int(x) // align * align for x in even})
    stops = [min(start + tile, size) for start in starts[:-1]] + [size]
    centres = [(a + b) // 2 for a, b in zip(starts, stops)]
    cuts = [0] + [(a + b) // 2 for a, b in zip(centres, centres[1:])] + [size]
    return [(start, stop, cuts[i], cuts[i + 1]) for i, (start, stop) in enumerate(zip(starts, stops))]


def _per_image(kwargs: dict, start: int, stop: int, batch: int) -> dict:
    """Images start..stop-1's share of keyword arguments: tensors with a row per image of the
    ``batch`` and sequences with an entry per image (a collated datalist field: ``modality``) are sliced,
    anything else (a single shared row) is passed as it is."""
    return {k: v[start:stop] if _has_row_per_image(v, batch, min_dim=1) else v for k, v in kwargs.items()}


def _has_row_per_image(value, batch: int, min_dim: int = 2) -> bool:
    """Whether ``value`` holds one row per image of ``batch``: a tensor of at least ``min_dim`` dimensions
    whose first has that length, or a list or tuple of that length."""
    if isinstance(value, torch.Tensor):
        return value.dim() >= min_dim and value.shape[0] == batch
    return isinstance(value, (list, tuple)) and len(value) == batch


def _row_for_slices(rows, index: int, count: int):
    """Image ``index``'s row (the single row, if shared) for each of ``count`` slices of its volume."""
    row = rows[min(index, len(rows) - 1)]
    return row.expand(count, -1) if isinstance(rows, torch.Tensor) else [row] * count


def hold_channels_last(network: object) -> None:
    """Put a module's 2D convolution weights in channels-last layout, in place (a no-op once they are).

    Channels-last slices alone are not enough: with NCHW weights every convolution reorders its
    weights on each call (docs/benchmarks/speed.md). Done here, where the slices are made channels-last,
    so every caller gets it: ``monai.bundle run``, ``monai-dpe enhance`` and MONAI Label, which builds
    the bundle's ``network_def`` itself. TorchScript and ONNX callables and networks with 5D weights
    or buffers (3D convolutions) are left as they are.
    """
    if not isinstance(network, nn.Module) or isinstance(network, torch.jit.ScriptModule):
        return
    if any(t.dim() == 5 for t in itertools.chain(network.parameters(), network.buffers())):
        return
    # outside inference mode, whatever the caller's: weights made there could never be trained again
    with torch.inference_mode(False), torch.no_grad():
        network.to(memory_format=torch.channels_last)


class SliceWiseInferer(Inferer):
    """Run a 2D network on (B, C, H, W) batches directly and on (B, C, X, Y, Z) volumes slice by slice.

    MONAI's own ``SliceInferer`` refuses 2D input; this one takes both, so one bundle serves
    X-rays and CT volumes (and is named apart from MONAI's). Only ``sw_batch_size`` slices are on the compute device at a time,
    so memory is bounded by the slice batch, not the volume. With ``context=k`` each slice is
    given its k neighbours on each side as extra channels (2.5D; edges repeat the border
    slice), and the network must take ``C * (2k + 1)`` channels.

    Args:
        spatial_dim: the volume's spatial axis to slice along (0, 1 or 2; -1 is the last). A volume one
            voxel thick along another axis is sliced along that one: it holds a single 2D image.
        sw_batch_size: slices per network call.
        context: neighbouring slices on each side given as extra channels.
        sw_device: device the network runs on (default: the input's).
        device: device of the assembled output (default: the input's).
        amp_dtype: run the network under autocast with this dtype (e.g. ``torch.bfloat16``); ``None`` for fp32.
        channels_last: feed the network channels-last slices and hold its 2D convolution weights
            channels-last too (:func:`hold_channels_last`; faster convolutions on CPU).
        progress: show a progress bar over slices.
        network_wrapper: applied to the network on each call (e.g. ``ChannelAdapter``), so a bundle's
            ``network_def`` + ``models/model.pt`` stay the plain network that any MONAI tool loads
            (MONAI Label's ``BundleInferTask``, ``monai.bundle.load``) while inference still adapts
            grey/RGBA input.
        batch_invariant: on CPU in float32, run each 2D convolution on the kernel PyTorch picks for a
            single slice, so a slice's output is bit-identical whatever ``sw_batch_size`` (PyTorch
            otherwise switches kernels with the batch size); eager networks, not under ``amp_dtype``.
        meta_kwargs: network keyword argument -> key of the input's meta holding a per-image vector
            (e.g. ``{"level": LEVEL_META_KEY}``, the level the intensity policy records); each network
            call gets the rows of its images (a volume's row for each of its slices). An input whose
            meta lacks the key (a plain tensor) calls the network without it: ``DPENet`` then uses
            its ``default_level``, or refuses if it has none. A keyword of the call with one row per
            image, a ``(B, K)`` tensor or a list of ``B`` entries (an evaluator's ``prepare_batch`` hands
            the level and the modality so), is given to the network the same way, and wins over a meta
            row of the same name.
        tile_size: a slice with a side longer than this goes through the network in overlapping
            tiles of at most ``tile_size`` a side (:func:`tile_spans`), so memory is bounded by the
            tile, not the slice; ``None`` never tiles. Smaller slices run whole.
        tile_overlap: the tiles' least overlap, as a share of the tile. Each output pixel is taken
            from the one tile that holds it furthest from its edges: at least half an overlap of
            real context on every side, as in the whole slice.
        tile_align: tiles start at multiples of this, which must be a multiple of the network's
            total downsampling (16 for the shipped DPENet).

    Floating inputs are given to a network in its parameters' dtype (a float64 image runs through a
    float32 network), and the output has the network's dtype.

    Example::

        inferer = SliceWiseInferer(spatial_dim=2, sw_batch_size=8)
        enhanced = inferer(volume, net)  # volume: (1, 3, 256, 256, 150)
    """

    def __init__(
        self,
        spatial_dim: int = -1,
        sw_batch_size: int = 8,
        context: int = 0,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        amp_dtype: torch.dtype | str | None = None,
        channels_last: bool = False,
        progress: bool = False,
        network_wrapper: Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]] | None = None,
        batch_invariant: bool = True,
        meta_kwargs: dict[str, str] | None = None,
        tile_size: int | None = None,
        tile_overlap: float = 0.5,
        tile_align: int = 32,
    ) -> None:
        super().__init__()
        if spatial_dim not in (-1, 0, 1, 2):
            raise ValueError(f"spatial_dim must be 0, 1, 2 or -1, got {spatial_dim}.")
        if sw_batch_size < 1 or context < 0:
            raise ValueError(f"sw_batch_size must be >= 1 and context >= 0, got {sw_batch_size}, {context}.")
        self.spatial_dim = spatial_dim % 3
        self.sw_batch_size = int(sw_batch_size)
        self.context = int(context)
        self.sw_device = sw_device
        self.device = device
        self.amp_dtype = getattr(torch, amp_dtype) if isinstance(amp_dtype, str) else amp_dtype
        self.channels_last = channels_last
        self.progress = progress
        self.network_wrapper = network_wrapper
        self.batch_invariant = batch_invariant
        self.meta_kwargs = dict(meta_kwargs or {})
        if not 0.0 < tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be in (0, 1), got {tile_overlap}.")
        if tile_size is not None and tile_size * tile_overlap < 2 * tile_align:
            raise ValueError(f"tiles of {tile_size} overlapping by {tile_overlap} leave too little context "
                             f"for starts aligned to {tile_align}: tile_size * tile_overlap must be >= 2 * tile_align.")
        self.tile_size, self.tile_overlap, self.tile_align = tile_size, float(tile_overlap), int(tile_align)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.dim() not in (4, 5):
            raise ValueError(
                f"SliceWiseInferer takes (B, C, H, W) images or (B, C, X, Y, Z) volumes, got shape {list(inputs.shape)}."
            )
        if self.channels_last:
            hold_channels_last(network)
        if self.network_wrapper is not None:
            network = self.network_wrapper(network)
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        # a keyword with a row per image ((B, K) tensor, B names) goes with its image, as a meta row does
        given = {k: v for k, v in kwargs.items() if _has_row_per_image(v, inputs.shape[0])}
        rows = {**self._meta_rows(inputs), **given}
        kwargs = {k: v for k, v in kwargs.items() if k not in given}
        out = self._run_2d(plain, network, rows, *args, **kwargs) if plain.dim() == 4 else self._run_3d(plain, network, rows, *args, **kwargs)
        if isinstance(inputs, MetaTensor):
            out = MetaTensor(out)
            out.copy_meta_from(inputs, copy_attr=False)
        return out

    def _meta_rows(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each ``meta_kwargs`` vector as (B, K) rows, one per image of the batch (a single row is shared)."""
        rows = {}
        for arg, key in self.meta_kwargs.items():
            meta = inputs.meta if isinstance(inputs, MetaTensor) else {}
            if key not in meta:  # a plain tensor, or one no policy saw: the network's own default
                continue
            value = torch.as_tensor(meta[key], dtype=torch.float32)
            rows[arg] = value.reshape(inputs.shape[0] if value.dim() > 1 else 1, -1)
        return rows

    def _out_device(self, inputs: torch.Tensor) -> torch.device:
        return torch.device(self.device) if self.device is not None else inputs.device

    def _run_2d(self, images: torch.Tensor, network, rows: dict, *args, **kwargs) -> torch.Tensor:
        if self.context:
            # a lone slice is its own context, laid out as _gather does: [slice - k, ..., slice + k], C channels each
            images = images.repeat(1, 2 * self.context + 1, 1, 1)
        chunks = [
            self._forward(images[i : i + self.sw_batch_size], network, *args, **kwargs, **_per_image(rows, i, i + self.sw_batch_size, images.shape[0]))
            for i in range(0, images.shape[0], self.sw_batch_size)
        ]
        return torch.cat([c.to(self._out_device(images)) for c in chunks], dim=0)

    def _slice_axis(self, spatial_shape: Sequence[int]) -> int:
        """``spatial_dim``, unless the volume is one voxel thick along another axis: such a volume is a
        single 2D image in that plane, and slicing across it would give strips one pixel wide."""
        thin = [axis for axis, size in enumerate(spatial_shape) if size == 1]
        return thin[0] if len(thin) == 1 and spatial_shape[self.spatial_dim] > 1 else self.spatial_dim

    def _run_3d(self, volumes: torch.Tensor, network, rows: dict, *args, **kwargs) -> torch.Tensor:
        axis = 2 + self._slice_axis(volumes.shape[2:])
        n_slices = volumes.shape[axis]
        # one output buffer for the whole batch, filled slice batch by slice batch: the only
        # full-size allocation here (stacking per-volume results would copy them all once more)
        result: torch.Tensor | None = None
        bar = tqdm(total=volumes.shape[0] * n_slices, desc="slices", unit="slice", disable=not self.progress, leave=False)
        with bar:
            for index, volume in enumerate(volumes):
                slices = volume.movedim(axis - 1, 0)  # (S, C, H, W) view, no copy of the volume
                for start in range(0, n_slices, self.sw_batch_size):
                    stop = min(start + self.sw_batch_size, n_slices)
                    own = {arg: _row_for_slices(r, index, stop - start) for arg, r in rows.items()}
                    pred = self._forward(self._gather(slices, start, stop), network, *args, **kwargs, **own)
                    if result is None:  # (B, S, C', H', W'): the network decides channels and slice size
                        shape = (volumes.shape[0], n_slices, *pred.shape[1:])
                        result = torch.empty(shape, dtype=pred.dtype, device=self._out_device(volumes))
                    result[index, start:stop] = pred.to(result.device)
                    bar.update(stop - start)
        return result.movedim(1, axis)

    def _gather(self, slices: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Slices start..stop-1, each with its context neighbours stacked as channels."""
        if not self.context:
            return slices[start:stop]
        n = slices.shape[0]
        offsets = torch.arange(-self.context, self.context + 1)
        index = (torch.arange(start, stop)[:, None] + offsets[None, :]).clamp(0, n - 1)  # (k, 2c+1)
        stacked = slices[index.reshape(-1)]  # (k*(2c+1), C, H, W)
        return stacked.reshape(stop - start, -1, *slices.shape[2:])

    def _forward(self, batch: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        device = torch.device(self.sw_device) if self.sw_device is not None else batch.device
        dtype = _weights_dtype(network) if batch.is_floating_point() else None
        batch = batch.to(device, dtype)  # a float64 (or float16) image runs through a float32 network in float32
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is not None:
            mode = torch.autocast(device_type=device.type, dtype=self.amp_dtype)
        elif self.batch_invariant and device.type == "cpu" and (batch.shape[0] > 1 or self.channels_last):
            mode = _BatchInvariantConvolutions()  # a batch of one takes the single-image kernels already
        else:
            mode = contextlib.nullcontext()
        with mode:
            pred = self._call(batch, network, *args, **kwargs)
        return pred.float().contiguous() if self.amp_dtype is not None else pred.contiguous()

    def _call(self, batch: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        """The network on ``batch``: whole, or image by image in tiles where a side exceeds ``tile_size``."""
        if self.tile_size is None or max(batch.shape[2:]) <= self.tile_size:
            pred = network(batch, *args, **kwargs)
            return pred[0] if isinstance(pred, (tuple, list)) else pred
        outputs = []
        for i in range(batch.shape[0]):  # one image at a time: each has its own per-image arguments
            outputs.append(self._tiled(batch[i : i + 1], network, *args, **_per_image(kwargs, i, i + 1, batch.shape[0])))
        return torch.cat(outputs, dim=0)

    def _tiled(self, image: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        """One (1, C, H, W) image through the network tile by tile, each pixel from its most central tile.

        MONAI's ``sliding_window_inference`` blends overlapping tiles, and its Gaussian weights are
        clamped at 1e-3, so near the slice's border a tile edge, where context is cut, weighs as much
        as a tile centre; stitching keeps each pixel's full context.
        """
        out: torch.Tensor | None = None
        rows, cols = (tile_spans(size, self.tile_size, self.tile_overlap, self.tile_align) for size in image.shape[2:])
        for (r0, r1, keep_r0, keep_r1), (c0, c1, keep_c0, keep_c1) in itertools.product(rows, cols):
            pred = network(image[..., r0:r1, c0:c1], *args, **kwargs)
            pred = pred[0] if isinstance(pred, (tuple, list)) else pred
            if out is None:
                out = torch.empty((1, pred.shape[1], *image.shape[2:]), dtype=pred.dtype, device=pred.device)
            out[..., keep_r0:keep_r1, keep_c0:keep_c1] = pred[..., keep_r0 - r0 : keep_r1 - r0, keep_c0 - c0 : keep_c1 - c0]
        return out
