"""Tests for monai_dpe.networks: DPENet, DPEDiscriminator and their blocks."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from monai_dpe.networks import DPEDiscriminator, DPENet, GatedConv, ResidualBlock

TINY = (8, 16, 24)


def tiny_net(**kwargs) -> DPENet:
    kwargs.setdefault("channels", TINY)
    return DPENet(**kwargs).eval()


def test_default_parameter_count_matches_reference():
    net = DPENet(spatial_dims=2, in_channels=3, out_channels=3)
    assert sum(p.numel() for p in net.parameters()) == 4_486_987


@pytest.mark.parametrize(
    "spatial_dims, spatial",
    [
        pytest.param(2, (37, 50), id="2d_odd"),
        pytest.param(2, (1, 1), id="2d_one_pixel"),
        pytest.param(2, (16, 32), id="2d_multiple"),
        pytest.param(3, (5, 9, 17), id="3d_odd"),
        pytest.param(3, (1, 1, 1), id="3d_one_voxel"),
    ],
)
def test_output_shape_equals_input_shape(spatial_dims, spatial):
    net = tiny_net(spatial_dims=spatial_dims)
    with torch.no_grad():
        y = net(torch.rand(1, 3, *spatial))
    assert y.shape == (1, 3, *spatial)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_any_batch_size_and_items_independent(batch):
    net = tiny_net()
    x = torch.rand(batch, 3, 20, 28)
    with torch.no_grad():
        y = net(x)
        first = net(x[:1])
    assert y.shape == x.shape
    # no cross-batch mixing: item 0 gives the same result alone
    torch.testing.assert_close(y[:1], first, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "spatial_dims, cin, cout",
    [
        pytest.param(2, 1, 3, id="1_to_3"),
        pytest.param(2, 3, 1, id="3_to_1"),
        pytest.param(3, 1, 3, id="3d_1_to_3"),
        pytest.param(3, 3, 1, id="3d_3_to_1"),
    ],
)
def test_in_channels_differ_from_out_channels(spatial_dims, cin, cout):
    net = tiny_net(spatial_dims=spatial_dims, in_channels=cin, out_channels=cout)
    spatial = (13, 22) if spatial_dims == 2 else (6, 7, 9)
    with torch.no_grad():
        y = net(torch.rand(2, cin, *spatial))
    assert y.shape == (2, cout, *spatial)


@pytest.mark.parametrize(
    "channels",
    [
        pytest.param((8, 12), id="depth_2"),
        pytest.param((4, 6, 8, 10, 12), id="depth_5"),
    ],
)
def test_channels_of_other_lengths(channels):
    net = DPENet(channels=channels).eval()
    assert net.multiple == 2 ** (len(channels) - 1)
    assert len(net.encoder) == len(channels) - 1 and len(net.decoder) == len(channels) - 1
    with torch.no_grad():
        y = net(torch.rand(1, 3, 37, 50))
    assert y.shape == (1, 3, 37, 50)


@pytest.mark.parametrize(
    "value_range",
    [
        pytest.param((0.0, 1.0), id="unit"),
        pytest.param((0.0, 255.0), id="byte"),
        pytest.param((-1000.0, 1000.0), id="hu"),
    ],
)
def test_tanh_output_stays_within_value_range(value_range):
    low, high = value_range
    net = tiny_net(value_range=value_range)
    with torch.no_grad():
        for p in net.conv_out.parameters():
            p.mul_(50.0)  # push the pre-activation far into saturation
        # inputs well outside the range as well
        x = low + (high - low) * (4.0 * torch.rand(2, 3, 24, 24) - 1.5)
        y = net(x)
    assert y.min() >= low and y.max() <= high
    assert (y - low).abs().min() < 1e-3 * (high - low) or (high - y).abs().min() < 1e-3 * (high - low)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"spatial_dims": 1}, id="spatial_dims_1"),
        pytest.param({"spatial_dims": 4}, id="spatial_dims_4"),
        pytest.param({"channels": (8,)}, id="one_width"),
        pytest.param({"in_channels": 3, "out_channels": 2}, id="residual_3_to_2"),
        pytest.param({"value_range": (1.0, 1.0)}, id="empty_value_range"),
    ],
)
def test_invalid_constructor_arguments_raise(kwargs):
    kwargs.setdefault("channels", TINY)
    with pytest.raises(ValueError):
        DPENet(**kwargs)


@pytest.mark.parametrize(
    "spatial_dims, shape",
    [
        pytest.param(2, (1, 3, 8, 8, 8), id="3d_input_to_2d_net"),
        pytest.param(3, (1, 3, 8, 8), id="2d_input_to_3d_net"),
        pytest.param(2, (1, 1, 8, 8), id="wrong_channels"),
    ],
)
def test_forward_rejects_wrong_input(spatial_dims, shape):
    net = tiny_net(spatial_dims=spatial_dims)
    with pytest.raises(ValueError):
        net(torch.rand(*shape))


def test_residual_3_to_2_allowed_without_global_residual():
    net = tiny_net(in_channels=3, out_channels=2, global_residual=False)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 12, 12)).shape == (1, 2, 12, 12)


@pytest.mark.parametrize(
    "spatial_dims, shape",
    [
        pytest.param(2, (1, 3, 37, 50), id="2d"),
        pytest.param(3, (1, 3, 5, 9, 17), id="3d"),
    ],
)
def test_torchscript_matches_eager(spatial_dims, shape):
    net = tiny_net(spatial_dims=spatial_dims)
    scripted = torch.jit.script(net)
    x = torch.rand(*shape)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-6, rtol=1e-6)


def _tanh_identity(x: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(2.0 * x - 1.0) + 1.0) / 2.0


@pytest.mark.parametrize(
    "spatial_dims, cin, cout, expected_fn",
    [
        pytest.param(2, 3, 3, lambda x: _tanh_identity(x), id="2d_3_to_3"),
        pytest.param(3, 3, 3, lambda x: _tanh_identity(x), id="3d_3_to_3"),
        pytest.param(2, 1, 3, lambda x: _tanh_identity(x).repeat(1, 3, 1, 1), id="2d_1_to_3"),
        pytest.param(
            2, 3, 1, lambda x: (torch.tanh((2.0 * x - 1.0).mean(1, keepdim=True)) + 1.0) / 2.0, id="2d_3_to_1"
        ),
    ],
)
def test_global_residual_only_path_when_conv_out_zeroed(spatial_dims, cin, cout, expected_fn):
    net = tiny_net(spatial_dims=spatial_dims, in_channels=cin, out_channels=cout)
    with torch.no_grad():
        net.conv_out.weight.zero_()
        net.conv_out.bias.zero_()
        spatial = (19, 26) if spatial_dims == 2 else (5, 9, 7)
        x = torch.rand(2, cin, *spatial)
        torch.testing.assert_close(net(x), expected_fn(x), atol=1e-6, rtol=1e-6)


def test_without_global_residual_zeroed_conv_out_gives_mid_grey():
    net = tiny_net(global_residual=False)
    with torch.no_grad():
        net.conv_out.weight.zero_()
        net.conv_out.bias.zero_()
        y = net(torch.rand(1, 3, 16, 16))
    torch.testing.assert_close(y, torch.full_like(y, 0.5))


DISC_CHANNELS = (8, 8, 16, 16)


@pytest.mark.parametrize(
    "spatial_dims, spatial, channels",
    [
        pytest.param(2, (32, 32), 3, id="2d"),
        pytest.param(3, (16, 16, 16), 1, id="3d"),
        pytest.param(2, (33, 20), 1, id="2d_grey_odd"),
    ],
)
def test_discriminator_outputs_one_probability_per_image(spatial_dims, spatial, channels):
    disc = DPEDiscriminator(spatial_dims=spatial_dims, in_channels=channels, channels=DISC_CHANNELS).eval()
    with torch.no_grad():
        p = disc(torch.rand(3, channels, *spatial))
    assert p.shape == (3, 1)
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_discriminator_logits_without_output_act(spatial_dims):
    logits_disc = DPEDiscriminator(spatial_dims, 3, DISC_CHANNELS, output_act=None).eval()
    prob_disc = DPEDiscriminator(spatial_dims, 3, DISC_CHANNELS).eval()
    prob_disc.load_state_dict(logits_disc.state_dict())
    spatial = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    x = torch.rand(2, 3, *spatial)
    with torch.no_grad():
        logits, probs = logits_disc(x), prob_disc(x)
        # a large bias moves logits out of (0, 1): the raw score must come through unsquashed
        logits_disc.score.bias.fill_(5.0)
        shifted = logits_disc(x)
    assert logits.shape == (2, 1)
    torch.testing.assert_close(torch.sigmoid(logits), probs)
    assert (shifted > 1).all()


def test_discriminator_strides_length_mismatch_raises():
    with pytest.raises(ValueError):
        DPEDiscriminator(2, 3, channels=(8, 8), strides=(1, 2, 1))


@pytest.mark.parametrize(
    "spatial_dims, spatial",
    [
        pytest.param(2, (17, 10), id="2d"),
        pytest.param(3, (5, 6, 7), id="3d"),
        pytest.param(2, (1, 1), id="2d_one_pixel"),
        pytest.param(3, (1, 1, 1), id="3d_one_voxel"),
    ],
)
def test_residual_block_keeps_shape_and_is_identity_plus_branch(spatial_dims, spatial):
    block = ResidualBlock(spatial_dims, 6)
    x = torch.rand(2, 6, *spatial)
    with torch.no_grad():
        assert block(x).shape == x.shape
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
        torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize(
    "spatial_dims, kernel, spatial",
    [
        pytest.param(2, 3, (17, 10), id="2d_k3"),
        pytest.param(2, 5, (9, 12), id="2d_k5"),
        pytest.param(3, 3, (5, 6, 7), id="3d_k3"),
        pytest.param(2, 3, (1, 1), id="2d_one_pixel"),
        pytest.param(3, 3, (1, 1, 1), id="3d_one_voxel"),
    ],
)
def test_gated_conv_keeps_spatial_shape(spatial_dims, kernel, spatial):
    gate = GatedConv(spatial_dims, 4, 7, kernel_size=kernel)
    with torch.no_grad():
        y = gate(torch.rand(2, 4, *spatial))
    assert y.shape == (2, 7, *spatial)


def test_gated_conv_closed_gate_blocks_features():
    gate = GatedConv(2, 4, 4)
    with torch.no_grad():
        gate.mask_conv.weight.zero_()
        gate.mask_conv.bias.fill_(-100.0)  # sigmoid(-100) ~ 0: nothing passes
        y = gate(torch.rand(1, 4, 12, 12))
    assert y.abs().max() < 1e-30


def test_gated_conv_even_kernel_raises():
    with pytest.raises(ValueError):
        GatedConv(2, 4, 4, kernel_size=4)


@pytest.mark.slow
@pytest.mark.parametrize("example_size", [(32, 32), (37, 50)])
def test_onnx_export_matches_eager_on_other_sizes(tmp_path, example_size):
    ort = pytest.importorskip("onnxruntime")
    net = tiny_net()
    path = tmp_path / "dpenet.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(1, 3, *example_size),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["enhanced"],
            dynamic_axes={"image": axes, "enhanced": axes},
            opset_version=17,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(45, 30), (64, 48)]:
        x = torch.rand(2, 3, *size)
        (onnx_out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            eager = net(x).numpy()
        assert onnx_out.shape == eager.shape
        np.testing.assert_allclose(onnx_out, eager, atol=1e-4, rtol=0)


def test_global_tone_starts_as_the_network_without_it_and_then_shifts_whole_images():
    """global_tone=True loads plain weights (its head is new) and is exactly that network until trained."""
    torch.manual_seed(0)
    plain = DPENet(channels=(8, 16, 24), output_act=None, identity_init=True).eval()
    toned = DPENet(channels=(8, 16, 24), output_act=None, identity_init=True, global_tone=True).eval()
    missing = toned.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("tone.") for k in missing)
    x = torch.rand(2, 3, 37, 29)
    with torch.no_grad():
        assert torch.equal(plain(x), toned(x))
        toned.tone[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.1, 0.1, 0.1]))  # offsets (internal [-1, 1] scale)
        shifted = toned(x)
    assert shifted.shape == x.shape
    assert torch.allclose(shifted - plain(x), torch.full_like(x, 0.05), atol=1e-6)  # 0.1 in [-1, 1] is 0.05 in [0, 1]
    scripted = torch.jit.script(toned)
    with torch.no_grad():
        assert torch.allclose(scripted(x), shifted, atol=1e-6)
