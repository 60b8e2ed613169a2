"""Structure PSNR: how well an output restores what a global level change cannot (noise, banding, detail)."""
from __future__ import annotations

import math

import torch

__all__ = ["structure_psnr"]


def structure_psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR of ``a * pred + b`` against ``target``, with ``a`` and ``b`` the least-squares global fit.

    The fit removes the global level and contrast, which a degraded input cannot tell, so what is
    left measures restored structure. One ``(a, b)`` for the whole image, all channels together:
    a colour cast still counts. ``inf`` when the fit is exact.

    Args:
        pred: the output, any shape.
        target: the truth, the same shape.
        data_range: the value of white.
    """
    if pred.shape != target.shape:
        raise ValueError(f"structure_psnr: shapes differ: {list(pred.shape)} vs {list(target.shape)}.")
    p, t = pred.detach().double().flatten(), target.detach().double().flatten()
    p_centred, t_centred = p - p.mean(), t - t.mean()
    variance = float((p_centred * p_centred).sum())
    slope = float((p_centred * t_centred).sum()) / variance if variance > 0 else 0.0
    residual = t_centred - slope * p_centred
    mse = float((residual * residual).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)
