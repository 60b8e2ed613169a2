"""Property tests (hypothesis) for hostile input: degradations, the intensity policy and the slice inferer.

Each test draws shapes, dtypes, containers and values (constant, binary, subnormal, huge, negative)
and checks what must hold for all of them: degradations never crash and keep finite [0, 1] input
finite and in shape; ``IntensityPolicy`` inverts to the input's own precision (exactly for integer
images) and raises only its documented errors; ``SliceWiseInferer`` with the bundle's ``ChannelAdapter``
keeps the spatial shape and never turns finite input into NaN. Runs are derandomized (the same
examples every time) and small enough for CI.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_dpe.inferers import SliceWiseInferer
from monai_dpe.networks import ChannelAdapter, DPENet
from monai_dpe.transforms import (
    NOISE_TYPES,
    PRESETS,
    IntensityPolicy,
    IntensityPolicyd,
    RandAcquisitionNoise,
    RandAcquisitionNoised,
    RandColourJitter,
    RandColourJitterd,
    RandLowBrightness,
    RandLowBrightnessd,
    RandLowContrast,
    RandLowContrastd,
    RandPerceptualDegradation,
    RandPerceptualDegradationd,
    RandStainJitter,
)


def fuzz(max_examples: int) -> settings:
    """Reproducible hypothesis settings: the same examples on every run, no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def in_container(arr: np.ndarray, container: str):
    if container == "numpy":
        return arr
    t = torch.from_numpy(arr.copy())
    return MetaTensor(t) if container == "meta" else t


@st.composite
def spatial_shapes(draw, ndims=(2, 3), max_side: int = 64, budget: int | None = None) -> tuple[int, ...]:
    """2 or 3 sides in 1..max_side; with ``budget``, later sides shrink so the product stays within it."""
    ndim = draw(st.sampled_from(ndims))
    sides: list[int] = []
    for _ in range(ndim):
        room = max_side if budget is None else max(1, min(max_side, budget // int(np.prod(sides or [1]))))
        sides.append(draw(st.integers(1, room)))
    return tuple(draw(st.permutations(sides)))  # the big side may be any axis


@st.composite
def unit_images(draw, channels=(1, 3)):
    """A channel-first float32/float64 image in [0, 1] (numpy, torch or MetaTensor), 2D or 3D, sides 1..64."""
    shape = (draw(st.sampled_from(channels)), *draw(spatial_shapes()))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["uniform", "constant", "binary", "subnormal", "dark"]))
    if fill == "uniform":
        arr = rng.random(shape)
    elif fill == "constant":
        arr = np.full(shape, draw(st.floats(0.0, 1.0)))
    elif fill == "binary":
        arr = rng.integers(0, 2, shape).astype(np.float64)
    elif fill == "subnormal":
        arr = rng.random(shape) * np.finfo(dtype).smallest_subnormal * 4
    else:
        arr = rng.random(shape) * 1e-3
    return in_container(arr.astype(dtype), draw(st.sampled_from(["numpy", "torch", "meta"])))


# ---------------------------------------------------------------- degradations

NOISE_STD = st.one_of(st.just((0.0, 0.05)), st.floats(0.0, 0.5))  # includes subnormal strengths
FACTOR = st.one_of(st.just((0.1, 0.8)), st.floats(0.0, 1.0))

DEGRADATIONS = (
    [("brightness", RandLowBrightness, RandLowBrightnessd, {"factor": FACTOR}, True),
     ("contrast", RandLowContrast, RandLowContrastd, {"factor": FACTOR}, True)]
    + [(f"noise_{kind}", RandAcquisitionNoise, RandAcquisitionNoised,
        {"noise_types": st.just(kind), "std": NOISE_STD}, False) for kind in NOISE_TYPES]
)


def check_degraded(out, img, *, bounded: bool) -> None:
    """Same shape, container and floating dtype as ``img``; finite; within [0, 1] when ``bounded``."""
    assert type(out) is type(img)
    assert tuple(out.shape) == tuple(img.shape)
    assert out.dtype == img.dtype
    values = as_numpy(out)
    assert np.isfinite(values).all()
    if bounded:
        assert values.min() >= -1e-6 and values.max() <= 1.0 + 1e-6


DEGRADATION_IDS = [d[0] for d in DEGRADATIONS]


@pytest.mark.parametrize("name, array_cls, _dict_cls, kwargs, bounded", DEGRADATIONS, ids=DEGRADATION_IDS)
@fuzz(30)
@given(data=st.data(), img=unit_images(), seed=st.integers(0, 2**31 - 1))
def test_degradation_keeps_shape_dtype_and_finiteness(name, array_cls, _dict_cls, kwargs, bounded, data, img, seed):
    t = array_cls(prob=1.0, **{k: data.draw(v, label=k) for k, v in kwargs.items()})
    t.set_random_state(seed)
    check_degraded(t(img), img, bounded=bounded)


@pytest.mark.parametrize("name, _array_cls, dict_cls, kwargs, bounded", DEGRADATIONS, ids=DEGRADATION_IDS)
@fuzz(15)
@given(data=st.data(), img=unit_images(), seed=st.integers(0, 2**31 - 1))
def test_degradation_dict_same_draw_for_every_key(name, _array_cls, dict_cls, kwargs, bounded, data, img, seed):
    twin = img.copy() if isinstance(img, np.ndarray) else img.clone()
    t = dict_cls(keys=("image", "twin"), prob=1.0, **{k: data.draw(v, label=k) for k, v in kwargs.items()})
    t.set_random_state(seed)
    out = t({"image": img, "twin": twin})
    check_degraded(out["image"], img, bounded=bounded)
    np.testing.assert_array_equal(as_numpy(out["twin"]), as_numpy(out["image"]))  # one draw for both keys


@fuzz(15)
@given(std=st.floats(1e-300, 1e-5), value=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1))
def test_poisson_noise_strength_holds_down_to_tiny_std(std, value, seed):
    # down to strengths whose photon counts (value / std**2) numpy's Poisson sampler refuses, the residual keeps its law
    t = RandAcquisitionNoise(noise_types="poisson", std=std)
    t.set_random_state(seed)
    t(np.full((1, 64, 64), value))
    residual = as_numpy(t.noise)
    assert np.isfinite(residual).all()
    assert residual.std() == pytest.approx(std * np.sqrt(value), rel=0.1)
    assert abs(residual.mean()) < 0.1 * std * np.sqrt(value)


@pytest.mark.parametrize("preset", PRESETS)
@fuzz(30)
@given(img=unit_images(), seed=st.integers(0, 2**31 - 1), clean_prob=st.sampled_from([0.0, 0.5]))
def test_perceptual_degradation_in_unit_range(preset, img, seed, clean_prob):
    t = RandPerceptualDegradation(preset=preset, clean_prob=clean_prob)
    t.set_random_state(seed)
    check_degraded(t(img), img, bounded=True)
    assert t.last_params["family"] in ("clean", "paper", "radiology")


@pytest.mark.parametrize("preset", PRESETS)
@fuzz(15)
@given(img=unit_images(), seed=st.integers(0, 2**31 - 1))
def test_perceptual_degradation_dict_keeps_clean_target(preset, img, seed):
    twin = img.copy() if isinstance(img, np.ndarray) else img.clone()
    t = RandPerceptualDegradationd(keys=("image", "twin"), target_keys=("target", "twin_target"), preset=preset)
    t.set_random_state(seed)
    out = t({"image": img, "twin": twin})
    check_degraded(out["image"], img, bounded=True)
    np.testing.assert_array_equal(as_numpy(out["target"]), as_numpy(img))  # the clean copy, untouched
    np.testing.assert_array_equal(as_numpy(out["twin"]), as_numpy(out["image"]))  # later keys reuse the draw


def check_recoloured(out, img) -> None:
    """RandColourJitter (prob 1): 1 channel becomes a 3-channel tint, 3 stay 3; finite and in [0, 1]."""
    assert tuple(out.shape) == (3, *img.shape[1:])
    values = as_numpy(out)
    assert np.isfinite(values).all()
    assert values.min() >= 0.0 and values.max() <= 1.0


@fuzz(30)
@given(img=unit_images(), seed=st.integers(0, 2**31 - 1), min_gain=st.floats(1e-6, 1.0),
       max_gamma=st.floats(1.0, 10.0))
def test_colour_jitter_recolours_within_unit_range(img, seed, min_gain, max_gamma):
    t = RandColourJitter(prob=1.0, min_gain=min_gain, max_gamma=max_gamma)
    t.set_random_state(seed)
    check_recoloured(t(img), img)


@fuzz(15)
@given(img=unit_images(), seed=st.integers(0, 2**31 - 1))
def test_colour_jitter_dict_same_recolouring_for_every_key(img, seed):
    twin = img.copy() if isinstance(img, np.ndarray) else img.clone()
    t = RandColourJitterd(keys=("image", "twin"), prob=1.0)
    t.set_random_state(seed)
    out = t({"image": img, "twin": twin})
    check_recoloured(out["image"], img)
    np.testing.assert_array_equal(as_numpy(out["twin"]), as_numpy(out["image"]))


@fuzz(30)
@given(img=unit_images(channels=(3,)), seed=st.integers(0, 2**31 - 1), max_gain=st.floats(0.0, 0.99),
       max_shift=st.floats(0.0, 5.0))
def test_stain_jitter_restains_within_unit_range(img, seed, max_gain, max_shift):
    """RandStainJitter (prob 1) on black, white and subnormal pixels: finite, in [0, 1], same shape."""
    t = RandStainJitter(prob=1.0, max_gain=max_gain, max_shift=max_shift, swap_prob=0.5)
    t.set_random_state(seed)
    out = t(img)
    assert tuple(out.shape) == tuple(img.shape)
    values = as_numpy(out)
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0


# ---------------------------------------------------------------- IntensityPolicy

POLICY_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32]
F32_LIMIT = float(np.float32(1e36))  # beyond ~1.7e38 on both sides the float32 difference x - low overflows


@st.composite
def scanner_images(draw, dtypes=POLICY_DTYPES):
    """Raw scanner-like images: constant, full-range, negative, spiky (outliers beyond the percentile window)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = (draw(st.sampled_from([1, 3])), *draw(spatial_shapes(max_side=24)))
    if dtype.kind == "f":
        lo, hi = -F32_LIMIT, F32_LIMIT
        value = st.floats(lo, hi, width=32)
    else:
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        value = st.integers(lo, hi)
    a, b = sorted((draw(value), draw(value)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["range", "full", "constant", "spiky"]))
    if fill == "constant":
        arr = np.full(shape, a, dtype=np.float64)
    elif fill == "full":
        arr = rng.uniform(lo, hi, shape)
    else:
        arr = rng.uniform(a, b, shape)
    if fill == "spiky":  # a band (maybe very narrow) plus a few extreme pixels beyond the percentile window
        arr = np.where(rng.random(shape) < 0.004, rng.choice([lo, hi], shape), arr)
    arr = np.clip(np.round(arr) if dtype.kind != "f" else arr, lo, hi).astype(dtype)
    return arr


def policies():
    """Percentile or fixed-window policies with valid arguments."""
    percentiles = st.tuples(st.floats(0.0, 49.0), st.floats(51.0, 100.0))
    window = st.tuples(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6)).map(lambda lw: (lw[0], lw[0] + lw[1]))
    return st.one_of(
        percentiles.map(lambda p: {"lower": p[0], "upper": p[1]}),
        st.just({}),
        window.map(lambda w: {"window": w}),
    )


def expected_display(stretched: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The documented display inverse: absolute [0, 1] kept, written in the integer dtype's full range."""
    unit = np.clip(stretched.astype(np.float64), 0.0, 1.0)
    if dtype.kind == "f":
        return unit.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(unit * info.max), info.min, info.max).astype(dtype)


def check_round_trip(img: np.ndarray, stretched, back, info: dict) -> None:
    """Quantitative: the input back to its precision (integers exactly); display: the documented mapping."""
    stretched, back = as_numpy(stretched).astype(np.float64), as_numpy(back)
    assert back.dtype == img.dtype and back.shape == img.shape
    if info["mode"] == "display":
        np.testing.assert_array_equal(back, expected_display(stretched, img.dtype))
        return
    if img.dtype.kind in "iu":
        assert np.isfinite(stretched).all()
        np.testing.assert_array_equal(back, img)
        return
    # float32: a float32 stretch, so a value is +-inf only where the exact stretch exceeds float32's range
    # (pixels far outside a very narrow window); every other value comes back to float32 precision
    x, low, high = img.astype(np.float64), info["low"], info["high"]
    exact = (x - low) / (high - low) if high > low else x - low
    limit = float(np.finfo(np.float32).max)
    assert np.isfinite(stretched)[np.abs(exact) < 0.999 * limit].all()
    assert not np.isfinite(stretched)[np.abs(exact) > 1.001 * limit].any()
    kept = np.isfinite(stretched)
    tolerance = 8 * np.finfo(np.float32).eps * (np.abs(x) + abs(low) + abs(high))
    assert (np.abs(back.astype(np.float64) - x) <= tolerance)[kept].all()


@fuzz(100)
@given(img=scanner_images(), kwargs=policies(), mode=st.sampled_from(["quantitative", "display", "auto"]),
       container=st.sampled_from(["numpy", "torch", "meta"]))
def test_policy_forward_inverse_round_trip(img, kwargs, mode, container):
    policy = IntensityPolicy(mode=mode, **kwargs)
    stretched = policy(in_container(img, container))
    info = dict(policy.last_info)
    assert info["mode"] == (mode if mode != "auto" else ("display" if img.dtype == np.uint8 else "quantitative"))
    assert as_numpy(stretched).dtype == (np.float64 if img.dtype == np.int32 else np.float32)
    check_round_trip(img, stretched, policy.inverse(stretched), info)


@fuzz(40)
@given(image=scanner_images(), other=scanner_images(), kwargs=policies(),
       mode=st.sampled_from(["quantitative", "display"]), container=st.sampled_from(["numpy", "torch", "meta"]))
def test_policy_dict_inverts_every_key_with_its_own_range(image, other, kwargs, mode, container):
    t = IntensityPolicyd(keys=("image", "other"), mode=mode, **kwargs)
    out = t({"image": in_container(image, container), "other": in_container(other, container)})
    infos = {}
    for key in ("image", "other"):  # each key's own stretch, as the array transform computes it
        policy = IntensityPolicy(mode=mode, **kwargs)
        np.testing.assert_array_equal(as_numpy(out[key]), as_numpy(policy(image if key == "image" else other)))
        infos[key] = policy.last_info
    back = t.inverse(out)
    check_round_trip(image, out["image"], back["image"], infos["image"])
    check_round_trip(other, out["other"], back["other"], infos["other"])


@fuzz(40)
@given(lower=st.floats(-10.0, 110.0), upper=st.floats(-10.0, 110.0),
       window=st.none() | st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
       mode=st.sampled_from(["quantitative", "display", "auto", "linear", ""]))
def test_policy_arguments_valid_or_value_error(lower, upper, window, mode):
    valid = mode in ("quantitative", "display", "auto") and 0 <= lower < upper <= 100
    valid = valid and (window is None or window[1] > window[0])
    if valid:
        IntensityPolicy(lower=lower, upper=upper, window=window, mode=mode)
    else:
        with pytest.raises(ValueError):
            IntensityPolicy(lower=lower, upper=upper, window=window, mode=mode)


@fuzz(15)
@given(shape=spatial_shapes(max_side=8), fill=st.sampled_from([np.nan, np.inf, -np.inf]),
       container=st.sampled_from(["numpy", "torch"]))
def test_policy_without_finite_values_raises_value_error(shape, fill, container):
    img = in_container(np.full((1, *shape), fill, dtype=np.float32), container)
    with pytest.raises(ValueError, match="no finite values"):
        IntensityPolicy()(img)


def test_policy_inverse_before_any_call_raises_runtime_error():
    with pytest.raises(RuntimeError, match="nothing to invert"):
        IntensityPolicy().inverse(np.zeros((1, 4, 4), np.float32))


# ---------------------------------------------------------------- SliceWiseInferer

MAX_VOXELS = 3000  # per channel and item: one side may reach 300 while the others stay small


@pytest.fixture(scope="module")
def tiny_net() -> torch.nn.Module:
    """A small random DPENet with the bundle's layout (RGB in and out, no output activation)."""
    torch.manual_seed(3)
    return DPENet(spatial_dims=2, in_channels=3, out_channels=3, channels=(4, 8, 8), output_act=None).eval()


@st.composite
def inferer_inputs(draw, channels=(1, 3)):
    """(B, C, H, W) or (B, C, X, Y, Z) in float16/32/64 with finite values, some far outside [0, 1]."""
    spatial = draw(spatial_shapes(max_side=300, budget=MAX_VOXELS))
    shape = (draw(st.integers(1, 2)), draw(st.sampled_from(channels)), *spatial)
    dtype = draw(st.sampled_from([torch.float16, torch.float32, torch.float64]))
    big = float(torch.finfo(dtype).max)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["unit", "constant", "wide", "extreme"]))
    if fill == "unit":
        arr = rng.random(shape)
    elif fill == "constant":
        arr = np.full(shape, draw(st.floats(-big, big)))
    elif fill == "wide":
        arr = rng.uniform(-1e3, 1e3, shape)
    else:
        arr = rng.choice([-big, -1.0, 0.0, 0.5, 1.0, big], shape)
    x = torch.from_numpy(arr).to(dtype)
    return MetaTensor(x) if draw(st.booleans()) else x


@fuzz(40)
@given(x=inferer_inputs(), spatial_dim=st.sampled_from([-1, 0, 1, 2]), sw_batch_size=st.integers(1, 9))
def test_slice_inferer_keeps_shape_and_never_makes_nan(tiny_net, x, spatial_dim, sw_batch_size):
    inferer = SliceWiseInferer(spatial_dim=spatial_dim, sw_batch_size=sw_batch_size, network_wrapper=ChannelAdapter)
    with torch.no_grad():
        out = inferer(x, tiny_net)
    assert tuple(out.shape) == tuple(x.shape)
    assert out.dtype == torch.float32  # the network's dtype
    assert isinstance(out, MetaTensor) == isinstance(x, MetaTensor)
    assert not torch.isnan(out).any()
    representable = x.float().isfinite()  # float64 beyond float32's range becomes +-inf on the way in
    assert out[representable].isfinite().all()


@fuzz(25)
@given(ndim=st.sampled_from([2, 3, 4, 5, 6]), channels=st.integers(1, 5), data=st.data())
def test_slice_inferer_rejects_only_with_documented_errors(tiny_net, ndim, channels, data):
    spatial = data.draw(st.lists(st.integers(1, 9), min_size=ndim - 2, max_size=ndim - 2), label="spatial")
    x = torch.rand(1, channels, *spatial)
    inferer = SliceWiseInferer(network_wrapper=ChannelAdapter)
    if ndim not in (4, 5):
        with pytest.raises(ValueError, match="SliceWiseInferer takes"):
            inferer(x, tiny_net)
    elif channels == 5:
        with pytest.raises(ValueError, match="channels"):
            inferer(x, tiny_net)
    else:  # grey, grey + alpha, RGB, RGBA: the alpha channel passes through untouched
        with torch.no_grad():
            out = inferer(x, tiny_net)
        assert out.shape == x.shape and out.isfinite().all()
        if channels in (2, 4):
            torch.testing.assert_close(out[:, -1], x[:, -1], rtol=0, atol=0)
