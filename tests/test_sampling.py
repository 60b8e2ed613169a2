"""Tests for the training-sample transforms: unit range, slicing (with per-slice re-stretch) and grey to RGB."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.data import MetaTensor
from pydicom.data import get_testdata_file

from monai_dpe.transforms import CenterSliced, GreyToRGB, LimitSize, RandSliced, UnitRange, UnitRanged
from monai_dpe.transforms.load import LoadDisplayImage
from monai_dpe.transforms.intensity_policy import robust_range


def graded_volume() -> torch.Tensor:
    """A (1, 40, 48, 30) volume whose slices along the last axis get brighter: slice k spans [k, k + 100]."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 40, 48, 1, generator=g) * 100.0
    return base + torch.arange(30, dtype=torch.float32).reshape(1, 1, 1, 30) * 50.0


def test_unit_range_8bit_is_absolute_and_others_are_percentile_stretched():
    """8-bit images keep their displayed brightness (x / 255); other dtypes map their robust range to [0, 1]."""
    dark = torch.full((1, 8, 8), 40, dtype=torch.uint8)
    dark[0, 0, 0] = 80
    assert torch.allclose(UnitRange()(dark), dark.float() / 255.0)
    ct = torch.linspace(-1000.0, 1000.0, 64 * 64).reshape(1, 64, 64)
    out = UnitRange()(ct)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    low, high = robust_range(ct, 0.5, 99.5)
    assert torch.allclose(out, ((ct - low) / (high - low)).clamp(0, 1))


def _eight_bit(name: str) -> MetaTensor:
    """A dim 8-bit picture (levels 10 to 200) read from a file called ``name``."""
    pixels = torch.linspace(10, 200, 16 * 16).round().to(torch.uint8).reshape(1, 16, 16)
    return MetaTensor(pixels, meta={"filename_or_obj": name})


@pytest.mark.parametrize("name, display_file, absolute", [
    ("slide.png", None, True),  # a photo or slide: displayed as stored
    ("volume.nii.gz", None, False),  # an 8-bit NIfTI volume is quantitative, as inference treats it
    ("volume.nii.gz", True, True),  # an 8-bit DICOM the corpus stored as NIfTI is a display image
    ("slide.png", False, False),
])
def test_unit_ranged_scales_by_255_only_what_inference_treats_as_a_display_image(name, display_file, absolute):
    """The target's frame follows the network input's: a quantitative image's output goes back to its own units,
    so its target is its own robust range, not its level out of 255."""
    item = {"image": _eight_bit(name), "bits": 8}
    if display_file is not None:
        item["display_file"] = display_file
    out = UnitRanged("image", bits_key="bits")(item)["image"]
    if absolute:
        assert torch.allclose(out, item["image"].float() / 255.0)
    else:
        assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    # without the depth every 8-bit image is taken as displayed
    assert torch.allclose(UnitRanged("image")(item)["image"], item["image"].float() / 255.0)


def test_unit_ranged_scales_a_resized_display_image_by_255_too():
    """Resizing makes an 8-bit picture float; the item still says it is a display image, so it keeps its level."""
    picture = _eight_bit("slide.png")
    resized = MetaTensor(picture.float() * 0.5 + 20.0, meta=picture.meta)  # any float on the 0-255 scale
    out = UnitRanged("image", bits_key="bits")({"image": resized, "bits": 8})["image"]
    assert torch.allclose(out, resized.as_tensor() / 255.0)


def test_unit_ranged_keeps_16_bit_pictures_percentile_stretched():
    pixels = MetaTensor(torch.linspace(100, 40000, 16 * 16).to(torch.int32).reshape(1, 16, 16),
                        meta={"filename_or_obj": "slide.png"})
    out = UnitRanged("image", bits_key="bits")({"image": pixels, "bits": 16})["image"]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_rand_sliced_takes_the_same_slice_of_every_key_and_passes_2d():
    vol = graded_volume()
    t = RandSliced(["image", "target"], min_size=16).set_random_state(3)
    out = t({"image": vol, "target": vol * 2.0})
    assert out["image"].dim() == 3 and out["target"].dim() == 3
    assert torch.allclose(out["target"], out["image"] * 2.0)
    flat = torch.rand(1, 20, 20)
    assert RandSliced("image")({"image": flat})["image"] is flat


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_restretch_gives_each_slice_its_own_unit_range(seed):
    """With ``restretch`` a slice's robust range is [0, 1] whatever its brightness within the volume."""
    vol = UnitRange()(graded_volume())  # the volume in its own [0, 1] range: slices differ in level
    kept = RandSliced("image", axes=(2,), min_size=16).set_random_state(seed)({"image": vol})["image"]
    stretched = RandSliced("image", axes=(2,), min_size=16, restretch=True).set_random_state(seed)({"image": vol})
    low, high = robust_range(stretched["image"], 0.5, 99.5)
    assert low == pytest.approx(0.0, abs=1e-3) and high == pytest.approx(1.0, abs=1e-3)
    # same slice, same order of values: only the scale changed
    a, b = kept.flatten().numpy(), stretched["image"].flatten().numpy()
    inner = (b > 0) & (b < 1)
    assert np.corrcoef(a[inner], b[inner])[0, 1] > 0.999
    k_low, k_high = robust_range(kept, 0.5, 99.5)
    assert (k_low, k_high) != pytest.approx((0.0, 1.0), abs=1e-3)  # without it the slice keeps the volume's units


def test_restretch_leaves_a_display_volume_at_its_absolute_level():
    """An 8-bit DICOM series or TIFF stack is a display image: its slices keep their level out of 255, as evaluation
    scores them; an 8-bit NIfTI volume is quantitative and each slice is re-stretched."""
    vol = UnitRange()(graded_volume()) * 0.5  # a dim volume in [0, 0.5]
    sliced = RandSliced("image", axes=(2,), min_size=16, restretch=True, bits_key="bits")
    for display_file, restretched in ((True, False), (False, True)):
        item = {"image": MetaTensor(vol, meta={"filename_or_obj": "stack.nii.gz"}), "bits": 8,
                "display_file": display_file}
        out = sliced.set_random_state(1)(item)["image"]
        high = robust_range(out, 0.5, 99.5)[1]
        assert (high == pytest.approx(1.0, abs=1e-3)) is restretched


def test_restretch_leaves_2d_images_alone():
    img = torch.rand(1, 32, 32) * 0.5
    assert RandSliced("image", restretch=True)({"image": img})["image"] is img


def test_center_sliced_and_grey_to_rgb():
    vol = graded_volume()
    mid = CenterSliced("image", axis=2)({"image": vol})["image"]
    assert torch.equal(mid, vol[..., 15])
    assert GreyToRGB()(mid).shape == (3, 40, 48)
    rgb = torch.rand(3, 4, 4)
    assert GreyToRGB()(rgb) is rgb
    assert GreyToRGB()(np.zeros((1, 4, 4))).shape == (3, 4, 4)


def test_limit_size_shrinks_2d_images_and_radiographs_read_as_one_slice_volumes():
    """ITK reads a 2D DICOM as (C, H, W, 1); it must be shrunk like any 2D image, not pass as a volume."""
    radiograph = LoadDisplayImage(image_only=True, ensure_channel_first=True)(get_testdata_file("CT_small.dcm"))
    assert tuple(radiograph.shape) == (1, 128, 128, 1)
    out = LimitSize(64)(radiograph)
    assert tuple(out.shape) == (1, 64, 64, 1) and isinstance(out, MetaTensor)
    plane = radiograph[..., 0].float()
    expected = torch.nn.functional.avg_pool2d(plane[None], 2)[0]  # area averaging by exactly 2
    assert torch.allclose(out[..., 0].as_tensor(), expected.as_tensor(), atol=1e-4)
    assert out.meta["filename_or_obj"] == radiograph.meta["filename_or_obj"]

    image = torch.rand(3, 200, 100)
    assert tuple(LimitSize(64)(image).shape) == (3, 64, 32)
    small, volume = torch.rand(1, 60, 40), torch.rand(1, 200, 200, 30)
    assert LimitSize(64)(small) is small, "small enough: unchanged"
    assert LimitSize(64)(volume) is volume, "volumes are sliced later, not shrunk"
