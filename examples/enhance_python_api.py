"""Enhance one file and a whole folder from Python with the shipped bundle's weights.

The pipeline is the bundle's own: load with MONAI, stretch with the invertible intensity
policy, enhance slice by slice, blend with the input's affine fit (its detail Wiener-filtered with
the network's output as the guide, ``wiener_noise_scale``), invert back to the input's units and
dtype, save.

    python examples/enhance_python_api.py INPUT_FILE_OR_FOLDER OUTPUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, Invertd

from monai_dpe.data import find_images
from monai_dpe.inferers import SliceWiseInferer
from monai_dpe.networks import ChannelAdapter, load_weights
from monai_dpe.transforms import LEVEL_META_KEY, BlendInputFitd, IntensityPolicyd, LoadDisplayImaged, SaveEnhancedd

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


def build_enhancer(weights: Path = BUNDLE / "models" / "model.pt") -> torch.nn.Module:
    """The bundle's DPENet (its ``network_def``), wrapped to take grey, RGB and RGBA images."""
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "inference.json")
    return ChannelAdapter(load_weights(parser.get_parsed_content("network_def"), weights)).eval()


def bundle_value(key: str):
    """``key`` as the bundle's ``inference.json`` sets it (``blend``: the :class:`BlendInputFit` its settings build)."""
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "inference.json")
    parser["bundle_root"] = str(BUNDLE)  # the files the configs read beside the weights (the level prior)
    return parser.get_parsed_content(key)


def enhance(inputs: str, output_dir: str) -> list[str]:
    """Enhance every image under ``inputs`` into ``output_dir``; returns the written paths."""
    preprocessing = Compose(
        # MONAI's LoadImaged, plus a PIL reader that gives photos as shown (upright, palettes as colours)
        [LoadDisplayImaged("image", image_only=True, dtype=None, ensure_channel_first=True), IntensityPolicyd("image")]
    )
    invert = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False)
    save = SaveEnhancedd("pred", output_dir=output_dir, overwrite=True)
    enhancer, inferer = build_enhancer(), SliceWiseInferer(spatial_dim=-1, sw_batch_size=8, meta_kwargs={"level": LEVEL_META_KEY})
    # the bundle's blend: the level half the network's and half the level prior's, the input's detail
    # Wiener-filtered with the output as pilot
    blend = BlendInputFitd("pred", image_key="image", blend=bundle_value("blend"))
    written = []
    for item in find_images(inputs):
        data = preprocessing(item)
        with torch.inference_mode():
            data["pred"] = inferer(data["image"][None], enhancer)[0]
        written.append(save(invert(blend(data)))["output_path"])
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for path in enhance(sys.argv[1], sys.argv[2]):
        print(path)
