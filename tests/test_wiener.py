"""Tests for the pilot-guided sliding-DCT Wiener filter (monai_dpe.transforms.wiener)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import reference_wiener
from monai_dpe.transforms.wiener import dct_wiener


def _waves(size: int = 96) -> np.ndarray:
    """A smooth (1, size, size) picture in [0.2, 0.8]: slow waves, little detail at the patch scale."""
    rows, columns = np.mgrid[0:size, 0:size]
    return (0.5 + 0.3 * np.sin(rows / 9.0) * np.cos(columns / 13.0))[None]


@pytest.mark.parametrize("stride", [1, 2, 8])
def test_dct_wiener_matches_the_patch_by_patch_reference(stride):
    """Two channels, odd sides, and more block rows than one pass holds (the band seams must not show)."""
    rng = np.random.default_rng(0)
    noisy, pilot = rng.random((2, 150, 23)), rng.random((2, 150, 23))
    out = dct_wiener(torch.as_tensor(noisy), torch.as_tensor(pilot), 0.2, stride=stride)
    assert out.dtype == torch.float32 and out.shape == (2, 150, 23)
    np.testing.assert_allclose(out.numpy(), reference_wiener(noisy, pilot, 0.2, stride=stride), atol=2e-5)


def test_no_noise_gives_the_noisy_image_back_and_the_inputs_are_not_changed():
    noisy, pilot = torch.rand(1, 30, 30), torch.rand(1, 30, 30)
    kept = noisy.clone(), pilot.clone()
    torch.testing.assert_close(dct_wiener(noisy, pilot, 0.0), noisy)
    dct_wiener(noisy, pilot, 0.1)
    torch.testing.assert_close((noisy, pilot), kept)


def test_detail_the_pilot_holds_stays_and_noise_it_does_not_is_removed():
    """Noise on a smooth image: with the clean image as pilot the error falls several fold; a pilot as
    noisy as the image itself keeps nearly everything."""
    rng = np.random.default_rng(2)
    clean = _waves()
    noisy = clean + 0.05 * rng.standard_normal(clean.shape)
    guided = dct_wiener(torch.as_tensor(noisy), torch.as_tensor(clean), 0.05).numpy()
    assert np.mean((guided - clean) ** 2) < np.mean((noisy - clean) ** 2) / 4
    self_guided = dct_wiener(torch.as_tensor(noisy), torch.as_tensor(noisy), 1e-4).numpy()
    np.testing.assert_allclose(self_guided, noisy, atol=1e-3)


@pytest.mark.parametrize("shape", [(1, 1), (1, 20), (5, 40), (40, 5), (7, 7), (8, 8), (3, 300)])
def test_images_smaller_than_a_patch_are_mirrored_as_numpy_does(shape):
    """Sides shorter than a patch are mirrored again and again (numpy's reflect), as long ones are."""
    rng = np.random.default_rng(4)
    noisy, pilot = rng.random((2, *shape)), rng.random((2, *shape))
    out = dct_wiener(torch.as_tensor(noisy), torch.as_tensor(pilot), 0.2)
    np.testing.assert_allclose(out.numpy(), reference_wiener(noisy, pilot, 0.2), atol=2e-5)


def test_a_long_thin_slice_is_filtered_in_bands_along_its_length():
    """A 6 x 3000 strip is filtered as its 3000 x 6 transpose (bands along the long side)."""
    rng = np.random.default_rng(6)
    noisy, pilot = rng.random((1, 6, 3000)), rng.random((1, 6, 3000))
    out = dct_wiener(torch.as_tensor(noisy), torch.as_tensor(pilot), 0.2)
    np.testing.assert_allclose(out.numpy(), reference_wiener(noisy, pilot, 0.2), atol=2e-5)
    turned = dct_wiener(torch.as_tensor(noisy).transpose(1, 2), torch.as_tensor(pilot).transpose(1, 2), 0.2)
    np.testing.assert_allclose(turned.transpose(1, 2).numpy(), out.numpy(), atol=1e-6)


def test_a_noise_too_small_for_float32_changes_nothing():
    noisy = torch.rand(1, 32, 32)
    torch.testing.assert_close(dct_wiener(noisy, torch.zeros(1, 32, 32), 1e-23), noisy)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        dct_wiener(torch.rand(1, 8, 8), torch.rand(1, 8, 9), 0.1)
    with pytest.raises(ValueError, match="one shape"):
        dct_wiener(torch.rand(8, 8), torch.rand(8, 8), 0.1)
    with pytest.raises(ValueError, match="stride"):
        dct_wiener(torch.rand(1, 8, 8), torch.rand(1, 8, 8), 0.1, stride=9)
    with pytest.raises(ValueError, match="block"):
        dct_wiener(torch.rand(1, 8, 8), torch.rand(1, 8, 8), 0.1, block=1, stride=1)
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="sigma"):
            dct_wiener(torch.rand(1, 8, 8), torch.rand(1, 8, 8), bad)
