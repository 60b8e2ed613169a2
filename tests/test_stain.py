"""RandStainJitter(d): HED jitter and stain swaps of brightfield slides, checked against scikit-image's
colour deconvolution (``skimage.color.rgb2hed``) on its immunohistochemistry sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage import data
from skimage.color import rgb2hed

from monai_dpe.transforms import RandStainJitter, RandStainJitterd


@pytest.fixture(scope="module")
def slide() -> torch.Tensor:
    """The IHC sample (haematoxylin and DAB), channel-first float in [0, 1], 128x128 crop."""
    return torch.as_tensor(data.immunohistochemistry()[:128, :128]).permute(2, 0, 1).float() / 255.0


def stains(rgb: torch.Tensor) -> np.ndarray:
    """Per-pixel H, E, DAB concentrations by scikit-image (channel-last)."""
    return rgb2hed(rgb.permute(1, 2, 0).double().numpy())


def comparable(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """Pixels whose RGB neither transform clamped (below 1e-4 or at 0 / 1); skimage's own clipping of
    negative concentrations commutes with positive gains and with permutations, so it needs no mask."""
    rgb_in, rgb_out = before.permute(1, 2, 0).numpy(), after.permute(1, 2, 0).numpy()
    return (rgb_in > 1e-3).all(-1) & (rgb_out > 1e-3).all(-1) & (rgb_out < 1.0).all(-1)


def test_neutral_draw_returns_the_slide(slide):
    out = RandStainJitter(prob=1.0, max_gain=0.0, max_shift=0.0, swap_prob=0.0)(slide)
    torch.testing.assert_close(out, slide.clamp(min=1e-4), atol=1e-6, rtol=0)  # black comes back as 1e-4


def test_gains_scale_each_stain_concentration(slide):
    t = RandStainJitter(prob=1.0, max_gain=0.5, max_shift=0.0, swap_prob=0.0)
    t.set_random_state(7)
    out = t(slide)
    assert not np.allclose(t._gains, 1.0)
    mask = comparable(slide, out)
    assert mask.mean() > 0.5
    np.testing.assert_allclose(stains(out)[mask], stains(slide)[mask] * t._gains, atol=1e-6)


def test_swap_renders_each_concentration_with_another_stain(slide):
    t = RandStainJitter(prob=1.0, max_gain=0.0, max_shift=0.0, swap_prob=1.0)
    t.set_random_state(0)
    out = t(slide)
    order = t._order
    assert not np.array_equal(order, np.arange(3))
    mask = comparable(slide, out)
    assert mask.mean() > 0.5
    np.testing.assert_allclose(stains(out)[mask], stains(slide)[mask][:, order], atol=1e-6)
    # the brown DAB slide becomes a different colour: DAB now renders through another stain vector
    assert (out - slide).abs().mean() > 0.02


def test_shift_adds_optical_density_everywhere(slide):
    t = RandStainJitter(prob=1.0, max_gain=0.0, max_shift=0.2, swap_prob=0.0)
    t.set_random_state(1)
    out = t(slide)
    white = torch.ones(3, 4, 4)
    tinted = t(white, randomize=False)
    assert tinted.shape == white.shape and out.shape == slide.shape
    # positive total shift darkens a blank background, negative brightens it (clipped at 1)
    if t._shifts.sum() > 0:
        assert tinted.mean() < 1.0
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_prob_zero_and_grey_pass_unchanged(slide):
    assert RandStainJitter(prob=0.0)(slide) is slide
    grey = torch.rand(1, 16, 16)
    assert RandStainJitter(prob=1.0)(grey) is grey


def test_meta_tensor_keeps_its_meta(slide):
    img = MetaTensor(slide.clone(), meta={"filename_or_obj": "slide.png"})
    out = RandStainJitter(prob=1.0)(img)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "slide.png"


@pytest.mark.parametrize("kwargs", [{"max_gain": 1.0}, {"max_gain": -0.1}, {"max_shift": -1.0}, {"swap_prob": 1.5}])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        RandStainJitter(**kwargs)


def test_dict_restains_histology_only_and_every_key_alike(slide):
    t = RandStainJitterd(keys=("image", "twin"), prob=1.0)
    t.set_random_state(3)
    out = t({"image": slide, "twin": slide.clone(), "modality": "histology"})
    assert not torch.allclose(out["image"], slide)
    torch.testing.assert_close(out["twin"], out["image"])
    assert sorted(t.last_params["stain_order"]) == [0, 1, 2] and len(t.last_params["stain_gains"]) == 3
    fundus = {"image": slide, "modality": "fundus"}
    assert t(fundus)["image"] is slide
    assert RandStainJitterd(keys="image", prob=1.0, modalities=None)(fundus)["image"] is not slide


def test_dict_same_seed_same_stains(slide):
    outs = []
    for _ in range(2):
        t = RandStainJitterd(keys="image", prob=1.0)
        t.set_random_state(11)
        outs.append(t({"image": slide, "modality": "histology"})["image"])
    torch.testing.assert_close(outs[0], outs[1])
