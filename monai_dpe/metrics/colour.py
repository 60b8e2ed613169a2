"""Colour science in torch: sRGB to CIELAB and the CIEDE2000 colour difference.

Matches scikit-image's ``rgb2lab`` (sRGB, D65, 2-degree observer) and
``deltaE_ciede2000`` (Sharma, Wu and Dalal, 2005), but is differentiable and runs on
batches of channel-first tensors, so the same code serves the metric and the loss.
"""
from __future__ import annotations

import math

import torch

__all__ = ["rgb_to_lab", "ciede2000", "delta_e_map"]

# Linear sRGB -> XYZ (D65), rows X, Y, Z.
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65_WHITE = (0.95047, 1.0, 1.08883)
_LAB_EPSILON = 0.008856  # (6/29)^3, the CIE threshold between the cube root and the linear segment
_POW25_7 = 25.0**7


def _as_rgb(image: torch.Tensor) -> torch.Tensor:
    """Replicate a 1-channel image to RGB (grey then has a = b = 0: lightness only)."""
    if image.shape[1] == 1:
        return image.expand(-1, 3, *image.shape[2:])
    if image.shape[1] != 3:
        raise ValueError(f"colour difference needs 1 or 3 channels, got {image.shape[1]}.")
    return image


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Convert channel-first sRGB, shape (B, 3, ...), to CIELAB (L, a, b) channels.

    Values outside [0, 1] are converted as scikit-image's ``rgb2lab`` does (the sRGB curve's linear
    part below 0.04045, its power part above, unclipped), so an out-of-range prediction is scored
    as it is and a loss built on it keeps its gradient there.
    """
    # the power branch sees only its own domain, so the branch torch.where discards adds no NaN gradient
    linear = torch.where(rgb > 0.04045, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = torch.tensor(_XYZ_FROM_RGB, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_D65_WHITE, dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,bj...->bi...", matrix, linear)
    xyz = xyz / white.view(1, 3, *([1] * (rgb.dim() - 2)))
    f = torch.where(xyz > _LAB_EPSILON, xyz.clamp_min(_LAB_EPSILON) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=1)


def _hue(a: torch.Tensor, b: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Hue angle in [0, 2pi); where the chroma vanishes the angle is 0 with a finite gradient."""
    flat = chroma <= 1e-12
    h = torch.atan2(torch.where(flat, torch.zeros_like(b), b), torch.where(flat, torch.ones_like(a), a))
    return torch.where(h < 0, h + 2 * math.pi, h)


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per-pixel CIEDE2000 difference between two (B, 3, ...) CIELAB tensors; returns (B, ...).

    ``eps`` > 0 keeps every square root's gradient finite (for training); 0 gives the
    exact value (for measuring).
    """
    l1, a1, b1 = lab1[:, 0], lab1[:, 1], lab1[:, 2]
    l2, a2, b2 = lab2[:, 0], lab2[:, 1], lab2[:, 2]
    c_mean = 0.5 * (torch.sqrt(a1**2 + b1**2 + eps) + torch.sqrt(a2**2 + b2**2 + eps))
    g = 0.5 * (1 - torch.sqrt(c_mean**7 / (c_mean**7 + _POW25_7) + eps))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = torch.sqrt(a1p**2 + b1**2 + eps), torch.sqrt(a2p**2 + b2**2 + eps)
    h1, h2 = _hue(a1p, b1, c1), _hue(a2p, b2, c2)

    l_mean = 0.5 * (l1 + l2)
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / torch.sqrt(20 + (l_mean - 50) ** 2)
    cp_mean = 0.5 * (c1 + c2)
    s_c = 1 + 0.045 * cp_mean

    both = (c1 * c2) > 1e-12
    dh = h2 - h1
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, torch.where(dh < -math.pi, dh + 2 * math.pi, dh))
    dh = torch.where(both, dh, torch.zeros_like(dh))
    d_hue = 2 * torch.sqrt(c1 * c2 + eps) * torch.sin(dh / 2)

    h_sum = h1 + h2
    wrap = both & ((h2 - h1).abs() > math.pi)
    h_mean = torch.where(wrap & (h_sum < 2 * math.pi), h_sum + 2 * math.pi, torch.where(wrap, h_sum - 2 * math.pi, h_sum))
    h_mean = torch.where(both, 0.5 * h_mean, h_sum)
    t = (
        1
        - 0.17 * torch.cos(h_mean - math.radians(30))
        + 0.24 * torch.cos(2 * h_mean)
        + 0.32 * torch.cos(3 * h_mean + math.radians(6))
        - 0.20 * torch.cos(4 * h_mean - math.radians(63))
    )
    s_h = 1 + 0.015 * cp_mean * t

    r_c = 2 * torch.sqrt(cp_mean**7 / (cp_mean**7 + _POW25_7) + eps)
    d_theta = math.radians(30) * torch.exp(-(((torch.rad2deg(h_mean) - 275) / 25) ** 2))
    term_l = (l2 - l1) / s_l
    term_c = (c2 - c1) / s_c
    term_h = d_hue / s_h
    squared = term_l**2 + term_c**2 + term_h**2 - torch.sin(2 * d_theta) * r_c * term_c * term_h
    return torch.sqrt(squared.clamp_min(0) + eps)


def delta_e_map(pred: torch.Tensor, target: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """CIEDE2000 map between two RGB (or grey) images in [0, 1], shape (B, C, ...) -> (B, ...)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}.")
    if pred.dim() < 3:
        raise ValueError(f"expected (B, C, *spatial) images, got shape {list(pred.shape)}.")
    return ciede2000(rgb_to_lab(_as_rgb(target)), rgb_to_lab(_as_rgb(pred)), eps=eps)
