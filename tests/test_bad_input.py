"""Bad input: each bad file gets one clear line naming it and the reason, the others still go through.

One ``monai-dpe enhance`` run takes a folder of broken, unsupported and hostile files next to a
good image and a good DICOM; the tests then read its exit code, its lines and what it wrote.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from helpers import SUMMARY, TINY_CHANNELS, bundle_command, file_hashes, run_cli, shipped_network, smooth, tiny_weights
from bundle_copies import copy_configs

HUGE_SIDE = 20000

# file -> what its line must say
BAD = {
    "truncated.png": "truncated",
    "truncated.nii": "Expected",
    "notes.xyz": "unsupported file type '.xyz'",
    "series_4d.nii.gz": "4D image",
    "one_pixel.png": "too small",
    "constant.png": "constant",
    "blemish.png": "nearly constant: its robust range holds 2 storage levels (30 to 31)",
    "flat_colour.png": "image is constant",
    "flat_under_alpha.png": "image is constant",
    "nan.nii.gz": "NaN",
    "huge.png": "too large",
    "large.png": "too large: 5000x5000",
    "bogus_syntax.dcm": "transfer syntax 1.2.3.4.5.6.7",
    "no_endian.nrrd": "type (short) and encoding (raw) require endian info",
    "rgb16.tif": "pixel type RGBPixel[US] is not supported by ITK's Python build",
    "rgb16.png": "16-bit-per-channel colour PNG: Pillow reads only 8 bits of each channel",
    "turned.tif": "TIFF orientation tag 6 (displayed turned or mirrored), which the TIFF reader does not apply",
    "missing_data.mhd": "its data file missing_data.raw (named by the MetaImage header) is missing",
    "short_data.mhd": "its data file short_data.raw is truncated: 600 bytes where the MetaImage header declares 1,200",
    "short.mha": "the file is truncated: 600 bytes of pixel data where the MetaImage header declares 1,200",
    "truncated.dcm": "no image reader recognises its content (truncated, damaged, or not the format its name says)",
    "vector_rgb.nrrd": "pixel type Vector[UC,3] is not supported by ITK's Python build (save it with an RGB pixel type",
}


def write_bad_inputs(root: Path) -> None:
    rng = np.random.default_rng(5)
    root.mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / "full.png")
    data = (root / "full.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    nib.save(nib.Nifti1Image(rng.random((32, 32, 8)).astype(np.float32), np.eye(4)), root / "full.nii")
    data = (root / "full.nii").read_bytes()
    (root / "truncated.nii").write_bytes(data[: len(data) // 2])
    for name in ("full.png", "full.nii"):
        (root / name).unlink()
    (root / "notes.xyz").write_text("not an image")
    # ITK's error starts with its C++ source location; the reason is the NRRD library's last line
    (root / "no_endian.nrrd").write_text("NRRD0004\ntype: short\ndimension: 2\nsizes: 32 32\nencoding: raw\n\n")
    nib.save(nib.Nifti1Image(rng.random((8, 8, 4, 3)).astype(np.float32), np.eye(4)), root / "series_4d.nii.gz")
    # 16-bit colour: MONAI's TIFF reader (ITK) has no such pixel type, and PIL would drop it to 8 bits
    tifffile.imwrite(root / "rgb16.tif", rng.integers(0, 65535, (32, 32, 3), dtype=np.uint16), photometric="rgb")
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 65535, (32, 32, 3)).astype(np.uint16), isVector=True),
                    root / "rgb16.png")  # Pillow opens it, but as 8 bits per channel
    turned = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    tags = turned.getexif()
    tags[0x0112] = 6  # "rotate 90 degrees to display", as cameras and scanners write it
    turned.save(root / "turned.tif", exif=tags)
    # MetaImage headers whose data file is gone or cut short: ITK would print its own lines and blame the header
    for name in ("missing_data", "short_data"):
        sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 1000, (20, 30)).astype(np.int16)), root / f"{name}.mhd")
    (root / "missing_data.raw").unlink()
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 1000, (20, 30)).astype(np.int16)), root / "short.mha")
    (root / "short.mha").write_bytes((root / "short.mha").read_bytes()[:-600])  # ITK: "No such file or directory"
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (root / "truncated.dcm").write_bytes(dicom[: len(dicom) // 2])  # ITK: "Could not create IO object for ..."
    # 8-bit colour stored as a 3-vector, not an RGB pixel: ITK's message had advised converting to 8-bit RGB
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 256, (20, 30, 3)).astype(np.uint8), isVector=True),
                    root / "vector_rgb.nrrd")
    (root / "short_data.raw").write_bytes((root / "short_data.raw").read_bytes()[:600])
    Image.fromarray(np.array([[7]], np.uint8)).save(root / "one_pixel.png")
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(root / "constant.png")
    blemish = np.full((32, 32), 30, np.uint8)
    blemish[10:14, 10:14] = 31  # one grey level: stretched to full contrast it came out as a bright square
    Image.fromarray(blemish).save(root / "blemish.png")
    Image.fromarray(np.full((32, 32, 3), (200, 50, 20), np.uint8)).save(root / "flat_colour.png")
    flat = np.full((32, 32, 4), 100, np.uint8)
    flat[..., 3] = np.linspace(0, 255, 32).astype(np.uint8)  # the alpha varies, the picture does not
    Image.fromarray(flat, "RGBA").save(root / "flat_under_alpha.png")
    volume = rng.random((16, 16, 4)).astype(np.float32)
    volume[3, 4, 1] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), root / "nan.nii.gz")
    # all black 1-bit images compress to almost nothing: the header alone says how big they are
    Image.new("1", (HUGE_SIDE, HUGE_SIDE)).save(root / "huge.png", optimize=True)
    Image.new("1", (5000, 5000)).save(root / "large.png", optimize=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    ds.save_as(root / "bogus_syntax.dcm", enforce_file_format=True)
    Image.fromarray((smooth((40, 40), rng) * 255).astype(np.uint8)).save(root / "good.png")
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "good_mr.dcm")


@pytest.fixture(scope="module")
def bad_run(tiny_bundle, tmp_path_factory):
    """The bad folder (plus notes.xyz named explicitly): (root, process, hashes before)."""
    root = tmp_path_factory.mktemp("bad")
    write_bad_inputs(root / "in")
    before = file_hashes(root / "in")
    proc = run_cli("in", "in/notes.xyz", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", cwd=root)
    return root, proc, before


def test_run_fails_but_good_files_complete(bad_run):
    root, proc, _ = bad_run
    assert proc.returncode == 1
    assert SUMMARY.search(proc.stdout).groups() == ("2", str(len(BAD)), "out")
    assert sorted(p.name for p in (root / "out").iterdir()) == ["good.png", "good_mr.nii.gz"]


def test_nothing_partial_is_left(bad_run):
    root = bad_run[0]
    assert not list((root / "out").rglob(".*")) and not list((root / "in").rglob(".*"))


def test_inputs_unchanged(bad_run):
    root, _, before = bad_run
    assert file_hashes(root / "in") == before


def test_no_traceback_and_one_line_per_failure(bad_run):
    proc = bad_run[1]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == len(BAD), proc.stderr


@pytest.mark.parametrize("name, reason", sorted(BAD.items()))
def test_each_bad_file_has_its_reason(bad_run, name, reason):
    lines = [line for line in bad_run[1].stderr.splitlines() if line.startswith(f"monai-dpe: in/{name}: ")]
    assert len(lines) == 1, bad_run[1].stderr
    assert reason in lines[0]


def test_huge_image_is_refused_from_its_header(bad_run):
    root, proc, _ = bad_run
    assert (root / "in" / "huge.png").stat().st_size < 200_000  # 400 megapixels declared, a few kB stored
    line = next(line for line in proc.stderr.splitlines() if "huge.png" in line)
    assert "refused before loading" in line and "400,000,000" in line


@pytest.mark.parametrize("kind", ["missing", "wrong_shape"])
def test_bad_weights_give_one_line_naming_the_file(tmp_path, kind):
    Image.fromarray((smooth((32, 32), np.random.default_rng(6)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    weights = tmp_path / f"{kind}.pt"
    if kind == "wrong_shape":
        torch.save(shipped_network(channels=(16, 24)).state_dict(), weights)  # the tiny net's keys, other widths
    bundle = tmp_path / "bundle"
    copy_configs(bundle / "configs", Path(__file__).resolve().parent.parent / "bundle" / "configs")
    config = (bundle / "configs" / "inference.json").read_text().replace('"channels": [32, 48, 64, 80, 96]',
                                                                         f'"channels": {list(TINY_CHANNELS)}')
    (bundle / "configs" / "inference.json").write_text(config)
    proc = run_cli("a.png", "-o", "out", "--bundle", str(bundle), "--weights", str(weights), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(weights) in lines[0]
    assert ("not found" if kind == "missing" else "do not fit") in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bundle_run_reports_bad_files_and_still_writes_good_ones(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(src / "constant.png")
    Image.fromarray((smooth((32, 32), np.random.default_rng(7)) * 255).astype(np.uint8)).save(src / "good.png")
    proc = subprocess.run(bundle_command(src, tmp_path / "out", tiny_weights(tmp_path / "tiny.pt")),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode != 0
    assert re.search(r"constant\.png: image is constant", proc.stdout + proc.stderr)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]


@pytest.mark.parametrize("message, reason", [
    ("/src/ITK/Modules/IO/Meta/src/itkMetaImageIO.cxx:490:\nITK ERROR: MetaImageIO(0x55c582ad7280): File cannot be "
     "read: scan.mhd for reading.\nReason: No such file or directory",
     "File cannot be read: scan.mhd for reading: Reason: No such file or directory"),
    ("/src/ITK/Modules/IO/NRRD/src/itkNrrdImageIO.cxx:410:\nitk::ERROR: NrrdImageIO(0x55cda16fbab0): "
     "ReadImageInformation: Error reading a.nrrd:\n[nrrd] nrrdLoad: trouble reading \"a.nrrd\"\n"
     "[nrrd] _nrrdHeaderCheck: type (short) and encoding (raw) require endian info",
     "ReadImageInformation: Error reading a.nrrd: type (short) and encoding (raw) require endian info"),
    ("plain reason\nsecond line", "plain reason"),
])
def test_itk_errors_read_as_their_reason_not_a_source_location(message, reason):
    """ITK's two error spellings both start with a C++ source location and a pointer, neither of use to a user."""
    from monai_dpe.errors import one_line

    assert one_line(RuntimeError(message)) == reason


def _blemished(values, dtype, outliers: bool = False) -> torch.Tensor:
    image = np.full((1, 32, 32), values[0], dtype=dtype)
    image[0, 4:12, 4:12] = values[1]
    if outliers:  # one black and one white pixel: outside the robust range the stretch uses
        image[0, 0, 0], image[0, -1, -1] = 0, 255
    return torch.as_tensor(image)


@pytest.mark.parametrize("values, dtype, outliers, mode, refused", [
    ((30, 31), np.uint8, False, "auto", "nearly constant: its robust range holds 2 storage levels (30 to 31)"),
    ((30, 31), np.uint8, True, "auto", "nearly constant: its robust range holds 2 storage levels (30 to 31)"),
    ((30, 32), np.uint8, False, "auto", "nearly constant: its robust range holds 3 storage levels (30 to 32)"),
    ((100, 103), np.uint8, False, "auto", None),  # four levels: a very dark picture still is one
    ((30, 31), np.uint8, False, "quantitative", None),  # comes back in its own units, not at full contrast
    ((1000, 1001), np.uint16, False, "auto", None),  # 16-bit is quantitative: likewise
    ((0.5, 0.5001), np.float32, False, "auto", None),  # floats have no storage levels to count
])
def test_nearly_constant_display_images_are_refused(values, dtype, outliers, mode, refused):
    from monai_dpe.transforms import CheckImaged, ImageRefused

    image = _blemished(values, dtype, outliers)
    if refused is None:
        CheckImaged(intensity_mode=mode).check(image)
    else:
        with pytest.raises(ImageRefused, match=re.escape(refused)):
            CheckImaged(intensity_mode=mode).check(image)


def test_complex_and_bfloat16_images_get_a_line_not_a_crash():
    from monai_dpe.transforms import CheckImaged, ImageRefused

    with pytest.raises(ImageRefused, match="complex-valued image"):
        CheckImaged().check(torch.ones(1, 16, 16, dtype=torch.complex64) * torch.arange(16))
    with pytest.raises(ImageRefused, match="image is constant"):
        CheckImaged().check(torch.ones(1, 16, 16, dtype=torch.bfloat16))  # before: numpy had no bfloat16
    CheckImaged().check(torch.rand(1, 16, 16).to(torch.bfloat16))


def test_each_colour_channel_is_judged_on_its_own():
    from monai_dpe.transforms import CheckImaged, ImageRefused

    flat = torch.tensor([200, 50, 20], dtype=torch.uint8)[:, None, None].expand(3, 16, 16).clone()
    with pytest.raises(ImageRefused, match="image is constant"):  # before: channels differ, so "not constant"
        CheckImaged().check(flat)
    flat[1, :8] = 90  # one channel carries a picture
    CheckImaged().check(flat)


@pytest.mark.parametrize("message, reason", [
    ("Could not create IO object for reading file /x/t.dcm",
     "no image reader recognises its content (truncated, damaged, or not the format its name says)"),
    # where ITK says why, its reason stands: a missing or unreadable file is not a damaged one
    ("Could not create IO object for reading file /x/t.nrrd\nThe file doesn't exist. \nFilename = /x/t.nrrd",
     "Could not create IO object for reading file /x/t.nrrd"),
    ("itk.Image is not wrapped for input type `itk.Vector[itk.UC,3], int`.\n\nTo limit the size ...",
     "pixel type Vector[UC,3] is not supported by ITK's Python build (save it with an RGB pixel type, as PNG or "
     "TIFF, or as one grey image per channel)"),
    ("itk.Image is not wrapped for input type `itk.RGBPixel[itk.US], int`.\n\nTo limit the size ...",
     "pixel type RGBPixel[US] is not supported by ITK's Python build (convert to 8-bit RGB or one grey image per "
     "channel)"),
])
def test_itk_messages_become_the_reason_a_user_can_act_on(message, reason):
    from monai_dpe.errors import one_line

    assert one_line(RuntimeError(message)) == reason
