"""SliceInferer: serve 2D networks on 2D images and, slice by slice, on 3D volumes."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from tqdm.auto import tqdm

__all__ = ["SliceInferer"]


class SliceInferer(Inferer):
    """Run a 2D network on (B, C, H, W) batches directly and on (B, C, X, Y, Z) volumes slice by slice.

    MONAI's own ``SliceInferer`` refuses 2D input; this one takes both, so one bundle serves
    X-rays and CT volumes. Only ``sw_batch_size`` slices are on the compute device at a time,
    so memory is bounded by the slice batch, not the volume. With ``context=k`` each slice is
    given its k neighbours on each side as extra channels (2.5D; edges repeat the border
    slice), and the network must take ``C * (2k + 1)`` channels.

    Args:
        spatial_dim: the volume's spatial axis to slice along (0, 1 or 2; -1 is the last).
        sw_batch_size: slices per network call.
        context: neighbouring slices on each side given as extra channels.
        sw_device: device the network runs on (default: the input's).
        device: device of the assembled output (default: the input's).
        amp_dtype: run the network under autocast with this dtype (e.g. ``torch.bfloat16``); ``None`` for fp32.
        channels_last: feed the network channels-last tensors (faster convolutions on CPU).
        progress: show a progress bar over slices.
        network_wrapper: applied to the network on each call (e.g. ``ChannelAdapter``), so a bundle's
            ``network_def`` + ``models/model.pt`` stay the plain network that any MONAI tool loads
            (MONAI Label's ``BundleInferTask``, ``monai.bundle.load``) while inference still adapts
            grey/RGBA input.

    Example::

        inferer = SliceInferer(spatial_dim=2, sw_batch_size=8)
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

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.dim() not in (4, 5):
            raise ValueError(
                f"SliceInferer takes (B, C, H, W) images or (B, C, X, Y, Z) volumes, got shape {list(inputs.shape)}."
            )
        if self.network_wrapper is not None:
            network = self.network_wrapper(network)
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        out = self._run_2d(plain, network, *args, **kwargs) if plain.dim() == 4 else self._run_3d(plain, network, *args, **kwargs)
        if isinstance(inputs, MetaTensor):
            out = MetaTensor(out)
            out.copy_meta_from(inputs, copy_attr=False)
        return out

    def _out_device(self, inputs: torch.Tensor) -> torch.device:
        return torch.device(self.device) if self.device is not None else inputs.device

    def _run_2d(self, images: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        if self.context:
            # a lone slice is its own context, laid out as _gather does: [slice - k, ..., slice + k], C channels each
            images = images.repeat(1, 2 * self.context + 1, 1, 1)
        chunks = [self._forward(images[i : i + self.sw_batch_size], network, *args, **kwargs) for i in range(0, images.shape[0], self.sw_batch_size)]
        return torch.cat([c.to(self._out_device(images)) for c in chunks], dim=0)

    def _run_3d(self, volumes: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        axis = 2 + self.spatial_dim
        n_slices = volumes.shape[axis]
        outputs = []
        bar = tqdm(total=volumes.shape[0] * n_slices, desc="slices", unit="slice", disable=not self.progress, leave=False)
        with bar:
            for volume in volumes:
                slices = volume.movedim(axis - 1, 0)  # (S, C, H, W) view, no copy of the volume
                result: torch.Tensor | None = None
                for start in range(0, n_slices, self.sw_batch_size):
                    stop = min(start + self.sw_batch_size, n_slices)
                    pred = self._forward(self._gather(slices, start, stop), network, *args, **kwargs)
                    if result is None:
                        result = torch.empty((n_slices, *pred.shape[1:]), dtype=pred.dtype, device=self._out_device(volumes))
                    result[start:stop] = pred.to(result.device)
                    bar.update(stop - start)
                outputs.append(result.movedim(0, axis - 1))
        return torch.stack(outputs, dim=0)

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
        batch = batch.to(device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(device_type=device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            pred = network(batch, *args, **kwargs)
        if isinstance(pred, (tuple, list)):
            pred = pred[0]
        return pred.float().contiguous() if self.amp_dtype is not None else pred.contiguous()
