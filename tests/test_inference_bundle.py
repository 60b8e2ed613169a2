"""The bundle's inference as MONAI users run it: ``python -m monai.bundle run`` on a folder of real files.

One run (tiny random-init network, ``channels=[8, 16]``) enhances every format the bundle
serves; each test then checks one property of its outputs. Results do not depend on training.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
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

from helpers import AFFINE, BUNDLE, TINY_CHANNELS, bundle_command, file_hashes, smooth, tiny_weights, write_dicom_series



def write_inputs(root: Path) -> dict[str, str]:
    """Every supported format under ``root`` (with sub-folders); returns input relpath -> output relpath."""
    rng = np.random.default_rng(0)
    (root / "2d").mkdir(parents=True)
    (root / "volumes").mkdir()
    grey = (smooth((40, 48), rng) * 255).astype(np.uint8)
    rgb = (np.stack([smooth((40, 48), rng) for _ in range(3)], -1) * 255).astype(np.uint8)
    alpha = rng.integers(0, 256, (40, 48, 1), dtype=np.uint8)
    grey16 = (smooth((40, 48), rng) * 40000 + 1000).astype(np.uint16)
    Image.fromarray(grey).save(root / "2d" / "grey.png")
    Image.fromarray(rgb).save(root / "2d" / "rgb.png")
    Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(root / "2d" / "rgba.png")
    Image.fromarray(grey16).save(root / "2d" / "grey16.png")
    Image.fromarray(rgb).save(root / "2d" / "rgb.jpg", quality=95)
    Image.fromarray(rgb).save(root / "2d" / "rgb.bmp")
    tifffile.imwrite(root / "2d" / "grey8.tif", grey)
    tifffile.imwrite(root / "2d" / "grey16.tiff", grey16)
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "2d" / "ct_slice.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "2d" / "mr_slice.dcm")
    vol = smooth((24, 28, 6), rng)
    nib.save(nib.Nifti1Image((vol * 1500 - 1000).astype(np.int16), AFFINE), root / "volumes" / "ct_hu.nii.gz")
    nib.save(nib.Nifti1Image(vol.astype(np.float32) * 3.5, AFFINE), root / "volumes" / "mr_float.nii")
    nib.save(nib.Nifti1Image((vol * 255).astype(np.uint8), AFFINE), root / "volumes" / "u8.nii.gz")
    image = sitk.GetImageFromArray((vol.transpose(2, 1, 0) * 900).astype(np.int16))
    image.SetSpacing((0.7, 0.8, 2.0))
    image.SetOrigin((1.0, -2.0, 3.5))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    for name in ("scan.nrrd", "scan.mha", "scan_mhd.mhd"):
        sitk.WriteImage(image, str(root / "volumes" / name))
    write_dicom_series(root / "volumes" / "ct_series")
    expected = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix != ".raw" and path.parent.name != "ct_series":
            rel = str(path.relative_to(root))
            expected[rel] = rel[: -len(".dcm")] + ".nii.gz" if rel.endswith(".dcm") else rel
    expected["volumes/ct_series"] = "volumes/ct_series.nii.gz"  # a series folder is one volume
    return expected


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory):
    """One bundle run over every format: (input root, output root, expected outputs, process, hashes before)."""
    tmp = tmp_path_factory.mktemp("bundle")
    src, out = tmp / "in", tmp / "out"
    expected = write_inputs(src)
    before = file_hashes(src)
    proc = subprocess.run(bundle_command(src, out, tiny_weights(tmp / "tiny.pt")), capture_output=True, text=True,
                          timeout=600, cwd=tmp)
    return src, out, expected, proc, before


def test_run_succeeds(enhanced):
    proc = enhanced[3]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_one_output_per_input_and_nothing_else(enhanced):
    src, out, expected, _, _ = enhanced
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == set(expected.values()) | {"volumes/scan_mhd.raw"}  # .mhd keeps its pixels in a .raw
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_inputs_unchanged(enhanced):
    src, _, _, _, before = enhanced
    assert file_hashes(src) == before


@pytest.mark.parametrize(
    "name, mode",
    [("grey.png", "L"), ("rgb.png", "RGB"), ("rgba.png", "RGBA"), ("grey16.png", "I;16"), ("rgb.jpg", "RGB"),
     ("rgb.bmp", "RGB"), ("grey8.tif", "L"), ("grey16.tiff", "I;16")],
)
def test_2d_formats_keep_size_mode_and_range(enhanced, name, mode):
    src, out, _, _, _ = enhanced
    with Image.open(src / "2d" / name) as a, Image.open(out / "2d" / name) as b:
        assert (b.format, b.mode, b.size) == (a.format, mode, a.size)
        x, y = np.asarray(a), np.asarray(b)
    assert y.dtype == x.dtype
    assert not np.array_equal(x, y), "output is the input: nothing was enhanced"


def test_rgba_alpha_is_bit_exact(enhanced):
    src, out, _, _, _ = enhanced
    x, y = np.asarray(Image.open(src / "2d" / "rgba.png")), np.asarray(Image.open(out / "2d" / "rgba.png"))
    np.testing.assert_array_equal(y[..., 3], x[..., 3])


@pytest.mark.parametrize(
    "name, dtype", [("ct_hu.nii.gz", np.int16), ("mr_float.nii", np.float32), ("u8.nii.gz", np.uint8)]
)
def test_nifti_keeps_affine_shape_and_dtype(enhanced, name, dtype):
    src, out, _, _, _ = enhanced
    a, b = nib.load(src / "volumes" / name), nib.load(out / "volumes" / name)
    assert b.shape == a.shape
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
    assert b.get_data_dtype() == np.dtype(dtype)
    data = np.asarray(b.dataobj)
    assert data.dtype == np.dtype(dtype) and np.isfinite(data).all()


def test_ct_stays_in_hounsfield_units(enhanced):
    src, out, _, _, _ = enhanced
    x = np.asarray(nib.load(src / "volumes" / "ct_hu.nii.gz").dataobj)
    y = np.asarray(nib.load(out / "volumes" / "ct_hu.nii.gz").dataobj)
    # the policy's exact inverse maps the robust window back onto HU: outputs span the input's scale, not [0, 1]
    assert y.min() < -500 and y.max() > 200 and np.percentile(y, 50) == pytest.approx(np.percentile(x, 50), abs=400)


@pytest.mark.parametrize("name", ["scan.nrrd", "scan.mha", "scan_mhd.mhd"])
def test_itk_formats_keep_geometry_and_pixel_type(enhanced, name):
    src, out, _, _, _ = enhanced
    a, b = sitk.ReadImage(str(src / "volumes" / name)), sitk.ReadImage(str(out / "volumes" / name))
    assert b.GetSize() == a.GetSize()
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-6)
    assert b.GetPixelIDTypeAsString() == a.GetPixelIDTypeAsString()


@pytest.mark.parametrize("name, shape", [("ct_slice", (128, 128)), ("mr_slice", (64, 64))])
def test_dicom_file_becomes_nifti_with_its_geometry(enhanced, name, shape):
    src, out, _, _, _ = enhanced
    a, b = sitk.ReadImage(str(src / "2d" / f"{name}.dcm")), sitk.ReadImage(str(out / "2d" / f"{name}.nii.gz"))
    assert b.GetSize()[:2] == shape and b.GetSize()[2:] in ((), (1,))
    np.testing.assert_allclose(b.GetSpacing()[:2], a.GetSpacing()[:2], atol=1e-5)
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-6)
    assert np.issubdtype(sitk.GetArrayFromImage(b).dtype, np.integer)


def test_dicom_series_becomes_one_volume(enhanced):
    src, out, _, _, _ = enhanced
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(src / "volumes" / "ct_series")))
    a, b = reader.Execute(), sitk.ReadImage(str(out / "volumes" / "ct_series.nii.gz"))
    assert b.GetSize() == a.GetSize() == (128, 128, 4)
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=1e-3)


def test_workflow_has_the_infer_properties(tmp_path):
    from monai.bundle import ConfigWorkflow

    (tmp_path / "in").mkdir()
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        dataset_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "out"),
        weights_path=str(tiny_weights(tmp_path / "tiny.pt")),
        channels=list(TINY_CHANNELS),
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_lowercase_false_flags_mean_false(tmp_path):
    """fire hands `--overwrite false` over as the string 'false', which Python counts as true."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(np.tile(np.arange(40, 104, 2, dtype=np.uint8), (32, 1))).save(src / "grey.png")
    out.mkdir()
    (out / "grey.png").write_bytes(b"an earlier output")
    weights = tiny_weights(tmp_path / "tiny.pt")
    command = bundle_command(src, out, weights, "--overwrite", "false", "--save_comparison", "false",
                             "--progress", "false")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0 and "grey.png" in proc.stderr
    assert (out / "grey.png").read_bytes() == b"an earlier output", "overwrite false must not overwrite"
    proc = subprocess.run(bundle_command(src, out, weights, "--overwrite", "true", "--save_comparison", "false"),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["grey.png"], "save_comparison false writes no comparison"
    assert Image.open(out / "grey.png").size == (32, 32)


def test_nifti_spaces_integer_types_and_8bit_volumes_are_kept(tmp_path):
    """qform/sform and their codes as in the source (ITK viewers use the qform), an unscaled uint16 volume
    stays plain uint16 (no slope, nothing outside uint16), and an 8-bit volume is quantitative (its units)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(4)
    vol = smooth((24, 20, 5), rng)
    scanner = np.diag([1.0, 1.0, 3.0, 1.0])
    scanner[:3, 3] = [-10, -20, -30]
    aligned = scanner.copy()
    aligned[0, 3] += 5
    registered = nib.Nifti1Image((vol * 300).astype(np.float32), aligned)
    registered.header.set_qform(scanner, code=1)
    registered.header.set_sform(aligned, code=2)
    nib.save(registered, src / "registered.nii.gz")
    template = nib.Nifti1Image((vol * 300).astype(np.float32), AFFINE)
    template.header.set_sform(AFFINE, code=4)  # MNI space, no qform (as template tools write)
    template.header.set_qform(None, code=0)
    nib.save(template, src / "template.nii.gz")
    u16 = nib.Nifti1Image((vol * 60000 + 2000).astype(np.uint16), AFFINE)
    nib.save(u16, src / "u16.nii.gz")
    dim = (60 + vol * 19).astype(np.uint8)  # a dim 8-bit MR: scanner values 60..79, not a photo
    nib.save(nib.Nifti1Image(dim, AFFINE), src / "u8_dim.nii.gz")
    proc = subprocess.run(bundle_command(src, out, tiny_weights(tmp_path / "tiny.pt")), capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("registered.nii.gz", "template.nii.gz"):
        a, b = nib.load(src / name).header, nib.load(out / name).header
        for form in ("qform", "sform"):
            assert int(b[f"{form}_code"]) == int(a[f"{form}_code"]), (name, form)
            np.testing.assert_allclose(getattr(b, f"get_{form}")(), getattr(a, f"get_{form}")(), atol=1e-5)
    assert sitk.ReadImage(str(out / "registered.nii.gz")).GetOrigin() == sitk.ReadImage(
        str(src / "registered.nii.gz")).GetOrigin()
    written = nib.load(out / "u16.nii.gz")
    assert written.get_data_dtype() == np.uint16 and written.header.get_slope_inter() == (None, None)
    stored = np.asarray(written.dataobj)
    assert stored.dtype == np.uint16
    enhanced_dim = np.asarray(nib.load(out / "u8_dim.nii.gz").dataobj)
    assert enhanced_dim.dtype == np.uint8
    assert abs(float(enhanced_dim.mean()) - float(dim.mean())) < 5, "an 8-bit volume keeps its units, not 0..255"
    assert enhanced_dim.max() < 120


def test_bundle_postprocessing_returns_the_source_storage_type(tmp_path):
    """MONAI Label runs preprocessing, inferer and postprocessing with its own writer: a uint16 volume
    (read by MONAI as int32) must leave postprocessing as uint16, as SaveEnhancedd writes it."""
    from monai.bundle import ConfigParser

    volume = (smooth((32, 28, 4), np.random.default_rng(5)) * 60000 + 1000).astype(np.uint16)
    path = tmp_path / "mr_u16.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), path)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "weights_path": str(tiny_weights(tmp_path / "tiny.pt")),
                   "channels": list(TINY_CHANNELS), "device": "cpu", "progress": False})
    item = parser.get_parsed_content("preprocessing")({"image": str(path)})
    assert item["image"].meta["filename_or_obj"] == str(path)
    network = parser.get_parsed_content("network")
    with torch.no_grad():
        item["pred"] = parser.get_parsed_content("inferer")(item["image"][None], network)[0]
    pred = parser.get_parsed_content("postprocessing")(item)["pred"]
    assert pred.dtype == torch.uint16 and tuple(pred.shape[1:]) == volume.shape
    np.testing.assert_allclose(pred.meta["affine"], AFFINE, atol=1e-5)
