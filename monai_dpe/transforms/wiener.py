"""Empirical Wiener filtering in sliding DCT blocks, guided by a pilot estimate of the clean image.

BM3D's second step (Dabov et al., IEEE TIP 2007) without its block matching: every ``block x block``
patch of the noisy image, at every ``stride``-th row and column, is taken into the 2D DCT; each
coefficient is scaled by ``p^2 / (p^2 + sigma^2)``, where ``p`` is the same coefficient of the
pilot's patch; and the patches are put back with BM3D's weights, ``1 / sum(gains^2)``. The patch
mean (the DC coefficient) is kept from the noisy image. Where the pilot holds detail, the noisy
image's own detail stays as it is; where the pilot holds none, what the noisy image has there is
taken for noise and shrunk. With ``sigma = 0`` the noisy image comes back unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dct

__all__ = ["dct_wiener"]

_BLOCK_ROWS_PER_PASS = 16  # block rows transformed at once: with rows along the longer side, bounds the memory


# scikit-image has no pilot-guided Wiener filter; bm3d's (stage_arg=pilot) is for non-commercial use only
def dct_wiener(noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, block: int = 8,
               stride: int = 2) -> torch.Tensor:
    """Wiener estimate of ``noisy`` (channel first, 2D) with ``pilot`` as the clean estimate.

    Args:
        noisy: ``(C, H, W)`` image whose noise has standard deviation ``sigma``.
        pilot: ``(C, H, W)`` estimate of the clean image in the same units (the network's output).
        sigma: noise standard deviation of ``noisy``, the same in every channel; finite, >= 0.
        block: side of the DCT patches, at least 2.
        stride: step between patches (1: every position; ``block``: no overlap).

    Returns a new ``(C, H, W)`` float32 tensor; the inputs are not changed. The borders are
    mirrored (numpy's ``reflect``, at any size), so every pixel lies in as many patches as an inner
    one. Memory grows with the image, not with the number of patches: the patches are transformed
    a band of rows at a time, the rows running along the longer side.
    """
    if noisy.ndim != 3 or noisy.shape != pilot.shape:
        raise ValueError(f"dct_wiener expects two (C, H, W) images of one shape, got {list(noisy.shape)} "
                         f"and {list(pilot.shape)}.")
    if block < 2 or not 1 <= stride <= block:
        raise ValueError(f"block must be at least 2 and stride lie in [1, block]; got block {block}, stride {stride}.")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}.")
    noisy, pilot = noisy.detach().float(), pilot.detach().float()
    variance = float(torch.tensor(float(sigma) ** 2, dtype=torch.float32))  # as the gains will see it
    if variance == 0.0:
        return noisy.clone()
    basis = _dct_basis(block, noisy.device)
    return torch.stack([_filter_plane(n, p, basis, variance, block, stride) for n, p in zip(noisy, pilot)])


def _filter_plane(noisy: torch.Tensor, pilot: torch.Tensor, basis: torch.Tensor, variance: float, block: int,
                  stride: int) -> torch.Tensor:
    """One channel: the patches of the mirrored pair, a band of block rows at a time."""
    if noisy.shape[1] > noisy.shape[0]:  # the filter commutes with transposition; bands run along the long side
        return _filter_plane(noisy.T, pilot.T, basis, variance, block, stride).T
    pad = block - 1
    padded = _mirror(torch.stack((noisy, pilot)), pad)  # (2, H+2p, W+2p)
    total = torch.zeros(padded.shape[1:], device=padded.device)
    weights = torch.zeros_like(total)
    starts = range(0, padded.shape[1] - block + 1, stride)
    for first in range(0, len(starts), _BLOCK_ROWS_PER_PASS):
        rows = starts[first:first + _BLOCK_ROWS_PER_PASS]
        top, bottom = rows[0], rows[-1] + block
        band_total, band_weight = _filter_band(padded[:, top:bottom], basis, variance, block, stride)
        total[top:bottom] += band_total
        weights[top:bottom] += band_weight
    return (total / weights.clamp_min(1e-12))[pad:-pad, pad:-pad]


def _mirror(planes: torch.Tensor, pad: int) -> torch.Tensor:
    """``planes`` (N, H, W) mirrored by ``pad`` on every side without repeating the edge, at any size
    (``F.pad``'s reflect needs each side longer than ``pad``)."""
    rows, columns = (_mirror_index(size, pad, planes.device) for size in planes.shape[1:])
    return planes.index_select(1, rows).index_select(2, columns)


def _mirror_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    if size == 1:
        return torch.zeros(size + 2 * pad, dtype=torch.long, device=device)
    period = 2 * (size - 1)
    index = torch.arange(-pad, size + pad, device=device) % period
    return torch.where(index < size, index, period - index)


def _filter_band(band: torch.Tensor, basis: torch.Tensor, variance: float, block: int,
                 stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum of the filtered patches of one band of rows of the (noisy, pilot) pair, and the
    sum of their weights."""
    size = (band.shape[1], band.shape[2])
    # a strided convolution with the basis as filters: the DCT coefficients of every patch at once;
    # cuDNN may run convolutions in TF32 (a 10-bit mantissa), too coarse for 16-bit outputs
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                                    deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
        coefficients = F.conv2d(band.unsqueeze(1), basis.view(-1, 1, block, block), stride=stride)
    grid = coefficients.shape[2:]
    noisy, pilot = coefficients.flatten(2)
    power = pilot.square_()
    gain = power.div_(power + variance)  # the Wiener gains, in the pilot's place
    gain[0] = 1.0  # the patch mean stays the noisy image's
    weight = gain.square().sum(0, keepdim=True).reciprocal_()  # <= 1, as the DC gain is 1
    filtered = (basis.T @ noisy.mul_(gain)).mul_(weight)
    total = F.fold(filtered, size, block, stride=stride)[0]
    return total, _patch_sums(weight.view(1, 1, *grid), size, block, stride)


def _patch_sums(values: torch.Tensor, size: tuple[int, int], block: int, stride: int) -> torch.Tensor:
    """Sum over the patches that cover each pixel of their ``(1, 1, rows, columns)`` values: the
    values at their patches' corners, then a ``block x block`` box sum (``F.fold`` of the values
    repeated over the patch does the same at ``block^2`` times the memory traffic)."""
    corners = values.new_zeros(1, 1, *size)
    corners[..., : stride * values.shape[2]: stride, : stride * values.shape[3]: stride] = values
    padded = F.pad(corners, (block - 1, 0, block - 1, 0))
    return F.avg_pool2d(padded, block, stride=1, divisor_override=1)[0, 0]


def _dct_basis(block: int, device: torch.device) -> torch.Tensor:
    """The orthonormal 2D DCT-II of a flattened ``block x block`` patch, as a matrix."""
    one_d = dct(np.eye(block), norm="ortho", axis=0)  # column j: the DCT of the j-th unit vector
    return torch.from_numpy(np.kron(one_d, one_d)).float().to(device)
