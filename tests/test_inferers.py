"""Tests for monai_dpe.inferers.SliceWiseInferer against slice-by-slice inference done by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.data import MetaTensor

from monai_dpe.inferers import SliceWiseInferer, hold_channels_last
from monai_dpe.networks import DPENet

AFFINE = torch.tensor(
    [[0.8, 0.0, 0.0, -10.0], [0.0, 0.8, 0.0, 5.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
)


def slice_net(in_channels: int = 3, out_channels: int = 2) -> nn.Module:
    """A small 2D network whose output depends on neighbourhoods and channels (not shape-preserving in C)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, out_channels, 1)).eval()


class CountingNet(nn.Module):
    """Wraps a network and records the batch size of every call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        return self.net(x)


def by_hand(volume: torch.Tensor, net: nn.Module, spatial_dim: int) -> torch.Tensor:
    """Run ``net`` on every slice along ``spatial_dim`` one at a time and stack the results back."""
    axis = 2 + spatial_dim
    outputs = []
    for item in volume:  # (C, X, Y, Z)
        slices = [net(item.select(axis - 1, i)[None])[0] for i in range(volume.shape[axis])]
        outputs.append(torch.stack(slices, dim=axis - 1))
    return torch.stack(outputs, dim=0)


@pytest.mark.parametrize(
    "spatial_dim, sw_batch_size",
    [pytest.param(d, sw, id=f"dim{d}_sw{sw}") for d in (0, 1, 2) for sw in (1, 3, 8)]
    + [pytest.param(-1, 4, id="dim_minus1_sw4")],
)
def test_volume_output_equals_slice_by_slice(spatial_dim, sw_batch_size):
    net = CountingNet(slice_net())
    volume = torch.rand(2, 3, 7, 10, 12)
    with torch.no_grad():
        out = SliceWiseInferer(spatial_dim=spatial_dim, sw_batch_size=sw_batch_size)(volume, net)
        calls = list(net.batch_sizes)
        expected = by_hand(volume, net.net, spatial_dim % 3)
    assert out.shape == (2, 2, 7, 10, 12)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    n_slices = volume.shape[2 + spatial_dim % 3]
    assert max(calls) <= sw_batch_size  # memory bounded by the slice batch
    assert sum(calls) == 2 * n_slices


def test_volume_with_dpenet_and_odd_sizes():
    net = DPENet(channels=(8, 16, 24), in_channels=1, out_channels=1).eval()
    volume = torch.rand(1, 1, 9, 13, 5)
    with torch.no_grad():
        out = SliceWiseInferer(spatial_dim=2, sw_batch_size=2)(volume, net)
        torch.testing.assert_close(out, by_hand(volume, net, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sw_batch_size", [1, 3, 8])
def test_2d_batch_goes_straight_through(sw_batch_size):
    net = CountingNet(slice_net())
    images = torch.rand(5, 3, 17, 23)
    with torch.no_grad():
        out = SliceWiseInferer(sw_batch_size=sw_batch_size)(images, net)
        torch.testing.assert_close(out, net.net(images), atol=1e-6, rtol=1e-5)
    assert out.shape == (5, 2, 17, 23)
    assert max(net.batch_sizes) <= sw_batch_size and sum(net.batch_sizes) == 5


def hand_25d(item: torch.Tensor, index: int, axis: int, context: int) -> torch.Tensor:
    """Slice ``index`` of one (C, X, Y, Z) volume with its neighbours as channels; edges repeat the border."""
    n = item.shape[axis]
    neighbours = [item.select(axis, min(max(index + k, 0), n - 1)) for k in range(-context, context + 1)]
    return torch.cat(neighbours, dim=0)[None]


@pytest.mark.parametrize(
    "channels, spatial_dim",
    [
        pytest.param(1, 2, id="grey_dim2"),
        pytest.param(3, 0, id="rgb_dim0"),
        pytest.param(3, 1, id="rgb_dim1"),
    ],
)
def test_context_feeds_neighbours_as_channels(channels, spatial_dim):
    net = CountingNet(slice_net(in_channels=3 * channels, out_channels=channels))
    volume = torch.rand(1, channels, 6, 8, 10)
    inferer = SliceWiseInferer(spatial_dim=spatial_dim, sw_batch_size=4, context=1)
    with torch.no_grad():
        out = inferer(volume, net)
        n = volume.shape[2 + spatial_dim]
        centre = n // 2
        for index in (centre, 0, n - 1):  # the middle slice and both edges
            expected = net.net(hand_25d(volume[0], index, spatial_dim + 1, 1))[0]
            torch.testing.assert_close(out[0].select(spatial_dim + 1, index), expected, atol=1e-6, rtol=1e-5)
    assert out.shape == (1, channels, 6, 8, 10)


@pytest.mark.parametrize("channels", [1, 3])
def test_2d_context_matches_single_slice_volume(channels):
    # a 2D image is a one-slice volume: its neighbours are itself, in the same channel layout
    net = slice_net(in_channels=3 * channels, out_channels=channels)
    images = torch.rand(2, channels, 12, 14)
    inferer = SliceWiseInferer(spatial_dim=2, context=1)
    with torch.no_grad():
        out_2d = inferer(images, net)
        out_3d = inferer(images[..., None], net)[..., 0]
        expected = net(torch.cat([images] * 3, dim=1))
    torch.testing.assert_close(out_2d, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out_3d, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("ndim", [4, 5])
def test_meta_tensor_metadata_kept(ndim):
    shape = (1, 3, 10, 12) if ndim == 4 else (1, 3, 10, 12, 6)
    meta = MetaTensor(torch.rand(*shape), affine=AFFINE.clone(), meta={"filename_or_obj": "scan.nii.gz"})
    net = slice_net(out_channels=3)
    with torch.no_grad():
        out = SliceWiseInferer(spatial_dim=2, sw_batch_size=4)(meta, net)
        expected = SliceWiseInferer(spatial_dim=2, sw_batch_size=4)(meta.as_tensor(), net)
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, AFFINE)
    assert out.meta["filename_or_obj"] == "scan.nii.gz"
    torch.testing.assert_close(out.as_tensor(), expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"spatial_dim": 3}, id="spatial_dim_3"),
        pytest.param({"spatial_dim": -2}, id="spatial_dim_minus2"),
        pytest.param({"sw_batch_size": 0}, id="sw_batch_0"),
        pytest.param({"context": -1}, id="negative_context"),
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        SliceWiseInferer(**kwargs)


@pytest.mark.parametrize("shape", [(1, 3, 16), (1, 3, 4, 4, 4, 4)])
def test_invalid_input_dims_raise(shape):
    with pytest.raises(ValueError):
        SliceWiseInferer()(torch.rand(*shape), slice_net())


@pytest.mark.parametrize("ndim", [4, 5])
def test_bfloat16_autocast_close_to_fp32(ndim):
    net = DPENet(channels=(8, 16, 24), in_channels=1, out_channels=1).eval()
    x = torch.rand(2, 1, 16, 20) if ndim == 4 else torch.rand(1, 1, 16, 20, 3)
    with torch.no_grad():
        fp32 = SliceWiseInferer(spatial_dim=2, sw_batch_size=2)(x, net)
        bf16 = SliceWiseInferer(spatial_dim=2, sw_batch_size=2, amp_dtype=torch.bfloat16)(x, net)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=3e-2, rtol=0)
    assert not torch.equal(bf16, fp32)  # autocast really ran in reduced precision


def test_channels_last_same_values():
    net = slice_net()
    volume = torch.rand(1, 3, 6, 8, 5)
    with torch.no_grad():
        out = SliceWiseInferer(spatial_dim=0, channels_last=True)(volume, net)
        torch.testing.assert_close(out, by_hand(volume, net, 0), atol=1e-6, rtol=1e-5)


def _kernels(net: nn.Module, dim: int) -> list[torch.Tensor]:
    return [p for p in net.parameters() if p.dim() == dim and p.shape[-1] > 1]


def test_channels_last_inferer_holds_the_2d_weights_channels_last_and_leaves_the_rest():
    """Channels-last slices through NCHW weights make every convolution reorder its weights on each call."""
    net = DPENet(channels=(8, 16, 24), in_channels=1, out_channels=1).eval()
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in _kernels(net, 4))
    with torch.no_grad():
        SliceWiseInferer(spatial_dim=2)(torch.rand(1, 1, 16, 20, 2), net)
        assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in _kernels(net, 4))
        SliceWiseInferer(spatial_dim=2, channels_last=True)(torch.rand(1, 1, 16, 20, 2), net)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in _kernels(net, 4))
    volumetric = DPENet(spatial_dims=3, channels=(8, 8, 8), in_channels=1, out_channels=1)
    hold_channels_last(volumetric)  # channels-last refuses 5D weights: left as it is
    assert all(p.is_contiguous() for p in _kernels(volumetric, 5))
    scripted = torch.jit.script(nn.Conv2d(2, 4, 3))
    hold_channels_last(scripted)
    assert not scripted.weight.is_contiguous(memory_format=torch.channels_last)


def test_weights_held_channels_last_under_inference_mode_can_still_be_trained():
    net = DPENet(channels=(8, 16, 24), in_channels=1, out_channels=1)
    with torch.inference_mode():
        SliceWiseInferer(spatial_dim=2, channels_last=True)(torch.rand(1, 1, 16, 20, 2), net.eval())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in _kernels(net, 4))
    net.train()
    net(torch.rand(2, 1, 16, 16)).mean().backward()  # inference tensors would refuse this
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("thin_axis", [0, 1, 2])
@pytest.mark.parametrize("spatial_dim", [-1, 0, 1])
def test_single_slice_volume_is_enhanced_as_its_2d_image(thin_axis, spatial_dim):
    """A volume one voxel thick holds one 2D image, whichever axis is thin and whichever axis is asked for."""
    torch.manual_seed(0)
    net = DPENet(channels=(4, 8), in_channels=1, out_channels=1).eval()
    image = torch.rand(1, 1, 40, 44)
    volume = image.unsqueeze(2 + thin_axis)  # (1, 1, 1, 40, 44), (1, 1, 40, 1, 44) or (1, 1, 40, 44, 1)
    with torch.no_grad():
        expected = net(image)
        got = SliceWiseInferer(spatial_dim=spatial_dim, sw_batch_size=4)(volume, net)
    torch.testing.assert_close(got.squeeze(2 + thin_axis), expected, atol=1e-5, rtol=1e-5)
