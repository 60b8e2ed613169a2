"""Image files as users have them: palettes, CMYK, EXIF-rotated photos, 1-bit masks, multi-page TIFF
stacks and folders of unrelated DICOM files, each enhanced as the intensities a viewer shows.

One ``monai-dpe enhance`` run with the tiny bundle takes all of them; where a twin file holds the
same intensities in a plain mode, both must come out identical.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file

from monai_dpe.data.discovery import find_images
from monai_dpe.engines.planning import plan_outputs
from monai_dpe.transforms.io import output_path
from helpers import SUMMARY, run_cli, smooth

EXIF_ORIENTATION = 0x0112


def _rgb(rng, shape=(40, 52)) -> np.ndarray:
    return (np.stack([smooth(shape, rng) for _ in range(3)], -1) * 255).astype(np.uint8)


def _photo(shape=(40, 52)) -> np.ndarray:
    """A smooth colour image: JPEG's chroma subsampling would blur per-pixel colour noise away."""
    y, x = np.indices(shape) / np.array(shape).reshape(2, 1, 1)
    channels = (0.2 + 0.6 * x, 0.2 + 0.6 * y, 0.5 + 0.3 * np.sin(3 * x + 2 * y))
    return (np.stack(channels, -1) * 255).astype(np.uint8)


def write_inputs(root: Path) -> None:
    rng = np.random.default_rng(3)
    root.mkdir()
    palette = Image.fromarray(_rgb(rng)).quantize(32)
    palette.save(root / "palette.png")
    palette.convert("RGB").save(root / "palette_as_rgb.png")
    clear = Image.fromarray(_rgb(rng)).quantize(32)
    clear.info["transparency"] = 0
    clear.save(root / "palette_alpha.png", transparency=0)
    clear.convert("RGBA").save(root / "palette_alpha_as_rgba.png")
    grey_palette = Image.fromarray((smooth((36, 44), rng) * 255).astype(np.uint8), "P")
    grey_palette.putpalette([v for v in range(256) for _ in range(3)])  # index i shows grey i
    grey_palette.save(root / "grey_palette.png")
    grey_palette.convert("L").save(root / "grey_palette_as_grey.png")
    Image.fromarray(_photo()).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    with Image.open(root / "cmyk.jpg") as cmyk:  # the twin holds the decoded CMYK's RGB, losslessly
        cmyk.convert("RGB").save(root / "cmyk_as_rgb.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored landscape, shown portrait (rotated 90 degrees clockwise)
    Image.fromarray(_photo((30, 50))).save(root / "rotated.jpg", exif=exif, dpi=(100, 300), quality=95)
    with Image.open(root / "rotated.jpg") as stored:  # the twin: the decoded pixels turned as a viewer shows them
        stored.transpose(Image.Transpose.ROTATE_270).save(root / "rotated_as_shown.png")
    Image.fromarray(smooth((36, 36), rng) > 0.5).convert("1").save(root / "bilevel.png")
    tifffile.imwrite(root / "stack.tif", (np.stack([smooth((40, 48), rng) for _ in range(5)]) * 255).astype(np.uint8))
    (root / "mixed").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "mixed" / "CT_small.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "mixed" / "MR_small.IMA")  # Siemens' suffix


@pytest.fixture(scope="module")
def formats_run(tmp_path_factory, tiny_bundle):
    root = tmp_path_factory.mktemp("formats")
    write_inputs(root / "in")
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--backend", "eager", cwd=root)
    return root / "out", proc


def test_every_file_is_enhanced(formats_run):
    out, proc = formats_run
    assert proc.returncode == 0, proc.stderr
    assert SUMMARY.search(proc.stdout).groups()[:2] == ("14", "0")


def test_palette_images_are_enhanced_as_their_colours(formats_run):
    out, _ = formats_run
    for name, twin, mode in (("palette", "palette_as_rgb", "RGB"), ("palette_alpha", "palette_alpha_as_rgba", "RGBA"),
                             ("grey_palette", "grey_palette_as_grey", "L")):
        with Image.open(out / f"{name}.png") as got, Image.open(out / f"{twin}.png") as expected:
            assert got.mode == mode
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def _close_to_twin(got: Image.Image, twin_path: Path) -> None:
    """A JPEG output against its twin's lossless output: equal up to JPEG's re-encoding."""
    with Image.open(twin_path) as twin:
        assert got.mode == twin.mode and got.size == twin.size
        difference = np.abs(np.asarray(got, np.float64) - np.asarray(twin, np.float64))
    assert difference.mean() < 6.0, difference.mean()  # a wrong turn or channel mix-up is off by ~100


def test_cmyk_jpeg_becomes_rgb_not_rgb_plus_alpha(formats_run):
    out, _ = formats_run
    with Image.open(out / "cmyk.jpg") as got:
        _close_to_twin(got, out / "cmyk_as_rgb.png")


def test_exif_rotated_photo_is_written_upright(formats_run):
    """The output has no EXIF orientation, so its pixels must already be in the order a viewer shows."""
    out, _ = formats_run
    with Image.open(out / "rotated.jpg") as got:
        assert got.size == (30, 50)  # shown portrait: the stored 50x30 turned
        assert got.getexif().get(EXIF_ORIENTATION, 1) == 1
        assert tuple(round(v) for v in got.info["dpi"]) == (300, 100), "the resolution turns with the pixels"
        _close_to_twin(got, out / "rotated_as_shown.png")


def test_bilevel_png_is_enhanced_as_grey_not_cast_to_white(formats_run):
    out, _ = formats_run
    with Image.open(out / "bilevel.png") as got:
        values = np.asarray(got)
        assert got.mode == "L" and values.min() < 64 and values.max() > 192


def test_multi_page_tiff_keeps_its_pages(formats_run):
    out, _ = formats_run
    pages = tifffile.imread(out / "stack.tif")
    assert pages.shape == (5, 40, 48) and pages.dtype == np.uint8


def test_folder_of_unrelated_dicom_files_gives_one_output_each(formats_run):
    """MONAI's series reader would keep only the first series of the folder and drop the other file;
    the Siemens ``.IMA`` file is DICOM like the ``.dcm`` one."""
    out, _ = formats_run
    assert sorted(p.name for p in (out / "mixed").iterdir()) == ["CT_small.nii.gz", "MR_small.nii.gz"]


def test_dicom_written_as_nifti_says_millimetres_and_keeps_integer_pixels(formats_run):
    import nibabel as nib

    out, _ = formats_run
    for name in ("CT_small", "MR_small"):
        enhanced = nib.load(out / "mixed" / f"{name}.nii.gz")
        assert enhanced.header.get_xyzt_units()[0] == "mm"
        assert np.issubdtype(enhanced.get_data_dtype(), np.integer)  # as read, rescaled to their units
        assert enhanced.shape[:2] == pydicom.dcmread(get_testdata_file(f"{name}.dcm")).pixel_array.T.shape


def test_discovery_groups_dicom_by_series(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), mixed / "ct")  # extensionless, as PACS exports name them
    shutil.copy(get_testdata_file("MR_small.dcm"), mixed / "mr.dcm")
    assert sorted(item["relpath"] for item in find_images(tmp_path)) == ["mixed/ct", "mixed/mr.dcm"]
    (mixed / "mr.dcm").unlink()
    shutil.copy(get_testdata_file("CT_small.dcm"), mixed / "ct_copy.dcm")  # same series: one volume
    assert [item["relpath"] for item in find_images(tmp_path)] == ["mixed"]
    shutil.copy(get_testdata_file("DICOMDIR"), mixed / "DICOMDIR")  # a media index is neither image nor series
    assert [item["relpath"] for item in find_images(tmp_path)] == ["mixed"]
    (mixed / "notes.txt").write_text("scanner notes")  # sidecars do not split a series into slices
    (mixed / "ct.json").write_text("{}")
    assert [item["relpath"] for item in find_images(tmp_path)] == ["mixed"]
    Image.new("L", (8, 8)).save(mixed / "thumbnail.png")  # another image: a plain folder, nothing dropped
    assert sorted(item["relpath"] for item in find_images(tmp_path)) == [
        "mixed/ct", "mixed/ct_copy.dcm", "mixed/thumbnail.png"]


def test_discovery_knows_dicom_by_its_other_suffixes(tmp_path):
    for name in ("a.IMA", "b.dicom", "c.Dcm"):
        shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / name)
    assert [item["relpath"] for item in find_images(tmp_path)] == [tmp_path.name]  # one series
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "d.ima")
    assert [item["relpath"] for item in find_images(tmp_path)] == ["a.IMA", "b.dicom", "c.Dcm", "d.ima"]
    assert {output_path("out", name).name for name in ("a.IMA", "b.dicom", "c.Dcm")} == {
        "a.nii.gz", "b.nii.gz", "c.nii.gz"}


def test_inputs_sharing_names_are_kept_apart(tmp_path):
    """Two inputs holding the same relative path each go under their own name, as ``cp -r a b out/``."""
    for rel in ("a/img.png", "a/only.png", "b/img.png", "c/x/img.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / rel)
    relpaths = lambda *inputs: [item["relpath"] for item in find_images([tmp_path / i for i in inputs])]  # noqa: E731
    assert relpaths("a", "b") == ["a/img.png", "a/only.png", "b/img.png"]
    assert relpaths("a/img.png", "b/img.png") == ["a/img.png", "b/img.png"]
    assert relpaths("a", "c") == ["img.png", "only.png", "x/img.png"]  # nothing shared: as before
    assert relpaths("a") == ["img.png", "only.png"]
    planned = plan_outputs(find_images([tmp_path / "a", tmp_path / "b"]), tmp_path / "out", False, False, False)
    assert not [item["error"] for item in planned if "error" in item]


def test_photo_keeps_its_resolution_and_colour_profile(tmp_path, tiny_bundle):
    """A dermatology or microscopy photo's DPI is its physical scale and its ICC profile its colours."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (tmp_path / "in").mkdir()
    photo = Image.fromarray(_rgb(np.random.default_rng(4)))
    photo.save(tmp_path / "in" / "lesion.jpg", dpi=(300, 300), icc_profile=profile, quality=95)
    photo.save(tmp_path / "in" / "cells.png", dpi=(150, 150), icc_profile=profile)
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--backend", "eager", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name, dpi in (("lesion.jpg", 300), ("cells.png", 150)):
        with Image.open(tmp_path / "out" / name) as got:
            assert round(got.info["dpi"][0]) == dpi and got.info["icc_profile"] == profile


def _nifti(path: Path, data: np.ndarray, dtype, slope: float | None = None) -> None:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_xyzt_units("micron", "sec")
    header["descrip"] = b"confocal stack"
    image = nib.Nifti1Image(data, np.diag([0.26, 0.26, 0.29, 1.0]), header)
    if slope is not None:
        image.header.set_slope_inter(slope, -100.0)
    nib.save(image, path)


def test_nifti_keeps_its_header_rank_and_scaled_dtype(tmp_path, tiny_bundle):
    """A 2D NIfTI comes back 2D, a single time point (X, Y, Z, 1) 4D with its time step; a scaled int16
    volume comes back int16 with its units and description."""
    import nibabel as nib

    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    _nifti(tmp_path / "in" / "slice.nii.gz", (smooth((40, 44), rng) * 3000).astype(np.int16), np.int16)
    volume = (np.stack([smooth((36, 40), rng) for _ in range(4)], -1) * 20000).astype(np.int16)
    _nifti(tmp_path / "in" / "scaled.nii.gz", volume, np.int16, slope=0.05)
    decoded = np.asarray(nib.load(tmp_path / "in" / "scaled.nii.gz").get_fdata(), np.float32)
    _nifti(tmp_path / "in" / "scaled_as_float.nii.gz", decoded, np.float32)
    _nifti(tmp_path / "in" / "one_timepoint.nii.gz", volume[..., None], np.int16)  # (X, Y, Z, 1): one time point
    timepoint = nib.load(tmp_path / "in" / "one_timepoint.nii.gz")
    timepoint.header.set_zooms((0.26, 0.26, 0.29, 2.5))
    nib.save(timepoint, tmp_path / "in" / "one_timepoint.nii.gz")
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--backend", "eager", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert SUMMARY.search(proc.stdout).groups()[:2] == ("4", "0")
    for name in ("slice.nii.gz", "scaled.nii.gz", "scaled_as_float.nii.gz", "one_timepoint.nii.gz"):
        source, enhanced = nib.load(tmp_path / "in" / name), nib.load(tmp_path / "out" / name)
        assert enhanced.shape == source.shape and enhanced.get_data_dtype() == source.get_data_dtype()
        assert enhanced.header.get_xyzt_units() == ("micron", "sec")
        assert enhanced.header["descrip"] == b"confocal stack"
        np.testing.assert_allclose(enhanced.header.get_zooms(), source.header.get_zooms())
    scaled, twin = (nib.load(tmp_path / "out" / n) for n in ("scaled.nii.gz", "scaled_as_float.nii.gz"))
    step = float(scaled.dataobj.slope)
    assert np.isfinite(step) and step > 0
    np.testing.assert_allclose(scaled.get_fdata(), twin.get_fdata(), atol=step)


def test_itk_images_keep_rank_pixel_type_and_geometry(tmp_path, tiny_bundle):
    """A 2D NRRD stays 2D and scalar; a uint16 volume (read by MONAI as int32) goes back to uint16;
    a MetaImage header and its data file pass the data-file check; a signed 16-bit TIFF stays signed 16-bit,
    32-bit integer TIFFs stay 32-bit (not clipped to 16)."""
    import itk

    rng = np.random.default_rng(6)
    (tmp_path / "in").mkdir()
    sources = {
        "slice.nrrd": (smooth((40, 44), rng) * 3000).astype(np.int16),
        "stack.mha": (np.stack([smooth((36, 40), rng) for _ in range(4)]) * 60000).astype(np.uint16),
        "header_and_data.mhd": (np.stack([smooth((30, 34), rng) for _ in range(3)]) * 900).astype(np.int16),
    }
    for name, data in sources.items():
        image = itk.image_from_array(data)
        image.SetSpacing([0.5, 0.7, 2.0][: data.ndim])
        image.SetOrigin([10.0, -20.0, 5.0][: data.ndim])
        itk.imwrite(image, str(tmp_path / "in" / name))
    signed = (smooth((40, 44), rng) * 3000 - 1000).astype(np.int16)  # PIL cannot write signed TIFF pixels
    tifffile.imwrite(tmp_path / "in" / "signed.tif", signed)
    wide = {"int32.tif": (smooth((40, 44), rng) * 200000 - 70000).astype(np.int32),  # PIL stored these in 16 bits
            "uint32.tif": (smooth((40, 44), rng) * 200000).astype(np.uint32)}
    for name, data in wide.items():
        tifffile.imwrite(tmp_path / "in" / name, data)
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--backend", "eager", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name, data in wide.items():
        enhanced_wide = tifffile.imread(tmp_path / "out" / name)
        assert enhanced_wide.dtype == data.dtype and enhanced_wide.shape == data.shape, name
        assert enhanced_wide.max() > 70000 and np.corrcoef(enhanced_wide.ravel(), data.ravel())[0, 1] > 0.9, name
    enhanced_signed = tifffile.imread(tmp_path / "out" / "signed.tif")
    assert enhanced_signed.dtype == np.int16 and enhanced_signed.shape == signed.shape
    assert enhanced_signed.min() < 0 and np.corrcoef(enhanced_signed.ravel(), signed.ravel())[0, 1] > 0.9
    for name, data in sources.items():
        source, enhanced = itk.imread(str(tmp_path / "in" / name)), itk.imread(str(tmp_path / "out" / name))
        pixels = itk.array_from_image(enhanced)
        assert pixels.shape == data.shape and pixels.dtype == data.dtype
        assert enhanced.GetNumberOfComponentsPerPixel() == 1
        assert tuple(enhanced.GetSpacing()) == tuple(source.GetSpacing())
        assert tuple(enhanced.GetOrigin()) == tuple(source.GetOrigin())
        assert np.corrcoef(pixels.ravel(), data.ravel())[0, 1] > 0.9


def test_colour_nifti_and_rgb_dicom_come_back_as_colour_nifti(tmp_path, tiny_bundle):
    """Packed RGB24 and vector (X, Y, Z, 1, 3) NIfTI read as colour; colour is written as a vector image,
    which monai-dpe reads back as colour (an RGB DICOM's output is itself a valid input)."""
    import nibabel as nib

    from monai_dpe.transforms import CheckHeaderd
    from monai_dpe.transforms import LoadDisplayImage

    rgb = _rgb(np.random.default_rng(5)).transpose(1, 0, 2)[:, :, None]  # (X, Y, 1, 3)
    packed = np.zeros(rgb.shape[:3], dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for i, name in enumerate("RGB"):
        packed[name] = rgb[..., i]
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(packed, np.eye(4)), tmp_path / "in" / "packed.nii.gz")
    vector = nib.Nifti1Image(rgb[:, :, :, None], np.eye(4))
    vector.header.set_intent("vector")
    nib.save(vector, tmp_path / "in" / "vector.nii.gz")
    shutil.copy(get_testdata_file("SC_rgb.dcm"), tmp_path / "in" / "photo.dcm")
    loader = LoadDisplayImage(image_only=True, ensure_channel_first=True)
    for name in ("packed.nii.gz", "vector.nii.gz"):
        assert np.array_equal(np.asarray(loader(tmp_path / "in" / name)), rgb.transpose(3, 0, 1, 2))
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--backend", "eager", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    enhanced = {name: nib.load(tmp_path / "out" / f"{name}.nii.gz") for name in ("packed", "vector", "photo")}
    for image in enhanced.values():
        assert image.shape[3:] == (1, 3) and image.header.get_intent()[0] == "vector"
    assert np.array_equal(np.asarray(enhanced["packed"].dataobj), np.asarray(enhanced["vector"].dataobj))
    out_photo = tmp_path / "out" / "photo.nii.gz"
    CheckHeaderd().check(out_photo)  # not refused as a 5D image
    assert loader(out_photo).shape == (3, 100, 100, 1)


def test_a_single_extensionless_dicom_file_is_enhanced_as_its_dcm_copy(tmp_path, tiny_bundle):
    """PACS exports drop the suffix; discovery found such a file but the loader refused it by name."""
    import nibabel as nib

    (tmp_path / "in").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "in" / "ct.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "in" / "IM0002")  # inside a folder, another series
    proc = run_cli("IM0001", "in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--backend", "eager",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # before: "unsupported file type 'IM0001'", exit 1
    assert SUMMARY.search(proc.stdout).groups() == ("3", "0", "out")
    named, suffixed = nib.load(tmp_path / "out" / "IM0001.nii.gz"), nib.load(tmp_path / "out" / "ct.nii.gz")
    np.testing.assert_array_equal(np.asarray(named.dataobj), np.asarray(suffixed.dataobj))
    np.testing.assert_allclose(named.affine, suffixed.affine)
    assert nib.load(tmp_path / "out" / "IM0002.nii.gz").shape[:2] == (64, 64)


def test_linked_folders_are_walked_once_and_loops_are_not(tmp_path, caplog):
    root, other = tmp_path / "in", tmp_path / "other"
    (root / "real").mkdir(parents=True)
    (other / "deep").mkdir(parents=True)
    for folder in (root, root / "real", other, other / "deep"):
        Image.new("L", (8, 8)).save(folder / "a.png")
    (root / "linked").symlink_to(other)  # before: its images were neither enhanced nor reported
    (root / "alias").symlink_to(root / "real")  # inside the input: walked anyway, not twice
    (root / "narrower").symlink_to(other / "deep")  # where another link already leads (walked first: sorted)
    (root / "real" / "up").symlink_to(root)  # a loop: would walk the input again, and again
    (other / "back").symlink_to(root)  # a loop through the linked folder
    with caplog.at_level("WARNING", logger="monai_dpe.data.discovery"):
        found = sorted(item["relpath"] for item in find_images(root))
    assert found == ["a.png", "linked/a.png", "linked/deep/a.png", "real/a.png"]
    left = sorted(r.getMessage() for r in caplog.records if "not followed" in r.getMessage())
    assert left == [f"{root / 'alias'}: a link to a folder inside the input, walked anyway, not followed",
                    f"{root / 'linked' / 'back'}: a link to a folder that holds the input (a loop), not followed",
                    f"{root / 'narrower'}: a link to a folder another link already leads to, not followed",
                    f"{root / 'real' / 'up'}: a link to a folder that holds the input (a loop), not followed"]


def test_an_extensionless_dicom_file_gets_the_header_checks_a_dcm_file_gets(tmp_path):
    from monai_dpe.transforms import CheckHeaderd, ImageRefused

    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    for name in ("ct.dcm", "IM0001"):  # before: IM0001 was loaded whole whatever its header declared
        with pytest.raises(ImageRefused, match="too large"):
            CheckHeaderd("image", max_voxels=100)({"image": str(tmp_path / name)})
