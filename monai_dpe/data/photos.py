"""Photo-format files (PNG, JPEG, BMP, TIFF) from a collection into corpus PNGs: one size, one depth, grey or RGB.

Big images are downsampled once (area averaging) so the longest side is at most ``max_size``:
training crops patches from images of that size and the corpus stays small. Pixels keep their
storage depth (8-bit stays 8-bit, 16-bit stays 16-bit), so the corpus holds what files hold. An
RGB file whose channels are equal (a grey scan saved as colour) is stored as grey, and an alpha
channel is dropped after compositing on black, as a viewer shows it on a dark background.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

__all__ = ["decode_photo", "write_photo"]

#: Largest difference between channels still counted as grey (JPEG's chroma rounding on a grey scan).
_GREY_TOLERANCE = 2


def decode_photo(data: bytes, name: str = "image") -> np.ndarray:
    """Decode ``data`` to a (H, W) grey or (H, W, 3) RGB array of dtype uint8 or uint16.

    Raises:
        ValueError: one line naming ``name`` when the bytes are not a 2D grey or colour image.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img).astype(np.int64)
                if array.min() < 0 or array.max() > 65535:
                    raise ValueError(f"{name}: 32-bit integer pixels outside 0..65535")
                return array.astype(np.uint16)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
                rgba = np.asarray(img.convert("RGBA")).astype(np.float64)
                array = np.round(rgba[..., :3] * rgba[..., 3:] / 255.0).astype(np.uint8)
            else:
                array = np.asarray(img.convert("L" if mode in ("L", "1") else "RGB"))
    except (OSError, SyntaxError) as err:  # Pillow's decoders raise these on broken files
        raise ValueError(f"{name}: not a readable image ({err})") from None
    if array.ndim == 3 and int(np.ptp(array.astype(np.int16), axis=-1).max()) <= _GREY_TOLERANCE:
        array = np.round(array.astype(np.float64).mean(axis=-1)).astype(np.uint8)
    return array


def _downsample(array: np.ndarray, max_size: int) -> np.ndarray:
    from skimage.transform import resize

    longest = max(array.shape[:2])
    if longest <= max_size:
        return array
    scale = max_size / longest
    shape = tuple(max(1, int(round(s * scale))) for s in array.shape[:2]) + array.shape[2:]
    out = resize(array.astype(np.float64), shape, order=1, anti_aliasing=True, preserve_range=True)
    top = np.iinfo(array.dtype).max
    return np.clip(np.round(out), 0, top).astype(array.dtype)


def write_photo(data: bytes, out: Path, max_size: int = 512, name: str = "image") -> None:
    """Decode ``data``, downsample it to ``max_size`` and write it as PNG to ``out``."""
    from PIL import Image

    array = _downsample(decode_photo(data, name), max_size)
    if min(array.shape[:2]) < 16:
        raise ValueError(f"{name}: {array.shape[1]}x{array.shape[0]} pixels is too small to train on")
    Image.fromarray(array).save(out, format="PNG")
