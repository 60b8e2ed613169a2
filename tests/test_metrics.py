"""Tests for monai_dpe.metrics: DeltaEMetric and its ignite handler against scikit-image's CIEDE2000."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from skimage import data as skdata
from skimage.color import deltaE_ciede2000, gray2rgb, rgb2lab
from skimage.transform import downscale_local_mean

from monai_dpe.metrics import DeltaE, DeltaEMetric


def skimage_per_image(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean CIEDE2000 per image for (B, C, H, W) arrays in [0, 1]; grey images are replicated to RGB."""
    values = []
    for p, t in zip(pred.astype(np.float64), target.astype(np.float64)):
        p, t = np.moveaxis(p, 0, -1), np.moveaxis(t, 0, -1)
        if p.shape[-1] == 1:
            p, t = gray2rgb(p[..., 0]), gray2rgb(t[..., 0])
        values.append(deltaE_ciede2000(rgb2lab(t), rgb2lab(p)).mean())
    return np.array(values)


@pytest.fixture(scope="module")
def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real RGB image (astronaut, 64x64) and a darker, lower-contrast, noisy copy, (1, 3, 64, 64) in [0, 1]."""
    clean = downscale_local_mean(skdata.astronaut().astype(np.float64) / 255.0, (8, 8, 1))
    rng = np.random.default_rng(0)
    grey = clean.mean()
    degraded = np.clip(grey + 0.6 * (0.7 * clean - grey) + rng.normal(0, 0.02, clean.shape), 0, 1)
    as_batch = lambda a: np.moveaxis(a, -1, 0)[None].astype(np.float32)  # noqa: E731
    return as_batch(degraded), as_batch(clean)


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((3, 3, 20, 24), id="rgb_random"),
        pytest.param((1, 3, 32, 32), id="rgb_single"),
    ],
)
def test_delta_e_metric_matches_skimage_on_random_rgb(shape):
    pred, target = torch.rand(shape), torch.rand(shape)
    values = DeltaEMetric()(y_pred=pred, y=target)
    assert values.shape == (shape[0], 1)
    np.testing.assert_allclose(values[:, 0].numpy(), skimage_per_image(pred.numpy(), target.numpy()), atol=1e-3)


def test_delta_e_metric_matches_skimage_on_real_image_pair(astronaut_pair):
    pred, target = astronaut_pair
    value = DeltaEMetric()(y_pred=torch.as_tensor(pred), y=torch.as_tensor(target))
    expected = skimage_per_image(pred, target)
    assert expected[0] > 3.0  # a visible difference, so the comparison means something
    np.testing.assert_allclose(value[:, 0].numpy(), expected, atol=1e-3)


def test_delta_e_metric_zero_for_identical(astronaut_pair):
    _, target = astronaut_pair
    value = DeltaEMetric()(y_pred=torch.as_tensor(target), y=torch.as_tensor(target))
    assert value.abs().max().item() < 1e-4


def test_delta_e_metric_grey_is_lightness_only():
    pred, target = torch.rand(2, 1, 16, 16).double(), torch.rand(2, 1, 16, 16).double()
    values = DeltaEMetric()(y_pred=pred, y=target)[:, 0].numpy()
    np.testing.assert_allclose(values, skimage_per_image(pred.numpy(), target.numpy()), atol=1e-3)
    # with a = b = 0, CIEDE2000 reduces to |dL| / S_L
    lightness = lambda x: rgb2lab(gray2rgb(x))[..., 0]  # noqa: E731
    expected = []
    for p, t in zip(pred.numpy()[:, 0], target.numpy()[:, 0]):
        l_p, l_t = lightness(p), lightness(t)
        l_mean = 0.5 * (l_p + l_t)
        s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
        expected.append((np.abs(l_p - l_t) / s_l).mean())
    np.testing.assert_allclose(values, expected, atol=1e-3)


def test_delta_e_metric_data_range_255():
    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    unit = DeltaEMetric()(y_pred=pred, y=target)
    byte = DeltaEMetric(data_range=255)(y_pred=pred * 255, y=target * 255)
    torch.testing.assert_close(byte, unit, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(byte[:, 0].numpy(), skimage_per_image(pred.numpy(), target.numpy()), atol=1e-3)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_delta_e_metric_aggregate_with_reduction(reduction):
    metric = DeltaEMetric(reduction=reduction)
    batches = [(torch.rand(2, 3, 12, 12), torch.rand(2, 3, 12, 12)) for _ in range(3)]
    for pred, target in batches:
        metric(y_pred=pred, y=target)
    per_image = np.concatenate([skimage_per_image(p.numpy(), t.numpy()) for p, t in batches])
    result = metric.aggregate()
    if reduction == "mean":
        assert result.item() == pytest.approx(per_image.mean(), abs=1e-3)
    elif reduction == "sum":
        assert result.item() == pytest.approx(per_image.sum(), abs=6e-3)
    else:
        np.testing.assert_allclose(result[:, 0].numpy(), per_image, atol=1e-3)
    metric.reset()
    metric(y_pred=batches[0][0], y=batches[0][1])
    assert metric.get_buffer().shape == (2, 1)


def test_delta_e_metric_get_not_nans():
    metric = DeltaEMetric(get_not_nans=True)
    metric(y_pred=torch.rand(3, 3, 8, 8), y=torch.rand(3, 3, 8, 8))
    value, not_nans = metric.aggregate()
    assert not_nans.item() == 3 and torch.isfinite(value)


def test_delta_e_metric_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        DeltaEMetric()(y_pred=torch.rand(1, 3, 8, 8), y=torch.rand(1, 3, 8, 9))


def _pairs(n_batches: int = 3, batch: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.rand(batch, 3, 16, 16), torch.rand(batch, 3, 16, 16)) for _ in range(n_batches)]


def test_delta_e_handler_on_plain_ignite_engine():
    pairs = _pairs()
    engine = Engine(lambda engine, batch: batch)
    DeltaE().attach(engine, "delta_e")
    state = engine.run(pairs, max_epochs=1)
    expected = np.concatenate([skimage_per_image(p.numpy(), t.numpy()) for p, t in pairs]).mean()
    assert state.metrics["delta_e"] == pytest.approx(expected, abs=1e-3)


def test_delta_e_handler_in_supervised_evaluator():
    pairs = _pairs(n_batches=1, batch=4)
    items = [{"image": t, "label": t} for t in pairs[0][1]]
    offset = torch.zeros(1, 3, 1, 1)
    offset[0, 0] = 0.15

    class RedShift(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + offset).clamp(0, 1)

    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(items), batch_size=2),
        network=RedShift(),
        key_val_metric={"val_delta_e": DeltaE(output_transform=from_engine(["pred", "label"]))},
    )
    evaluator.run()
    target = pairs[0][1].numpy()
    pred = RedShift()(pairs[0][1]).numpy()
    expected = skimage_per_image(pred, target).mean()
    assert expected > 1.0
    assert evaluator.state.metrics["val_delta_e"] == pytest.approx(expected, abs=1e-3)


def test_capped_psnr_caps_each_image_before_the_mean():
    """An untouched clean image (inf dB) and a near-copy (about 60 dB) count as the cap; a degraded one keeps its
    own value, equal to MONAI's PSNR, so the mean ranks restoring the degraded image above copying the clean one."""
    from monai.metrics import PSNRMetric

    from monai_dpe.metrics import CappedPSNRMetric

    rng = np.random.default_rng(0)
    target = torch.as_tensor(rng.uniform(0.2, 0.8, (3, 1, 32, 32)), dtype=torch.float32)
    pred = target.clone()
    pred[1] += 0.001  # about 60 dB
    pred[2] += torch.as_tensor(rng.normal(0.0, 0.05, (1, 32, 32)), dtype=torch.float32)  # about 26 dB
    capped = CappedPSNRMetric(max_val=1.0, cap=40.0, reduction="none")(pred, target).flatten()
    plain = PSNRMetric(max_val=1.0, reduction="none")(pred, target).flatten()
    assert torch.isinf(plain[0]) and plain[1] > 55.0 and plain[2] < 30.0
    assert capped[:2].tolist() == [40.0, 40.0]
    assert capped[2].item() == pytest.approx(plain[2].item())
    metric = CappedPSNRMetric(cap=40.0)
    metric(pred, target)
    assert metric.aggregate().item() == pytest.approx((80.0 + plain[2].item()) / 3)
