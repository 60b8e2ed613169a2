"""Large slices go through the network in overlapping tiles, so memory follows the tile, not the slice."""
from __future__ import annotations

import pytest
import torch

from monai_dpe.inferers import SliceWiseInferer
from monai_dpe.inferers.slice_inferer import tile_spans
from monai_dpe.networks import ChannelAdapter, DPENet


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = DPENet(channels=(8, 8), output_act=None).eval()  # one level: a receptive field of a few dozen pixels
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_tiles_match_the_whole_slice_and_small_slices_run_whole():
    net, x = _net(), torch.rand(2, 1, 200, 150)
    with torch.inference_mode():
        whole = SliceWiseInferer(network_wrapper=ChannelAdapter)(x, net)
        tiled = SliceWiseInferer(network_wrapper=ChannelAdapter, tile_size=96, tile_align=8)(x, net)
        small = SliceWiseInferer(network_wrapper=ChannelAdapter, tile_size=200)(x, net)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-3
    assert torch.equal(small, whole), "a slice within the tile size is not tiled"


def test_tiles_of_a_volume_get_their_own_images_level():
    class Probe(torch.nn.Module):
        def forward(self, x, level=None):
            return level[:, 1].reshape(-1, 1, 1, 1).expand(x.shape[0], 3, *x.shape[2:]).clone()

    from monai.data import MetaTensor

    from monai_dpe.transforms import LEVEL_META_KEY

    volumes = MetaTensor(torch.zeros(2, 1, 70, 40, 3), meta={LEVEL_META_KEY: torch.tensor([[1, 0.25, 1], [1, 0.75, 1]])})
    inferer = SliceWiseInferer(sw_batch_size=2, tile_size=32, tile_align=8, meta_kwargs={"level": LEVEL_META_KEY}, network_wrapper=ChannelAdapter)
    out = inferer(volumes, Probe())
    assert torch.allclose(out[0], torch.full_like(out[0], 0.25)) and torch.allclose(out[1], torch.full_like(out[1], 0.75))


@pytest.mark.parametrize("size", [97, 150, 1000, 1025, 3001, 4096])
@pytest.mark.parametrize("tile,align", [(96, 8), (512, 32), (1024, 32)])
def test_tiles_cover_each_pixel_once_from_well_inside_a_tile(size, tile, align):
    spans = tile_spans(size, tile, 0.5, align)
    assert spans[0][2] == 0 and spans[-1][3] == size
    margin = min(tile, size) * 0.5 / 2 - align  # half the overlap, less what aligning the starts may take
    for (start, stop, keep0, keep1), following in zip(spans, spans[1:] + [None]):
        assert start % align == 0 and stop - start <= min(tile, size) + align - 1
        assert start <= keep0 < keep1 <= stop
        assert keep0 == 0 or keep0 - start >= margin
        assert keep1 == size or stop - keep1 >= margin
        if following is not None:
            assert following[2] == keep1  # no gap, no pixel twice


def test_tiles_too_small_for_their_alignment_are_refused():
    with pytest.raises(ValueError, match="tile_size"):
        SliceWiseInferer(tile_size=64, tile_align=32)
