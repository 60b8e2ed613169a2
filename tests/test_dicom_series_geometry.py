"""DICOM series geometry (issue 24): a folder of slices becomes a volume only when they stack into one
regular grid; a series with gaps is split into evenly spaced parts; otherwise it is refused in one
line naming the odd files, or its images go one by one.

The series are built from pydicom's CT_small with 1 mm true spacing, then broken the ways the
hostile test found: a missing slice, uneven or duplicate positions, a localizer, a slice of another
size; and 2D images (no position in space) sharing one SeriesInstanceUID.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from helpers import run_cli


def write_series(folder: Path, positions, series_uid: str | None = None) -> list[Path]:
    """CT_small slices at ``positions`` (mm along z) in one series; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = series_uid or generate_uid()
    x0, y0, _ = (float(v) for v in template.ImagePositionPatient)
    files = []
    for i, z in enumerate(positions):
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [x0, y0, float(z)]
        ds.InstanceNumber, ds.SliceThickness, ds.SliceLocation = i + 1, 1.0, float(z)
        ds.PixelData = np.roll(template.pixel_array, 3 * i, axis=1).astype(np.int16).tobytes()
        files.append(folder / f"slice_{i:02d}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def _localizer(files: list[Path]) -> None:
    ds = pydicom.dcmread(files[-1])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal scout in the axial series
    ds.save_as(files[-1].with_name("scout.dcm"), enforce_file_format=True)
    files[-1].unlink()


def _bad_orientation(files: list[Path]) -> None:
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1]  # five values: a writer's bug
    ds.save_as(files[2], enforce_file_format=True)


def _odd_size(files: list[Path]) -> None:
    ds = pydicom.dcmread(files[3])
    corner = ds.pixel_array[:32, :32].copy()
    ds.Rows = ds.Columns = 32
    ds.PixelData = corner.tobytes()
    ds.save_as(files[3].with_name("small.dcm"), enforce_file_format=True)
    files[3].unlink()


SPLIT = {  # folder -> (slice positions, the parts it is split into: their first positions and slice counts)
    "missing_slice": ([0, 1, 2, 3, 5, 6, 7, 8, 9], [(0, 4), (5, 5)]),
    "uneven": ([0, 1, 2, 3, 5, 6, 7, 10, 11, 12], [(0, 4), (5, 3), (10, 3)]),
    "pairs": ([0, 1, 3, 4, 6, 7, 9, 10], [(0, 2), (3, 2), (6, 2), (9, 2)]),
}

BROKEN = {  # folder -> (slice positions, change, what its one line must say)
    "lone_slice": ([0, 1, 2, 4], None, "not evenly spaced (gaps of 1 to 2 mm"),  # a last part of one slice has no spacing
    "bad_orientation": (list(range(5)), "_bad_orientation", "slice_02.dcm has a malformed position or orientation (3 and 5 values"),
    "duplicate": ([0, 1, 2, 3, 4, 4, 5, 6], None, "lie at the same position (4.000 mm along the normal)"),
    "localizer": (list(range(11)), _localizer, "scout.dcm in another orientation (a localizer?)"),
    "odd_size": (list(range(8)), _odd_size, "small.dcm of another size than the 128x128 slices"),
}


@pytest.fixture(scope="module")
def series_run(tiny_bundle, tmp_path_factory):
    """Every broken series, a regular one and 2D images sharing a series: (root, process, summary)."""
    root = tmp_path_factory.mktemp("series")
    for name, (positions, change, _) in BROKEN.items():
        files = write_series(root / "in" / name, positions)
        if change:
            (globals()[change] if isinstance(change, str) else change)(files)
    for name, (positions, _) in SPLIT.items():
        write_series(root / "in" / name, positions)
    write_series(root / "in" / "regular", range(6))
    write_series(root / "in" / "rounded", [round(0.625 * i, 2) for i in range(12)])  # 0.62 and 0.63 mm gaps
    views = root / "in" / "views"  # 2D images of mixed sizes in one series, as pydicom's two below
    views.mkdir()
    uid = generate_uid()
    for name in ("OBXXXX1A.dcm", "examples_palette.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SeriesInstanceUID = uid
        for tag in ("ImagePositionPatient", "ImageOrientationPatient"):  # views are not placed in space
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(views / name, enforce_file_format=True)
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--summary", "s.json", cwd=root)
    return root, proc, json.loads((root / "s.json").read_text())


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_series_that_does_not_stack_is_refused_in_one_line(series_run, name):
    root, proc, summary = series_run
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"monai-dpe: in/{name}: ")]
    assert len(lines) == 1, proc.stderr
    assert "not one volume" in lines[0] and BROKEN[name][2] in lines[0], lines[0]
    assert not list((root / "out").glob(f"{name}*"))  # never written with a made-up spacing


def test_a_regular_series_is_still_one_volume_with_its_spacing(series_run):
    root, _, _ = series_run
    image = nib.load(root / "out" / "regular.nii.gz")
    assert image.shape == (128, 128, 6) and np.allclose(image.header.get_zooms()[2], 1.0)
    rounded = nib.load(root / "out" / "rounded.nii.gz")  # positions written to two decimals are not gaps
    assert rounded.shape == (128, 128, 12) and np.isclose(rounded.header.get_zooms()[2], 0.625, atol=0.01)


def test_2d_images_sharing_a_series_are_each_their_own_output(series_run):
    root, proc, summary = series_run
    names = sorted(p.name for p in (root / "out" / "views").iterdir())
    # before: one image came out (mixed sizes), or three views became one 3-slice volume with 1 mm spacing
    assert names == ["MR_small.nii.gz", "OBXXXX1A.nii.gz", "examples_palette.nii.gz"], proc.stderr
    parts = sum(len(p) for _, p in SPLIT.values())
    assert summary["done"] == 5 + parts and summary["failed"] == len(BROKEN), proc.stderr


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_a_series_with_gaps_is_split_into_evenly_spaced_parts_at_their_true_positions(series_run, name):
    """Before: refused (and before that, written with a made-up uniform spacing, slices up to 0.62 mm off)."""
    root, proc, _ = series_run
    expected = SPLIT[name][1]
    outputs = sorted((root / "out").glob(f"{name}_part*"))
    assert [p.name for p in outputs] == [f"{name}_part{k}of{len(expected)}.nii.gz" for k in range(1, len(expected) + 1)]
    for path, (first, count) in zip(outputs, expected):
        image = nib.load(path)
        assert (image.shape[2] if image.ndim == 3 else 1) == count, (path.name, image.shape)
        assert np.isclose(image.affine[2, 3], first), (path.name, image.affine)  # z keeps its sign from LPS to RAS
        if count > 1:
            assert np.isclose(image.header.get_zooms()[2], 1.0), (path.name, image.header.get_zooms())
    said = [line for line in proc.stderr.splitlines() if f"in/{name}" in line]
    assert len(said) == 1 and f"split at the gaps into {len(expected)} evenly spaced parts" in said[0], proc.stderr


def test_a_slice_the_reader_cannot_decode_refuses_the_series(tmp_path, tiny_bundle):
    """ITK dropped a truncated slice and wrote 3 slices at 1.5 mm for 4 slices at 1 mm, exit 0."""
    files = write_series(tmp_path / "in" / "truncated", [0, 1, 2, 3])
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("monai-dpe: in/truncated: ")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "4 slice files but 3 slices could be read" in lines[0], lines[0]
    assert not (tmp_path / "out" / "truncated.nii.gz").exists()


def test_the_part_reader_takes_lists_of_dicom_files_only(tmp_path):
    """A list of PNGs stays MONAI's: separate images stacked as channels, not an ITK series."""
    from PIL import Image

    from monai_dpe.transforms import LoadDisplayImage
    from monai_dpe.transforms.load import DicomSeriesPartReader

    files = write_series(tmp_path / "s", [0, 1, 2])
    assert DicomSeriesPartReader().verify_suffix([str(f) for f in files])
    pngs = []
    for i in range(2):
        pngs.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((6, 5), 40 * i, np.uint8)).save(pngs[-1])
    assert not DicomSeriesPartReader().verify_suffix(pngs)
    stacked = LoadDisplayImage(image_only=True, ensure_channel_first=True)(pngs)
    assert tuple(stacked.shape) == (2, 5, 6)
