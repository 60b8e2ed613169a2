"""Tests for monai_dpe.losses against hand-computed and scikit-image references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from monai.networks.nets import PatchDiscriminator
from skimage.color import deltaE_ciede2000, rgb2lab

from monai_dpe.losses import (
    DeltaELoss,
    DiscriminatorLoss,
    DPELoss,
    GeneratorAdversarialLoss,
    GradientDifferenceLoss,
    RegularizedFeatureLoss,
    VGG19Features,
)
from monai_dpe.networks import DPEDiscriminator


def gdl_reference(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample sum over spatial axes of mean |forward difference of pred - of target|, by slicing."""
    values = np.zeros(pred.shape[0])
    for axis in range(2, pred.ndim):
        n = pred.shape[axis]
        hi = [slice(None)] * pred.ndim
        lo = [slice(None)] * pred.ndim
        hi[axis], lo[axis] = slice(1, n), slice(0, n - 1)
        dp = pred[tuple(hi)] - pred[tuple(lo)]
        dt = target[tuple(hi)] - target[tuple(lo)]
        values += np.abs(dp - dt).reshape(pred.shape[0], -1).mean(axis=1)
    return values


@pytest.fixture(scope="module")
def vgg_random() -> VGG19Features:
    return VGG19Features(None, seed=0)


def feature_distance(extractor: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (extractor(pred) - extractor(target)).abs().mean()


# ---------------------------------------------------------------- GradientDifferenceLoss

@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((2, 3, 17, 23), id="2d_rgb"),
        pytest.param((3, 1, 16, 16), id="2d_grey"),
        pytest.param((2, 1, 6, 9, 11), id="3d_grey"),
        pytest.param((1, 3, 5, 7, 8), id="3d_rgb"),
    ],
)
def test_gdl_matches_numpy_reference(shape):
    rng = np.random.default_rng(1)
    pred, target = rng.random(shape), rng.random(shape)
    expected = gdl_reference(pred, target)
    pt, tt = torch.as_tensor(pred), torch.as_tensor(target)
    np.testing.assert_allclose(GradientDifferenceLoss(reduction="none")(pt, tt).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(GradientDifferenceLoss()(pt, tt).item(), expected.mean(), rtol=1e-10)
    np.testing.assert_allclose(GradientDifferenceLoss(reduction="sum")(pt, tt).item(), expected.sum(), rtol=1e-10)


@pytest.mark.parametrize("shape", [pytest.param((2, 3, 16, 16), id="2d"), pytest.param((2, 1, 8, 8, 8), id="3d")])
def test_gdl_zero_for_identical_and_constant_offset(shape):
    x = torch.rand(shape)
    loss = GradientDifferenceLoss()
    assert loss(x, x.clone()).item() == 0.0
    assert loss(x + 0.37, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x * 2.0, x).item() > 0.01  # a contrast change is not an offset


@pytest.mark.parametrize("shape", [pytest.param((4, 3, 16, 16), id="2d"), pytest.param((3, 1, 8, 8, 8), id="3d")])
def test_gdl_reduction_none_gives_one_value_per_sample(shape):
    value = GradientDifferenceLoss(reduction="none")(torch.rand(shape), torch.rand(shape))
    assert value.shape == (shape[0],)


@pytest.mark.parametrize(
    "make_loss",
    [
        pytest.param(lambda: GradientDifferenceLoss(), id="gdl"),
        pytest.param(lambda: DeltaELoss(), id="delta_e"),
        pytest.param(lambda: DPELoss(feature_weight=0, adversarial_weight=0), id="dpe"),
    ],
)
def test_shape_mismatch_raises_value_error(make_loss):
    with pytest.raises(ValueError, match="shape"):
        make_loss()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 18))


# ---------------------------------------------------------------- RegularizedFeatureLoss

def test_regularized_feature_product_is_gdl_times_feature_distance(vgg_random):
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    loss = RegularizedFeatureLoss(feature_network="vgg19_random")
    with torch.no_grad():
        expected = GradientDifferenceLoss()(pred, target) * feature_distance(vgg_random, pred, target)
        torch.testing.assert_close(loss(pred, target), expected, rtol=1e-5, atol=1e-7)


def test_regularized_feature_sum_is_gdl_plus_feature_distance(vgg_random):
    pred, target = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    loss = RegularizedFeatureLoss(feature_network="vgg19_random", combine="sum")
    with torch.no_grad():
        expected = GradientDifferenceLoss()(pred, target) + feature_distance(vgg_random, pred, target)
        torch.testing.assert_close(loss(pred, target), expected, rtol=1e-5, atol=1e-7)


def test_regularized_feature_3d_goes_slice_by_slice(vgg_random):
    pred, target = torch.rand(1, 1, 32, 32, 3), torch.rand(1, 1, 32, 32, 3)
    loss = RegularizedFeatureLoss(feature_network="vgg19_random", spatial_dims=3)
    slices = lambda v: v.permute(0, 4, 1, 2, 3).reshape(-1, 1, 32, 32)  # noqa: E731
    with torch.no_grad():
        expected = GradientDifferenceLoss()(pred, target) * feature_distance(vgg_random, slices(pred), slices(target))
        torch.testing.assert_close(loss(pred, target), expected, rtol=1e-5, atol=1e-7)


def test_regularized_feature_accepts_user_module():
    extractor = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss = RegularizedFeatureLoss(feature_network=extractor)
    with torch.no_grad():
        expected = GradientDifferenceLoss()(pred, target) * feature_distance(extractor, pred, target)
        torch.testing.assert_close(loss(pred, target), expected)


def test_regularized_feature_invalid_combine_raises():
    with pytest.raises(ValueError):
        RegularizedFeatureLoss(feature_network=nn.Identity(), combine="max")


@pytest.mark.timeout(60)
def test_vgg19_without_cached_weights_fails_fast_with_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(FileNotFoundError, match="weights_path"):
        RegularizedFeatureLoss(feature_network="vgg19")
    with pytest.raises(FileNotFoundError, match="weights_path"):
        DPELoss()  # the paper's default needs the same weights


def test_vgg19_weights_file_loads_and_gives_identical_features(tmp_path):
    source = VGG19Features(None, seed=3)
    state = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry a classifier: ignored
    path = tmp_path / "vgg19_local.pth"
    torch.save(state, path)

    loaded = VGG19Features(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
        assert not torch.equal(VGG19Features(None, seed=0)(x), source(x))  # the file, not the seed, decided
    loss = RegularizedFeatureLoss(feature_network="vgg19", weights_path=path)
    pred, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = GradientDifferenceLoss()(pred, target) * feature_distance(source, pred, target)
        torch.testing.assert_close(loss(pred, target), expected, rtol=1e-5, atol=1e-7)


def test_vgg19_weights_file_without_trunk_raises(tmp_path):
    path = tmp_path / "not_vgg.pth"
    torch.save({"classifier.0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="VGG19"):
        VGG19Features(path)


# ---------------------------------------------------------------- DeltaELoss

def skimage_delta_e(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-image mean CIEDE2000 from scikit-image, (B, 3, H, W) tensors in [0, 1]."""
    values = []
    for p, t in zip(pred.double().numpy(), target.double().numpy()):
        values.append(deltaE_ciede2000(rgb2lab(np.moveaxis(t, 0, -1)), rgb2lab(np.moveaxis(p, 0, -1))).mean())
    return np.array(values)


def test_delta_e_loss_matches_skimage():
    pred, target = torch.rand(3, 3, 24, 24), torch.rand(3, 3, 24, 24)
    expected = skimage_delta_e(pred, target)
    np.testing.assert_allclose(DeltaELoss(reduction="none")(pred, target).numpy(), expected, atol=1e-3)
    assert DeltaELoss()(pred, target).item() == pytest.approx(expected.mean(), abs=1e-3)
    assert DeltaELoss(reduction="sum")(pred, target).item() == pytest.approx(expected.sum(), abs=3e-3)


def test_delta_e_loss_small_difference_matches_skimage():
    target = torch.rand(2, 3, 16, 16)
    pred = (target + 0.01 * torch.randn_like(target)).clamp(0, 1)
    np.testing.assert_allclose(DeltaELoss(reduction="none")(pred, target).numpy(), skimage_delta_e(pred, target), atol=1e-3)


@pytest.mark.parametrize(
    "channels, grey_rgb, identical",
    [
        pytest.param(3, False, True, id="rgb_identical"),
        pytest.param(1, False, False, id="grey_1_channel"),
        pytest.param(1, False, True, id="grey_1_channel_identical"),
        pytest.param(3, True, False, id="grey_rgb"),
        pytest.param(3, True, True, id="grey_rgb_identical"),
    ],
)
def test_delta_e_loss_gradients_finite(channels, grey_rgb, identical):
    def image() -> torch.Tensor:
        x = torch.rand(2, channels, 12, 12)
        return x[:, :1].expand(-1, 3, -1, -1).contiguous() if grey_rgb else x  # zero chroma everywhere

    target = image()
    pred = (target.clone() if identical else image()).requires_grad_(True)
    value = DeltaELoss()(pred, target)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(pred.grad).all()
    if not identical:
        assert pred.grad.abs().sum() > 0


def test_delta_e_loss_rejects_other_channel_counts():
    with pytest.raises(ValueError):
        DeltaELoss()(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))


# ---------------------------------------------------------------- DPELoss

SMALL_DISC = (8, 8, 16, 16)


def test_dpe_loss_default_weights_total(vgg_random):
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    fake = torch.rand(2, 1) * 0.8 + 0.1
    loss = DPELoss(feature_network="vgg19_random")
    with torch.no_grad():
        total, terms = loss(pred, target, fake_output=fake)
        l1 = (pred - target).abs().mean()
        feature = GradientDifferenceLoss()(pred, target) * feature_distance(vgg_random, pred, target)
        adversarial = -torch.log(fake).mean()
    torch.testing.assert_close(terms["l1"], l1)
    torch.testing.assert_close(terms["feature"], feature, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(terms["adversarial"], adversarial)
    torch.testing.assert_close(total, l1 + feature + 1e-3 * adversarial, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, expected_terms",
    [
        pytest.param({"feature_network": "vgg19_random"}, {"l1", "feature", "adversarial"}, id="paper"),
        pytest.param({"feature_network": "vgg19_random", "adversarial_weight": 0}, {"l1", "feature"}, id="no_adversarial"),
        pytest.param({"feature_weight": 0, "adversarial_weight": 0}, {"l1"}, id="l1_only"),
        pytest.param(
            {"feature_weight": 0, "ssim_weight": 0.5, "delta_e_weight": 0.1},
            {"l1", "adversarial", "ssim", "delta_e"},
            id="ssim_delta_e",
        ),
    ],
)
def test_dpe_loss_terms_are_exactly_the_active_ones(kwargs, expected_terms):
    loss = DPELoss(**kwargs)
    pred, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        total, terms = loss(pred, target, fake_output=torch.full((1, 1), 0.5))
    assert set(terms) == expected_terms
    expected_total = sum(loss.weights[name] * value for name, value in terms.items())
    torch.testing.assert_close(total, expected_total)
    assert all(not value.requires_grad for value in terms.values())


def test_dpe_loss_optional_terms_match_references():
    from monai.losses import SSIMLoss

    loss = DPELoss(l1_weight=0, feature_weight=0, adversarial_weight=0, ssim_weight=1.0, delta_e_weight=1.0)
    pred, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        total, terms = loss(pred, target)
        torch.testing.assert_close(terms["ssim"], SSIMLoss(spatial_dims=2, data_range=1.0)(pred, target))
    assert terms["delta_e"].item() == pytest.approx(skimage_delta_e(pred, target).mean(), abs=1e-3)
    torch.testing.assert_close(total, terms["ssim"] + terms["delta_e"])


def test_dpe_loss_feature_weight_zero_builds_no_feature_network():
    loss = DPELoss(feature_weight=0)  # the default "vgg19" would need weights if it were built
    assert loss.feature is None
    assert not any(isinstance(m, VGG19Features) for m in loss.modules())
    assert sum(p.numel() for p in loss.parameters()) == 0


def test_dpe_loss_adversarial_without_fake_output_raises():
    loss = DPELoss(feature_weight=0)
    with pytest.raises(ValueError, match="fake_output"):
        loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_dpe_loss_negative_weight_raises():
    with pytest.raises(ValueError):
        DPELoss(feature_weight=0, l1_weight=-1.0)


def test_dpe_loss_with_monai_patch_discriminator():
    disc = PatchDiscriminator(spatial_dims=2, channels=8, in_channels=3, num_layers_d=2).eval()
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32)
    out = disc(pred)
    assert isinstance(out, list)
    loss = DPELoss(feature_weight=0, adversarial_logits=True)
    total, terms = loss(pred, target, fake_output=out)
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(out[-1], torch.ones_like(out[-1]))
    torch.testing.assert_close(terms["adversarial"], expected)
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_dpe_loss_with_dpe_discriminator(spatial_dims):
    disc = DPEDiscriminator(spatial_dims, 1, SMALL_DISC).eval()
    spatial = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    pred = torch.rand(2, 1, *spatial, requires_grad=True)
    target = torch.rand(2, 1, *spatial)
    loss = DPELoss(feature_weight=0, spatial_dims=spatial_dims)
    fake = disc(pred)
    total, terms = loss(pred, target, fake_output=fake)
    torch.testing.assert_close(terms["adversarial"], -torch.log(fake.detach()).mean())
    torch.testing.assert_close(total.detach(), terms["l1"] + 1e-3 * terms["adversarial"])
    total.backward()
    assert torch.isfinite(pred.grad).all()


# ---------------------------------------------------------------- adversarial losses

def manual_bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def test_discriminator_loss_equals_manual_bce_with_seeded_labels():
    real, fake = torch.rand(4, 1) * 0.8 + 0.1, torch.rand(4, 1) * 0.8 + 0.1
    torch.manual_seed(123)
    value = DiscriminatorLoss()(real, fake)
    torch.manual_seed(123)
    real_labels = 0.7 + 0.5 * torch.rand(real.shape)
    fake_labels = 0.0 + 0.3 * torch.rand(fake.shape)
    expected = 0.5 * (manual_bce(real, real_labels) + manual_bce(fake, fake_labels))
    torch.testing.assert_close(value, expected)


def _implied_label(loss_value: float, p: float) -> float:
    """BCE is linear in the label: solve -(y log p + (1 - y) log(1 - p)) = loss for y."""
    return (-math.log(1 - p) - loss_value) / (math.log(p) - math.log(1 - p))


@pytest.mark.parametrize("side", ["real", "fake"])
def test_discriminator_noisy_labels_stay_in_range(side):
    loss = DiscriminatorLoss()
    p = torch.tensor([[0.3]])
    neutral = torch.tensor([[0.5]])  # BCE at p = 0.5 is log 2 whatever the label
    labels = []
    for _ in range(200):
        value = loss(p, neutral) if side == "real" else loss(neutral, p)
        labels.append(_implied_label(2 * value.item() - math.log(2), 0.3))
    low, high = (0.7, 1.2) if side == "real" else (0.0, 0.3)
    labels = np.array(labels)
    assert labels.min() >= low - 1e-4 and labels.max() <= high + 1e-4
    assert labels.min() < low + 0.05 and labels.max() > high - 0.05  # the whole range is used
    assert labels.std() > 0.1 * (high - low)


def test_discriminator_loss_logits_matches_bce_with_logits():
    real, fake = torch.randn(3, 1), torch.randn(3, 1)
    torch.manual_seed(5)
    value = DiscriminatorLoss(logits=True)(real, fake)
    torch.manual_seed(5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = 0.5 * (bce(real, 0.7 + 0.5 * torch.rand(3, 1)) + bce(fake, 0.3 * torch.rand(3, 1)))
    torch.testing.assert_close(value, expected)


def test_generator_adversarial_loss_uses_last_item_of_list():
    scores = [torch.rand(2, 1), torch.rand(2, 1) * 0.8 + 0.1]
    torch.testing.assert_close(GeneratorAdversarialLoss()(scores), -torch.log(scores[-1]).mean())


def test_delta_e_scores_and_pulls_back_predictions_outside_the_unit_range():
    """The shipped network's output is unbounded: a clamp inside the Lab conversion gave such pixels
    exactly zero gradient, and scores that disagreed with scikit-image."""
    rng = np.random.default_rng(0)
    target = rng.random((8, 8, 3))
    pred = target * 1.4 - 0.2  # partly below 0 and above 1
    expected = deltaE_ciede2000(rgb2lab(target), rgb2lab(pred)).mean()
    as_tensor = lambda a: torch.tensor(np.moveaxis(a, -1, 0))[None]  # noqa: E731
    assert DeltaELoss()(as_tensor(pred), as_tensor(target)).item() == pytest.approx(expected, rel=1e-4)
    for value in (1.3, -0.2):
        out = torch.full((1, 3, 4, 4), value, dtype=torch.float64, requires_grad=True)
        DeltaELoss()(out, torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)).backward()
        assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
        assert (out.grad.sign() == (1.0 if value > 0.5 else -1.0)).all(), "descent moves it towards the target"


def test_dpe_loss_scores_colour_in_its_data_range():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    unit = DPELoss(feature_weight=0, adversarial_weight=0, delta_e_weight=1)(pred, target)[1]["delta_e"]
    eight_bit = DPELoss(feature_weight=0, adversarial_weight=0, delta_e_weight=1, data_range=255)(
        pred * 255, target * 255)[1]["delta_e"]
    assert eight_bit.item() == pytest.approx(unit.item(), rel=1e-5)


def test_dpe_loss_with_every_weight_zero_is_refused_when_built():
    with pytest.raises(ValueError, match="every term's weight is 0"):
        DPELoss(l1_weight=0, feature_weight=0, adversarial_weight=0, ssim_weight=0, delta_e_weight=0)


def test_vgg_weights_file_that_is_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="vgg19.pth: not a VGG19 state dict \\(it holds a Tensor\\)"):
        VGG19Features(weights_path=path)


@pytest.mark.parametrize("shape, reason", [((1, 2, 32, 32), "2 channels"), ((1, 4, 32, 32), "4 channels"),
                                           ((1, 3, 15, 40), "at least 16 px")])
def test_regularized_feature_names_what_vgg19_cannot_take(shape, reason):
    """Two or four channels, or a side under 16 px, fail with one line saying so (not a broadcast or pooling error)."""
    loss = RegularizedFeatureLoss(feature_network="vgg19_random")
    with pytest.raises(ValueError, match=reason):
        loss(torch.rand(shape), torch.rand(shape))
    assert torch.isfinite(loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)))
