"""Regenerate examples/data/: three real images, degraded with fixed seeds, for ``make demo``.

Sources (all installed by ``make install``; licences in examples/data/README.md):

- ``xray_limb.png``: pydicom-data ``RG3_UNCR.dcm`` (a limb radiograph, MIT), grey 8-bit, 512 px.
- ``fundus_retina.png``: scikit-image ``retina.jpg`` (CC0), RGB 8-bit, 512 px.
- ``mr_head.nii.gz``: pydicom-data ``emri_small.dcm`` (a 10-frame head MR, MIT), uint16 64x64x10.

Each clean image is scaled to [0, 1], degraded by :class:`monai_dpe.transforms.RandPerceptualDegradation`
with a fixed seed (the 8-bit pictures with the paper's darkening, low contrast and noise; the MR
volume, kept in scanner units, with the radiology family that a percentile window cannot undo:
gamma, bias field, noise) and written back in its format. Run from the repository root::

    python examples/make_sample_data.py            # writes examples/data/
    python examples/make_sample_data.py --bundle   # writes bundle/sample_data/

``bundle/sample_data/`` is the bundle's own small sample (the default ``dataset_dir`` of
``configs/inference.json``, so ``python -m monai.bundle run`` works from inside the bundle folder):
the same radiograph at 256 x 256 and the same MR volume, with the same seeds.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from skimage import data as skdata
from skimage.transform import resize

from monai_dpe.transforms import RandPerceptualDegradation

SIDE = 512
# seeds picked once and fixed; each draw is printed and recorded in draws.json
SEEDS = {"xray_limb.png": 2, "fundus_retina.png": 0, "mr_head.nii.gz": 7}


def clean_xray(side: int = SIDE) -> np.ndarray:
    """RG3_UNCR as a [0, 1] grey image (white bone), downsized to side x side."""
    ds = pydicom.dcmread(get_testdata_file("RG3_UNCR.dcm", download=False))
    image = ds.pixel_array.astype(np.float64) / (2 ** int(ds.BitsStored) - 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":  # stored inverted: make bone white, as read
        image = 1.0 - image
    return resize(image, (side, side), anti_aliasing=True, order=3).clip(0, 1)


def clean_fundus() -> np.ndarray:
    """scikit-image's retina as [0, 1] RGB, (H, W, 3), downsized to SIDE x SIDE."""
    return resize(skdata.retina() / 255.0, (SIDE, SIDE, 3), anti_aliasing=True, order=3).clip(0, 1)


def clean_mr() -> tuple[np.ndarray, float, np.ndarray]:
    """emri_small as a [0, 1] (X, Y, Z) volume, its scale in scanner units, and a NIfTI affine."""
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm", download=False))
    frames = ds.pixel_array.astype(np.float64)  # (Z, rows, columns)
    volume = np.transpose(frames, (2, 1, 0))  # (X = columns, Y = rows, Z = frames)
    # the file records no in-plane spacing; SpacingBetweenSlices gives the slice step
    affine = np.diag([1.0, 1.0, float(ds.get("SpacingBetweenSlices", 1.0)), 1.0])
    scale = float(volume.max())
    return volume / scale, scale, affine


def degrade(clean_cf: np.ndarray, preset: str, seed: int) -> tuple[np.ndarray, dict]:
    """Apply RandPerceptualDegradation (channel-first [0, 1] input) with ``seed``; returns the image and the draw."""
    transform = RandPerceptualDegradation(preset=preset)
    transform.set_random_state(seed)
    degraded = transform(torch.as_tensor(clean_cf, dtype=torch.float32))
    return np.asarray(degraded, dtype=np.float64).clip(0, 1), transform.last_params


def write_xray(output_dir: Path, side: int = SIDE) -> dict:
    image, draw = degrade(clean_xray(side)[None], "paper", SEEDS["xray_limb.png"])
    Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(output_dir / "xray_limb.png", optimize=True)
    return draw


def write_mr(output_dir: Path) -> dict:
    volume, scale, affine = clean_mr()
    image, draw = degrade(volume[None], "radiology", SEEDS["mr_head.nii.gz"])
    scanner_units = np.round(image[0] * scale).astype(np.uint16)
    nifti = nib.Nifti1Image(scanner_units, affine)
    nifti.header.set_xyzt_units("mm")
    nib.save(nifti, output_dir / "mr_head.nii.gz")
    return draw


def bundle_sample(output_dir: Path) -> None:
    """The bundle's own sample: the radiograph at 256 x 256 and the MR volume (about 100 kB)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_xray(output_dir, side=256)
    write_mr(output_dir)


def main(output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    draws = {}

    draws["xray_limb.png"] = write_xray(output_dir)

    image, draws["fundus_retina.png"] = degrade(np.moveaxis(clean_fundus(), -1, 0), "paper", SEEDS["fundus_retina.png"])
    rgb = np.round(np.moveaxis(image, 0, -1) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(output_dir / "fundus_retina.png", optimize=True)

    draws["mr_head.nii.gz"] = write_mr(output_dir)

    draws = {name: {k: _plain(v) for k, v in params.items()} for name, params in draws.items()}
    (output_dir / "draws.json").write_text(json.dumps({"seeds": SEEDS, "draws": draws}, indent=2) + "\n")
    for name, params in draws.items():
        print(f"{output_dir / name}: {params}")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    return round(value, 6) if isinstance(value, float) else value


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--output-dir", type=Path, default=None)
    cli.add_argument("--bundle", action="store_true", help="write the bundle's small sample (bundle/sample_data/)")
    args = cli.parse_args()
    here = Path(__file__).resolve().parent
    if args.bundle:
        bundle_sample(args.output_dir or here.parent / "bundle" / "sample_data")
    else:
        main(args.output_dir or here / "data")
