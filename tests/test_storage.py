"""Degradations as files hold them: storage depth, rounding to it, JPEG re-compression; structure PSNR; sampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from monai_dpe.data import sampling_weights
from monai_dpe.losses import DPELoss, GradientDifferenceLoss
from monai_dpe.metrics import structure_psnr
from monai_dpe.processor import has_fast_bf16, training_autocast_dtype
from monai_dpe.transforms import RandJPEG, RandJPEGd, RecordStorageBitsd, RoundToBitDepth, RoundToBitDepthd, storage_bits


@pytest.mark.parametrize("dtype, bits", [(np.uint8, 8), (np.int16, 16), (np.uint16, 16), (np.int32, 16),
                                         (np.float32, 0), (torch.uint8, 8), (torch.float64, 0),
                                         (np.int8, 16), (torch.int8, 16), (np.bool_, 0)])
def test_storage_bits_of_pixel_types(dtype, bits):
    assert storage_bits(dtype) == bits


def test_record_then_round_keeps_only_the_file_levels_of_a_dark_flat_image():
    raw = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    item = RecordStorageBitsd("image")({"image": raw})
    assert item["bits"] == 8
    dark = torch.as_tensor(raw, dtype=torch.float32) / 255.0 * 0.1 + 0.2  # brightness and contrast cut
    rounded = RoundToBitDepthd("image")({"image": dark, "bits": item["bits"]})["image"]
    assert len(torch.unique(rounded)) == 26  # 0.1 * 255 levels survive, as in an 8-bit file
    assert torch.allclose(rounded * 255, torch.round(rounded * 255))
    assert torch.equal(RoundToBitDepth(0)(dark), dark)  # float files keep their values


def test_round_to_16_bits_moves_values_by_at_most_half_a_step():
    x = torch.rand(1, 32, 32)
    assert float((RoundToBitDepth(16)(x) - x).abs().max()) <= 0.5 / 65535 + 1e-7


def test_jpeg_is_seeded_records_quality_and_leaves_non_8_bit_items():
    img = torch.rand(3, 32, 32)
    first, second = RandJPEG(1.0, (70, 95)), RandJPEG(1.0, (70, 95))
    first.set_random_state(3), second.set_random_state(3)
    a, b = first(img), second(img)
    assert torch.equal(a, b) and 70 <= first.last_params["jpeg_quality"] <= 95
    assert not torch.equal(a, img) and float((a - img).abs().mean()) < 0.3
    jpeg = RandJPEGd("image", prob=1.0)
    assert torch.equal(jpeg({"image": img, "bits": 16})["image"], img)
    assert jpeg.last_params == {"jpeg_quality": None}
    assert not torch.equal(jpeg({"image": img, "bits": 8})["image"], img)


def test_structure_psnr_ignores_global_level_and_matches_a_least_squares_reference():
    rng = np.random.default_rng(0)
    target = rng.random((3, 24, 24))
    assert structure_psnr(torch.as_tensor(0.3 * target + 0.2), torch.as_tensor(target)) > 200.0  # exact up to rounding
    pred = 0.5 * target + 0.1 + rng.normal(0, 0.02, target.shape)
    a, b = np.linalg.lstsq(np.stack([pred.ravel(), np.ones(pred.size)], 1), target.ravel(), rcond=None)[0]
    reference = peak_signal_noise_ratio(target, a * pred + b, data_range=1.0)
    assert structure_psnr(torch.as_tensor(pred), torch.as_tensor(target)) == pytest.approx(reference, abs=1e-6)


def test_source_balance_weighs_big_collections_by_the_root_of_their_size():
    items = [{"source": "big", "channels": 1}] * 100 + [{"source": "one", "channels": 1}]
    weights = sampling_weights(items, source_balance=0.5)
    assert sum(weights[:100]) == pytest.approx(10.0) and weights[100] == 1.0
    assert sampling_weights(items) == [1.0] * 101
    with pytest.raises(ValueError, match="source_balance"):
        sampling_weights(items, source_balance=-1)


def test_gradient_term_adds_the_gradient_difference_alone():
    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    total, terms = DPELoss(l1_weight=0, feature_weight=0, adversarial_weight=0, gradient_weight=2.0)(pred, target)
    assert set(terms) == {"gradient"}
    assert float(total) == pytest.approx(2.0 * float(GradientDifferenceLoss()(pred, target)), rel=1e-6)


@pytest.mark.parametrize("features, expected", [(frozenset({"avx2"}), None),
                                                (frozenset({"avx2", "avx512f", "avx512_bf16"}), "bfloat16"),
                                                (frozenset({"amx_bf16", "amx_tile"}), "bfloat16")])
def test_training_precision_follows_the_processor(features, expected):
    assert training_autocast_dtype("cpu", features) == expected
    assert has_fast_bf16(features) is (expected is not None)


def test_package_version_and_the_bundle_pin_move_together():
    import json
    from pathlib import Path

    import monai_dpe

    metadata = json.loads((Path(__file__).parent.parent / "bundle" / "configs" / "metadata.json").read_text())
    assert metadata["required_packages_version"]["monai-dpe"] == monai_dpe.__version__
    assert metadata["version"] == monai_dpe.__version__
    assert all("\n" not in entry and len(entry) <= 300 for entry in metadata["changelog"].values())
