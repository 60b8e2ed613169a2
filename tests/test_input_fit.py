"""Tests for the blend of the network's output with the global affine fit of its input (monai_dpe.transforms.input_fit)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import AFFINE, BUNDLE, TINY_CHANNELS, reference_wiener, smooth, tiny_weights
from monai_dpe.transforms import (BlendInputFit, BlendInputFitd, input_fit, input_noise, is_colour, level_weight,
                                  line_within_range, noise_weight)


def _pair(seed: int = 0, shape=(3, 40, 36)) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    image = torch.as_tensor(rng.random(shape), dtype=torch.float32)
    pred = torch.as_tensor(0.7 * image.numpy() + 0.2 + 0.05 * rng.standard_normal(shape), dtype=torch.float32)
    return image, pred


def test_input_fit_is_the_least_squares_line_over_all_channels():
    image, pred = _pair()
    slope, offset = np.polyfit(image.numpy().ravel().astype(np.float64), pred.numpy().ravel().astype(np.float64), 1)
    assert input_fit(image, pred) == pytest.approx((slope, offset), rel=1e-6)
    assert input_fit(torch.full((1, 8, 8), 0.3), pred[:1, :8, :8]) == pytest.approx((0.0, float(pred[:1, :8, :8].mean())))


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_blend_mixes_the_output_with_the_fitted_input(weight):
    image, pred = _pair(1)
    slope, offset = input_fit(image, pred)
    expected = weight * pred + (1 - weight) * (slope * image + offset)
    blended = BlendInputFit(network_weight=weight)(pred.clone(), image)
    torch.testing.assert_close(blended, expected, atol=1e-6, rtol=0)


def test_an_output_that_is_an_affine_map_of_its_input_is_kept():
    """What the blend takes from the network is exactly its global level and contrast."""
    image, _ = _pair(2)
    pred = 1.8 * image - 0.3
    torch.testing.assert_close(BlendInputFit(network_weight=0.0)(pred.clone(), image), pred, atol=1e-5, rtol=0)


@pytest.mark.parametrize("slice_axis", [0, 1, -1])
def test_a_volume_is_fitted_slice_by_slice_along_its_slice_axis(slice_axis):
    """Each slice has its own level, as the slice-wise network gives it; one fit per volume would mix them."""
    rng = np.random.default_rng(3)
    image = torch.as_tensor(rng.random((1, 6, 7, 8)), dtype=torch.float32)
    axis = 1 + slice_axis % 3
    gains = torch.linspace(0.5, 2.0, image.shape[axis])
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    pred = image * gains.reshape(shape) + 0.1
    torch.testing.assert_close(BlendInputFit(0.0, slice_axis=slice_axis)(pred.clone(), image), pred, atol=1e-5, rtol=0)
    whole = BlendInputFit(0.0, slice_axis=(slice_axis + 1) % 3)(pred.clone(), image)
    assert float((whole - pred).abs().max()) > 0.05, "fitting along another axis differs: the axis is honoured"


def test_bad_arguments_are_refused():
    image, pred = _pair()
    with pytest.raises(ValueError, match="network_weight"):
        BlendInputFit(network_weight=1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        BlendInputFit(0.5)(pred, image[:1])


def test_dictionary_form_blends_pred_with_the_item_image():
    image, pred = _pair(4)
    out = BlendInputFitd("pred", image_key="image", network_weight=0.5)({"image": image, "pred": pred.clone()})
    torch.testing.assert_close(out["pred"], BlendInputFit(0.5)(pred.clone(), image))
    assert out["image"] is image


def test_dictionary_form_applies_a_given_blend_in_place_of_its_settings():
    image, pred = _pair(4)
    blend = BlendInputFit(network_weight=0.25)
    transform = BlendInputFitd("pred", network_weight=1.0, blend=blend)  # the given blend wins over the settings
    assert transform.blend is blend
    torch.testing.assert_close(transform({"image": image, "pred": pred.clone()})["pred"], blend(pred.clone(), image))


def test_inference_bundle_blends_before_inverting_the_intensity_policy(tmp_path):
    """inference.json's ``network_share``: 0 gives an output that is an affine map of the stretched input, slice by slice."""
    from monai.bundle import ConfigParser

    volume = (smooth((32, 28, 4), np.random.default_rng(5)) * 3000 + 100).astype(np.int16)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), path)
    outputs = {}
    for share in (1.0, 0.0):
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / "inference.json"))
        parser.update({"bundle_root": str(BUNDLE), "weights_path": str(tiny_weights(tmp_path / "tiny.pt")),
                       "channels": list(TINY_CHANNELS), "device": "cpu", "progress": False, "network_share": share})
        item = parser.get_parsed_content("preprocessing")({"image": str(path)})
        with torch.inference_mode():  # as the engine makes it: postprocessing then runs outside inference mode
            item["pred"] = parser.get_parsed_content("inferer")(item["image"][None], parser.get_parsed_content("network"))[0]
        outputs[share] = np.asarray(parser.get_parsed_content("postprocessing")(item)["pred"], dtype=np.float64)[0]
    def worst_correlation(out):
        return min(abs(np.corrcoef(out[..., z].ravel(), volume[..., z].ravel())[0, 1]) for z in range(volume.shape[-1]))

    assert worst_correlation(outputs[0.0]) > 0.9999
    assert worst_correlation(outputs[1.0]) < 0.999, "the network alone is no affine map of its input"


def test_validation_evaluation_and_inference_blend_alike():
    """The share validation chose is the share users get: train.json (validation, evaluate.json) and inference.json agree."""
    from monai.bundle import ConfigParser

    shares = []
    for name in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / name))
        parser["bundle_root"] = str(BUNDLE)
        blend = parser.get_parsed_content("blend")  # the one blend each config's postprocessing applies
        assert parser.get_parsed_content("validate#postprocessing" if name == "train.json" else "postprocessing"
                                         ).transforms[0].blend is blend
        shares.append((blend.network_weight, blend.noise_range, blend.level_range, blend.wiener_noise_scale,
                       blend.level_prior_weight, blend.level_prior is not None))
    assert shares[0] == shares[1] == (None, (0.015, 0.02), (0.55, 0.56), 0.2, 0.5, True)


def test_input_noise_reads_known_noise_and_a_volume_takes_the_median_of_its_slices():
    """A flat image with gaussian noise of known strength reads as that strength; a volume whose slices
    differ in noise gets one value (every slice of it is blended alike)."""
    rng = np.random.default_rng(7)
    image = torch.as_tensor(0.5 + 0.02 * rng.standard_normal((3, 128, 128)), dtype=torch.float32)
    assert input_noise(image) == pytest.approx(0.02 / np.sqrt(3), rel=0.1), "the channel mean's noise"
    sigmas = np.linspace(0.01, 0.05, 5)
    volume = torch.as_tensor(0.5 + sigmas * rng.standard_normal((1, 96, 96, 5)), dtype=torch.float32)
    assert input_noise(volume) == pytest.approx(0.03, rel=0.1)
    along_first = volume.permute(0, 3, 1, 2).contiguous()
    assert input_noise(along_first, slice_axis=0) == pytest.approx(input_noise(volume), rel=1e-6)


def test_blank_pictures_and_flat_backgrounds_read_no_noise_and_never_make_nan():
    """A black image, a volume with blank end slices and a flat white background: the estimate looks only at
    the blocks that vary, so none gives NaN and a flat area at any value does not dilute the noise."""
    rng = np.random.default_rng(9)
    assert input_noise(torch.zeros(3, 32, 32)) == 0.0
    blend = BlendInputFit(network_weight=None, noise_range=(0.01, 0.02))
    assert torch.isfinite(blend(torch.rand(3, 32, 32), torch.zeros(3, 32, 32))).all()
    volume = torch.as_tensor(0.5 + 0.03 * rng.standard_normal((1, 64, 64, 12)), dtype=torch.float32)
    volume[..., :3] = 0.0
    assert input_noise(volume) == pytest.approx(0.03, rel=0.1)
    assert torch.isfinite(blend(torch.rand_like(volume), volume)).all()
    noisy = 0.3 + 0.03 * rng.standard_normal((64, 64))
    backgrounds = []
    for value in (0.0, 1.0):
        picture = np.full((64, 128), value)
        picture[:, :64] = noisy
        backgrounds.append(input_noise(torch.as_tensor(picture)[None]))
    assert backgrounds[0] == backgrounds[1] == pytest.approx(0.03, rel=0.1)


def test_input_noise_refuses_tensors_without_a_channel_axis():
    with pytest.raises(ValueError, match="channel-first"):
        input_noise(torch.rand(16, 16))


@pytest.mark.parametrize("sigma, weight", [(0.0, 0.0), (0.01, 0.0), (0.0125, 0.25), (0.015, 0.5), (0.02, 1.0), (0.3, 1.0)])
def test_noise_weight_ramps_from_the_input_to_the_network(sigma, weight):
    assert noise_weight(sigma, (0.01, 0.02)) == pytest.approx(weight)


def test_the_share_follows_the_noise_clean_inputs_keep_their_detail_noisy_ones_take_the_network():
    rng = np.random.default_rng(8)
    ramp = np.indices((64, 64)).sum(0)[None] / 126.0
    clean = torch.as_tensor(ramp, dtype=torch.float32)
    noisy = clean + 0.05 * torch.as_tensor(rng.standard_normal(clean.shape), dtype=torch.float32)
    pred = torch.as_tensor(smooth((1, 64, 64), rng), dtype=torch.float32)
    blend = BlendInputFit(network_weight=None, noise_range=(0.01, 0.02))
    torch.testing.assert_close(blend(pred.clone(), noisy), pred, msg="a noisy input takes the network's output as it is")
    torch.testing.assert_close(blend(pred.clone(), clean), BlendInputFit(0.0)(pred.clone(), clean))
    fixed = BlendInputFit(network_weight=0.4, noise_range=(0.01, 0.02))
    assert fixed.weight(noisy) == fixed.weight(clean) == 0.4, "a fixed share wins over the noise range"


def test_a_noise_share_needs_a_valid_range():
    for bad in (None, (0.02, 0.01), (-0.1, 0.1), (0.01,), 0.5, (0.01, 0.01)):
        with pytest.raises(ValueError, match="noise_range"):
            BlendInputFit(network_weight=None, noise_range=bad)


@pytest.mark.parametrize("level, weight", [
    ((1.0, 0.0, 0.5), 0.0), ((1.0, 0.1, 0.6), 0.0), ((1.0, 0.1, 0.625), 0.5), ((1.0, 0.0, 0.65), 1.0),
    ((1.0, 0.2, 1.0), 1.0), ((0.0, 0.0, 1.0), 1.0), (None, 0.0)])
def test_level_weight_keeps_the_level_of_well_exposed_display_and_quantitative_images(level, weight):
    """A quantitative image (display 0) keeps its units' level; a dark display image takes the network's."""
    assert level_weight(level, (0.6, 0.65)) == pytest.approx(weight)
    assert level_weight(level, None) == 0.0


def test_a_well_exposed_display_image_keeps_its_own_level_and_the_networks_detail():
    """With the level kept, the output is the input un-stretched plus the share of detail the network changed."""
    image, pred = _pair(9)
    low, high = 0.05, 0.9
    own = low + (high - low) * image
    slope, offset = input_fit(image, pred)
    for share in (0.0, 0.4, 1.0):
        kept = BlendInputFit(share, level_range=(0.6, 0.65))(pred.clone(), image, torch.tensor([[1.0, low, high]]))
        torch.testing.assert_close(kept, own + share * (pred - slope * image - offset), atol=1e-5, rtol=0)
    dark = BlendInputFit(0.4, level_range=(0.6, 0.65))(pred.clone(), image, (1.0, 0.05, 0.3))
    torch.testing.assert_close(dark, BlendInputFit(0.4)(pred.clone(), image), msg="a dark input takes the network's level")
    halfway = BlendInputFit(0.0, level_range=(0.6, 0.7))(pred.clone(), image, (1.0, low, 0.65))
    own_halfway = low + (0.65 - low) * image
    torch.testing.assert_close(halfway, 0.5 * own_halfway + 0.5 * (slope * image + offset), atol=1e-5, rtol=0)


def test_dictionary_form_reads_the_level_from_the_item_or_else_from_the_image_meta():
    from monai.data import MetaTensor

    from monai_dpe.transforms import LEVEL_META_KEY

    image, pred = _pair(10)
    level = torch.tensor([1.0, 0.1, 0.95])
    expected = BlendInputFit(0.0, level_range=(0.6, 0.65))(pred.clone(), image, level)
    blend = BlendInputFitd("pred", network_weight=0.0, level_range=(0.6, 0.65))
    torch.testing.assert_close(blend({"image": image, "pred": pred.clone(), "level": level})["pred"], expected)
    traced = MetaTensor(image.clone(), meta={LEVEL_META_KEY: level})
    torch.testing.assert_close(torch.as_tensor(blend({"image": traced, "pred": pred.clone()})["pred"]), expected)
    untold = blend({"image": image, "pred": pred.clone()})["pred"]
    torch.testing.assert_close(untold, BlendInputFit(0.0)(pred.clone(), image), msg="no level: the network's")


def test_a_level_range_must_be_valid_and_a_level_has_three_values():
    image, pred = _pair()
    for bad in ((0.7, 0.6), (0.6,), "high"):
        with pytest.raises(ValueError, match="level_range"):
            BlendInputFit(0.5, level_range=bad)
    with pytest.raises(ValueError, match="display, low, high"):
        BlendInputFit(0.5, level_range=(0.6, 0.65))(pred, image, (1.0, 0.9))


def test_is_colour_tells_colour_from_grey_replicated_to_rgb():
    image, _ = _pair(12)
    assert is_colour(image)
    assert not is_colour(image[:1].repeat(3, 1, 1)), "grey replicated to RGB, as the network takes it, is grey"
    assert not is_colour(image[:1])
    volume = torch.rand(1, 4, 5, 6).repeat(3, 1, 1, 1)
    volume[2, -1, -1, -1] += 0.5  # one voxel of one channel differs: colour
    assert is_colour(volume)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_a_colour_input_takes_the_share_of_its_level_from_its_stretch(share):
    """The fit line moves from the network's ``(a, b)`` toward ``(1, 0)``: the input's own stretched frame."""
    image, pred = _pair(13)
    slope, offset = input_fit(image, pred)
    line = ((1 - share) * slope + share) * image + (1 - share) * offset
    for weight in (0.0, 0.4):
        blended = BlendInputFit(weight, colour_stretch_share=share)(pred.clone(), image)
        expected = weight * (pred - slope * image - offset) + line
        torch.testing.assert_close(blended, expected, atol=1e-5, rtol=0)
    wiener = BlendInputFit(None, wiener_noise_scale=0.5, colour_stretch_share=share)(pred.clone(), image)
    filtered = BlendInputFit(None, wiener_noise_scale=0.5)(pred.clone(), image)  # the network's line: (a, b)
    gain = (1 - share) * slope + share
    expected = ((filtered - offset) / slope) * gain + (1 - share) * offset  # same filtered input, other line
    torch.testing.assert_close(wiener, expected, atol=1e-4, rtol=0)
    unblended = BlendInputFit(1.0, colour_stretch_share=share)(pred.clone(), image)
    torch.testing.assert_close(unblended, pred - slope * image - offset + line, atol=1e-5, rtol=0)


def test_grey_inputs_and_inputs_keeping_their_own_level_ignore_the_colour_share():
    image, pred = _pair(14)
    grey = image[:1].repeat(3, 1, 1)
    torch.testing.assert_close(BlendInputFit(0.4, colour_stretch_share=1.0)(pred.clone(), grey),
                               BlendInputFit(0.4)(pred.clone(), grey))
    level = (1.0, 0.05, 0.9)  # a well-exposed display image keeps its own level, whatever its colour
    kept = BlendInputFit(0.4, level_range=(0.6, 0.65), colour_stretch_share=1.0)(pred.clone(), image, level)
    torch.testing.assert_close(kept, BlendInputFit(0.4, level_range=(0.6, 0.65))(pred.clone(), image, level))
    with pytest.raises(ValueError, match="colour_stretch_share"):
        BlendInputFit(0.4, colour_stretch_share=1.5)
    transform = BlendInputFitd("pred", network_weight=0.4, colour_stretch_share=0.5)
    torch.testing.assert_close(transform({"image": image, "pred": pred.clone()})["pred"],
                               BlendInputFit(0.4, colour_stretch_share=0.5)(pred.clone(), image))


# ------------------------------------------------------------------------------------------- Wiener detail


def test_wiener_detail_filters_the_fit_with_the_output_as_pilot_and_keeps_the_level_rule():
    """With ``wiener_noise_scale`` the output is the fit Wiener-filtered (pilot: the network's output) for
    ``scale * |a| * input_noise``, plus the own-level term; checked against the patch-by-patch reference."""
    rng = np.random.default_rng(11)
    clean = smooth((3, 48, 40), rng)
    image = torch.as_tensor(clean + 0.03 * rng.standard_normal(clean.shape), dtype=torch.float32)
    pred = torch.as_tensor(0.8 * clean + 0.1, dtype=torch.float32)
    slope, offset = input_fit(image, pred)
    fitted = (slope * image + offset).numpy().astype(np.float64)
    expected = reference_wiener(fitted, pred.numpy().astype(np.float64), 0.5 * abs(slope) * input_noise(image))
    out = BlendInputFit(network_weight=None, wiener_noise_scale=0.5)(pred.clone(), image)
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)
    # a well-exposed display image: its own line applied to the input filtered in its own units
    filtered = reference_wiener(image.numpy().astype(np.float64), (pred.numpy().astype(np.float64) - offset) / slope,
                                0.5 * input_noise(image))
    level = (1.0, 0.1, 0.9)
    own = BlendInputFit(network_weight=None, wiener_noise_scale=0.5, level_range=(0.55, 0.56))(pred.clone(), image, level)
    np.testing.assert_allclose(own.numpy(), 0.1 + 0.8 * filtered, atol=2e-5)


def test_own_level_keeps_the_noise_the_filter_removes_whatever_the_fits_slope():
    """The filter removes the same noise from a well-exposed image whether the network stretched,
    kept or inverted the input's contrast: it works in the input's units and the own line follows."""
    rng = np.random.default_rng(5)
    rows, columns = np.mgrid[0:128, 0:128]
    clean = (0.5 + 0.3 * np.sin(rows / 9.0) * np.cos(columns / 13.0))[None]
    image = torch.as_tensor(clean + 0.05 * rng.standard_normal(clean.shape), dtype=torch.float32)
    residuals = []
    for slope in (0.8, 1.6, -0.8):
        pred = torch.as_tensor(slope * clean + 0.2, dtype=torch.float32)
        out = BlendInputFit(None, wiener_noise_scale=1.0, level_range=(0.55, 0.56))(pred, image, (1.0, 0.1, 0.9))
        residuals.append(float(np.std(out.numpy() - (0.1 + 0.8 * clean))))
    assert max(residuals) < 0.015 and max(residuals) - min(residuals) < 0.002, residuals


def test_wiener_detail_on_a_noise_free_input_is_the_inputs_own():
    """A linear ramp reads no noise: nothing is shrunk, and the output is the fit, as with a share of 0."""
    ramp = torch.linspace(0.1, 0.9, 32 * 24).reshape(1, 32, 24).repeat(3, 1, 1)
    pred = torch.rand(3, 32, 24)
    assert input_noise(ramp) == 0.0
    torch.testing.assert_close(BlendInputFit(network_weight=None, wiener_noise_scale=0.5)(pred.clone(), ramp),
                               BlendInputFit(0.0)(pred.clone(), ramp), atol=1e-5, rtol=0)


def test_wiener_detail_removes_noise_that_the_pilot_does_not_hold():
    """A noisy smooth image with a clean pilot comes back much closer to the clean image than it went in."""
    rng = np.random.default_rng(12)
    rows, columns = np.mgrid[0:96, 0:96]
    clean = (0.5 + 0.3 * np.sin(rows / 9.0) * np.cos(columns / 13.0))[None]
    image = torch.as_tensor(clean + 0.04 * rng.standard_normal(clean.shape), dtype=torch.float32)
    out = BlendInputFit(network_weight=None, wiener_noise_scale=1.0)(torch.as_tensor(clean, dtype=torch.float32), image)
    slope, offset = input_fit(image, torch.as_tensor(clean, dtype=torch.float32))
    before = float(np.mean((slope * image.numpy() + offset - clean) ** 2))
    after = float(np.mean((out.numpy() - clean) ** 2))
    assert after < before / 4


def test_a_volume_is_wiener_filtered_slice_by_slice_with_one_noise_for_the_whole_volume():
    rng = np.random.default_rng(13)
    image = torch.as_tensor(rng.random((1, 24, 20, 4)), dtype=torch.float32)
    pred = torch.as_tensor(0.5 * image.numpy() + 0.02 * rng.standard_normal(image.shape), dtype=torch.float32)
    blend = BlendInputFit(network_weight=None, wiener_noise_scale=0.5)
    volume_out = blend(pred.clone(), image)
    sigma = 0.5 * input_noise(image)
    for index in range(4):
        img, prd = image[..., index], pred[..., index]
        slope, offset = input_fit(img, prd)
        expected = reference_wiener((slope * img + offset).numpy().astype(np.float64), prd.numpy().astype(np.float64),
                                    abs(slope) * sigma)
        np.testing.assert_allclose(volume_out[..., index].numpy(), expected, atol=2e-5)


def test_a_fixed_share_wins_over_the_wiener_detail_and_a_bad_scale_is_refused():
    image, pred = _pair(14)
    fixed = BlendInputFit(network_weight=0.3, wiener_noise_scale=0.5)
    torch.testing.assert_close(fixed(pred.clone(), image), BlendInputFit(0.3)(pred.clone(), image))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="wiener_noise_scale"):
            BlendInputFit(network_weight=None, wiener_noise_scale=bad)
    assert BlendInputFit(network_weight=None, wiener_noise_scale=0.5, noise_range=(0.01, 0.02)).weight(image) is None


def test_an_output_unrelated_to_the_input_gives_no_pilot_and_no_nan():
    """A flat output (fit slope 0) cannot be mapped onto the input's units as a pilot: the input is
    left unfiltered and the output is the fit's constant, never NaN."""
    image = torch.rand(1, 32, 32)
    pred = torch.full((1, 32, 32), 0.4)
    out = BlendInputFit(network_weight=None, wiener_noise_scale=0.5)(pred.clone(), image)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(out, 0.4), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ the line within range
def _mse(image: torch.Tensor, line: tuple[float, float], other: tuple[float, float]) -> float:
    x = image.double()
    return float(((line[0] - other[0]) * x + (line[1] - other[1])).square().mean())


def _inside(image: torch.Tensor, line: tuple[float, float], margin: float = 0.0) -> bool:
    low, high = float(image.min()) + margin, float(image.max()) - margin
    ends = (line[0] * low + line[1], line[0] * high + line[1])
    return min(ends) >= -1e-9 and max(ends) <= 1.0 + 1e-9


def test_a_line_within_range_is_kept_and_one_past_white_or_black_is_brought_in():
    image = torch.linspace(0.0, 1.0, 400).reshape(1, 20, 20)
    assert line_within_range(image, 0.6, 0.2) == (0.6, 0.2)
    for line in ((1.5, 0.0), (1.0, -0.3), (0.4, 0.8)):
        moved = line_within_range(image, *line)
        assert _inside(image, moved) and moved != line
        assert abs(max(moved[0] * 0.0 + moved[1], moved[0] + moved[1]) - 1.0) < 1e-9 or abs(moved[1]) < 1e-9


def test_the_line_brought_in_is_the_nearest_in_mean_squared_difference():
    """Against a brute-force search over lines that keep the range in [0, 1]."""
    rng = np.random.default_rng(3)
    image = torch.as_tensor(rng.random((2, 16, 16)) * 0.8 + 0.1)
    gains, constants = np.meshgrid(np.linspace(-2.0, 2.0, 801), np.linspace(-1.0, 2.0, 601))
    low, high = float(image.min()), float(image.max())
    feasible = (np.minimum(gains * low, gains * high) + constants >= 0) & (np.maximum(gains * low, gains * high)
                                                                          + constants <= 1)
    x = image.double().numpy()
    mean, second = x.mean(), (x * x).mean()
    for line in ((1.8, -0.2), (0.5, -0.3), (1.2, 0.3), (3.0, -1.0), (-1.0, 0.3), (1.0, -3.0), (-0.5, 1.4)):
        moved = line_within_range(image, *line)
        assert line_within_range(list(image), *line) == pytest.approx(moved)  # its channels as a sequence
        dg, dc = gains - line[0], constants - line[1]
        grid = dg * dg * second + 2 * dg * dc * mean + dc * dc  # mean squared difference of each grid line
        assert _inside(image, moved)
        assert _mse(image, moved, line) <= grid[feasible].min() + 1e-9


def test_bringing_the_line_in_never_moves_it_away_from_a_true_line_within_range():
    """The lines that keep the range in [0, 1] are convex, so the nearest one is no farther from any of them."""
    rng = np.random.default_rng(8)
    image = torch.as_tensor(rng.random((1, 24, 24)))
    for _ in range(200):
        truth = (rng.uniform(0.2, 1.0), 0.0)
        truth = (truth[0], rng.uniform(0.0, 1.0 - truth[0]))
        guess = (rng.uniform(-3.0, 3.0), rng.uniform(-1.0, 2.0))
        moved = line_within_range(image, *guess)
        assert _inside(image, moved)
        assert _mse(image, moved, truth) <= _mse(image, guess, truth) + 1e-12


def test_the_margin_leaves_lines_that_clip_only_noise_and_a_flat_image_keeps_its_mean_in_range():
    image = torch.linspace(0.0, 1.0, 400).reshape(1, 20, 20)
    assert line_within_range(image, 1.1, -0.05, margin=0.1) == (1.1, -0.05)  # 0.1 -> 0.06, 0.9 -> 0.94
    assert line_within_range(image, 1.1, -0.05) != (1.1, -0.05)
    flat = torch.full((3, 8, 8), 0.4)
    gain, constant = line_within_range(flat, 2.0, 0.5)
    assert gain == 2.0 and abs(gain * float(flat.double().mean()) + constant - 1.0) < 1e-9


def test_the_blend_keeps_what_the_input_resolves_inside_the_displayable_range():
    """A network that stretches the contrast too far would clip the brightest part of the input; with
    ``range_margin`` the output is a line of the input that stays in [0, 1], so no detail is clipped."""
    rows, columns = np.mgrid[0:64, 0:64]
    image = torch.as_tensor((0.5 + 0.4 * np.sin(rows / 9.0) * np.cos(columns / 13.0))[None], dtype=torch.float32)
    clean = image.numpy()
    pred = torch.as_tensor(1.6 * clean - 0.1, dtype=torch.float32)
    plain = BlendInputFit(None, wiener_noise_scale=0.2)(pred.clone(), image)
    ranged = BlendInputFit(None, wiener_noise_scale=0.2, range_margin=2.0)(pred.clone(), image)
    margin = 2.0 * input_noise(image)  # the ends of the range left free: a few of the input's noise
    assert float(plain.max()) > 1.1 and float((plain > 1.0).float().mean()) > 0.05
    assert float(ranged.min()) > -2 * margin and float(ranged.max()) < 1.0 + 2 * margin
    assert float((ranged > 1.0).float().mean()) < 0.005
    slope, offset = input_fit(image, ranged)  # still a line of the (barely filtered) input
    np.testing.assert_allclose(ranged.numpy(), (slope * image + offset).numpy(), atol=2 * margin)


def test_a_quantitative_image_keeps_its_units_and_only_its_detail_is_filtered():
    """A quantitative image's output goes back to its own units: whatever level the network gives it, the line is
    the input's own, and a bright tail past the stretch's 1 (values above its 99.5th percentile) is not squeezed
    into [0, 1], which nothing clips when the output is written."""
    rows, columns = np.mgrid[0:64, 0:64]
    image = torch.as_tensor((0.6 + 0.6 * np.sin(rows / 9.0) * np.cos(columns / 13.0))[None], dtype=torch.float32)
    pred = 1.4 * image - 0.2  # a network that changes the level and contrast
    blend = BlendInputFit(None, wiener_noise_scale=0.2, level_range=(0.55, 0.56), range_margin=1.0)
    quantitative = blend(pred.clone(), image, (0.0, 0.0, 1.0))
    filtered = BlendInputFit(None, wiener_noise_scale=0.2)(image.clone(), image)  # the pilot is the input itself
    torch.testing.assert_close(quantitative, filtered, atol=1e-5, rtol=0)
    assert float(quantitative.max()) > 1.15
    # a display image of the same pixels is written in [0, 1]: its line keeps the range
    display = blend(pred.clone(), image, (1.0, 0.05, 0.3))
    assert float(display.max()) < 1.0 + 2 * input_noise(image)
    # with the network's level (--network-level) a quantitative image takes the network's line, unlimited
    network = BlendInputFit(None, wiener_noise_scale=0.2, range_margin=1.0)(pred.clone(), image, (0.0, 0.0, 1.0))
    torch.testing.assert_close(network, BlendInputFit(None, wiener_noise_scale=0.2)(pred.clone(), image))


def test_a_clean_8_bit_volume_comes_back_as_it_was(tmp_path):
    """The shipped bundle on a clean quantitative volume whose slices are brighter than the volume's range: each
    slice keeps its intensities (0.13.0 had squeezed such slices by a fifth and more: about 17 dB here). The
    volume is structure with a faint fine texture; a texture of strong i.i.d. noise is what the filter removes."""
    from monai.bundle import ConfigParser

    rows, columns, slices = np.indices((48, 40, 12))
    texture = 0.03 * np.random.default_rng(7).random(rows.shape)
    field = 0.5 + 0.3 * np.sin(rows / 4.0) * np.cos(columns / 6.0) + 0.15 * np.sin((rows + columns) / 9.0 + slices / 3.0)
    volume = ((field + texture) * 140 + 30).clip(0, 255)
    volume[..., 5:7] = (volume[..., 5:7] * 1.8).clip(0, 255)  # two bright slices: beyond the volume's 99.5th percentile
    volume = volume.round().astype(np.uint8)
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), path)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "device": "cpu", "progress": False})
    item = parser.get_parsed_content("preprocessing")({"image": str(path)})
    with torch.inference_mode():
        item["pred"] = parser.get_parsed_content("inferer")(item["image"][None], parser.get_parsed_content("network"))[0]
    out = np.asarray(parser.get_parsed_content("postprocessing")(item)["pred"], dtype=np.float64)[0]
    for z in range(volume.shape[-1]):
        error = np.mean((out[..., z] - volume[..., z]) ** 2)
        assert 10 * np.log10(255 ** 2 / max(error, 1e-12)) > 40, f"slice {z}"


def test_an_image_with_values_that_are_not_finite_keeps_its_line():
    """The blend does not hide a broken output: not-finite values go through as they came."""
    image = torch.tensor([[[float("nan"), 0.5], [0.2, 0.9]]])
    assert line_within_range(image, 2.0, 0.1) == (2.0, 0.1)
    assert line_within_range(torch.tensor([[[0.1, float("inf")]]]), 2.0, 0.1) == (2.0, 0.1)


def test_a_bad_range_margin_is_refused():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="range_margin"):
            BlendInputFit(None, wiener_noise_scale=0.2, range_margin=bad)
