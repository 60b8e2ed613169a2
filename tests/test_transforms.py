"""Tests for monai_dpe.transforms: degradations (array and dictionary) and the intensity policy."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AdjustContrast, Compose, Invertd
from pydicom.data import get_testdata_file
from skimage import data as skdata

from monai_dpe.transforms import (
    IntensityPolicy,
    IntensityPolicyd,
    RandAcquisitionNoise,
    RandLowBrightness,
    RandLowBrightnessd,
    RandLowContrast,
    RandPerceptualDegradation,
    RandPerceptualDegradationd,
)

AFFINE = torch.diag(torch.tensor([0.5, 0.75, 2.0, 1.0], dtype=torch.float64))
LUMA = np.array([0.299, 0.587, 0.114])

RANDOM_TRANSFORMS = [
    pytest.param(lambda: RandLowBrightness(), id="brightness"),
    pytest.param(lambda: RandLowContrast(), id="contrast"),
    pytest.param(lambda: RandAcquisitionNoise(noise_types=("gaussian", "uniform", "poisson", "rician")), id="noise"),
    pytest.param(lambda: RandPerceptualDegradation(preset="paper"), id="paper"),
    pytest.param(lambda: RandPerceptualDegradation(preset="radiology"), id="radiology"),
]
SHAPES = [
    pytest.param((1, 24, 20), id="2d_grey"),
    pytest.param((3, 24, 20), id="2d_rgb"),
    pytest.param((1, 12, 10, 8), id="3d_grey"),
    pytest.param((3, 8, 10, 6), id="3d_rgb"),
]
CONTAINERS = ["numpy", "torch", "meta"]


def image(shape, container: str = "torch", seed: int = 0):
    """A smooth-ish clean image in [0.05, 0.95] of the given container type."""
    rng = np.random.default_rng(seed)
    arr = (0.05 + 0.9 * rng.random(shape)).astype(np.float32)
    if container == "numpy":
        return arr
    if container == "torch":
        return torch.as_tensor(arr)
    return MetaTensor(torch.as_tensor(arr), affine=AFFINE.clone())


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ---------------------------------------------------------------- common behaviour of random transforms

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("make", RANDOM_TRANSFORMS)
def test_same_seed_same_output(make, shape):
    img = image(shape)
    first, second = make(), make()
    first.set_random_state(7)
    second.set_random_state(7)
    a, b = first(img), second(img)
    np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
    assert first.last_params == second.last_params
    assert not np.allclose(as_numpy(a), as_numpy(img))  # the transform did something


@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("make", RANDOM_TRANSFORMS)
def test_different_seeds_differ(make, shape):
    img = image(shape)
    first, second = make(), make()
    first.set_random_state(7)
    second.set_random_state(8)
    assert not np.allclose(as_numpy(first(img)), as_numpy(second(img)))


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("make", RANDOM_TRANSFORMS)
def test_output_type_follows_input(make, container):
    img = image((3, 16, 12, 6) if container == "meta" else (1, 16, 12), container)
    t = make()
    t.set_random_state(3)
    out = t(img)
    if container == "numpy":
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
    elif container == "torch":
        assert type(out) is torch.Tensor and out.dtype == torch.float32
    else:
        assert isinstance(out, MetaTensor)
        torch.testing.assert_close(out.affine, AFFINE)
    assert out.shape == img.shape


@pytest.mark.parametrize("make", RANDOM_TRANSFORMS)
def test_float64_numpy_keeps_dtype(make):
    img = image((1, 16, 16), "numpy").astype(np.float64)
    t = make()
    t.set_random_state(1)
    assert t(img).dtype == np.float64


# ---------------------------------------------------------------- RandLowBrightness / RandLowContrast

@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_low_brightness_is_input_times_factor(shape, container):
    img = image(shape, container)
    t = RandLowBrightness(factor=(0.1, 0.8))
    t.set_random_state(11)
    out = t(img)
    f = t.last_params["brightness"]
    assert 0.1 <= f <= 0.8
    np.testing.assert_allclose(as_numpy(out), as_numpy(img) * f, rtol=1e-6, atol=1e-7)


def test_low_brightness_prob_zero_returns_input():
    img = image((1, 8, 8))
    t = RandLowBrightness(prob=0.0)
    out = t(img)
    assert torch.equal(out, img) and t.last_params == {}


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_low_contrast_keeps_mean_grey_and_scales_deviation(shape, container):
    img = image(shape, container)
    t = RandLowContrast(factor=(0.1, 0.8))
    t.set_random_state(5)
    out = as_numpy(t(img)).astype(np.float64)
    x = as_numpy(img).astype(np.float64)
    f = t.last_params["contrast"]

    def mean_grey(a: np.ndarray) -> float:
        if a.shape[0] == 3:
            return float(np.tensordot(LUMA, a, axes=(0, 0)).mean())
        return float(a.mean())

    m = mean_grey(x)
    assert mean_grey(out) == pytest.approx(m, abs=1e-5)
    np.testing.assert_allclose(out - m, f * (x - m), atol=1e-5)


def test_low_contrast_fixed_factor_and_invalid_range():
    img = image((1, 8, 8))
    out = RandLowContrast(factor=1.0)(img)
    torch.testing.assert_close(out, img)
    with pytest.raises(ValueError):
        RandLowContrast(factor=(0.8, 0.1))


# ---------------------------------------------------------------- RandAcquisitionNoise

@pytest.mark.parametrize("shape", [pytest.param((1, 32, 32), id="2d"), pytest.param((3, 8, 8, 8), id="3d_rgb")])
def test_uniform_noise_non_negative_below_std(shape):
    img = image(shape)
    t = RandAcquisitionNoise(noise_types="uniform", std=0.05)
    t.set_random_state(2)
    noise = as_numpy(t(img)) - as_numpy(img)
    assert t.last_params == {"noise": "uniform", "noise_std": 0.05}
    assert noise.min() >= -1e-7 and noise.max() <= 0.05 + 1e-7
    assert noise.mean() == pytest.approx(0.025, abs=0.003)


def test_poisson_noise_variance_at_flat_half():
    img = torch.full((1, 64, 64), 0.5)
    std = 0.1
    t = RandAcquisitionNoise(noise_types="poisson", std=std)
    t.set_random_state(4)
    noise = as_numpy(t(img)) - 0.5
    # counts ~ Poisson(0.5 / std^2), scaled by std^2: variance 0.5 * std^2; 4096 samples -> ~2% error
    assert noise.var() == pytest.approx(0.5 * std**2, rel=0.1)
    assert abs(noise.mean()) < 0.003


def test_poisson_noise_scales_with_signal():
    img = torch.cat([torch.full((1, 64, 32), 0.1), torch.full((1, 64, 32), 0.9)], dim=2)
    t = RandAcquisitionNoise(noise_types="poisson", std=0.1)
    t.set_random_state(6)
    noise = as_numpy(t(img)) - as_numpy(img)
    assert noise[..., :32].var() == pytest.approx(0.1 * 0.01, rel=0.15)
    assert noise[..., 32:].var() == pytest.approx(0.9 * 0.01, rel=0.15)


def test_gaussian_noise_std_and_zero_mean():
    img = torch.full((1, 64, 64), 0.5)
    t = RandAcquisitionNoise(noise_types="gaussian", std=0.04)
    t.set_random_state(9)
    noise = as_numpy(t(img)) - 0.5
    assert noise.std() == pytest.approx(0.04, rel=0.05)
    assert abs(noise.mean()) < 0.003


def test_noise_invalid_arguments_raise():
    with pytest.raises(ValueError):
        RandAcquisitionNoise(noise_types="salt")
    with pytest.raises(ValueError):
        RandAcquisitionNoise(std=(-0.1, 0.1))


# ---------------------------------------------------------------- RandPerceptualDegradation

@pytest.mark.parametrize("shape", SHAPES)
def test_paper_preset_is_clipped_brightness_contrast_noise(shape):
    img = image(shape)
    t = RandPerceptualDegradation(preset="paper", paper_noise_std=(0.0, 0.05))
    t.set_random_state(13)
    out = as_numpy(t(img)).astype(np.float64)
    p = t.last_params
    assert p["family"] == "paper" and p["noise"] == "uniform"
    assert 0.1 <= p["brightness"] <= 0.8 and 0.1 <= p["contrast"] <= 0.8 and 0.0 <= p["noise_std"] <= 0.05
    x = as_numpy(img).astype(np.float64) * p["brightness"]
    grey = np.tensordot(LUMA, x, axes=(0, 0)).mean() if x.shape[0] == 3 else x.mean()
    x = grey + p["contrast"] * (x - grey)
    noise = as_numpy(t.paper_noise.noise).astype(np.float64)
    assert noise.min() >= 0 and noise.max() <= p["noise_std"] + 1e-7
    np.testing.assert_allclose(out, np.clip(x + noise, 0, 1), atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_radiology_preset_records_gamma_bias_noise(shape):
    t = RandPerceptualDegradation(preset="radiology")
    t.set_random_state(21)
    t(image(shape))
    p = t.last_params
    assert p["family"] == "radiology"
    assert 0.5 <= p["gamma"] <= 2.0
    assert len(p["bias_coeff"]) > 0 and all(-0.25 <= c <= 0.25 for c in p["bias_coeff"])
    assert p["noise"] in ("gaussian", "rician", "poisson") and 0.005 <= p["noise_std"] <= 0.05


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_radiology_gamma_only_matches_monai_adjust_contrast(shape):
    img = image(shape)
    t = RandPerceptualDegradation(preset="radiology", bias_coeff=0.0, radiology_noise_std=0.0)
    t.set_random_state(17)
    out = as_numpy(t(img))
    expected = np.clip(as_numpy(AdjustContrast(gamma=t.last_params["gamma"])(img)), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_mixed_preset_draws_both_families():
    t = RandPerceptualDegradation(preset="mixed")
    img = image((1, 8, 8))
    families = set()
    for seed in range(50):
        t.set_random_state(seed)
        t(img)
        families.add(t.last_params["family"])
    assert families == {"paper", "radiology"}


@pytest.mark.parametrize(
    "bits, expected",
    [
        pytest.param(8, {"paper"}, id="display"),
        pytest.param(16, {"paper", "radiology"}, id="quantitative"),
    ],
)
def test_display_preset_applies_to_8_bit_sources_only(bits, expected):
    t = RandPerceptualDegradationd(preset="mixed", bits_key="bits", display_preset="paper", params_key="params")
    families = set()
    for seed in range(50):
        t.set_random_state(seed)
        families.add(t({"image": image((1, 8, 8)), "bits": bits})["params"]["family"])
    assert families == expected


def test_display_preset_needs_bits_key():
    with pytest.raises(ValueError, match="display_preset"):
        RandPerceptualDegradationd(preset="mixed", display_preset="paper")


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("preset", ["paper", "radiology", "mixed"])
def test_clean_prob_one_returns_input(preset, container):
    img = image((3, 12, 10, 4) if container == "meta" else (1, 16, 16), container)
    t = RandPerceptualDegradation(preset=preset, clean_prob=1.0)
    t.set_random_state(0)
    out = t(img)
    assert t.last_params == {"family": "clean"}
    np.testing.assert_array_equal(as_numpy(out), as_numpy(img))
    assert type(out) is type(img)


@pytest.mark.parametrize("preset", ["paper", "radiology"])
def test_output_clipped_to_unit_range(preset):
    # a bright image with strong noise would leave [0, 1] without the clip
    img = torch.cat([torch.full((1, 32, 16), 0.99), torch.full((1, 32, 16), 0.01)], dim=2)
    kwargs = {"brightness": 1.0, "contrast": 1.0, "paper_noise_std": 0.2} if preset == "paper" else {
        "radiology_noise_types": "gaussian", "radiology_noise_std": 0.2, "gamma": 1.0, "bias_coeff": 0.0}
    clipped = RandPerceptualDegradation(preset=preset, **kwargs)
    unclipped = RandPerceptualDegradation(preset=preset, clip=False, **kwargs)
    clipped.set_random_state(1)
    unclipped.set_random_state(1)
    out, raw = as_numpy(clipped(img)), as_numpy(unclipped(img))
    assert raw.max() > 1.0
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, np.clip(raw, 0, 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"preset": "ultrasound"}, id="preset"),
        pytest.param({"clean_prob": 1.5}, id="clean_prob"),
        pytest.param({"paper_weight": -0.1}, id="paper_weight"),
    ],
)
def test_invalid_degradation_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        RandPerceptualDegradation(**kwargs)


# ---------------------------------------------------------------- dictionary twins

@pytest.mark.parametrize("container", CONTAINERS)
def test_degradation_dict_writes_image_and_target(container):
    img = image((1, 16, 16, 4) if container == "meta" else (3, 16, 16), container)
    t = RandPerceptualDegradationd(preset="paper")
    t.set_random_state(3)
    d = t({"image": img})
    np.testing.assert_array_equal(as_numpy(d["target"]), as_numpy(img))
    assert d["target"] is not img  # a copy, not the same object
    reference = RandPerceptualDegradation(preset="paper")
    reference.set_random_state(3)
    np.testing.assert_allclose(as_numpy(d["image"]), as_numpy(reference(img)), atol=1e-7)
    assert t.last_params == reference.last_params
    assert type(d["image"]) is type(img)
    if container == "meta":
        torch.testing.assert_close(d["image"].affine, AFFINE)


def test_degradation_dict_configurable_keys_and_params_key():
    img = image((1, 16, 16))
    t = RandPerceptualDegradationd(keys="low", target_keys="clean", params_key="degradation", preset="radiology")
    t.set_random_state(3)
    d = t({"low": img})
    assert set(d) == {"low", "clean", "degradation"}
    torch.testing.assert_close(d["clean"], img)
    assert not torch.allclose(d["low"], img)
    assert d["degradation"] == t.last_params and d["degradation"]["family"] == "radiology"


@pytest.mark.parametrize("preset", ["paper", "radiology"])
def test_degradation_dict_same_draw_for_two_keys(preset):
    img = image((1, 16, 16))
    t = RandPerceptualDegradationd(keys=("a", "b"), target_keys=("ta", "tb"), preset=preset)
    t.set_random_state(5)
    d = t({"a": img, "b": img.clone()})
    torch.testing.assert_close(d["a"], d["b"])
    torch.testing.assert_close(d["ta"], img)
    torch.testing.assert_close(d["tb"], img)


def test_degradation_dict_same_draw_differs_per_call():
    img = image((1, 16, 16))
    t = RandPerceptualDegradationd(preset="paper")
    t.set_random_state(5)
    first = t({"image": img})["image"]
    second = t({"image": img})["image"]
    assert not torch.allclose(first, second)


def test_low_brightness_dict_same_factor_for_two_keys():
    a, b = image((1, 16, 16), seed=1), image((3, 8, 8, 4), "meta", seed=2)
    t = RandLowBrightnessd(keys=("a", "b"))
    t.set_random_state(7)
    d = t({"a": a, "b": b})
    f = t.last_params["brightness"]
    torch.testing.assert_close(d["a"], a * f)
    torch.testing.assert_close(d["b"].as_tensor(), b.as_tensor() * f)
    torch.testing.assert_close(d["b"].affine, AFFINE)


def test_low_brightness_dict_missing_key():
    t = RandLowBrightnessd(keys=("a", "b"), allow_missing_keys=True)
    d = t({"a": image((1, 8, 8))})
    assert set(d) == {"a"}
    with pytest.raises(KeyError):
        RandLowBrightnessd(keys=("a", "b"))({"a": image((1, 8, 8))})


# ---------------------------------------------------------------- IntensityPolicy

@pytest.fixture(scope="module")
def ct_hu() -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    return hu.astype(np.int16)[None]  # (1, 128, 128) int16 HU


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return skdata.camera()[None]  # (1, 512, 512) uint8


@pytest.mark.parametrize("fixture", ["ct_hu", "camera"])
def test_policy_range_equals_numpy_percentiles(fixture, request):
    img = request.getfixturevalue(fixture)
    policy = IntensityPolicy()
    out = policy(img)
    low, high = np.percentile(img.astype(np.float64), [0.5, 99.5])
    span = float(img.max()) - float(img.min())
    assert policy.last_range[0] == pytest.approx(low, abs=1e-6 * span)
    assert policy.last_range[1] == pytest.approx(high, abs=1e-6 * span)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (img.astype(np.float64) - low) / (high - low), atol=1e-5)


def test_policy_inverse_restores_int16_ct_exactly(ct_hu):
    policy = IntensityPolicy()  # auto -> quantitative for int16
    back = policy.inverse(policy(ct_hu))
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, ct_hu)


@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_policy_display_inverse_maps_unit_range_to_uint8(camera, container):
    policy = IntensityPolicy()  # auto -> display for uint8
    stretched = policy(camera if container == "numpy" else torch.as_tensor(camera))
    assert policy.last_info["mode"] == "display"
    values = np.concatenate([np.linspace(0.0, 1.0, 1001), [-0.2, 1.3]]).astype(np.float32)
    enhanced = np.resize(values, camera.shape).astype(np.float32)
    enhanced = enhanced if container == "numpy" else torch.as_tensor(enhanced)
    out = as_numpy(policy.inverse(enhanced))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.round(np.clip(as_numpy(enhanced).astype(np.float64), 0, 1) * 255).astype(np.uint8))
    assert stretched.shape == camera.shape


@pytest.mark.parametrize(
    "source, mode",
    [("slide.png", "display"), ("photo.JPG", "display"), ("stack.tiff", "display"), ("us.dcm", "display"),
     ("series_folder", "display"), ("mr.nii.gz", "quantitative"), ("mr.mha", "quantitative"),
     ("mr.nrrd", "quantitative"), (None, "display")],
)
def test_policy_auto_mode_of_8bit_pixels_follows_the_format(source, mode):
    """8-bit photos, slides and DICOM are display images; an 8-bit volume holds scanner values in its units."""
    pixels = torch.arange(60, 80, dtype=torch.uint8).repeat(16, 1)[None]
    image = MetaTensor(pixels, meta={} if source is None else {"filename_or_obj": source})
    policy = IntensityPolicy()
    policy(image)
    assert policy.last_info["mode"] == mode
    assert IntensityPolicy().resolve_mode("int16", source) == "quantitative"


@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_policy_float32_round_trip(container):
    rng = np.random.default_rng(3)
    img = (rng.gamma(2.0, 400.0, size=(1, 24, 20, 6)) + 50.0).astype(np.float32)  # MR-like scanner units
    img = img if container == "numpy" else torch.as_tensor(img)
    policy = IntensityPolicy()
    back = policy.inverse(policy(img))
    assert back.dtype == img.dtype
    np.testing.assert_allclose(as_numpy(back), as_numpy(img), rtol=1e-5)


def test_policy_window_replaces_percentiles(ct_hu):
    policy = IntensityPolicy(window=(-1000, 1000))
    out = policy(ct_hu)
    assert policy.last_range == (-1000.0, 1000.0)
    np.testing.assert_allclose(out, (ct_hu.astype(np.float64) + 1000.0) / 2000.0, atol=1e-6)
    np.testing.assert_array_equal(policy.inverse(out), ct_hu)


def test_policy_reference_uses_other_image_range(camera):
    patch = camera[:, 100:164, 200:264]
    policy = IntensityPolicy()
    out = policy(patch, reference=camera)
    low, high = np.percentile(camera.astype(np.float64), [0.5, 99.5])
    np.testing.assert_allclose(out, (patch.astype(np.float64) - low) / (high - low), atol=1e-5)
    own_low, own_high = np.percentile(patch.astype(np.float64), [0.5, 99.5])
    assert (own_low, own_high) != pytest.approx((low, high))  # the patch's own range would differ


def test_policy_dict_with_invertd_restores_meta_tensor(ct_hu):
    img = MetaTensor(torch.as_tensor(ct_hu), affine=AFFINE.clone())
    pre = Compose([IntensityPolicyd(keys="image")])
    d = pre({"image": img})
    assert d["image"].dtype == torch.float32
    low, high = np.percentile(ct_hu.astype(np.float64), [0.5, 99.5])
    np.testing.assert_allclose(d["image"].numpy(), (ct_hu - low) / (high - low), atol=1e-5)
    d["pred"] = d["image"].clone()  # an identity "network"
    out = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(d)["pred"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.int16
    torch.testing.assert_close(out.as_tensor(), img.as_tensor(), rtol=0, atol=0)
    torch.testing.assert_close(out.affine, AFFINE)


def test_policy_dict_reference_key(camera):
    patch = camera[:, :64, :64]
    d = IntensityPolicyd(keys="patch", reference_key="source")({"patch": patch, "source": camera})
    low, high = np.percentile(camera.astype(np.float64), [0.5, 99.5])
    np.testing.assert_allclose(d["patch"], (patch.astype(np.float64) - low) / (high - low), atol=1e-5)
    np.testing.assert_array_equal(d["source"], camera)  # only the listed keys change


@pytest.mark.parametrize("lesion_value, background", [(600, 0), (-300, 0), (10, 200)])
def test_policy_sparse_lesion_on_a_background_is_stretched_not_passed_raw(lesion_value, background):
    """Under 0.5% of voxels off the background: both percentiles land on it, and the lesion's own
    range must give the other end (a scale of 1 would pass raw units, e.g. 600, to the network)."""
    img = np.full((1, 64, 64, 32), background, np.int16)
    img[0, 30:33, 30:33, 10:20] = lesion_value + np.sign(lesion_value - background) * np.arange(90).reshape(3, 3, 10)
    policy = IntensityPolicy(mode="quantitative")
    out = policy(img)
    assert (img != background).mean() < 0.005
    assert out.min() == pytest.approx(0.0, abs=0.02) and out.max() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(policy.inverse(out), img)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_policy_constant_image_no_nan_and_exact_inverse(dtype):
    img = np.full((1, 16, 16), 40, dtype=dtype)
    policy = IntensityPolicy(mode="quantitative")
    out = policy(img)
    assert np.isfinite(out).all()
    back = policy.inverse(out)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, img)


def test_policy_invalid_arguments_raise():
    with pytest.raises(ValueError):
        IntensityPolicy(mode="linear")
    with pytest.raises(ValueError):
        IntensityPolicy(lower=99.0, upper=1.0)
    with pytest.raises(ValueError):
        IntensityPolicy(window=(100, -100))


def test_int8_data_is_quantitative_and_keeps_its_negatives():
    """Only uint8 is a display type: a signed 8-bit volume mapped as display would lose every negative voxel."""
    signed = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    policy = IntensityPolicy()
    back = policy.inverse(policy(signed))
    assert policy.last_info["mode"] == "quantitative"
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, signed)
