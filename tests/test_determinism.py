"""Determinism of CPU inference: the same input and weights give the same bits, run after run and batch after batch.

The shipped weights (``bundle/models/model.pt``, the bundle's ``channels`` and ``output_act=None``)
run through ``SliceWiseInferer`` + ``ChannelAdapter`` as ``bundle/configs/inference.json`` wires them.
PyTorch picks a CPU convolution kernel from the whole batch (oneDNN for several images, its native
kernel for one small image), which made a slice's output depend on ``sw_batch_size`` by ~2e-7;
``SliceWiseInferer(batch_invariant=True)`` (the default) takes the kernel a single slice would get.
"""
from __future__ import annotations

import copy

import contextlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from monai_dpe.inferers import SliceWiseInferer
from monai_dpe.inferers.slice_inferer import _BatchInvariantConvolutions
from monai_dpe.networks import ChannelAdapter, load_weights
from helpers import shipped_network

WEIGHTS = Path(__file__).resolve().parents[1] / "bundle" / "models" / "model.pt"
SW_BATCH_SIZES = (1, 2, 7, 8)


@contextlib.contextmanager
def intra_op_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread unless a test asks for two (the kernel choice depends on it, so the batch tests run both)."""
    with intra_op_threads(1):
        yield


@pytest.fixture(scope="module")
def shipped_net() -> torch.nn.Module:
    return load_weights(shipped_network(), WEIGHTS).eval()


def inputs() -> dict[str, torch.Tensor]:
    """A grey 64x64x12 volume and a batch of five 2D RGB images of an odd size (padded inside the network)."""
    g = torch.Generator().manual_seed(11)
    return {"volume": torch.rand(1, 1, 64, 64, 12, generator=g), "rgb_2d": torch.rand(5, 3, 33, 47, generator=g)}


def enhance(x: torch.Tensor, net: torch.nn.Module, **kwargs) -> torch.Tensor:
    inferer = SliceWiseInferer(spatial_dim=-1, network_wrapper=ChannelAdapter, **kwargs)  # as inference.json
    with torch.inference_mode():
        return inferer(x, net)


@pytest.mark.parametrize("name", ["volume", "rgb_2d"])
def test_two_runs_bit_identical(shipped_net, name):
    x = inputs()[name]
    assert torch.equal(enhance(x, shipped_net, sw_batch_size=1), enhance(x.clone(), shipped_net, sw_batch_size=1))


@pytest.mark.parametrize(
    "name, threads",
    [("volume", 1), ("rgb_2d", 1), ("rgb_2d", 2), pytest.param("volume", 2, marks=pytest.mark.slow)],
)
def test_sw_batch_size_bit_identical(shipped_net, name, threads):
    # 12 slices: sw 7 and 8 also leave a smaller last batch (5 and 4); the RGB batch has 5 images
    x = inputs()[name]
    with intra_op_threads(threads):  # PyTorch's kernel choice for 1x1 convolutions depends on the thread count
        outputs = {sw: enhance(x, shipped_net, sw_batch_size=sw) for sw in SW_BATCH_SIZES}
    for sw in SW_BATCH_SIZES[1:]:
        gap = (outputs[sw] - outputs[1]).abs().max()
        assert torch.equal(outputs[sw], outputs[1]), f"sw_batch_size={sw} differs from 1 by {gap}"


def test_rgb_image_same_bits_alone_or_in_a_batch(shipped_net):
    images = inputs()["rgb_2d"]
    together = enhance(images, shipped_net, sw_batch_size=8)
    for i in range(images.shape[0]):
        assert torch.equal(together[i : i + 1], enhance(images[i : i + 1], shipped_net))


def test_channels_last_bit_identical_across_sw_batch_size(shipped_net):
    x = inputs()["volume"]
    net = copy.deepcopy(shipped_net)  # the inferer holds its weights channels-last; the other tests keep NCHW
    outputs = {sw: enhance(x, net, sw_batch_size=sw, channels_last=True) for sw in (1, 8)}
    assert torch.equal(outputs[8], outputs[1])


@pytest.mark.parametrize("name", ["volume", "rgb_2d"])
def test_batch_invariance_keeps_fp32_outputs(shipped_net, name):
    # batches of one run exactly as PyTorch runs them; larger batches move by rounding only
    x = inputs()[name]
    plain = {sw: enhance(x, shipped_net, sw_batch_size=sw, batch_invariant=False) for sw in (1, 8)}
    invariant = enhance(x, shipped_net, sw_batch_size=8)
    assert torch.equal(enhance(x, shipped_net, sw_batch_size=1), plain[1])
    torch.testing.assert_close(invariant, plain[8], rtol=0, atol=1e-4)


CONVOLUTIONS = [  # (name, input shape, weight shape, kwargs, transposed): native-sized and oneDNN-sized
    ("small_3x3", (6, 96, 4, 4), (96, 96, 3, 3), {"padding": 1}, False),
    ("small_strided", (6, 80, 6, 6), (96, 80, 3, 3), {"stride": 2, "padding": 1}, False),
    ("small_dilated", (6, 16, 9, 9), (16, 16, 3, 3), {"padding": 2, "dilation": 2}, False),
    ("first_layer", (6, 3, 64, 64), (32, 3, 3, 3), {"padding": 1}, False),
    ("large_3x3", (3, 32, 64, 64), (32, 32, 3, 3), {"padding": 1}, False),
    ("pointwise", (6, 32, 24, 24), (3, 32, 1, 1), {}, False),
    ("up_small", (6, 96, 3, 3), (96, 80, 2, 2), {"stride": 2}, True),
    ("up_large", (3, 80, 20, 20), (80, 64, 2, 2), {"stride": 2}, True),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, x_shape, w_shape, kwargs, transposed", CONVOLUTIONS, ids=[c[0] for c in CONVOLUTIONS])
def test_each_image_of_a_batch_gets_its_single_image_bits(name, x_shape, w_shape, kwargs, transposed, threads):
    g = torch.Generator().manual_seed(5)
    x, w = torch.rand(*x_shape, generator=g), torch.randn(*w_shape, generator=g)
    b = torch.randn(w_shape[1 if transposed else 0], generator=g)
    conv = F.conv_transpose2d if transposed else F.conv2d
    with intra_op_threads(threads), torch.no_grad():
        alone = [conv(x[i : i + 1], w, b, **kwargs) for i in range(x.shape[0])]  # PyTorch's own choice for one image
        with _BatchInvariantConvolutions():
            batched = conv(x, w, b, **kwargs)
    for i, expected in enumerate(alone):
        assert torch.equal(batched[i : i + 1], expected), f"image {i}"


@pytest.mark.parametrize("name", ["volume", "rgb_2d"])
def test_onnx_backend_bit_identical_across_runs_and_sw_batch_size(name):
    """The bundle's default CPU backend (``auto`` -> ONNX Runtime) gives the same bits too."""
    pytest.importorskip("onnxruntime")
    from monai_dpe.networks import OnnxNetwork

    net = OnnxNetwork(WEIGHTS.with_suffix(".onnx"), threads=1, default_level=shipped_network().default_level)
    x = inputs()[name]
    outputs = {sw: enhance(x, net, sw_batch_size=sw) for sw in SW_BATCH_SIZES}
    assert torch.equal(enhance(x.clone(), net, sw_batch_size=1), outputs[1])
    for sw in SW_BATCH_SIZES[1:]:
        assert torch.equal(outputs[sw], outputs[1]), f"sw_batch_size={sw} differs by {(outputs[sw] - outputs[1]).abs().max()}"
