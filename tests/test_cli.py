"""``monai-dpe enhance`` as a user runs it: the console script in a subprocess, on real files.

A tiny copy of the bundle (the shipped configs with ``channels=[8, 16]`` and random-init
weights) keeps each run to seconds; one test uses the shipped bundle itself with ``--weights``.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_dpe.visualize import comparison_path, save_comparison
from helpers import AFFINE, BUNDLE, MONAI_DPE, SUMMARY, file_hashes, run_cli, smooth, shipped_network, write_dicom_series

def write_study(root: Path) -> Path:
    """A folder of a grey PNG, a sub-folder with an RGB PNG and a NIfTI volume, and a DICOM series."""
    rng = np.random.default_rng(1)
    (root / "study" / "sub").mkdir(parents=True)
    Image.fromarray((smooth((36, 44), rng) * 255).astype(np.uint8)).save(root / "study" / "xray.png")
    rgb = np.stack([smooth((40, 40), rng) for _ in range(3)], -1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(root / "study" / "sub" / "slide.png")
    volume = (smooth((20, 22, 5), rng) * 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, AFFINE), root / "study" / "sub" / "mr.nii.gz")
    write_dicom_series(root / "study" / "series", n_slices=3)
    Image.fromarray((smooth((30, 30), rng) * 120).astype(np.uint8)).save(root / "single.png")
    return root


@pytest.fixture(scope="module")
def comparison_run(tiny_bundle, tmp_path_factory):
    """Files and folders in, with --save-comparison: (root, process, input hashes before)."""
    root = write_study(tmp_path_factory.mktemp("cli"))
    before = file_hashes(root)
    proc = run_cli("study", "single.png", "--output-dir", "out", "--bundle", str(tiny_bundle), "--save-comparison",
                   cwd=root)
    return root, proc, before


def test_enhance_mirrors_inputs_with_a_panel_each(comparison_run):
    root, proc, _ = comparison_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = ["xray.png", "sub/slide.png", "sub/mr.nii.gz", "series.nii.gz", "single.png"]
    expected = set(outputs) | {str(comparison_path(Path(o))) for o in outputs}
    assert {str(p.relative_to(root / "out")) for p in (root / "out").rglob("*") if p.is_file()} == expected
    assert not list((root / "out").rglob(".*"))


def test_summary_line_counts_files(comparison_run):
    root, proc, _ = comparison_run
    match = SUMMARY.search(proc.stdout)
    assert match and match.groups() == ("5", "0", "out"), proc.stdout
    assert "Traceback" not in proc.stderr
    assert "files" in proc.stderr  # the progress bar over files


def test_inputs_are_never_written(comparison_run):
    root, _, before = comparison_run
    after = {k: v for k, v in file_hashes(root).items() if not k.startswith("out/")}
    assert after == before


def test_volume_panel_has_a_row_per_axis(comparison_run):
    root = comparison_run[0]
    flat = Image.open(comparison_path(root / "out" / "xray.png"))
    volume = Image.open(comparison_path(root / "out" / "sub" / "mr.nii.gz"))
    assert flat.format == volume.format == "PNG"
    assert volume.height > 2 * flat.height  # three rows: the middle slice along each axis


def test_comparison_shares_one_window_so_brightening_shows(tmp_path):
    """A dark input brightened 3x must look brighter in the panel: input and output are not each auto-scaled."""
    dark = torch.from_numpy((smooth((64, 64), np.random.default_rng(2)) * 80).astype(np.uint8))[None]
    bright = (dark.to(torch.int32) * 3).clamp(0, 255).to(torch.uint8)
    panel = np.asarray(Image.open(save_comparison(dark, bright, tmp_path / "p.png")).convert("L"), dtype=float)
    third = panel.shape[1] // 3
    middle = slice(panel.shape[0] // 4, 3 * panel.shape[0] // 4)
    input_panel, output_panel = panel[middle, :third], panel[middle, third : 2 * third]
    assert output_panel.mean() > input_panel.mean() + 30


def test_existing_outputs_are_refused_then_replaced_with_overwrite(tiny_bundle, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((smooth((32, 32), np.random.default_rng(3)) * 255).astype(np.uint8)).save(src / "a.png")
    (tmp_path / "out").mkdir()
    Image.new("L", (5, 5), 7).save(tmp_path / "out" / "a.png")
    stale = (tmp_path / "out" / "a.png").read_bytes()
    env = {"MONAI_DPE_BUNDLE": str(tiny_bundle)}  # the bundle from the environment this time

    refused = run_cli("in", "-o", "out", "--no-progress", cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert re.search(r"^monai-dpe: in/a\.png: output .*a\.png already exists \(pass --overwrite", refused.stderr, re.M)
    assert (tmp_path / "out" / "a.png").read_bytes() == stale

    replaced = run_cli("in", "-o", "out", "--no-progress", "--overwrite", cwd=tmp_path, env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert SUMMARY.search(replaced.stdout).groups()[:2] == ("1", "0")
    assert Image.open(tmp_path / "out" / "a.png").size == (32, 32)


@pytest.mark.parametrize("output", ["in", "in/enhanced", "in/../in"])
def test_output_dir_in_an_input_folder_is_refused(tmp_path, output):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "in" / "a.png")
    before = file_hashes(tmp_path)
    proc = run_cli("in", "--output-dir", output, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "input folder" in proc.stderr and "Traceback" not in proc.stderr
    assert file_hashes(tmp_path) == before and not (tmp_path / "in" / "enhanced").exists()


def test_output_dir_holding_an_input_file_is_refused(tmp_path):
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "a.png")
    proc = run_cli("a.png", "--output-dir", ".", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 2 and "is the input folder" in proc.stderr


def test_resume_finishes_an_item_stopped_between_its_output_and_its_panel(tmp_path, tiny_bundle):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.arange(1024, dtype=np.uint16).reshape(32, 32).astype(np.uint8)).save(tmp_path / "in" / "a.png")
    args = ("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--save-comparison")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    first = (tmp_path / "out" / "a.png").read_bytes()
    panel = next((tmp_path / "out").glob("a.png*comparison*"))
    panel.unlink()  # what a kill between the two renames leaves
    resumed = run_cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert panel.exists() and (tmp_path / "out" / "a.png").read_bytes() == first


@pytest.mark.parametrize("summary", ["in/a.png", "in", "in/../in/a.png"])
def test_summary_that_would_overwrite_an_input_is_refused(tmp_path, summary):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "in" / "a.png")
    before = file_hashes(tmp_path)
    proc = run_cli("in", "in/a.png", "--output-dir", "out", "--summary", summary, cwd=tmp_path)
    assert proc.returncode == 2 and "inputs are never written" in proc.stderr and "Traceback" not in proc.stderr
    assert file_hashes(tmp_path) == before and not (tmp_path / "out").exists()


def test_series_folder_given_as_dot_is_named_after_the_folder(tmp_path, tiny_bundle):
    series = write_dicom_series(tmp_path / "ct_series")
    proc = run_cli(".", "--output-dir", str(tmp_path / "out"), "--bundle", str(tiny_bundle), "--no-progress", cwd=series)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ct_series.nii.gz"]


def test_network_share_zero_writes_an_affine_map_of_the_input_and_out_of_range_is_refused(tmp_path, tiny_bundle):
    """``--network-share 0``: the output is the input's global affine fit to the network's output, so it keeps
    every detail of the input; a share outside [0, 1] is a usage error before anything runs."""
    volume = (smooth((20, 22, 3), np.random.default_rng(6)) * 1000).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "mr.nii.gz")
    proc = run_cli("mr.nii.gz", "-o", "out", "--bundle", str(tiny_bundle), "--network-share", "0", "--no-progress",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.asarray(nib.load(tmp_path / "out" / "mr.nii.gz").dataobj, dtype=np.float64)
    for z in range(volume.shape[-1]):
        assert np.corrcoef(out[..., z].ravel(), volume[..., z].ravel())[0, 1] > 0.99999
    refused = run_cli("mr.nii.gz", "-o", "out2", "--bundle", str(tiny_bundle), "--network-share", "1.5", cwd=tmp_path)
    assert refused.returncode == 2 and "must lie in [0, 1]" in refused.stderr
    assert not (tmp_path / "out2").exists()


def test_a_well_exposed_photo_keeps_its_own_level_unless_the_network_level_is_asked_for(tmp_path, tiny_bundle):
    """A smooth, noise-free 8-bit photo whose white reaches full scale comes back as it went in (the blend
    keeps its detail and its level); ``--network-level`` takes the network's level and contrast instead."""
    rows, cols = np.mgrid[0:48, 0:40] / 47.0
    photo = (np.stack([rows, 0.3 + 0.7 * cols * 47 / 39, 0.5 * (rows + cols)], -1) * 255).round().astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    outputs = {}
    for name, extra in (("own", ()), ("network", ("--network-level",))):
        proc = run_cli("photo.png", "-o", name, "--bundle", str(tiny_bundle), "--no-progress", *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[name] = np.asarray(Image.open(tmp_path / name / "photo.png"), dtype=np.int16)
    assert np.abs(outputs["own"] - photo).max() <= 1, "its own level and its own detail: the file it was"
    assert np.abs(outputs["network"] - photo).mean() > 2, "the (random, tiny) network's level is another"


def test_colour_stretch_share_one_gives_a_dark_colour_photo_its_stretch(tmp_path, tiny_bundle):
    """``--colour-stretch-share 1`` with ``--network-share 0``: a dark colour photo's output is its own
    percentile stretch (the network input), whatever the network's level."""
    from monai_dpe.transforms.intensity_policy import robust_range

    rows, cols = np.mgrid[0:48, 0:40] / 47.0
    photo = (np.stack([rows, 0.3 + 0.7 * cols * 47 / 39, 0.5 * (rows + cols)], -1) * 90).round().astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "dark.png")
    proc = run_cli("dark.png", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--network-share", "0",
                   "--colour-stretch-share", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    low, high = robust_range(photo.astype(np.float64), 0.5, 99.5)
    stretched = np.clip((photo - low) / (high - low), 0, 1) * 255
    out = np.asarray(Image.open(tmp_path / "out" / "dark.png"), dtype=np.float64)
    assert np.abs(out - stretched).max() <= 1.0
    refused = run_cli("dark.png", "-o", "out2", "--bundle", str(tiny_bundle), "--colour-stretch-share", "-0.1",
                      cwd=tmp_path)
    assert refused.returncode == 2 and "must lie in [0, 1]" in refused.stderr


@pytest.mark.slow  # a full-width network: the one test that runs the shipped bundle's configs unchanged
def test_shipped_bundle_with_weights_option_and_run_options(tmp_path):
    """The default bundle (found next to the package) with full-width random weights and every run option."""
    torch.manual_seed(0)

    torch.save(shipped_network().state_dict(), tmp_path / "full.pt")
    nib.save(nib.Nifti1Image((smooth((12, 16, 8), np.random.default_rng(4)) * 100).astype(np.float32), AFFINE),
             tmp_path / "v.nii.gz")
    proc = run_cli("v.nii.gz", "-o", "out", "--weights", "full.pt", "--axis", "0", "--batch", "3", "--device", "cpu",
                   "--no-progress", cwd=tmp_path, env={"MONAI_DPE_BUNDLE": ""})
    assert proc.returncode == 0, proc.stderr
    out = nib.load(tmp_path / "out" / "v.nii.gz")
    assert out.shape == (12, 16, 8) and out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.affine, AFFINE, atol=1e-5)


def test_a_device_without_data_is_refused_before_any_file(tmp_path):
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "a.png")
    proc = run_cli("a.png", "-o", "out", "--device", "meta", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # before: each file failed with "Cannot copy out of meta tensor"
    assert proc.stderr.strip() == "monai-dpe: error: --device meta: holds no data, so nothing can be computed on it; use cpu or cuda"
    assert not (tmp_path / "out").exists()


def test_allow_clipping_lifts_the_range_limit_of_the_blend(tmp_path, tiny_bundle):
    """The shipped blend keeps the level line in range; ``--allow-clipping`` gives the network's line as it is."""
    from monai_dpe.cli import _inference_config, build_parser

    Image.fromarray(np.full((16, 16), 40, np.uint8)).save(tmp_path / "dark.png")
    blends = {}
    for name, extra in (("default", ()), ("clipping", ("--allow-clipping",))):
        args = build_parser().parse_args(["enhance", str(tmp_path / "dark.png"), "-o", str(tmp_path / name), *extra])
        parser = _inference_config(tiny_bundle, tiny_bundle / "configs" / "inference.json", [tmp_path / "dark.png"],
                                   tmp_path / name, args, None)
        blends[name] = parser.get_parsed_content("blend")
    assert blends["default"].range_margin == 1.0 and blends["clipping"].range_margin is None
