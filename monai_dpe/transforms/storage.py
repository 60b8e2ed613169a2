"""Degraded images as files hold them: the storage bit depth of a source, rounding to it, JPEG re-compression.

A degraded image reaches users as a file: a dark, flat 8-bit photograph keeps only a few dozen
grey levels, and the intensity policy's stretch turns them into bands. Training, validation and
evaluation round the degraded image to its source's storage depth before the policy, so the
network learns to remove that banding, and scores are taken on what files hold.
"""
from __future__ import annotations

import io
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends

from monai_dpe.transforms.utils import as_range, float_tensor, output_like

__all__ = ["storage_bits", "RecordStorageBitsd", "RoundToBitDepth", "RoundToBitDepthd", "RandJPEG", "RandJPEGd"]


def storage_bits(dtype: np.dtype | torch.dtype | str) -> int:
    """The bit depth a file of this pixel type holds: 8 for uint8, 16 for other integers, 0 for floats.

    8 bits is the display type (photos, slides, 8-bit DICOM), as inference's intensity policy takes
    only uint8 pixels for a display image; signed 8-bit data (a scanner's) is rounded as the other
    integers are. Scanners store up to 16 bits whatever the integer width of the array; float and
    boolean files are kept as they are (0: no rounding).
    """
    name = str(dtype).replace("torch.", "") if isinstance(dtype, torch.dtype) else np.dtype(dtype).name
    if name == "uint8":
        return 8
    if name.startswith(("int", "uint")):
        return 16
    return 0


class RecordStorageBitsd(MapTransform):
    """Write the storage depth of ``keys[0]``'s pixel type to ``bits_key`` (before the image is made float)."""

    def __init__(self, keys: KeysCollection = "image", bits_key: str = "bits", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.bits_key = bits_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        key = next(self.key_iterator(d), None)
        if key is not None:
            d[self.bits_key] = storage_bits(d[key].dtype)
        return d


class RoundToBitDepth(Transform):
    """Round a [0, 1] image to ``bits`` bits (``round(x * (2**bits - 1)) / (2**bits - 1)``); 0 keeps it.

    Args:
        bits: storage depth; 0 leaves the image as it is (float files).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, bits: int = 8) -> None:
        if bits < 0 or bits > 32:
            raise ValueError(f"bits must be in 0..32, got {bits}.")
        self.bits = int(bits)

    def __call__(self, img: NdarrayOrTensor, bits: int | None = None) -> NdarrayOrTensor:
        bits = self.bits if bits is None else int(bits)
        if bits == 0:
            return img
        top = float(2**bits - 1)
        t = float_tensor(img)
        return output_like(torch.round(t.clamp(0.0, 1.0) * top) / top, img)


class RoundToBitDepthd(MapTransform):
    """Dictionary :class:`RoundToBitDepth`: the depth comes from the item's ``bits_key`` (or ``bits``)."""

    def __init__(self, keys: KeysCollection = "image", bits_key: str = "bits", bits: int = 8,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.bits_key, self.transform = bits_key, RoundToBitDepth(bits)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        bits = d.get(self.bits_key)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], None if bits is None else int(bits))
        return d


class RandJPEG(RandomizableTransform):
    """Re-compress an 8-bit [0, 1] grey or RGB 2D image as JPEG at a random quality (Pillow), and decode it.

    Photographs and slides travel as JPEG: blocking and ringing come with them. Images of other
    shapes pass unchanged. ``last_params`` holds the quality drawn (or ``None`` when skipped).

    Args:
        prob: probability of re-compressing.
        quality: JPEG quality range (a number means that quality).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, prob: float = 0.5, quality: float | Sequence[float] = (70, 95)) -> None:
        RandomizableTransform.__init__(self, prob)
        low, high = as_range(quality, "quality")
        if not 1 <= low <= high <= 100:
            raise ValueError(f"quality must lie in 1..100, got {quality}.")
        self.quality_range = (low, high)
        self.quality: int | None = None
        self.last_params: dict = {"jpeg_quality": None}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.quality = int(round(self.R.uniform(*self.quality_range))) if self._do_transform else None

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        from PIL import Image

        if randomize:
            self.randomize()
        self.last_params = {"jpeg_quality": self.quality}
        t = float_tensor(img)
        if self.quality is None or t.dim() != 3 or t.shape[0] not in (1, 3):
            return img
        pixels = torch.round(t.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "JPEG", quality=self.quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0
        out = torch.as_tensor(decoded.reshape(pixels.shape)).permute(2, 0, 1).to(t.device)
        return output_like(out, img)


class RandJPEGd(RandomizableTransform, MapTransform):
    """Dictionary :class:`RandJPEG`, applied only to items stored at 8 bits (``bits_key``), as photos are.

    The dictionary transform owns ``prob`` (MONAI's convention); the array transform always applies.
    """

    def __init__(self, keys: KeysCollection = "image", prob: float = 0.5, quality=(70, 95), bits_key: str = "bits",
                 params_key: str | None = None, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.jpeg, self.bits_key, self.params_key = RandJPEG(1.0, quality), bits_key, params_key
        self.last_params: dict = {"jpeg_quality": None}

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.jpeg.set_random_state(state=self.R)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        self.last_params = {"jpeg_quality": None}
        if self._do_transform and int(d.get(self.bits_key, 0) or 0) == 8:
            self.jpeg.randomize()
            for key in self.key_iterator(d):
                d[key] = self.jpeg(d[key], randomize=False)
            self.last_params = dict(self.jpeg.last_params)
        if self.params_key and isinstance(d.get(self.params_key), dict):
            d[self.params_key] = {**d[self.params_key], **self.last_params}
        return d
