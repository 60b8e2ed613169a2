"""Classical enhancement methods that the network is scored against, on the same degraded inputs.

Each takes a channel-last [0, 1] image and whether it is RGB (colour images are processed on their
HSV value, hue and saturation kept) and returns the enhanced image; scikit-image does the work.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from monai_dpe.extras import require

__all__ = ["BASELINES", "CLASSICAL", "apply_baseline", "auto_gamma", "bm3d_clahe", "clahe", "clahe_nlm",
           "histogram_equalisation", "noise_sigma"]


def _on_value(fn: Callable[[np.ndarray], np.ndarray], img: np.ndarray, rgb: bool) -> np.ndarray:
    """Apply a grey-level method to a grey image, or to the HSV value of a colour one (hue and saturation kept)."""
    from skimage.color import hsv2rgb, rgb2hsv

    if not rgb:
        return np.repeat(fn(img[..., 0])[..., None], img.shape[-1], axis=-1)
    hsv = rgb2hsv(img)
    hsv[..., 2] = fn(hsv[..., 2])
    return hsv2rgb(hsv)


def histogram_equalisation(img: np.ndarray, rgb: bool) -> np.ndarray:
    """Global histogram equalisation (scikit-image) of a channel-last [0, 1] image."""
    from skimage.exposure import equalize_hist

    return _on_value(equalize_hist, img, rgb)


def clahe(img: np.ndarray, rgb: bool) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (scikit-image defaults: 1/8 tiles, clip 0.01)."""
    from skimage.exposure import equalize_adapthist

    return _on_value(equalize_adapthist, img, rgb)


def noise_sigma(img: np.ndarray) -> float:
    """Gaussian noise level of a 2D image by Immerkaer's fast estimator (a Laplacian difference filter)."""
    from scipy.ndimage import convolve

    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    response = np.abs(convolve(img, kernel, mode="reflect"))[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * response.mean() / 6.0) if response.size else 0.0


def clahe_nlm(img: np.ndarray, rgb: bool) -> np.ndarray:
    """CLAHE, then non-local means at the noise level estimated from the result (scikit-image, fast mode)."""
    from skimage.restoration import denoise_nl_means

    out = clahe(img, rgb)
    grey = out if rgb else out[..., 0]
    sigma = float(np.mean([noise_sigma(c) for c in np.moveaxis(grey, -1, 0)])) if rgb else noise_sigma(grey)
    if sigma <= 0.0:
        return out
    den = denoise_nl_means(grey, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True,
                           channel_axis=-1 if rgb else None)
    return den if rgb else np.repeat(den[..., None], out.shape[-1], axis=-1)


def auto_gamma(img: np.ndarray, rgb: bool) -> np.ndarray:
    """Automatic gamma correction: the power law that maps the mean brightness to mid-grey.

    ``gamma = log(0.5) / log(mean)`` (scikit-image's ``adjust_gamma``), the classical one-parameter
    exposure fix; on the HSV value of colour images.
    """
    from skimage.exposure import adjust_gamma

    def correct(channel: np.ndarray) -> np.ndarray:
        channel = np.clip(channel, 0.0, 1.0)
        mean = float(channel.mean())
        if not 0.0 < mean < 1.0:
            return channel
        return adjust_gamma(channel, gamma=float(np.log(0.5) / np.log(mean)))

    return _on_value(correct, img, rgb)


def bm3d_clahe(img: np.ndarray, rgb: bool) -> np.ndarray:
    """BM3D denoising at the estimated noise level (the ``bm3d`` package), then CLAHE.

    Denoising first keeps CLAHE from amplifying the noise. BM3D is an optional dependency
    (``pip install 'monai-dpe[baselines]'``); without it this baseline says so. A grey
    image stored as RGB (three equal channels) is denoised as grey: ``bm3d_rgb``'s colour
    transform divides by zero on it and returns NaN, which became a white image.

    BM3D runs single-threaded: with several threads its aggregation order varies from run to
    run (the package documents this), and CLAHE's 256-bin histograms turn those last-bit
    differences into visible ones (up to 0.006 on pixels at a bin edge), so baseline scores
    would not reproduce.
    """
    bm3d = require("bm3d", "the bm3d_clahe baseline")
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    colour = rgb and not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))
    channels = [img[..., c] for c in range(img.shape[-1] if colour else 1)]
    sigma = float(np.mean([noise_sigma(c) for c in channels]))
    if sigma <= 0.0:
        return clahe(img, rgb)
    if colour:
        den = bm3d.bm3d_rgb(np.clip(img, 0.0, 1.0), sigma_psd=sigma, profile=profile)
    else:
        grey = np.asarray(bm3d.bm3d(img[..., 0], sigma_psd=sigma, profile=profile))
        den = np.repeat(grey[..., None], img.shape[-1], axis=-1)
    return clahe(np.clip(den, 0.0, 1.0), rgb)


#: Classical enhancement methods scored on the same degraded inputs as the network. ``stretch`` is the
#: network's own input (the degraded image stretched by its robust range): what the network adds to it.
BASELINES: dict[str, Callable[[np.ndarray, bool], np.ndarray]] = {
    "stretch": lambda img, rgb: img,
    "histogram_equalisation": histogram_equalisation,
    "clahe": clahe,
    "clahe_nlm": clahe_nlm,
    "auto_gamma": auto_gamma,
    "bm3d_clahe": bm3d_clahe,
}
#: The classical methods among :data:`BASELINES` (``stretch`` is the network's input, not a method).
CLASSICAL = ("histogram_equalisation", "clahe", "clahe_nlm", "auto_gamma", "bm3d_clahe")


def apply_baseline(name: str, image: torch.Tensor, rgb: bool, data_range: float = 1.0) -> torch.Tensor:
    """Run the classical method ``name`` of :data:`BASELINES` on a channel-first image; channel-first float32 out."""
    hwc = (image.float().cpu().clamp(0, data_range) / data_range).permute(1, 2, 0).numpy().astype(np.float64)
    result = np.clip(BASELINES[name](hwc, rgb), 0.0, 1.0) * data_range
    return torch.as_tensor(result, dtype=torch.float32).permute(2, 0, 1)
