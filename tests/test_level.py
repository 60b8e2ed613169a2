"""The input level: what the intensity policy's stretch hides, given back to the network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_dpe.inferers import SliceWiseInferer
from monai_dpe.networks import ChannelAdapter, DPENet, ModalityRouter, WeightsError, warm_start
from monai_dpe.transforms import LEVEL_META_KEY, IntensityPolicyd, input_level

SMALL = (8, 8, 8)


class LevelProbe(torch.nn.Module):
    """A network that writes each image's level into its output, to see which level reached which image."""

    def forward(self, x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        assert level is not None and level.shape == (x.shape[0], 3)
        return level[:, 1:2].reshape(-1, 1, *[1] * (x.dim() - 2)).expand(x.shape[0], 1, *x.shape[2:]).repeat(1, 3, *[1] * (x.dim() - 2))


def test_display_level_is_the_range_in_absolute_units():
    info = {"low": 51.0, "high": 204.0, "dtype": "uint8", "mode": "display"}
    assert torch.allclose(input_level(info), torch.tensor([1.0, 0.2, 0.8]))


def test_quantitative_level_is_the_stretched_frame():
    info = {"low": -1000.0, "high": 3000.0, "dtype": "int16", "mode": "quantitative"}
    assert torch.equal(input_level(info), torch.tensor([0.0, 0.0, 1.0]))


def test_storage_depth_decides_display_in_training():
    info = {"low": 0.1, "high": 0.5, "dtype": "float32", "mode": "quantitative"}
    assert torch.allclose(input_level(info, display=True), torch.tensor([1.0, 0.1, 0.5]))
    assert torch.equal(input_level(info, display=False), torch.tensor([0.0, 0.0, 1.0]))


def test_policy_records_the_level_in_meta_and_item():
    image = MetaTensor(torch.linspace(0.2, 0.6, 64 * 64).reshape(1, 64, 64))
    out = IntensityPolicyd("image", mode="quantitative", level_key="level", bits_key="bits")({"image": image, "bits": 8})
    low, high = out["level"][1:].tolist()
    assert out["level"][0] == 1.0 and low == pytest.approx(0.202, abs=1e-3) and high == pytest.approx(0.598, abs=1e-3)
    assert torch.equal(out["image"].meta[LEVEL_META_KEY], out["level"])
    wide = IntensityPolicyd("image", mode="quantitative", level_key="level", bits_key="bits")({"image": image, "bits": 16})
    assert torch.equal(wide["level"], torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("name, display", [("slide.png", 1.0), ("photo.JPG", 1.0), ("scan.dcm", 1.0),
                                           ("brain.nii.gz", 0.0), ("volume.nrrd", 0.0), (None, 1.0)])
def test_an_8_bit_volume_file_is_quantitative_in_training_and_evaluation_as_at_inference(name, display):
    """Storage depth alone would call an 8-bit NIfTI a display image; ``"auto"`` mode at inference does not, and
    training and evaluation must give the network the level inference gives it."""
    meta = {"filename_or_obj": name} if name else {}
    image = MetaTensor(torch.linspace(0.2, 0.6, 32 * 32).reshape(1, 32, 32), meta=meta)
    out = IntensityPolicyd("image", mode="quantitative", level_key="level", bits_key="bits")({"image": image, "bits": 8})
    assert float(out["level"][0]) == display
    if name:
        stored = (np.linspace(0.2, 0.6, 32 * 32).reshape(1, 32, 32) * 255).round().astype(np.uint8)
        inference = IntensityPolicyd("image", mode="auto")({"image": MetaTensor(torch.as_tensor(stored), meta=meta)})
        assert float(inference["image"].meta[LEVEL_META_KEY][0]) == display


def test_the_datalist_says_when_a_corpus_file_stands_for_a_display_file():
    """A DICOM file stored as NIfTI in the corpus keeps the display level its original gets at inference."""
    image = MetaTensor(torch.linspace(0.2, 0.6, 32 * 32).reshape(1, 32, 32), meta={"filename_or_obj": "us.nii.gz"})
    policy = IntensityPolicyd("image", mode="quantitative", level_key="level", bits_key="bits")
    assert float(policy({"image": image, "bits": 8, "display_file": True})["level"][0]) == 1.0
    assert float(policy({"image": image.clone(), "bits": 8})["level"][0]) == 0.0
    assert float(policy({"image": image.clone(), "bits": 16, "display_file": True})["level"][0]) == 0.0


def test_network_with_level_needs_one_and_uses_it():
    net = DPENet(channels=SMALL, output_act=None, level_channels=3).eval()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="level"):
        net(x)
    with pytest.raises(ValueError, match="3 level vectors for a batch of 2"):
        net(x, level=torch.rand(3, 3))
    dark, bright = net(x, level=torch.tensor([1.0, 0.0, 0.2])), net(x, level=torch.tensor([1.0, 0.6, 1.0]))
    assert not torch.allclose(dark, bright)
    assert torch.allclose(net(x, level=torch.tensor([[1.0, 0.0, 0.2]] * 2)), dark)


def test_level_tone_is_one_gain_and_offset_per_image_and_channel():
    net = DPENet(channels=SMALL, output_act=None, level_channels=3, level_tone=True).eval()
    with torch.no_grad():
        net.conv_in.weight[:, 3:] = 0.0  # the planes' path off: only the tone sees the level
        torch.nn.init.normal_(net.level_tone[-1].weight, std=0.5)
    x = torch.rand(1, 3, 32, 32)
    a, b = net(x, level=torch.tensor([1.0, 0.0, 0.3])), net(x, level=torch.tensor([1.0, 0.5, 1.0]))
    for c in range(3):  # b is an exact affine map of a, channel by channel
        design = torch.stack([a[0, c].flatten(), torch.ones(32 * 32)], dim=1)
        fit = torch.linalg.lstsq(design, b[0, c].flatten()[:, None]).solution
        assert torch.allclose(design @ fit, b[0, c].flatten()[:, None], atol=1e-4)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="level_tone needs"):
        DPENet(channels=SMALL, level_tone=True)


def test_network_without_level_inputs_ignores_a_level():
    net = DPENet(channels=SMALL).eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(net(x), net(x, level=torch.rand(1, 3)))


def test_warm_start_grows_inputs_and_heads_without_changing_the_function(tmp_path):
    old = DPENet(channels=SMALL, output_act=None).eval()
    torch.save(old.state_dict(), tmp_path / "old.pt")
    grown = warm_start(DPENet(channels=SMALL, output_act=None, level_channels=3, level_tone=True), tmp_path / "old.pt").eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(old(x), grown(x, level=torch.rand(2, 3)))
    with pytest.raises(WeightsError, match="needs"):
        warm_start(DPENet(channels=(8, 8, 16)), tmp_path / "old.pt")


def test_slice_inferer_gives_each_image_and_volume_its_own_level():
    inferer = SliceWiseInferer(sw_batch_size=2, meta_kwargs={"level": LEVEL_META_KEY})
    images = MetaTensor(torch.zeros(3, 3, 8, 8), meta={LEVEL_META_KEY: torch.tensor([[1, 0.1, 1], [1, 0.2, 1], [1, 0.3, 1]])})
    out = inferer(images, LevelProbe())
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.1, 0.2, 0.3])
    volumes = MetaTensor(torch.zeros(2, 1, 4, 4, 5), meta={LEVEL_META_KEY: torch.tensor([[1, 0.4, 1], [1, 0.7, 1]])})
    out = SliceWiseInferer(sw_batch_size=3, meta_kwargs={"level": LEVEL_META_KEY}, network_wrapper=ChannelAdapter)(volumes, LevelProbe())
    assert torch.allclose(out[0], torch.full_like(out[0], 0.4)) and torch.allclose(out[1], torch.full_like(out[1], 0.7))
    unbatched = MetaTensor(torch.zeros(1, 3, 8, 8), meta={LEVEL_META_KEY: torch.tensor([1, 0.5, 1])})  # as MONAI Label passes it
    assert inferer(unbatched, LevelProbe())[0, 0, 0, 0] == pytest.approx(0.5)
    net = DPENet(channels=SMALL, output_act=None, level_channels=3).eval()  # no default level
    with pytest.raises(ValueError, match="none was given"):  # a plain tensor carries no level
        inferer(torch.zeros(1, 3, 16, 16), net)


def test_slice_inferer_gives_a_keyword_level_row_to_its_image_and_every_slice_of_its_volume():
    """An evaluator's ``prepare_batch`` hands the level as a keyword with a row per image: a volume's row goes
    to each of its slices (the network would otherwise get one row for a batch of slices), an image's to it."""
    volumes = torch.zeros(2, 1, 4, 4, 5)
    level = torch.tensor([[1, 0.4, 1], [1, 0.7, 1]])
    out = SliceWiseInferer(sw_batch_size=3, network_wrapper=ChannelAdapter)(volumes, LevelProbe(), level=level)
    assert torch.allclose(out[0], torch.full_like(out[0], 0.4)) and torch.allclose(out[1], torch.full_like(out[1], 0.7))
    images = MetaTensor(torch.zeros(3, 3, 8, 8), meta={LEVEL_META_KEY: torch.zeros(3, 3)})
    rows = torch.tensor([[1, 0.1, 1], [1, 0.2, 1], [1, 0.3, 1]])  # the keyword wins over the meta's rows
    out = SliceWiseInferer(sw_batch_size=2, meta_kwargs={"level": LEVEL_META_KEY})(images, LevelProbe(), level=rows)
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.1, 0.2, 0.3])


class Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return x * self.factor


@pytest.mark.parametrize("sw_batch_size", [1, 3])
def test_slice_inferer_sends_each_image_and_each_slice_of_a_volume_with_its_own_modality(sw_batch_size):
    """A collated ``modality`` (one name per image) reaches the router as one name per image of each network call:
    every slice of a volume carries its volume's, so a histology volume's slices all go to the specialist."""
    router = ModalityRouter(Scale(1.0), {"histology": Scale(2.0)})
    inferer = SliceWiseInferer(sw_batch_size=sw_batch_size)
    volumes = torch.ones(2, 3, 4, 4, 5)
    out = inferer(volumes, router, modality=["histology", "mr"], level=torch.zeros(2, 3))
    assert torch.all(out[0] == 2.0) and torch.all(out[1] == 1.0)
    images = torch.ones(3, 3, 4, 4)
    out = SliceWiseInferer(sw_batch_size=2)(images, router, modality=["mr", "histology", "histology"])
    assert out[:, 0, 0, 0].tolist() == [1.0, 2.0, 2.0]


def test_router_splits_levels_with_the_batch():
    router = ModalityRouter(LevelProbe(), {"histology": LevelProbe()})
    level = torch.tensor([[1, 0.1, 1], [1, 0.9, 1]])
    out = router(torch.zeros(2, 3, 4, 4), modality=["histology", "xray"], level=level)
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.1, 0.9])


def test_onnx_export_takes_the_level(tmp_path):
    pytest.importorskip("onnxruntime")
    from monai_dpe.networks import OnnxNetwork, export_onnx

    net = DPENet(channels=SMALL, output_act=None, level_channels=3, level_tone=True)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    torch.nn.init.normal_(net.level_tone[-1].weight, std=0.1)
    net.eval()
    onnx = OnnxNetwork(export_onnx(net, tmp_path / "level.onnx"), multiple=net.multiple)
    x, level = torch.rand(2, 3, 40, 36), torch.rand(2, 3)
    with torch.no_grad():
        np.testing.assert_allclose(onnx(x, level).numpy(), net(x, level).numpy(), atol=1e-5)
        np.testing.assert_allclose(onnx(x, level[:1]).numpy(), net(x, level[:1]).numpy(), atol=1e-5)


def test_a_default_level_serves_tools_that_pass_one_tensor():
    net = DPENet(channels=SMALL, output_act=None, level_channels=3, level_tone=True, default_level=(0.0, 0.0, 1.0)).eval()
    torch.nn.init.normal_(net.level_tone[-1].weight, std=0.5)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(net(x), net(x, level=torch.tensor([0.0, 0.0, 1.0])))
    assert "default_level" not in net.state_dict(), "not part of the weights"
    with pytest.raises(ValueError, match="default_level needs 3"):
        DPENet(channels=SMALL, level_channels=3, default_level=(0.0, 1.0))
