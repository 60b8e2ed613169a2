"""Tests for the blend of the network's output with the global affine fit of its input (monai_dpe.transforms.input_fit)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import AFFINE, BUNDLE, TINY_CHANNELS, smooth, tiny_weights
from monai_dpe.transforms import BlendInputFit, BlendInputFitd, input_fit


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
        shares.append(parser["network_share"])
    assert shares[0] == shares[1]
